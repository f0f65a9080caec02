"""PyTorch state_dict -> Flax variables, for every registered classifier and both generators.

The core works on a plain ``dict[str, numpy.ndarray]`` and needs no torch:

- ``normalize_state_dict``: strip ``module.`` prefixes (DDP), drop ``num_batches_tracked``;
- ``detect_architecture``: the one registered model whose keys and shapes the checkpoint has;
- ``convert_state_dict``: rename and transpose into ``{'params': ..., 'batch_stats': ...}``,
  or raise ``CheckpointMismatchError`` listing missing, unexpected and mis-shaped PyTorch
  keys and the architectures that would fit.

``load_torch_state_dict`` (torch imported lazily) reads a ``.pt``/``.pth`` file in any of
the zoo wrappers (bare state_dict, ``{'state_dict': ...}``, ``module.``-prefixed keys);
``convert_checkpoint`` writes a teacher folder (``dfkd_jax.teacher``) from one.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Any, Mapping

import numpy as np

from dfkd_jax.convert import layout as L
from dfkd_jax.models import ARCHITECTURES, GENERATORS, SEGMENTATION, arch_name, parse_arch
from dfkd_jax.teacher import CheckpointMismatchError, describe_mismatch

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_MAX_LISTED = 20


# ---------------------------------------------------------------------------------------------
# Reading checkpoints


def _looks_like_torch_file(path: str) -> bool:
    """``torch.save`` writes a zip archive (``*/data.pkl``) or, in the legacy format, a pickle."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                return any(n.endswith("data.pkl") for n in zf.namelist())
        except zipfile.BadZipFile:
            return False
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _to_numpy(value) -> np.ndarray:
    import torch

    t = value.detach().cpu()
    if t.is_floating_point() and t.dtype != torch.float32:
        t = t.to(torch.float32)
    return t.numpy().copy()


def read_torch_file(path: str, trust_pickle: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(state_dict as numpy, scalar metadata of the wrapper such as ``epoch``/``arch``/``best_acc1``)."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("Reading PyTorch checkpoints needs torch: pip install 'dfkd_jax[torch]' "
                          "(torch==2.13.0, the CPU build is enough).") from e
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such checkpoint file: {path}")
    if not _looks_like_torch_file(path):
        raise ValueError(f"{path} is not a PyTorch checkpoint (not a file written by torch.save: "
                         "neither a torch zip archive nor a pickle).")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:
        msg = str(e)
        if "Unsupported global" in msg:
            raise ValueError(
                f"{path} holds Python objects besides tensors, which torch.load(weights_only=True) refuses "
                f"({msg.split('Unsupported global:')[-1].strip().splitlines()[0]}). If you trust the file, "
                "pass trust_pickle=True (--trust-pickle on the command line), or re-save just its state_dict."
            ) from e
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {msg[:300]})") from e

    extras: dict[str, Any] = {}
    if isinstance(obj, torch.nn.Module):  # a whole pickled model (only loadable with trust_pickle)
        obj, extras["wrapper"] = obj.state_dict(), "module"
    elif isinstance(obj, Mapping):
        for wrapper in _WRAPPER_KEYS:
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and any(torch.is_tensor(v) for v in inner.values()):
                for k, v in obj.items():
                    if isinstance(v, (int, float, str)):
                        extras[k] = v
                    elif torch.is_tensor(v) and v.numel() == 1:
                        extras[k] = v.item()
                extras["wrapper"] = wrapper
                obj = inner
                break
        else:
            extras["wrapper"] = "bare"
    if not isinstance(obj, Mapping) or not any(torch.is_tensor(v) for v in obj.values()):
        kind = type(obj).__name__
        keys = f" with keys {sorted(map(str, obj))[:10]}" if isinstance(obj, Mapping) else ""
        raise ValueError(f"{path} is not a model checkpoint: it holds a {kind}{keys}, not a state_dict of tensors "
                         f"(looked at the top level and under {', '.join(map(repr, _WRAPPER_KEYS))}).")
    state = {str(k): _to_numpy(v) for k, v in obj.items() if torch.is_tensor(v)}
    return state, extras


