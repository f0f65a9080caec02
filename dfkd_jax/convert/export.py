"""Flax variables -> PyTorch state_dict in the key layout of a published zoo (the inverse of the converter).

    from dfkd_jax.convert import export_checkpoint
    export_checkpoint("teachers/fashion_mnist_lenet5", "lenet5.pt", zoo="dfad")   # a teacher folder
    export_checkpoint("runs/dfad", "student.pth", zoo="cmi")                      # a run's student

or ``python tools/export_torch_checkpoint.py SRC --zoo NAME --out FILE``.

The mapping is the converter's (``dfkd_jax.convert.layout``), run backwards: the PyTorch key of every
Flax variable is read off ``layout_from_variables``, conv kernels go back from ``[kh, kw, I, O]`` to
``[O, I, kh, kw]`` (transposed convs likewise, the converter stores them the same way), dense kernels
are transposed, and the LeNet-5s are renamed into the zoo's scheme (``KEY_SCHEMES``: CMI/Fast's
``features.N``/``fc.N``). So every architecture the converter reads is exportable, and an exported file
converts back to the same variables. Each BatchNorm also gets PyTorch's ``num_batches_tracked``
buffer (an int64 counter the converter drops; it is written as ``batches_tracked``, 0 by default),
so ``load_state_dict(strict=True)`` accepts the file.

Zoos (``ZOOS``): how the authors' scripts save and load a network --
``dfad`` (VainF/Data-Free-Adversarial-Distillation: a bare state_dict, ``torch.save(model.state_dict())``,
LeNets as ``conv1``..``fc2``), ``cmi``/``fast`` (zju-vipa/CMI, zju-vipa/Fast-Datafree: a
``{'state_dict': ...}`` dict, read back by ``torch.load(...)['state_dict']``, LeNets as ``features.N``/
``fc.N``), ``datafree``/``dfkd`` (ljrprocc/DataFree, ljrprocc/DFKD: CMI's layout) and ``flat`` (a bare
state_dict in the canonical keys). ``module_prefix=True`` writes DDP's ``module.`` keys.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import warnings
from typing import Any, Mapping

import jax
import numpy as np

from dfkd_jax.convert import layout as L
from dfkd_jax.errors import UserError
from dfkd_jax.models import GENERATORS
from dfkd_jax.teacher import CheckpointMismatchError, describe_mismatch


@dataclasses.dataclass(frozen=True)
class Zoo:
    """How one published code base stores a network."""

    wrapper: str  # 'bare' (the state_dict itself) or 'state_dict' ({'state_dict': sd, ...})
    lenet_scheme: str  # key scheme of the LeNet-5s: 'dfad' (conv1..fc2) or 'cmi' (features.N/fc.N)


ZOOS: dict[str, Zoo] = {
    "dfad": Zoo("bare", "dfad"),
    "cmi": Zoo("state_dict", "cmi"),
    "fast": Zoo("state_dict", "cmi"),
    "datafree": Zoo("state_dict", "cmi"),
    "dfkd": Zoo("state_dict", "cmi"),
    "flat": Zoo("bare", "dfad"),
}


class ExportError(UserError, ValueError):
    """Something that cannot be exported as asked (an unknown zoo, a folder that holds no network)."""


def _scheme_aliases(arch: str, scheme: str) -> dict[str, str]:
    """``{canonical module prefix: the scheme's prefix}`` (the inverse of ``KEY_SCHEMES[arch][scheme]``)."""
    schemes = L.KEY_SCHEMES.get(arch, {})
    if scheme not in schemes:
        return {}  # architectures with a single layout: every zoo names them the same way
    return {canonical: theirs for theirs, canonical in schemes[scheme].items()}


def _to_torch_array(entry: L.Entry, value) -> np.ndarray:
    a = np.asarray(jax.device_get(value), dtype=np.float32)
    if entry.is_conv_kernel:
        a = a.transpose(3, 2, 0, 1)  # [kh, kw, I, O] -> [O, I, kh, kw] (inverse of transpose(2, 3, 1, 0))
    elif entry.is_dense_kernel:
        a = a.T
    return np.ascontiguousarray(a)


def _check_architecture(arch: str, layout: Mapping[str, L.Entry]) -> None:
    """The variables' PyTorch keys and shapes must be ``arch``'s (at their own class and channel counts)."""
    found = {k: e.torch_shape for k, e in layout.items()}
    if arch in GENERATORS:
        as_torch = {k: np.empty(s, np.float32) for k, s in found.items()}
        try:
            expected = L.generator_layout(arch, L.generator_config(as_torch, arch))
        except Exception as e:  # noqa: BLE001 - a generator that cannot be built at these sizes
            raise CheckpointMismatchError(f"The variables are not a {arch!r} generator ({e}).") from None
    else:
        template = L.classifier_template(arch)
        dims = L.infer_free_dims(template, {k: np.empty(s, np.float32) for k, s in found.items()})
        expected = L.instantiate(template, dims.get("K", 10), dims.get("C", 3))
    missing, unexpected, misshaped = describe_mismatch({k: e.torch_shape for k, e in expected.items()}, found)
    if missing or unexpected or misshaped:
        parts = [f"{t} ({len(v)}): {', '.join(v[:8])}" for t, v in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if v]
        raise CheckpointMismatchError(f"The variables do not fit architecture {arch!r}: " + "; ".join(parts)
                                      + ". Name the architecture they were made with.")


def variables_to_state_dict(variables: Mapping[str, Any], arch: str, zoo: str = "flat",
                            module_prefix: bool = False, batches_tracked: int = 0) -> dict[str, np.ndarray]:
    """PyTorch ``{key: numpy array}`` of Flax ``variables`` (``{'params': ..., 'batch_stats': ...}``) of ``arch``.

    ``zoo`` picks the key scheme (``ZOOS``; only the LeNet-5s differ between zoos); ``module_prefix``
    prepends DDP's ``module.``; every BatchNorm gets ``num_batches_tracked`` = ``batches_tracked`` (int64).
    Float tensors are float32. ``torch.from_numpy`` of each value is a loadable state_dict.
    """
    if zoo not in ZOOS:
        raise ExportError(f"Unknown zoo {zoo!r}. Valid zoos: {', '.join(sorted(ZOOS))}.")
    variables = {c: variables[c] for c in ("params", "batch_stats") if variables.get(c)}
    layout = L.layout_from_variables(variables)
    _check_architecture(arch, layout)
    aliases = _scheme_aliases(arch, ZOOS[zoo].lenet_scheme)
    out: dict[str, np.ndarray] = {}
    for key, entry in layout.items():
        tree = variables[entry.collection]
        for name in entry.flax_path:
            tree = tree[name]
        module, _, leaf = key.rpartition(".")
        out[f"{aliases.get(module, module)}.{leaf}"] = _to_torch_array(entry, tree)
        if leaf == "running_var":
            out[f"{aliases.get(module, module)}.num_batches_tracked"] = np.asarray(batches_tracked, np.int64)
    if module_prefix:
        out = {f"module.{k}": v for k, v in out.items()}
    return out


# ---------------------------------------------------------------------------------------------
# Sources: a teacher folder, or a run's workdir (its newest checkpoint's student)


@dataclasses.dataclass
class Exported:
    path: str
    arch: str
    kind: str  # 'teacher' or 'student'
    keys: int
    num_params: int
    round: int | None = None  # the checkpoint's round, for a run's student


def _latest_step(checkpoints: str) -> int | None:
    steps = [int(os.path.basename(p)) for p in glob.glob(os.path.join(checkpoints, "*"))
             if os.path.basename(p).isdigit() and os.path.isdir(os.path.join(p, "state"))]
    return max(steps) if steps else None


def run_student(workdir: str, step: int | None = None) -> tuple[dict[str, Any], str, int]:
    """``(variables, arch, round)`` of the student in a run's checkpoint (the newest unless ``step``)."""
    import orbax.checkpoint as ocp

    with open(os.path.join(workdir, "config.json")) as f:
        arch = json.load(f)["student"]["arch"]
    checkpoints = os.path.join(workdir, "checkpoints")
    step = _latest_step(checkpoints) if step is None else int(step)
    path = os.path.join(checkpoints, str(step), "state") if step is not None else ""
    if not os.path.isdir(path):
        raise ExportError(f"No checkpoint{'' if step is None else f' of round {step}'} in {checkpoints}: "
                          "the run has not saved one yet (train.checkpoint_every).")
    with ocp.PyTreeCheckpointer() as ckptr, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sharding info not provided")  # restored to the host: no sharding
        student = ckptr.restore(path)["student"]  # no target: the stored tree as nested dicts of numpy arrays
    return {c: jax.tree.map(np.asarray, student[c]) for c in ("params", "batch_stats") if student.get(c)}, arch, step


def export_checkpoint(src: str, out: str, zoo: str = "flat", module_prefix: bool = False,
                      step: int | None = None, batches_tracked: int = 0,
                      extra: Mapping[str, Any] | None = None) -> Exported:
    """Write the network in ``src`` (a teacher folder, or a run's workdir: its student) as a PyTorch file.

    The file is ``torch.save`` of the state_dict (torch tensors) wrapped as ``zoo`` stores it, written
    beside ``out`` and renamed over it when complete (an existing ``out`` is replaced whole); for a
    ``{'state_dict': ...}`` zoo, ``extra`` scalars (``epoch``, ``arch``, ``best_acc1``...) go beside it.
    """
    import torch

    from dfkd_jax.teacher import is_teacher_dir, load_teacher

    src = os.path.abspath(src)
    if zoo not in ZOOS:
        raise ExportError(f"Unknown zoo {zoo!r}. Valid zoos: {', '.join(sorted(ZOOS))}.")
    round_ = None
    if is_teacher_dir(src):
        teacher = load_teacher(src)
        variables, arch, kind = teacher.variables, teacher.meta.arch, "teacher"
    elif os.path.isfile(os.path.join(src, "config.json")) and os.path.isdir(os.path.join(src, "checkpoints")):
        variables, arch, round_ = run_student(src, step)
        kind = "student"
    else:
        raise ExportError(f"{src} is neither a teacher folder (teacher.json + variables/) nor a run's workdir "
                          "(config.json + checkpoints/).")
    sd = variables_to_state_dict(variables, arch, zoo, module_prefix, batches_tracked)
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
    obj: Any = tensors
    if ZOOS[zoo].wrapper == "state_dict":
        obj = {"state_dict": tensors, **dict(extra or {})}
    out = os.path.abspath(out)
    if os.path.isdir(out):
        raise ExportError(f"--out {out} is a folder: name the .pt/.pth file to write.")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    partial = f"{out}.partial-{os.getpid()}"  # written beside, renamed into place: a kill leaves no half file at out
    try:
        torch.save(obj, partial)
        os.replace(partial, out)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    n = int(sum(np.size(x) for x in jax.tree.leaves(variables.get("params", {}))))
    return Exported(out, arch, kind, len(sd), n, round_)
