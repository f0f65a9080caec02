"""PyTorch state_dict layouts of the registered models, derived from the Flax modules.

Every Flax model names its submodules after the PyTorch keys, with a dot turned into an
underscore where the Flax module boundary is not the PyTorch one (``layer1_0``,
``shortcut_0``, ``block0_3``, ``conv_blocks_2``, ``l1_0``). The mapping back is therefore
one rule: inside a Flax module name, an underscore followed by a purely numeric segment
is a dot (``layer1_0`` -> ``layer1.0``, ``conv_blocks2_0`` -> ``conv_blocks2.0``;
``convShortcut`` and ``conv_blocks`` keep theirs), and Flax module boundaries are dots.
Leaves map as

| Flax                      | PyTorch          | array                                   |
| ``params/.../kernel`` 4-D | ``...weight``    | [kh,kw,I,O] <- [O,I,kh,kw], transpose (2,3,1,0) |
| ``params/.../kernel`` 2-D | ``...weight``    | [in,out] <- [out,in], transpose          |
| ``params/.../bias``       | ``...bias``      | as is                                   |
| ``params/.../scale``      | ``...weight``    | as is (BatchNorm gamma)                 |
| ``batch_stats/.../mean``  | ``...running_mean`` | as is                                |
| ``batch_stats/.../var``   | ``...running_var``  | as is                                |

so the expected PyTorch keys and shapes of an architecture are read off ``jax.eval_shape``
of its ``init``; nothing is listed by hand except the alternative key schemes
(``KEY_SCHEMES``: the CMI/Fast LeNet-5 ``features.N``/``fc.N`` names).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dfkd_jax.models import build_generator, build_model

# Sentinels for the two free dimensions of a classifier layout: no layer of any registered
# model has 1009 features or 13 channels (nor a 13x13 kernel), so a dimension equal to one of them is the head's
# class count or the input's channel count.
_K_SENTINEL = 1009
_C_SENTINEL = 13

_LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}

# Alternative PyTorch key schemes: scheme name -> {checkpoint module prefix: canonical prefix}.
# The canonical (Flax-derived) scheme is always tried first under the name given in
# ``CANONICAL_SCHEME``.
_LENET_CMI = {"features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "fc.0": "fc1", "fc.2": "fc2"}
# ZSKT's generator (``models/generator.py``) is one ``nn.Sequential`` ``layers``: Linear, View, BN, Upsample,
# Conv, BN, LeakyReLU, Upsample, Conv, BN, LeakyReLU, Conv, BN(affine); dfkd_jax's ZSKTGenerator has DAFL's names.
_ZSKT_GENERATOR = {"layers.0": "l1.0", "layers.2": "conv_blocks0.0", "layers.4": "conv_blocks1.0",
                   "layers.5": "conv_blocks1.1", "layers.8": "conv_blocks2.0", "layers.9": "conv_blocks2.1",
                   "layers.11": "conv_blocks2.3", "layers.12": "conv_blocks2.5"}
# CuDFKD's and AdaDFKD's DCGAN_Generator_CIFAR10 at d=2 (ljrprocc/DataFree, ljrprocc/DFKD
# datafree/models/generator.py): LargeGenerator's layers, ``project.1`` (after a Flatten) and ``main.N`` with
# the same indices as ``conv_blocks.N``.
_DCGAN_CIFAR10 = {"project.1": "l1.0", **{f"main.{i}": f"conv_blocks.{i}" for i in (0, 2, 3, 6, 7, 9)}}
KEY_SCHEMES: dict[str, dict[str, dict[str, str]]] = {
    "large": {"dcgan_cifar10": _DCGAN_CIFAR10},
    "lenet5": {"cmi": _LENET_CMI},
    "lenet5_half": {"cmi": _LENET_CMI},
    "lenet5_half_zskd": {"cmi": _LENET_CMI},
    "zskt": {"zskt": _ZSKT_GENERATOR},
}
CANONICAL_SCHEME = {"lenet5": "dfad", "lenet5_half": "dfad", "lenet5_half_zskd": "dfad", "zskt": "dafl",
                    "large": "cmi"}

_NUMERIC_SEGMENT = re.compile(r"_(?=\d+(?:_|$))")


def flax_name_to_torch(name: str) -> str:
    """``layer1_0`` -> ``layer1.0``; ``conv_blocks_2`` -> ``conv_blocks.2``; ``convShortcut`` unchanged."""
    return _NUMERIC_SEGMENT.sub(".", name)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One PyTorch tensor of a layout and where it goes in the Flax variables."""

    torch_key: str
    collection: str            # 'params' or 'batch_stats'
    flax_path: tuple[str, ...]  # path inside the collection
    torch_shape: tuple[Any, ...]  # ints, or 'K' (classes) / 'C' (input channels) in templates

    @property
    def is_conv_kernel(self) -> bool:
        return self.flax_path[-1] == "kernel" and len(self.torch_shape) == 4

    @property
    def is_dense_kernel(self) -> bool:
        return self.flax_path[-1] == "kernel" and len(self.torch_shape) == 2


