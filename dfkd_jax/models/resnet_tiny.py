"""The RepDistiller CIFAR ResNets of the CMI/Fast registry: resnet8/20/32/56/110, resnet8x4, resnet32x4.

He et al.'s CIFAR ResNet (depth 6n+2, three stages of n post-activation BasicBlocks
at strides 1, 2, 2) as RepDistiller (Tian et al., ICLR 2020) wrote it and CMI/Fast
(``datafree/models/classifiers/resnet_tiny.py``) register it. Stem ``conv1`` 3x3
(no bias) - ``bn1`` - ReLU; each block ``conv1`` 3x3 (stride) - ``bn1`` - ReLU -
``conv2`` 3x3 - ``bn2``, plus the shortcut, ReLU. The shortcut is a ``downsample``
1x1 conv (stride, no bias) + BN where the stride or the width changes (block 0 of
stages 2 and 3, and of stage 1 for the x4 models, whose stem is narrower than stage
1), the identity elsewhere. Average pool (8x8 on 32x32 inputs: global) - ``fc``.

| name       | depth | widths (stem, stages) | params (10 classes) |
| resnet8    | 8     | 16, 16, 32, 64        | 78,042 |
| resnet20   | 20    | 16, 16, 32, 64        | 272,474 |
| resnet32   | 32    | 16, 16, 32, 64        | 466,906 |
| resnet56   | 56    | 16, 16, 32, 64        | 855,770 |
| resnet110  | 110   | 16, 16, 32, 64        | 1,730,714 |
| resnet8x4  | 8     | 32, 64, 128, 256      | 1,210,410 |
| resnet32x4 | 32    | 32, 64, 128, 256      | 7,410,730 |

Flax names = PyTorch keys: ``layer2.0.downsample.1.running_var`` ->
``batch_stats/layer2_0/downsample_1/var``. ``blocks``: the three stage outputs;
``feature``: the pooled vector ``fc`` reads.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from dfkd_jax.models.layers import batch_norm, conv, dense
from dfkd_jax.models.resnet import BasicBlock


class TinyResNet(nn.Module):
    num_classes: int = 10
    depth: int = 20
    widths: Sequence[int] = (16, 16, 32, 64)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if (self.depth - 2) % 6:
            raise ValueError(f"BasicBlock CIFAR ResNets have depth 6n+2, not {self.depth}.")
        n = (self.depth - 2) // 6
        x = x.astype(self.dtype)
        out = conv(self.widths[0], 3, x.shape[-1], padding=1, use_bias=False, name="conv1", dtype=self.dtype)(x)
        out = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(out))
        in_planes, blocks = self.widths[0], []
        for stage, (planes, stride) in enumerate(zip(self.widths[1:], (1, 2, 2)), 1):
            for i in range(n):
                out = BasicBlock(in_planes, planes, stride if i == 0 else 1, dtype=self.dtype, shortcut="downsample",
                                 name=f"layer{stage}_{i}")(out, train)
                in_planes = planes
            blocks.append(out)
        feature = jnp.mean(out, axis=(1, 2))
        logits = dense(self.num_classes, in_planes, name="fc", dtype=self.dtype)(feature)
        return logits.astype(jnp.float32), {"feature": feature, "blocks": tuple(blocks)}
