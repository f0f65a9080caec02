"""Teacher checkpoints: a folder with ``teacher.json`` (metadata) and ``variables/`` (orbax).

Everything that made a teacher (trained here by ``train_teacher`` or converted from a
PyTorch checkpoint by ``dfkd_jax.convert``) is written in this one format, and the
engine reads only this format. The metadata records how inputs must be normalised,
which is not always the dataset's own constants (DFAD's CIFAR-100 teacher was
trained with the CIFAR-10 ones).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from dfkd_jax.errors import TeacherNotFoundError, UserError
from dfkd_jax.models import ARCHITECTURES, build_model

META_FILE = "teacher.json"
VARIABLES_DIR = "variables"


@dataclasses.dataclass
class TeacherMeta:
    arch: str
    dataset: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (H, W, C) of the normalised model input
    mean: tuple[float, ...]
    std: tuple[float, ...]
    normalization: str = ""  # dataset whose constants ``mean``/``std`` are; defaults to ``dataset``
    test_accuracy: float | None = None
    source: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.input_shape = tuple(int(v) for v in self.input_shape)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        self.normalization = self.normalization or self.dataset

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TeacherMeta":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclasses.dataclass
class Teacher:
    model: Any
    variables: dict[str, Any]
    meta: TeacherMeta


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint whose keys or shapes do not fit the chosen architecture."""


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(np.shape(v)) for path, v in flat}


