"""torchvision's ImageNet ResNets (He et al. 2016, "Deep Residual Learning"; ResNet v1.5: the
stride of a Bottleneck on its 3x3 conv), in the key layout of torchvision's ``resnet18/34/50``
state_dicts (the ``resnet18-f37072fd.pth`` ... files people download) and of CMI/Fast-Datafree's
copy (``datafree/models/classifiers/resnet_in.py``).

Stem: ``conv1`` 7x7 stride 2 padding 3 (no bias) -> ``bn1`` -> ReLU -> 3x3 stride-2 max-pool
(padding 1); stages ``layer1..layer4`` at widths 64, 128, 256, 512 (x4 for Bottleneck) with
strides 1, 2, 2, 2; global average pool; ``fc``. Blocks (torchvision ``resnet.py``):

* BasicBlock: ``conv1`` 3x3 (stride) -> ``bn1`` -> ReLU -> ``conv2`` 3x3 -> ``bn2``, + shortcut, ReLU;
* Bottleneck: ``conv1`` 1x1 -> ``bn1`` -> ReLU -> ``conv2`` 3x3 (stride, dilation) -> ``bn2`` -> ReLU
  -> ``conv3`` 1x1 (x4) -> ``bn3``, + shortcut, ReLU;

the shortcut ``downsample.0`` (1x1 conv, stride, no bias) + ``downsample.1`` (BN) where the shape
changes. ``apply`` returns ``(logits (B, K), {'feature': (B, 512 or 2048), 'blocks': layer1..4})``.
The Bottleneck's dilation serves DeepLabV3's dilated ResNet-50 (``dfkd_jax.models.deeplab``).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from dfkd_jax.models.layers import batch_norm, conv, dense, max_pool
from dfkd_jax.models.resnet import BasicBlock


def _shortcut(x, in_planes: int, out_planes: int, stride: int, train: bool, dtype):
    if stride == 1 and in_planes == out_planes:
        return x
    x = conv(out_planes, 1, in_planes, stride=stride, use_bias=False, name="downsample_0", dtype=dtype)(x)
    return batch_norm(train, name="downsample_1", dtype=dtype)(x)


class TVBottleneck(nn.Module):
    """torchvision's Bottleneck (stride and dilation on the 3x3 conv, expansion 4)."""

    in_planes: int
    planes: int
    stride: int = 1
    dilation: int = 1
    dtype: Any = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        out_planes = 4 * self.planes
        out = conv(self.planes, 1, self.in_planes, use_bias=False, name="conv1", dtype=self.dtype)(x)
        out = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(out))
        out = conv(self.planes, 3, self.planes, stride=self.stride, padding=self.dilation, dilation=self.dilation,
                   use_bias=False, name="conv2", dtype=self.dtype)(out)
        out = nn.relu(batch_norm(train, name="bn2", dtype=self.dtype)(out))
        out = conv(out_planes, 1, self.planes, use_bias=False, name="conv3", dtype=self.dtype)(out)
        out = batch_norm(train, name="bn3", dtype=self.dtype)(out)
        return nn.relu(out + _shortcut(x, self.in_planes, out_planes, self.stride, train, self.dtype))


class ImageNetResNet(nn.Module):
    num_classes: int = 1000
    num_blocks: Sequence[int] = (2, 2, 2, 2)
    bottleneck: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        out = conv(64, 7, x.shape[-1], stride=2, padding=3, use_bias=False, name="conv1", dtype=self.dtype)(x)
        out = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(out))
        out = max_pool(out, 3, 2, 1)
        expansion = TVBottleneck.expansion if self.bottleneck else 1
        in_planes, blocks = 64, []
        for stage, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), self.num_blocks, (1, 2, 2, 2)), 1):
            for i in range(n):
                s, name = stride if i == 0 else 1, f"layer{stage}_{i}"
                # torchvision's BasicBlock is the CIFAR one with its projection named downsample.0/1
                block = (TVBottleneck(in_planes, planes, s, dtype=self.dtype, name=name) if self.bottleneck else
                         BasicBlock(in_planes, planes, s, dtype=self.dtype, shortcut="downsample", name=name))
                out = block(out, train)
                in_planes = planes * expansion
            blocks.append(out)
        feature = jnp.mean(out, axis=(1, 2))
        logits = dense(self.num_classes, in_planes, name="fc", dtype=self.dtype)(feature)
        return logits.astype(jnp.float32), {"feature": feature, "blocks": tuple(blocks)}
