"""DeepLabV3 for semantic segmentation: dilated ResNet-50 or MobileNetV2 backbone at output stride 8.

Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation", in the
two PyTorch layouts the data-free code bases save (torchvision's ``backbone.*`` /
``classifier.*`` state_dict):

* ``scheme='dfad'`` (DFAD, ``network/segmentation/``): head keys ``classifier.{0,1,2,4}``,
  ASPP rates (12, 24, 32) as DFAD's code has them; MobileNetV2 from
  pytorch-deeplab-xception (``backbone.features.N.conv.M``, flat sequences).
* ``scheme='cmi'`` (CMI / Fast-Datafree, ``datafree/models/deeplab/``): head keys
  ``classifier.classifier.{0,1,2,4}``, ASPP rates (12, 24, 36); MobileNetV2 from
  DeepLabV3Plus-Pytorch (``backbone.low_level_features.0-3`` and
  ``backbone.high_level_features.4-17``: slices of one ``nn.Sequential`` keep its indices;
  nested ``ConvBNReLU`` keys).

Head (both): ASPP = five 256-wide branches over the backbone map (1x1 conv, three 3x3
convs at the dilation rates, image pooling -> 1x1 conv -> bilinear back), each conv -
BN - ReLU, concatenated and projected by 1x1 conv - BN - ReLU (``project.0``/``.1``);
then 3x3 conv - BN - ReLU and a 1x1 conv (with bias) to the classes. The logits are
upsampled bilinearly (``align_corners=False``) to the input size. The references'
dropout after the projection (p 0 in DFAD's teacher, 0.5 in its student, 0.1 in
CMI/Fast) is left out: the engine's networks are deterministic, and in eval mode (every
converted teacher, every evaluation) dropout is the identity.

Backbones (output stride 8):

* ResNet-50 (torchvision, ``replace_stride_with_dilation=[False, True, True]``): 7x7
  stride-2 stem, 3x3 stride-2 max-pool, Bottleneck stages [3, 4, 6, 3] at widths 64, 128,
  256, 512 (x4 out); layer3 and layer4 keep stride 1 and dilate their 3x3 convs by 2 and
  4 (the first block of each by the previous rate, as torchvision). 2048-d output.
* MobileNetV2: 3x3 stride-2 stem and the inverted residual stages of
  ``dfkd_jax.models.mobilenetv2``; once the stride reaches 8 the later stages keep
  stride 1 and dilate their depthwise convs. Both references pad a block's *input* by
  the dilation before its first (1x1) conv and then convolve without padding, so the
  expanded border is BN(0) -> ReLU6, not 0; this is reproduced. They differ in
  details reproduced per scheme: DFAD pads the stem conv by 1 and dilates a whole stage
  by the rate reached before it (64-wide stage 1, 96- and 160-wide 2, 320-wide 4);
  CMI/Fast does not pad the stem conv and dilates the first block of a stage by the
  previous rate and the rest by the new one (torchvision's rule). 320-d output.

``width_mult`` scales every width (backbone and the 256-wide head; MobileNetV2 as its
reference does, ``int(c * m)``) so that tests and CPU runs use small versions of the
same code: names ``deeplabv3_resnet50@0.25`` (see ``dfkd_jax.models.build_model``).

``apply(variables, x, train)`` returns ``(logits (B, H, W, K) float32, {'feature': (B, D)
pooled backbone output, 'blocks': backbone stage outputs})``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from dfkd_jax.models.layers import batch_norm, conv, max_pool, resize_bilinear
from dfkd_jax.models.mobilenetv2 import INVERTED_RESIDUAL_SETTING, make_divisible, relu6
from dfkd_jax.models.resnet_imagenet import TVBottleneck as DilatedBottleneck  # torchvision's, with a dilation

ASPP_RATES = {"dfad": (12, 24, 32), "cmi": (12, 24, 36)}


def scaled(width: int, mult: float) -> int:
    return max(1, int(width * mult))


# ----------------------------------------------------------------------------------- ResNet-50


class ResNet50Backbone(nn.Module):
    width_mult: float = 1.0
    num_blocks: Sequence[int] = (3, 4, 6, 3)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        m = self.width_mult
        stem = scaled(64, m)
        x = conv(stem, 7, x.shape[-1], stride=2, padding=3, use_bias=False, name="conv1", dtype=self.dtype)(x)
        x = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(x))
        x = max_pool(x, 3, 2, 1)
        in_planes, dilation, blocks = stem, 1, []
        # (width, blocks, stride, dilate): layer3 and layer4 trade their stride for dilation (output stride 8)
        for stage, (planes, n, stride, dilate) in enumerate(
                zip((64, 128, 256, 512), self.num_blocks, (1, 2, 2, 2), (False, False, True, True)), 1):
            planes = scaled(planes, m)
            previous = dilation
            if dilate:
                dilation, stride = dilation * stride, 1
            for i in range(n):
                x = DilatedBottleneck(in_planes, planes, stride if i == 0 else 1, previous if i == 0 else dilation,
                                      dtype=self.dtype, name=f"layer{stage}_{i}")(x, train)
                in_planes = 4 * planes
            blocks.append(x)
        return x, tuple(blocks)


# -------------------------------------------------------------------------------- MobileNetV2


class SegInvertedResidual(nn.Module):
    """Inverted residual of the segmentation MobileNetV2s: the input is zero-padded by the dilation and
    every conv is unpadded. ``scheme`` picks the key layout: DFAD's flat ``conv.{0,1,3,4,6,7}`` (t != 1)
    / ``conv.{0,1,3,4}`` (t = 1), CMI's ``conv.{0.0,0.1,1.0,1.1,2,3}`` / ``conv.{0.0,0.1,1,2}``."""

    inp: int
    oup: int
    stride: int
    dilation: int
    expand_ratio: int
    scheme: str = "dfad"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        hidden = int(round(self.inp * self.expand_ratio))
        d = self.dilation
        if self.scheme == "dfad":
            names = iter(["conv_0", "conv_1", "conv_3", "conv_4", "conv_6", "conv_7"])
        elif self.expand_ratio != 1:
            names = iter(["conv_0_0", "conv_0_1", "conv_1_0", "conv_1_1", "conv_2", "conv_3"])
        else:
            names = iter(["conv_0_0", "conv_0_1", "conv_1", "conv_2"])

        def cbn(h, features, in_features, kernel, stride=1, dilation=1, groups=1, act=True):
            h = conv(features, kernel, in_features, stride=stride, dilation=dilation, groups=groups, use_bias=False,
                     name=next(names), dtype=self.dtype)(h)
            h = batch_norm(train, name=next(names), dtype=self.dtype)(h)
            return relu6(h) if act else h

        h = jnp.pad(x, ((0, 0), (d, d), (d, d), (0, 0)))
        if self.expand_ratio != 1:
            h = cbn(h, hidden, self.inp, 1)
        h = cbn(h, hidden, hidden, 3, self.stride, d, groups=hidden)
        h = cbn(h, self.oup, hidden, 1, act=False)
        return x + h if self.stride == 1 and self.inp == self.oup else h


