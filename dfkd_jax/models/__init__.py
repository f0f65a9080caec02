"""Model registry: classifier and segmentation architectures, and generators, by name."""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dfkd_jax.errors import ConfigError
from dfkd_jax.models.deeplab import DeepLabV3
from dfkd_jax.models.generators import (CMIGenerator, DAFLGenerator, DAFLGeneratorSN, GeneratorB, LargeGenerator,
                                       ZSKTGenerator)
from dfkd_jax.models.lenet import LeNet5
from dfkd_jax.models.mobilenetv2 import MobileNetV2
from dfkd_jax.models.resnet import ResNet
from dfkd_jax.models.resnet_imagenet import ImageNetResNet
from dfkd_jax.models.resnet_tiny import TinyResNet
from dfkd_jax.models.shufflenetv2 import ShuffleNetV2
from dfkd_jax.models.vgg import VGG, VGG_CFGS
from dfkd_jax.models.wrn import WideResNet

_TINY = (16, 16, 32, 64)
_TINY_X4 = (32, 64, 128, 256)

# name -> constructor(num_classes=..., dtype=...) returning a module whose
# ``apply(variables, x, train=...)`` gives ``(logits, {'feature': (B, D), 'blocks': (...)})``;
# logits are (B, K) for classifiers and (B, H, W, K) for the segmentation models.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "lenet5": functools.partial(LeNet5, widths=(6, 16, 120, 84)),
    "lenet5_half": functools.partial(LeNet5, widths=(3, 8, 60, 42)),
    "lenet5_half_zskd": functools.partial(LeNet5, widths=(3, 8, 120, 84)),
    "lenet5_bn": functools.partial(LeNet5, widths=(6, 16, 120, 84), batch_norm=True),
    "lenet5_half_bn": functools.partial(LeNet5, widths=(3, 8, 60, 42), batch_norm=True),
    "resnet18": functools.partial(ResNet, num_blocks=(2, 2, 2, 2)),
    "resnet34": functools.partial(ResNet, num_blocks=(3, 4, 6, 3)),
    "resnet50": functools.partial(ResNet, num_blocks=(3, 4, 6, 3), bottleneck=True),
    "resnet8": functools.partial(TinyResNet, depth=8, widths=_TINY),
    "resnet14": functools.partial(TinyResNet, depth=14, widths=_TINY),
    "resnet20": functools.partial(TinyResNet, depth=20, widths=_TINY),
    "resnet32": functools.partial(TinyResNet, depth=32, widths=_TINY),
    "resnet44": functools.partial(TinyResNet, depth=44, widths=_TINY),
    "resnet56": functools.partial(TinyResNet, depth=56, widths=_TINY),
    "resnet110": functools.partial(TinyResNet, depth=110, widths=_TINY),
    "resnet8x4": functools.partial(TinyResNet, depth=8, widths=_TINY_X4),
    "resnet32x4": functools.partial(TinyResNet, depth=32, widths=_TINY_X4),
    "wrn16_1": functools.partial(WideResNet, depth=16, widen_factor=1),
    "wrn16_2": functools.partial(WideResNet, depth=16, widen_factor=2),
    "wrn40_1": functools.partial(WideResNet, depth=40, widen_factor=1),
    "wrn40_2": functools.partial(WideResNet, depth=40, widen_factor=2),
    "vgg8": functools.partial(VGG, cfg=VGG_CFGS["vgg8"]),
    "vgg11": functools.partial(VGG, cfg=VGG_CFGS["vgg11"]),
    "vgg13": functools.partial(VGG, cfg=VGG_CFGS["vgg13"]),
    "vgg16": functools.partial(VGG, cfg=VGG_CFGS["vgg16"]),
    "vgg19": functools.partial(VGG, cfg=VGG_CFGS["vgg19"]),
    "mobilenetv2": MobileNetV2,
    # torchvision's ImageNet ResNets (CMI/Fast-Datafree's resnet_in, the same keys); torchvision's
    # MobileNetV2 is ``mobilenetv2`` (the same network and keys)
    "resnet18_imagenet": functools.partial(ImageNetResNet, num_blocks=(2, 2, 2, 2)),
    "resnet34_imagenet": functools.partial(ImageNetResNet, num_blocks=(3, 4, 6, 3)),
    "resnet50_imagenet": functools.partial(ImageNetResNet, num_blocks=(3, 4, 6, 3), bottleneck=True),
    "shufflenetv2": ShuffleNetV2,
    "deeplabv3_resnet50": functools.partial(DeepLabV3, backbone="resnet50", scheme="dfad"),
    "deeplabv3_mobilenetv2": functools.partial(DeepLabV3, backbone="mobilenetv2", scheme="dfad"),
    "deeplabv3_resnet50_cmi": functools.partial(DeepLabV3, backbone="resnet50", scheme="cmi"),
    "deeplabv3_mobilenetv2_cmi": functools.partial(DeepLabV3, backbone="mobilenetv2", scheme="cmi"),
}

