"""Wide ResNets (ZSKT's WRN-d-w, as used by CMI/Fast): wrn16_1, wrn16_2, wrn40_1, wrn40_2.

Pre-activation BasicBlock with the exact shortcut semantics of the reference:
when the channel count changes, the *activated* input ``relu(bn1(x))`` feeds both
``conv1`` and the 1x1 ``convShortcut``; otherwise ``conv1`` reads the activated
input and the residual is the raw input. Final ``bn1`` - ReLU - global average
pool - ``fc``. All convolutions are bias-free; dropout is 0 in every zoo model.

Flax names mirror the PyTorch keys with one module per ``blockG`` and one per
``layer.i``:  ``block1.layer.0.convShortcut.weight`` -> ``params/block1/layer_0/convShortcut/kernel``.

Parameters at 10 classes: wrn16_1 175,066; wrn16_2 691,674; wrn40_1 563,930; wrn40_2 2,243,546.
``blocks`` holds the three group outputs (block1..block3, before the final BN).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dfkd_jax.models.layers import batch_norm, conv, dense


class WRNBasicBlock(nn.Module):
    in_planes: int
    out_planes: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        equal_in_out = self.in_planes == self.out_planes
        act = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(x))
        out = conv(self.out_planes, 3, self.in_planes, stride=self.stride, padding=1, use_bias=False,
                   name="conv1", dtype=self.dtype)(act)
        out = nn.relu(batch_norm(train, name="bn2", dtype=self.dtype)(out))
        out = conv(self.out_planes, 3, self.out_planes, padding=1, use_bias=False,
                   name="conv2", dtype=self.dtype)(out)
        if equal_in_out:
            residual = x
        else:
            residual = conv(self.out_planes, 1, self.in_planes, stride=self.stride, use_bias=False,
                            name="convShortcut", dtype=self.dtype)(act)
        return residual + out


class NetworkBlock(nn.Module):
    """``blockG``: ``n`` BasicBlocks, the first with the stride and the channel change."""

    n: int
    in_planes: int
    out_planes: int
    stride: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i in range(self.n):
            x = WRNBasicBlock(self.in_planes if i == 0 else self.out_planes, self.out_planes,
                              self.stride if i == 0 else 1, dtype=self.dtype, name=f"layer_{i}")(x, train)
        return x


class WideResNet(nn.Module):
    num_classes: int = 10
    depth: int = 16
    widen_factor: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if (self.depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {self.depth}")
        n = (self.depth - 4) // 6
        w = self.widen_factor
        channels = (16, 16 * w, 32 * w, 64 * w)
        x = x.astype(self.dtype)
        out = conv(channels[0], 3, x.shape[-1], padding=1, use_bias=False, name="conv1", dtype=self.dtype)(x)
        blocks = []
        for g, stride in enumerate((1, 2, 2), 1):
            out = NetworkBlock(n, channels[g - 1], channels[g], stride, dtype=self.dtype, name=f"block{g}")(out, train)
            blocks.append(out)
        out = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(out))
        feature = jnp.mean(out, axis=(1, 2))
        logits = dense(self.num_classes, channels[3], name="fc", dtype=self.dtype)(feature)
        return logits.astype(jnp.float32), {"feature": feature, "blocks": tuple(blocks)}


def wrn16_1(num_classes: int = 10, dtype: Any = jnp.float32) -> WideResNet:
    return WideResNet(num_classes=num_classes, depth=16, widen_factor=1, dtype=dtype)


def wrn16_2(num_classes: int = 10, dtype: Any = jnp.float32) -> WideResNet:
    return WideResNet(num_classes=num_classes, depth=16, widen_factor=2, dtype=dtype)


def wrn40_1(num_classes: int = 10, dtype: Any = jnp.float32) -> WideResNet:
    return WideResNet(num_classes=num_classes, depth=40, widen_factor=1, dtype=dtype)


def wrn40_2(num_classes: int = 10, dtype: Any = jnp.float32) -> WideResNet:
    return WideResNet(num_classes=num_classes, depth=40, widen_factor=2, dtype=dtype)