def _torch_shape(flax_leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if flax_leaf == "kernel" and len(shape) == 4:
        kh, kw, i, o = shape
        return (o, i, kh, kw)
    if flax_leaf == "kernel" and len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def layout_from_variables(variables: Mapping[str, Any]) -> dict[str, Entry]:
    """``{torch_key: Entry}`` for a (shape-only) Flax variables tree."""
    out: dict[str, Entry] = {}
    for collection, tree in variables.items():
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        for path, leaf in flat:
            names = tuple(str(getattr(k, "key", k)) for k in path)
            torch_leaf = _LEAF_TO_TORCH.get((collection, names[-1]))
            if torch_leaf is None:
                raise ValueError(f"No PyTorch equivalent for variable {collection}/{'/'.join(names)}")
            key = ".".join([flax_name_to_torch(n) for n in names[:-1]] + [torch_leaf])
            out[key] = Entry(key, collection, names, _torch_shape(names[-1], tuple(leaf.shape)))
    return out


@functools.lru_cache(maxsize=None)
def classifier_template(arch: str) -> dict[str, Entry]:
    """Layout of ``arch`` with the class count written ``'K'`` and the input channels ``'C'``."""
    model = build_model(arch, _K_SENTINEL)
    x = jax.ShapeDtypeStruct((1, 32, 32, _C_SENTINEL), jnp.float32)
    variables = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), x)
    layout = layout_from_variables(variables)

    def symbolic(shape):
        return tuple("K" if d == _K_SENTINEL else "C" if d == _C_SENTINEL else d for d in shape)

    return {k: dataclasses.replace(e, torch_shape=symbolic(e.torch_shape)) for k, e in layout.items()}


def instantiate(template: Mapping[str, Entry], num_classes: int, in_channels: int) -> dict[str, Entry]:
    sub = {"K": num_classes, "C": in_channels}
    return {k: dataclasses.replace(e, torch_shape=tuple(sub.get(d, d) if isinstance(d, str) else d
                                                         for d in e.torch_shape))
            for k, e in template.items()}