class MobileNetV2Backbone(nn.Module):
    width_mult: float = 1.0
    scheme: str = "dfad"
    output_stride: int = 8
    dtype: Any = jnp.float32

    @nn.nowrap
    def _name(self, index: int) -> str:
        if self.scheme == "dfad":
            return f"features_{index}"
        # CMI/Fast slice one nn.Sequential (features[0:4], features[4:-1]): the slices keep its indices
        return f"low_level_features_{index}" if index < 4 else f"high_level_features_{index}"

    @nn.compact
    def __call__(self, x, train: bool = False):
        m = self.width_mult
        if self.scheme == "dfad":
            c_in, stem_pad = int(32 * m), 1
        else:
            c_in, stem_pad = make_divisible(32 * m), 0
        stem = self._name(0)
        x = conv(c_in, 3, x.shape[-1], stride=2, padding=stem_pad, use_bias=False, name=f"{stem}_0",
                 dtype=self.dtype)(x)
        x = relu6(batch_norm(train, name=f"{stem}_1", dtype=self.dtype)(x))
        current_stride, dilation, index, blocks = 2, 1, 1, []
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            previous = dilation
            if current_stride == self.output_stride:
                stride, dilation = 1, dilation * s
            else:
                stride, current_stride = s, current_stride * s
            # DFAD dilates the whole stage by the rate reached before it; CMI/Fast only its first block
            first, rest = (previous, previous) if self.scheme == "dfad" else (previous, dilation)
            c_out = int(c * m)
            for i in range(n):
                x = SegInvertedResidual(c_in, c_out, stride if i == 0 else 1, first if i == 0 else rest, t,
                                        scheme=self.scheme, dtype=self.dtype, name=self._name(index))(x, train)
                c_in, index = c_out, index + 1
            if c in (24, 32, 96, 320):
                blocks.append(x)
        return x, tuple(blocks)


