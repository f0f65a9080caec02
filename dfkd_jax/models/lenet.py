"""LeNet-5 and its halves (32x32 inputs, 5x5 valid convolutions, 2x2 max-pool, ReLU).

| variant            | widths (conv1, conv2, conv3, fc1) | params (10 classes, 1 channel) |
| lenet5             | 6, 16, 120, 84                    | 61,706 |
| lenet5_half        | 3, 8, 60, 42   (DAFL/DFAD/PRE-DFKD) | 15,738 |
| lenet5_half_zskd   | 3, 8, 120, 84  (ZSKD)             | 35,820 |

Flax names follow DFAD's PyTorch keys (``conv1..conv3``, ``fc1``, ``fc2``); the
converter also reads the CMI/Fast scheme (``features.0/3/6``, ``fc.0/2``).
``feature`` is the flattened conv3 activation, the vector DAFL's activation term
is computed on (its ``out_feature=True`` output).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from dfkd_jax.models.layers import conv, dense, max_pool2x


class LeNet5(nn.Module):
    num_classes: int = 10
    widths: Sequence[int] = (6, 16, 120, 84)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train  # no BatchNorm or dropout
        c1, c2, c3, f1 = self.widths
        x = x.astype(self.dtype)
        a1 = max_pool2x(nn.relu(conv(c1, 5, x.shape[-1], name="conv1", dtype=self.dtype)(x)))
        a2 = max_pool2x(nn.relu(conv(c2, 5, c1, name="conv2", dtype=self.dtype)(a1)))
        a3 = nn.relu(conv(c3, 5, c2, name="conv3", dtype=self.dtype)(a2))
        feature = a3.reshape(a3.shape[0], -1)
        h = nn.relu(dense(f1, feature.shape[-1], name="fc1", dtype=self.dtype)(feature))
        logits = dense(self.num_classes, f1, name="fc2", dtype=self.dtype)(h)
        return logits.astype(jnp.float32), {"feature": feature, "blocks": (a1, a2, a3)}
