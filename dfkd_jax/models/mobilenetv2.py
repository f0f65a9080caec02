"""MobileNetV2 classifier of the CMI/Fast registry (``datafree/models/classifiers/mobilenetv2.py``).

Sandler et al., CVPR 2018, in torchvision's layout, which CMI/Fast register as
``mobilenetv2`` for CIFAR: ``features.0`` = 3x3 stride-2 conv - BN - ReLU6 (32 wide),
then 17 inverted residual blocks (expansion t, width c, n blocks, first stride s:
(1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1)),
``features.18`` = 1x1 conv to 1280 - BN - ReLU6, global average pool, dropout, and
``classifier.1`` Linear(1280 -> classes). On 32x32 inputs the map is 1x1 before the
pool (five stride-2 stages). Widths are rounded to multiples of 8 (``make_divisible``)
when ``width_mult`` is not 1.

An inverted residual block is ``conv`` = [1x1 expand ConvBNReLU6 (only when t != 1),
3x3 depthwise ConvBNReLU6 (stride), 1x1 linear projection conv, BN], plus the input
when the stride is 1 and the width is unchanged. Keys: ``features.2.conv.0.0.weight``
(expand conv), ``features.2.conv.1.1.running_mean`` (depthwise BN), ``features.2.conv.2``
(projection), ``features.2.conv.3`` (its BN); for t = 1 the depthwise pair is
``conv.0`` and the projection ``conv.1``/``conv.2``. Flax names flatten them
(``features_2/conv_0_0``). 2,236,682 parameters at 10 classes.

``blocks``: the outputs at the end of the 24-, 32-, 96- and 320-wide stages;
``feature``: the pooled 1280-d vector. Dropout (p 0.2, before the classifier) is the
identity in eval mode and left out in train mode (a documented difference: the
engine's networks are deterministic).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from dfkd_jax.models.layers import batch_norm, conv, dense

# (expansion t, width c, blocks n, first stride s)
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """The channel rounding of the TF MobileNet code: nearest multiple of ``divisor``, never 10% below ``v``."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def relu6(x):
    return jnp.clip(x, 0.0, 6.0)


class ConvBNReLU6(nn.Module):
    """``ConvBNReLU``: conv (no bias, padding (k-1)/2) as ``.0``, BN as ``.1``, ReLU6. Called with
    ``name='features_0'`` it creates ``features_0_0``/``features_0_1`` in the caller's scope."""

    features: int
    kernel: int
    in_features: int
    stride: int = 1
    groups: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = conv(self.features, self.kernel, self.in_features, stride=self.stride, padding=(self.kernel - 1) // 2,
                 use_bias=False, groups=self.groups, name="0", dtype=self.dtype)(x)
        return relu6(batch_norm(train, name="1", dtype=self.dtype)(x))


class InvertedResidual(nn.Module):
    inp: int
    oup: int
    stride: int
    expand_ratio: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        hidden = int(round(self.inp * self.expand_ratio))
        h, i = x, 0
        if self.expand_ratio != 1:
            h = ConvBNReLU6(hidden, 1, self.inp, dtype=self.dtype, name=f"conv_{i}")(h, train)
            i += 1
        h = ConvBNReLU6(hidden, 3, hidden, stride=self.stride, groups=hidden, dtype=self.dtype,
                        name=f"conv_{i}")(h, train)
        h = conv(self.oup, 1, hidden, use_bias=False, name=f"conv_{i + 1}", dtype=self.dtype)(h)
        h = batch_norm(train, name=f"conv_{i + 2}", dtype=self.dtype)(h)
        return x + h if self.stride == 1 and self.inp == self.oup else h


class MobileNetV2(nn.Module):
    num_classes: int = 10
    width_mult: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        c_in = make_divisible(32 * self.width_mult)
        last = make_divisible(1280 * max(1.0, self.width_mult))
        x = ConvBNReLU6(c_in, 3, x.shape[-1], stride=2, dtype=self.dtype, name="features_0")(x, train)
        idx, blocks = 1, []
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            c_out = make_divisible(c * self.width_mult)
            for i in range(n):
                x = InvertedResidual(c_in, c_out, s if i == 0 else 1, t, dtype=self.dtype,
                                     name=f"features_{idx}")(x, train)
                c_in, idx = c_out, idx + 1
            if c in (24, 32, 96, 320):
                blocks.append(x)
        x = ConvBNReLU6(last, 1, c_in, dtype=self.dtype, name=f"features_{idx}")(x, train)
        feature = jnp.mean(x, axis=(1, 2))
        logits = dense(self.num_classes, last, name="classifier_1", dtype=self.dtype)(feature)
        return logits.astype(jnp.float32), {"feature": feature, "blocks": tuple(blocks)}