def infer_free_dims(template: Mapping[str, Entry], state_dict: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Read the class count ``K`` and input channels ``C`` off the checkpoint where it has the keys."""
    found: dict[str, int] = {}
    for key, entry in template.items():
        if key not in state_dict or len(state_dict[key].shape) != len(entry.torch_shape):
            continue
        for axis, d in enumerate(entry.torch_shape):
            if isinstance(d, str) and d not in found:
                found[d] = int(state_dict[key].shape[axis])
    return found


# ---------------------------------------------------------------------------------------------
# Generators: their free dimensions (nz, ngf, channels, img_size) are read from named tensors.

# name -> (linear key, key of the first conv, key of the 2*ngf -> ngf conv, key of the output conv);
# for DFAD's GeneratorB (``dfad_b``) the second key is the first transposed conv, [8 ngf, 4 ngf, 4, 4].
_GENERATOR_KEYS = {
    "dafl": ("l1.0.weight", "conv_blocks1.0.weight", "conv_blocks2.0.weight", "conv_blocks2.3.weight"),
    "cmi": ("l1.0.weight", "conv_blocks.2.weight", "conv_blocks.6.weight", "conv_blocks.9.weight"),
    "large": ("l1.0.weight", "conv_blocks.2.weight", "conv_blocks.6.weight", "conv_blocks.9.weight"),
    "dfad_b": ("project.1.weight", "main.1.weight", None, "main.13.weight"),
    "zskt": ("l1.0.weight", "conv_blocks1.0.weight", "conv_blocks2.0.weight", "conv_blocks2.3.weight"),
}
_GENERATOR_DEFAULTS = {"dafl": dict(nz=100, ngf=64, channels=1, img_size=32),
                       "cmi": dict(nz=256, ngf=64, channels=3, img_size=32),
                       "large": dict(nz=256, ngf=64, channels=3, img_size=32),
                       "dfad_b": dict(nz=256, ngf=64, channels=3, img_size=128),
                       "zskt": dict(nz=100, ngf=64, channels=3, img_size=32)}
_GENERATOR_WIDTH = {"dafl": 2, "cmi": 2, "large": 4, "zskt": 2}  # channels of the linear layer's map, in ngf


def generator_config(state_dict: Mapping[str, np.ndarray], name: str) -> dict[str, int]:
    """``nz``, ``ngf``, ``channels``, ``img_size`` of a generator checkpoint (defaults where keys are absent)."""
    if name not in _GENERATOR_KEYS:
        raise ValueError(f"Unknown generator {name!r}. Valid names: {', '.join(sorted(_GENERATOR_KEYS))}.")
    lin, first, mid, last = _GENERATOR_KEYS[name]
    cfg = dict(_GENERATOR_DEFAULTS[name])
    if name == "dfad_b":  # Linear(nz -> 8 ngf (s/16)^2), square images
        if first in state_dict and np.ndim(state_dict[first]) == 4:
            cfg["ngf"] = int(state_dict[first].shape[0]) // 8
        if last in state_dict and np.ndim(state_dict[last]) == 4:
            cfg["channels"] = int(state_dict[last].shape[0])
        if lin in state_dict and np.ndim(state_dict[lin]) == 2:
            cfg["nz"] = int(state_dict[lin].shape[1])
            side = math.isqrt(max(int(state_dict[lin].shape[0]) // (8 * cfg["ngf"]), 1))
            if 8 * cfg["ngf"] * side * side == state_dict[lin].shape[0]:
                cfg["img_size"] = 16 * side
        return cfg
    if mid in state_dict and np.ndim(state_dict[mid]) == 4:
        cfg["ngf"] = int(state_dict[mid].shape[0])
    if last in state_dict and np.ndim(state_dict[last]) == 4:
        cfg["channels"] = int(state_dict[last].shape[0])
    if lin in state_dict and np.ndim(state_dict[lin]) == 2:
        cfg["nz"] = int(state_dict[lin].shape[1])
        width = _GENERATOR_WIDTH[name] * cfg["ngf"]
        side = math.isqrt(max(int(state_dict[lin].shape[0]) // width, 1))
        if side > 0 and width * side * side == state_dict[lin].shape[0]:
            cfg["img_size"] = 4 * side
    return cfg


@functools.lru_cache(maxsize=None)
def _generator_layout_cached(name: str, nz: int, ngf: int, channels: int, img_size: int) -> dict[str, Entry]:
    model = build_generator(name, nz=nz, ngf=ngf, channels=channels, img_size=img_size)
    z = jax.ShapeDtypeStruct((2, nz), jnp.float32)
    variables = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=True), z)
    return layout_from_variables(variables)


def generator_layout(name: str, cfg: Mapping[str, int]) -> dict[str, Entry]:
    return _generator_layout_cached(name, cfg["nz"], cfg["ngf"], cfg["channels"], cfg["img_size"])
