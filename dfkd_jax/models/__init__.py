"""Model registry: classifier architectures and generators by name."""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from dfkd_jax.errors import ConfigError
from dfkd_jax.models.generators import CMIGenerator, DAFLGenerator, DAFLGeneratorSN, LargeGenerator, ZSKTGenerator
from dfkd_jax.models.lenet import LeNet5
from dfkd_jax.models.resnet import ResNet
from dfkd_jax.models.vgg import VGG, VGG_CFGS
from dfkd_jax.models.wrn import WideResNet

# name -> constructor(num_classes=..., dtype=...) returning a module whose
# ``apply(variables, x, train=...)`` gives ``(logits, {'feature': (B, D), 'blocks': (...)})``.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "lenet5": functools.partial(LeNet5, widths=(6, 16, 120, 84)),
    "lenet5_half": functools.partial(LeNet5, widths=(3, 8, 60, 42)),
    "lenet5_half_zskd": functools.partial(LeNet5, widths=(3, 8, 120, 84)),
    "resnet18": functools.partial(ResNet, num_blocks=(2, 2, 2, 2)),
    "resnet34": functools.partial(ResNet, num_blocks=(3, 4, 6, 3)),
    "wrn16_1": functools.partial(WideResNet, depth=16, widen_factor=1),
    "wrn16_2": functools.partial(WideResNet, depth=16, widen_factor=2),
    "wrn40_1": functools.partial(WideResNet, depth=40, widen_factor=1),
    "wrn40_2": functools.partial(WideResNet, depth=40, widen_factor=2),
    "vgg8": functools.partial(VGG, cfg=VGG_CFGS["vgg8"]),
    "vgg11": functools.partial(VGG, cfg=VGG_CFGS["vgg11"]),
}

GENERATORS: dict[str, Callable[..., nn.Module]] = {
    "dafl": DAFLGenerator,
    "dafl_sn": DAFLGeneratorSN,
    "cmi": CMIGenerator,
    "large": LargeGenerator,
    "zskt": ZSKTGenerator,
}


def build_model(arch: str, num_classes: int, dtype: Any = jnp.float32) -> nn.Module:
    """The classifier ``arch`` with ``num_classes`` outputs."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"Unknown architecture {arch!r}. Valid names: {', '.join(sorted(ARCHITECTURES))}.")
    return ARCHITECTURES[arch](num_classes=num_classes, dtype=dtype)


def build_generator(name: str, **kwargs: Any) -> nn.Module:
    """The generator ``name`` (``nz``, ``ngf``, ``channels``, ``img_size``, and optionally ``bn_eps``,
    ``init_scheme``, ``dtype`` as keyword arguments)."""
    if name not in GENERATORS:
        raise ConfigError(f"Unknown generator {name!r}. Valid names: {', '.join(sorted(GENERATORS))}.")
    return GENERATORS[name](**kwargs)
