"""CIFAR ResNet-18/34/50 (post-activation BasicBlock or Bottleneck, 3x3 stem, no max-pool).

The CMI/Fast ``resnet18``/``resnet34``/``resnet50`` (from DAFL's code) and DFAD's
``ResNet18_8x``/``ResNet34_8x`` share one state_dict layout, which the Flax names mirror:

| PyTorch key                    | Flax path                         |
| ``conv1.weight``               | ``params/conv1/kernel``           |
| ``layer2.0.conv1.weight``      | ``params/layer2_0/conv1/kernel``  |
| ``layer2.0.shortcut.0.weight`` | ``params/layer2_0/shortcut_0/kernel`` |
| ``layer2.0.shortcut.1.running_mean`` | ``batch_stats/layer2_0/shortcut_1/mean`` |
| ``linear.weight``              | ``params/linear/kernel``          |

Parameters at 10 classes: resnet18 11,173,962; resnet34 21,282,122; resnet50 23,520,842.
resnet50 uses the Bottleneck block (``conv1`` 1x1 - ``bn1`` - ReLU - ``conv2`` 3x3
(stride) - ``bn2`` - ReLU - ``conv3`` 1x1 to 4x the width - ``bn3``, + shortcut, ReLU),
so its stages are 256, 512, 1024, 2048 wide.
``blocks`` holds the four stage outputs (layer1..layer4); ``feature`` the pooled
512-d (2048-d for resnet50) vector the ``linear`` head reads.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from dfkd_jax.models.layers import batch_norm, conv, dense


class BasicBlock(nn.Module):
    """conv3x3(stride) - BN - ReLU - conv3x3 - BN, + shortcut, ReLU.

    ``shortcut`` names the projection's modules (``<shortcut>_0`` conv, ``<shortcut>_1`` BN): CMI/Fast's
    ResNets say ``shortcut``, RepDistiller's CIFAR ResNets (``resnet_tiny``) ``downsample``."""

    in_planes: int
    planes: int
    stride: int = 1
    dtype: Any = jnp.float32
    shortcut: str = "shortcut"

    @nn.compact
    def __call__(self, x, train: bool = False):
        out = conv(self.planes, 3, self.in_planes, stride=self.stride, padding=1, use_bias=False,
                   name="conv1", dtype=self.dtype)(x)
        out = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(out))
        out = conv(self.planes, 3, self.planes, padding=1, use_bias=False, name="conv2", dtype=self.dtype)(out)
        out = batch_norm(train, name="bn2", dtype=self.dtype)(out)
        if self.stride != 1 or self.in_planes != self.planes:
            sc = conv(self.planes, 1, self.in_planes, stride=self.stride, use_bias=False,
                      name=f"{self.shortcut}_0", dtype=self.dtype)(x)
            sc = batch_norm(train, name=f"{self.shortcut}_1", dtype=self.dtype)(sc)
        else:
            sc = x
        return nn.relu(out + sc)


class Bottleneck(nn.Module):
    """conv1x1 - BN - ReLU - conv3x3(stride) - BN - ReLU - conv1x1 (4x) - BN, + shortcut, ReLU."""

    in_planes: int
    planes: int
    stride: int = 1
    dtype: Any = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        out_planes = self.expansion * self.planes
        out = conv(self.planes, 1, self.in_planes, use_bias=False, name="conv1", dtype=self.dtype)(x)
        out = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(out))
        out = conv(self.planes, 3, self.planes, stride=self.stride, padding=1, use_bias=False, name="conv2",
                   dtype=self.dtype)(out)
        out = nn.relu(batch_norm(train, name="bn2", dtype=self.dtype)(out))
        out = conv(out_planes, 1, self.planes, use_bias=False, name="conv3", dtype=self.dtype)(out)
        out = batch_norm(train, name="bn3", dtype=self.dtype)(out)
        if self.stride != 1 or self.in_planes != out_planes:
            x = conv(out_planes, 1, self.in_planes, stride=self.stride, use_bias=False, name="shortcut_0",
                     dtype=self.dtype)(x)
            x = batch_norm(train, name="shortcut_1", dtype=self.dtype)(x)
        return nn.relu(out + x)


class ResNet(nn.Module):
    num_classes: int = 10
    num_blocks: Sequence[int] = (2, 2, 2, 2)
    bottleneck: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        out = conv(64, 3, x.shape[-1], padding=1, use_bias=False, name="conv1", dtype=self.dtype)(x)
        out = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(out))
        in_planes = 64
        blocks = []
        block, expansion = (Bottleneck, Bottleneck.expansion) if self.bottleneck else (BasicBlock, 1)
        for stage, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), self.num_blocks, (1, 2, 2, 2)), 1):
            for i in range(n):
                out = block(in_planes, planes, stride if i == 0 else 1, dtype=self.dtype,
                            name=f"layer{stage}_{i}")(out, train)
                in_planes = planes * expansion
            blocks.append(out)
        feature = jnp.mean(out, axis=(1, 2))
        logits = dense(self.num_classes, in_planes, name="linear", dtype=self.dtype)(feature)
        return logits.astype(jnp.float32), {"feature": feature, "blocks": tuple(blocks)}

def resnet18(num_classes: int = 10, dtype: Any = jnp.float32) -> ResNet:
    return ResNet(num_classes=num_classes, num_blocks=(2, 2, 2, 2), dtype=dtype)


def resnet34(num_classes: int = 10, dtype: Any = jnp.float32) -> ResNet:
    return ResNet(num_classes=num_classes, num_blocks=(3, 4, 6, 3), dtype=dtype)


def resnet50(num_classes: int = 10, dtype: Any = jnp.float32) -> ResNet:
    return ResNet(num_classes=num_classes, num_blocks=(3, 4, 6, 3), bottleneck=True, dtype=dtype)
