"""PyTorch checkpoint file -> teacher folder (``dfkd_jax.teacher`` format).

A file ``torch.load(weights_only=True)`` refuses is explained in one message of our own
(``load_error_message``), never PyTorch's text cut short: a pickle that would run code on loading (a
"global" weights-only loading blocks) is named with what it would call; a file whose pickle or zip
archive cannot be decoded is called damaged, with no suggestion to load it with ``weights_only=False``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Mapping

from dfkd_jax.convert.torch_to_flax import (read_torch_file, convert_with_info, count_parameters,
                                            detect_architecture, normalize_state_dict)
from dfkd_jax.data.specs import get_spec
from dfkd_jax.models import GENERATORS
from dfkd_jax.teacher import CheckpointMismatchError, TeacherMeta, check_variables, save_teacher


def load_error_message(path: str, error: BaseException) -> str:
    """One message for a ``torch.load`` failure on ``path``: what is wrong with the file and what to do."""
    text = str(error)
    blocked = re.search(r"[Uu]nsupported GLOBAL (\S+)(?: whose module (\S+) is blocked)?", text) or \
        re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if blocked and blocked.lastindex and blocked.lastindex > 1 and blocked.group(2):
        return (f"{path} was refused: loading it would call {blocked.group(1)} (module {blocked.group(2)}, which "
                "safe loading blocks: a pickle that runs code). Nothing was run. Do not load it with trust_pickle "
                "(--trust-pickle) unless you know exactly where it came from; ask for a file saved with "
                "torch.save(model.state_dict()).")
    if blocked:
        return (f"{path} holds a Python object besides tensors ({blocked.group(1)}), which safe (weights-only) "
                "loading refuses. If you made the file or trust its source, pass trust_pickle=True "
                "(--trust-pickle); or re-save just its state_dict.")
    unpickler = re.search(r"WeightsUnpickler error: \s*(.+?)\s*(?:\n|$)", text)
    if unpickler or isinstance(error, __import__("pickle").UnpicklingError):
        detail = unpickler.group(1).rstrip(".") if unpickler else type(error).__name__
        return (f"{path} is damaged or is not a PyTorch checkpoint: its pickle cannot be decoded ({detail}). "
                "Download or save it again.")
    lines = [x.strip() for x in text.splitlines() if x.strip() and not x.startswith("Check the documentation")]
    detail = lines[0] if lines else type(error).__name__
    return (f"{path} is damaged or is not a PyTorch checkpoint ({type(error).__name__}: {detail}). "
            "Download or save it again.")


@dataclasses.dataclass
class ConversionResult:
    out_dir: str
    arch: str
    num_classes: int
    num_params: int
    key_scheme: str
    detected: bool  # the architecture was detected rather than given
    meta: TeacherMeta


def convert_checkpoint(src: str | Mapping[str, Any], out_dir: str, arch: str | None = None, dataset: str = "cifar10",
                       normalization: str | None = None, num_classes: int | None = None,
                       trust_pickle: bool = False, test_accuracy: float | None = None) -> ConversionResult:
    """Convert a PyTorch teacher checkpoint (a file path, or an in-memory state_dict) into a teacher folder.

    ``arch`` is detected from the keys and shapes when ``None``. ``dataset`` sets the input
    shape and the class count the head must have; ``normalization`` names the dataset whose
    mean/std the teacher was trained with (default ``dataset``; e.g. ``'cifar10'`` for DFAD's
    CIFAR-100 ResNet-34). The metadata records both, the key scheme, the wrapper and the
    scalars stored beside the state_dict (``epoch``, ``arch``, ``best_acc1``).
    """
    if isinstance(src, (str, os.PathLike)):
        try:
            state, extras = read_torch_file(os.fspath(src), trust_pickle)
        except ValueError as e:
            if e.__cause__ is None:  # our own message (not a torch checkpoint, no tensors): already clear
                raise
            raise ValueError(load_error_message(os.fspath(src), e.__cause__)) from e.__cause__
        source = os.path.abspath(os.fspath(src))
    else:
        state, extras, source = dict(src), {}, "<state_dict>"
    if any(str(k).startswith("module.") for k in state):
        extras["module_prefix"] = True
    state = normalize_state_dict(state)
    spec = get_spec(dataset)
    norm_spec = get_spec(normalization or dataset)
    if len(norm_spec.mean) != spec.image_shape[-1]:
        raise ValueError(f"Normalisation {norm_spec.name!r} has {len(norm_spec.mean)} channel(s) but dataset "
                         f"{dataset!r} has {spec.image_shape[-1]}.")

    detected = arch is None
    if detected:
        arch = detect_architecture(state, include_generators=False)
    elif arch in GENERATORS:
        raise ValueError(f"{arch!r} is a generator; convert_checkpoint writes teachers (classifiers). "
                         "Use dfkd_jax.convert.convert_state_dict for generators.")
    variables, m = convert_with_info(state, arch, num_classes)
    k, c = m.free_dims["K"], m.free_dims["C"]
    if c != spec.image_shape[-1]:
        raise CheckpointMismatchError(
            f"The {arch} checkpoint takes {c}-channel inputs but dataset {dataset!r} gives {spec.image_shape[-1]} "
            "channels. Pick the matching dataset variant (e.g. fashion_mnist32x3 for a 3-channel teacher).")
    if k != spec.num_classes:
        raise CheckpointMismatchError(
            f"The {arch} checkpoint has {k} classes but dataset {dataset!r} has {spec.num_classes}. "
            "Pick the dataset the teacher was trained on (--dataset).")
    check_variables(arch, k, spec.image_shape, variables)

    extra: dict[str, Any] = {"converted_from": "pytorch", "key_scheme": m.scheme,
                             "torch_keys": len(state)}
    extra.update({f"checkpoint_{key}": v for key, v in extras.items()
                  if isinstance(v, (int, float, str, bool)) and key != "optimizer"})
    meta = TeacherMeta(arch=arch, dataset=dataset, num_classes=k, input_shape=spec.image_shape,
                       mean=norm_spec.mean, std=norm_spec.std, normalization=norm_spec.name,
                       test_accuracy=test_accuracy, source=source, extra=extra)
    out = save_teacher(out_dir, variables, meta)
    return ConversionResult(out, arch, k, count_parameters(variables), m.scheme, detected, meta)