# Architectures with per-pixel logits; they take a width multiplier: ``deeplabv3_resnet50@0.25``.
SEGMENTATION = frozenset(name for name in ARCHITECTURES if name.startswith("deeplabv3_"))

GENERATORS: dict[str, Callable[..., nn.Module]] = {
    "dafl": DAFLGenerator,
    "dafl_sn": DAFLGeneratorSN,
    "cmi": CMIGenerator,
    "large": LargeGenerator,
    "zskt": ZSKTGenerator,
    "dfad_b": functools.partial(GeneratorB, upsample="transpose"),
    "dfad_b_resize": functools.partial(GeneratorB, upsample="resize"),
}


def parse_arch(arch: str) -> tuple[str, float | None]:
    """``'deeplabv3_resnet50@0.25'`` -> ``('deeplabv3_resnet50', 0.25)``; ``'resnet18'`` -> ``('resnet18', None)``.

    Raises ``ConfigError`` naming the valid names for an unknown architecture or a width
    multiplier on an architecture that takes none.
    """
    base, at, mult = str(arch).partition("@")
    if base not in ARCHITECTURES:
        raise ConfigError(f"Unknown architecture {arch!r}. Valid names: {', '.join(sorted(ARCHITECTURES))} "
                          f"(segmentation models also as NAME@WIDTH, e.g. deeplabv3_resnet50@0.25).")
    if not at:
        return base, None
    if base not in SEGMENTATION:
        raise ConfigError(f"{base!r} takes no width multiplier ({arch!r}); only {', '.join(sorted(SEGMENTATION))} do.")
    try:
        m = float(mult)
    except ValueError:
        m = -1.0
    if not 0.0 < m <= 4.0:
        raise ConfigError(f"Bad width multiplier in {arch!r}: write NAME@WIDTH with 0 < WIDTH <= 4, e.g. {base}@0.25.")
    return base, m


def arch_name(base: str, width_mult: float | None = None) -> str:
    """The inverse of ``parse_arch``: ``base@m`` (``base`` itself at width 1 or None)."""
    return base if width_mult in (None, 1.0) else f"{base}@{width_mult:g}"


def is_segmentation(arch: str) -> bool:
    return parse_arch(arch)[0] in SEGMENTATION


def has_batch_norm(arch: str, input_shape: tuple[int, int, int] = (32, 32, 1)) -> bool:
    """Whether ``arch`` keeps BatchNorm statistics (the bn term of the inversion methods reads them)."""
    model = build_model(arch, 10)
    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
    return "batch_stats" in jax.eval_shape(lambda v: model.init(jax.random.key(0), v), x)


def build_model(arch: str, num_classes: int, dtype: Any = jnp.float32) -> nn.Module:
    """The classifier or segmentation model ``arch`` (``NAME`` or ``NAME@WIDTH``) with ``num_classes`` outputs."""
    base, mult = parse_arch(arch)
    kwargs = {} if mult is None else {"width_mult": mult}
    return ARCHITECTURES[base](num_classes=num_classes, dtype=dtype, **kwargs)


def build_generator(name: str, **kwargs: Any) -> nn.Module:
    """The generator ``name`` (``nz``, ``ngf``, ``channels``, ``img_size``, and optionally ``bn_eps``,
    ``init_scheme``, ``dtype`` as keyword arguments)."""
    if name not in GENERATORS:
        raise ConfigError(f"Unknown generator {name!r}. Valid names: {', '.join(sorted(GENERATORS))}.")
    return GENERATORS[name](**kwargs)
