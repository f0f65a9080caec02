"""LeNet-5 and its halves (32x32 inputs, 5x5 valid convolutions, 2x2 max-pool, ReLU).

| variant            | widths (conv1, conv2, conv3, fc1) | params (10 classes, 1 channel) |
| lenet5             | 6, 16, 120, 84                    | 61,706 |
| lenet5_half        | 3, 8, 60, 42   (DAFL/DFAD/PRE-DFKD) | 15,738 |
| lenet5_half_zskd   | 3, 8, 120, 84  (ZSKD)             | 35,820 |
| lenet5_bn          | 6, 16, 120, 84, BatchNorm after each conv | 61,848 |
| lenet5_half_bn     | 3, 8, 60, 42, BatchNorm after each conv   | 15,809 |

``lenet5_bn`` is LeNet-5 with ``conv -> BatchNorm -> ReLU`` (bias-free convolutions, keys
``bn1..bn3`` beside ``conv1..conv3``): a Fashion-MNIST/MNIST teacher whose BatchNorm
statistics the inversion methods (DeepInversion's bn term in ADI, DFQ, CMI, Fast, CuDFKD,
AdaDFKD, MTCKI) can match. No published method uses it; it is this project's BN teacher of
the 32x32x1 datasets (the plain LeNet-5 gives those terms nothing to read). ``lenet5_half_bn`` is the
same at LeNet-5-half's widths: a compact student that trains at the learning rates of BatchNorm students.

Flax names follow DFAD's PyTorch keys (``conv1..conv3``, ``fc1``, ``fc2``); the
converter also reads the CMI/Fast scheme (``features.0/3/6``, ``fc.0/2``).
``feature`` is the flattened conv3 activation, the vector DAFL's activation term
is computed on (its ``out_feature=True`` output).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from dfkd_jax.models.layers import batch_norm, conv, dense, max_pool2x


class LeNet5(nn.Module):
    num_classes: int = 10
    widths: Sequence[int] = (6, 16, 120, 84)
    dtype: Any = jnp.float32
    batch_norm: bool = False  # conv (no bias) -> BatchNorm -> ReLU, as lenet5_bn

    @nn.compact
    def __call__(self, x, train: bool = False):
        c1, c2, c3, f1 = self.widths
        x = x.astype(self.dtype)

        def conv_relu(y, features, in_features, i):
            y = conv(features, 5, in_features, use_bias=not self.batch_norm, name=f"conv{i}", dtype=self.dtype)(y)
            if self.batch_norm:
                y = batch_norm(train, name=f"bn{i}", dtype=self.dtype)(y)
            return nn.relu(y)

        a1 = max_pool2x(conv_relu(x, c1, x.shape[-1], 1))
        a2 = max_pool2x(conv_relu(a1, c2, c1, 2))
        a3 = conv_relu(a2, c3, c2, 3)
        feature = a3.reshape(a3.shape[0], -1)
        h = nn.relu(dense(f1, feature.shape[-1], name="fc1", dtype=self.dtype)(feature))
        logits = dense(self.num_classes, f1, name="fc2", dtype=self.dtype)(h)
        return logits.astype(jnp.float32), {"feature": feature, "blocks": (a1, a2, a3)}