# ------------------------------------------------------------------------------------- head


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: ``convs.0-4`` branches and ``project.0/1`` (see the module doc)."""

    channels: int
    rates: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        c, size = self.channels, x.shape[1:3]

        def cbr(h, name_conv, name_bn, kernel=1, dilation=1):
            h = conv(c, kernel, h.shape[-1], padding=dilation if kernel == 3 else 0, dilation=dilation,
                     use_bias=False, name=name_conv, dtype=self.dtype)(h)
            return nn.relu(batch_norm(train, name=name_bn, dtype=self.dtype)(h))

        branches = [cbr(x, "convs_0_0", "convs_0_1")]
        for i, rate in enumerate(self.rates, 1):
            branches.append(cbr(x, f"convs_{i}_0", f"convs_{i}_1", kernel=3, dilation=rate))
        pooled = cbr(jnp.mean(x, axis=(1, 2), keepdims=True), "convs_4_1", "convs_4_2")
        branches.append(jnp.broadcast_to(pooled, (x.shape[0], *size, c)))  # bilinear from 1x1 is a broadcast
        return cbr(jnp.concatenate(branches, axis=-1), "project_0", "project_1")


def _deeplab_head(x, train: bool, num_classes: int, channels: int, rates, dtype):
    """ASPP (``classifier_0``), 3x3 conv (``classifier_1``) - BN (``classifier_2``) - ReLU, 1x1 conv
    (``classifier_4``), created in the calling module's scope."""
    x = ASPP(channels, tuple(rates), dtype=dtype, name="classifier_0")(x, train)
    x = conv(channels, 3, channels, padding=1, use_bias=False, name="classifier_1", dtype=dtype)(x)
    x = nn.relu(batch_norm(train, name="classifier_2", dtype=dtype)(x))
    return conv(num_classes, 1, channels, name="classifier_4", dtype=dtype)(x)


class DeepLabHead(nn.Module):
    """CMI/Fast's ``DeepLabHead``: the head one module down (``classifier.classifier.N``)."""

    num_classes: int
    channels: int
    rates: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        return _deeplab_head(x, train, self.num_classes, self.channels, self.rates, self.dtype)


class DeepLabV3(nn.Module):
    num_classes: int = 21
    backbone: str = "resnet50"  # 'resnet50' | 'mobilenetv2'
    scheme: str = "dfad"  # 'dfad' | 'cmi': key layout and the reference's details
    width_mult: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.scheme not in ASPP_RATES:
            raise ValueError(f"DeepLabV3 scheme must be one of {sorted(ASPP_RATES)}, not {self.scheme!r}.")
        size = x.shape[1:3]
        x = x.astype(self.dtype)
        if self.backbone == "resnet50":
            body = ResNet50Backbone(self.width_mult, dtype=self.dtype, name="backbone")
        elif self.backbone == "mobilenetv2":
            body = MobileNetV2Backbone(self.width_mult, self.scheme, dtype=self.dtype, name="backbone")
        else:
            raise ValueError(f"DeepLabV3 backbone must be resnet50 or mobilenetv2, not {self.backbone!r}.")
        features, blocks = body(x, train)
        channels, rates = scaled(256, self.width_mult), ASPP_RATES[self.scheme]
        if self.scheme == "dfad":
            logits = _deeplab_head(features, train, self.num_classes, channels, rates, self.dtype)
        else:
            logits = DeepLabHead(self.num_classes, channels, rates, dtype=self.dtype, name="classifier")(features,
                                                                                                     train)
        logits = resize_bilinear(logits, size)
        return logits.astype(jnp.float32), {"feature": jnp.mean(features, axis=(1, 2)), "blocks": blocks}