def load_torch_state_dict(path: str, trust_pickle: bool = False) -> dict[str, np.ndarray]:
    """The state_dict of a ``.pt``/``.pth`` file as ``{key: numpy array}`` (float tensors as float32).

    Accepts a bare state_dict or a ``{'state_dict': ...}`` wrapper (CMI/Fast); keys are
    returned as stored (``normalize_state_dict`` strips ``module.``). Loads with
    ``weights_only=True`` unless ``trust_pickle`` (only for files from a trusted source).
    Raises ``ValueError`` for a file that is not a PyTorch checkpoint.
    """
    return read_torch_file(path, trust_pickle)[0]


def normalize_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Strip ``module.`` prefixes (DDP/DataParallel, possibly nested) and drop ``num_batches_tracked``."""
    out: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        key = str(key)
        while key.startswith("module."):
            key = key[len("module."):]
        if key.endswith("num_batches_tracked"):
            continue
        if hasattr(value, "detach"):  # a torch tensor handed in directly
            value = _to_numpy(value)
        if key in out:
            raise ValueError(f"Key {key!r} appears both with and without the 'module.' prefix.")
        out[key] = np.asarray(value)
    return out


# ---------------------------------------------------------------------------------------------
# Matching a state_dict against an architecture


@dataclasses.dataclass
class Match:
    """How well a state_dict fits one model."""

    name: str
    scheme: str
    layout: dict[str, L.Entry]
    state_dict: dict[str, np.ndarray]  # renamed to the canonical scheme
    free_dims: dict[str, int]          # K (classes), C (input channels); generator config for generators
    missing: list[str]
    unexpected: list[str]
    misshaped: list[str]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.misshaped)

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.misshaped)

    def describe(self) -> str:
        if self.name in GENERATORS:
            return f"{self.name} (generator, {', '.join(f'{k}={v}' for k, v in self.free_dims.items())})"
        extra = f", {self.scheme} key scheme" if self.scheme != "canonical" and self.name in L.KEY_SCHEMES else ""
        return f"{self.name} ({self.free_dims.get('K')} classes{extra})"


def _rename(state_dict: Mapping[str, np.ndarray], aliases: Mapping[str, str]) -> dict[str, np.ndarray]:
    if not aliases:
        return dict(state_dict)
    out = {}
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")
        out[f"{aliases.get(module, module)}.{leaf}" if module else key] = value
    return out


def _diff(layout: Mapping[str, L.Entry], sd: Mapping[str, np.ndarray]):
    return describe_mismatch({k: e.torch_shape for k, e in layout.items()},
                             {k: tuple(np.shape(v)) for k, v in sd.items()})


def _schemes(name: str) -> list[tuple[str, dict[str, str]]]:
    canonical = L.CANONICAL_SCHEME.get(name, "canonical")
    return [(canonical, {})] + list(L.KEY_SCHEMES.get(name, {}).items())


def match(state_dict: Mapping[str, np.ndarray], name: str, num_classes: int | None = None,
          in_channels: int | None = None) -> Match:
    """Best fit of a normalised ``state_dict`` to model ``name`` (a classifier or a generator) over its key schemes."""
    best: Match | None = None
    for scheme, aliases in _schemes(name):
        sd = _rename(state_dict, aliases)
        if name in GENERATORS:
            dims = L.generator_config(sd, name)
            layout = L.generator_layout(name, dims)
        else:
            template = L.classifier_template(name)
            inferred = L.infer_free_dims(template, sd)
            dims = {"K": num_classes or inferred.get("K", 10), "C": in_channels or inferred.get("C", 3)}
            layout = L.instantiate(template, dims["K"], dims["C"])
        m = Match(name, scheme, layout, sd, dims, *_diff(layout, sd))
        if best is None or m.problems < best.problems:
            best = m
        if m.ok:
            break
    assert best is not None
    return best


def _all_names(include_generators: bool = True) -> list[str]:
    """The models a checkpoint can be matched against: classifiers, and the generators that have a
    PyTorch key layout (``dafl_sn`` is a dfkd_jax-trained variant with none)."""
    gens = sorted(name for name in GENERATORS if name in L._GENERATOR_KEYS) if include_generators else []
    return sorted(ARCHITECTURES) + gens


def _width_candidates(state_dict: Mapping[str, np.ndarray]) -> list[str]:
    """Segmentation models at the width multipliers a ``backbone.*``/``classifier.*`` checkpoint suggests:
    the ASPP width over 256, the ResNet stem over 64, the MobileNetV2 stem over 32 (tried, not trusted)."""
    widths = set()
    for key, base in (("convs.0.0.weight", 256), ("backbone.conv1.weight", 64), ("backbone.features.0.0.weight", 32),
                      ("backbone.low_level_features.0.0.weight", 32)):
        for k, v in state_dict.items():
            if k.endswith(key) and np.ndim(v) == 4:
                widths.add(round(v.shape[0] / base, 6))
    return [arch_name(name, m) for name in sorted(SEGMENTATION) for m in sorted(widths) if m != 1.0]


def _ranked(state_dict: Mapping[str, np.ndarray], include_generators: bool = True) -> list[Match]:
    """Best match of every registered model, closest first (exact fits have no problems)."""
    names = _all_names(include_generators) + _width_candidates(state_dict)
    matches = [match(state_dict, name) for name in names]
    return sorted(matches, key=lambda m: (m.problems, m.name))


def fitting_models(state_dict: Mapping[str, np.ndarray], include_generators: bool = True) -> list[Match]:
    """Every registered model whose keys and shapes the (normalised) state_dict has exactly."""
    return [m for m in _ranked(state_dict, include_generators) if m.ok]


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED] + ([f"... and {len(items) - _MAX_LISTED} more"] if len(items) > _MAX_LISTED else [])
    return f"  {title} ({len(items)}): " + ", ".join(shown)


def detect_architecture(state_dict: Mapping[str, Any], include_generators: bool = True) -> str:
    """The registered architecture (or generator) whose PyTorch keys and shapes ``state_dict`` has.

    Raises ``CheckpointMismatchError`` naming the closest candidates when none fits exactly,
    or the candidates when several do.
    """
    sd = normalize_state_dict(state_dict)
    if not sd:
        raise CheckpointMismatchError("The state_dict is empty: nothing to detect an architecture from.")
    ranked = _ranked(sd, include_generators)
    fits = [m for m in ranked if m.ok]
    if len(fits) == 1:
        return fits[0].name
    if len(fits) > 1:
        raise CheckpointMismatchError(
            "The checkpoint fits several architectures: " + ", ".join(m.describe() for m in fits)
            + ". Name the one you mean explicitly (arch=... / --arch).")
    closest = ranked[:3]
    lines = [f"No registered architecture has exactly this checkpoint's {len(sd)} keys and shapes. Closest candidates:"]
    for m in closest:
        lines.append(f"  {m.describe()}: {len(m.missing)} missing, {len(m.unexpected)} unexpected, "
                     f"{len(m.misshaped)} mis-shaped PyTorch keys")
    best = closest[0]
    for title, items in (("missing for " + best.name, best.missing), ("unexpected for " + best.name, best.unexpected),
                         ("mis-shaped for " + best.name, best.misshaped)):
        if items:
            lines.append(_listing(title, items))
    lines.append("Registered: " + ", ".join(_all_names(include_generators)) + ".")
    raise CheckpointMismatchError("\n".join(lines))


def _mismatch_error(m: Match, state_dict: Mapping[str, np.ndarray], num_classes: int | None) -> CheckpointMismatchError:
    what = "generator" if m.name in GENERATORS else "architecture"
    dims = (", ".join(f"{k}={v}" for k, v in m.free_dims.items()) if m.name in GENERATORS
            else f"{m.free_dims['K']} classes, {m.free_dims['C']} input channels")
    lines = [f"The PyTorch checkpoint does not fit {what} {m.name!r} ({dims}; key scheme {m.scheme!r})."]
    for title, items in (("missing PyTorch keys", m.missing), ("unexpected PyTorch keys", m.unexpected),
                         ("mis-shaped PyTorch keys", m.misshaped)):
        if items:
            lines.append(_listing(title, items))
    if m.name not in GENERATORS and num_classes is not None:
        inferred = L.infer_free_dims(L.classifier_template(m.name), m.state_dict).get("K")
        if inferred is not None and inferred != num_classes:
            lines.append(f"  the checkpoint's head has {inferred} classes, not the {num_classes} asked for.")
    ranked = _ranked(state_dict)
    fits, closest = [c for c in ranked if c.ok], ranked[:3]
    lines.append("  architectures whose keys would fit: "
                 + (", ".join(f.describe() for f in fits) if fits else "none registered"
                    + " (closest: " + ", ".join(c.describe() for c in closest) + ")") + ".")
    return CheckpointMismatchError("\n".join(lines))


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _variables(m: Match) -> dict[str, dict]:
    variables: dict[str, dict] = {}
    for key, entry in m.layout.items():
        a = np.asarray(m.state_dict[key], dtype=np.float32)
        if entry.is_conv_kernel:
            a = a.transpose(2, 3, 1, 0)
        elif entry.is_dense_kernel:
            a = a.T
        _set(variables.setdefault(entry.collection, {}), entry.flax_path, np.ascontiguousarray(a))
    return variables


def convert_with_info(state_dict: Mapping[str, Any], arch: str, num_classes: int | None = None) -> tuple[dict, Match]:
    """``convert_state_dict`` that also returns the ``Match`` (key scheme, classes, input channels)."""
    if arch not in GENERATORS:
        try:
            parse_arch(arch)
        except ValueError:
            raise ValueError(f"Unknown architecture {arch!r}. Valid names: {', '.join(_all_names())} "
                             "(segmentation models also as NAME@WIDTH).") from None
    sd = normalize_state_dict(state_dict)
    m = match(sd, arch, num_classes=num_classes)
    if not m.ok:
        raise _mismatch_error(m, sd, num_classes)
    return _variables(m), m


def convert_state_dict(state_dict: Mapping[str, Any], arch: str, num_classes: int | None = None) -> dict[str, dict]:
    """Flax variables (``{'params': ..., 'batch_stats': ...}``, numpy float32) of a PyTorch state_dict.

    ``arch`` is a name of ``dfkd_jax.models.ARCHITECTURES`` (LeNet-5 checkpoints in the DFAD
    ``conv1..fc2`` or the CMI/Fast ``features.N``/``fc.N`` scheme) or of ``GENERATORS``
    (``'dafl'``, ``'cmi'``; build the module with ``generator_config(state_dict, arch)``).
    ``num_classes`` is read from the head when ``None``. Any missing, unexpected or mis-shaped
    key raises ``CheckpointMismatchError``.
    """
    return convert_with_info(state_dict, arch, num_classes)[0]


def generator_config(state_dict: Mapping[str, Any], name: str) -> dict[str, int]:
    """``{'nz', 'ngf', 'channels', 'img_size'}`` of a DAFL (``'dafl'``), CMI (``'cmi'``, ``'large'``), ZSKT
    (``'zskt'``) or DFAD GeneratorB (``'dfad_b'``) generator checkpoint."""
    sd = normalize_state_dict(state_dict)
    if name in L.KEY_SCHEMES:  # read the dimensions under the key scheme the checkpoint has (ZSKT's ``layers.N``)
        return dict(match(sd, name).free_dims)
    return L.generator_config(sd, name)


def count_parameters(variables: Mapping[str, Any]) -> int:
    import jax

    return int(sum(np.size(x) for x in jax.tree.leaves(variables.get("params", {}))))