def expected_shapes(arch: str, num_classes: int, input_shape) -> dict[str, tuple[int, ...]]:
    """Flattened ``{'params/conv1/kernel': shape, ...}`` of ``arch``'s variables."""
    model = build_model(arch, num_classes)
    x = jnp.zeros((1, *input_shape), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    return _flat_shapes(variables)


def describe_mismatch(expected: dict, found: dict) -> tuple[list, list, list]:
    missing = sorted(k for k in expected if k not in found)
    unexpected = sorted(k for k in found if k not in expected)
    misshaped = sorted(f"{k}: checkpoint {found[k]} vs model {expected[k]}"
                       for k in expected if k in found and tuple(found[k]) != tuple(expected[k]))
    return missing, unexpected, misshaped


def matching_architectures(found: dict, num_classes: int, input_shape) -> list[str]:
    """Names of the registered architectures whose variables have exactly ``found``'s keys and shapes."""
    fits = []
    for arch in sorted(ARCHITECTURES):
        try:
            exp = expected_shapes(arch, num_classes, input_shape)
        except Exception:  # an architecture that cannot take this input shape
            continue
        if exp == {k: tuple(v) for k, v in found.items()}:
            fits.append(arch)
    return fits


def check_variables(arch: str, num_classes: int, input_shape, variables) -> None:
    """Raise ``CheckpointMismatchError`` listing what differs, and which architectures would fit."""
    expected = expected_shapes(arch, num_classes, input_shape)
    found = _flat_shapes(variables)
    missing, unexpected, misshaped = describe_mismatch(expected, found)
    if not (missing or unexpected or misshaped):
        return
    fits = matching_architectures(found, num_classes, input_shape)
    lines = [f"The teacher variables do not fit architecture {arch!r} ({num_classes} classes, input {tuple(input_shape)})."]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
            lines.append(f"  {title} ({len(items)}): " + ", ".join(shown))
    lines.append("  architectures whose variables would fit: " + (", ".join(fits) if fits else "none registered")
                 + ". Fix the architecture name (or the number of classes) in the config or the converter call.")
    raise CheckpointMismatchError("\n".join(lines))


class TeacherFolderError(UserError, OSError):
    """A teacher folder that is damaged, incomplete, or a folder of something else."""


def check_writable_teacher_folder(directory: str) -> None:
    """Refuse to write a teacher into ``directory`` when it exists, holds files, and is not a complete teacher
    folder (a teacher folder is replaced as a whole; anything else is someone's data)."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise TeacherFolderError(f"{directory} is a file, not a teacher folder. Choose a new folder.")
    if os.path.isdir(directory) and os.listdir(directory) and not is_teacher_dir(directory):
        raise TeacherFolderError(
            f"{directory} already holds files but is not a complete teacher folder ({describe_folder(directory)}). "
            "Nothing was written there. Choose a new folder, or restore the missing files.")


def describe_folder(directory: str) -> str:
    """What a teacher folder has and lacks, for messages."""
    has_meta = os.path.isfile(os.path.join(directory, META_FILE))
    has_vars = os.path.isdir(os.path.join(directory, VARIABLES_DIR))
    if has_vars and not has_meta:
        return f"it has {VARIABLES_DIR}/ but no {META_FILE}"
    if has_meta and not has_vars:
        return f"it has {META_FILE} but no {VARIABLES_DIR}/"
    names = sorted(os.listdir(directory))
    return "it holds " + ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def save_teacher(directory: str, variables, meta: TeacherMeta) -> str:
    """Write ``variables`` (``{'params': ..., 'batch_stats': ...}``) and ``meta`` to ``directory``.

    The folder appears whole or not at all: it is written beside the target and renamed into place (a
    teacher folder already there is replaced; a folder of anything else is refused, ``check_writable_teacher_folder``).
    The calling process writes alone, with no barrier: in a multi-process run only process 0 saves a teacher it
    trained while the others wait at ``obtain_teacher``'s barrier (orbax's default save would wait for them).
    """
    import shutil
    directory = os.path.abspath(directory)
    check_writable_teacher_folder(directory)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(directory)}.writing-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    variables = jax.tree.map(lambda a: np.asarray(jax.device_get(a)), dict(variables))
    alone = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(), active_processes={jax.process_index()})
    with ocp.StandardCheckpointer(multiprocessing_options=alone) as ckptr:
        ckptr.save(os.path.join(staging, VARIABLES_DIR), variables, force=True)
        ckptr.wait_until_finished()
    with open(os.path.join(staging, META_FILE), "w") as f:
        json.dump(meta.to_json(), f, indent=2)
    old = None
    if os.path.isdir(directory):  # an existing teacher (checked above) or an empty folder
        old = os.path.join(parent, f".{os.path.basename(directory)}.replaced-{os.getpid()}")
        os.replace(directory, old)
    os.replace(staging, directory)
    if old:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def is_teacher_dir(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, META_FILE)) and os.path.isdir(os.path.join(directory, VARIABLES_DIR))


def load_teacher(directory: str, dtype: Any = jnp.float32) -> Teacher:
    """Read a teacher written by ``save_teacher``; verify its variables fit its architecture."""
    directory = os.path.abspath(directory)
    if not is_teacher_dir(directory):
        found = f": {describe_folder(directory)}" if os.path.isdir(directory) and os.listdir(directory) else ""
        raise TeacherNotFoundError(
            f"No teacher checkpoint at {directory} (expected {META_FILE} and {VARIABLES_DIR}/{found}). "
            "Train one with `python tools/train_teacher.py --dataset NAME --arch NAME --out DIR`, or convert a "
            "PyTorch checkpoint with `python tools/convert_torch_checkpoint.py SRC --arch NAME --dataset NAME --out DIR`.")
    meta_file = os.path.join(directory, META_FILE)
    try:
        with open(meta_file) as f:
            meta = TeacherMeta.from_json(json.load(f))
    except (ValueError, TypeError, AttributeError) as e:  # not JSON, or not the fields of a TeacherMeta
        raise TeacherFolderError(f"{meta_file} is damaged ({type(e).__name__}: {e}). Restore it from where the "
                                 "teacher came from, or convert / train the teacher again.") from None
    from dfkd_jax.engine.checkpoint import unreadable
    try:
        damage = unreadable(os.path.join(directory, VARIABLES_DIR))
        if damage:
            raise ValueError(damage)
        with ocp.StandardCheckpointer() as ckptr:
            variables = ckptr.restore(os.path.join(directory, VARIABLES_DIR))
    except Exception as e:  # noqa: BLE001 - orbax / tensorstore on a damaged or truncated file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise TeacherFolderError(f"The teacher variables in {os.path.join(directory, VARIABLES_DIR)} cannot be read "
                                 f"({first}). The folder is damaged: copy it again, or convert / train the teacher "
                                 "again.") from None
    variables = jax.tree.map(np.asarray, variables)
    check_variables(meta.arch, meta.num_classes, meta.input_shape, variables)
    return Teacher(build_model(meta.arch, meta.num_classes, dtype=dtype), variables, meta)
