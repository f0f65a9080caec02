"""Read CIFAR-10/100 from the "python version" distribution, with numpy only.

`cifar-10-python.tar.gz` holds `cifar-10-batches-py/data_batch_1..5` and
`test_batch`; `cifar-100-python.tar.gz` holds `cifar-100-python/train` and
`test`. Each is a pickled dict with b'data' (N x 3072 uint8, each row the
red, green and blue 32x32 planes: CHW order) and b'labels' (CIFAR-10) or
b'fine_labels' (CIFAR-100). Both the tarball and its extracted folder are read.

The pickles are loaded with an unpickler that only builds numpy arrays, so a
tampered download cannot run code.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import BinaryIO

import numpy as np


@dataclasses.dataclass(frozen=True)
class CifarLayout:
    archive: str  # tarball name
    folder: str  # top folder inside the tarball
    members: dict[str, tuple[str, ...]]  # split -> pickle files in that folder
    label_key: bytes


LAYOUTS = {
    "cifar10": CifarLayout(
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        members={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        label_key=b"labels",
    ),
    "cifar100": CifarLayout(
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        members={"train": ("train",), "test": ("test",)},
        label_key=b"fine_labels",
    ),
}

# Globals a CIFAR pickle may name: the ones a pickled numpy array needs. The
# original files (Python 2, numpy 1) name numpy.core; numpy 2 writes numpy._core.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"CIFAR pickle refers to {module}.{name}: refused") from None


def load_pickle(f: BinaryIO) -> dict:
    """Loads one CIFAR batch pickle (keys stay bytes, as in the Python 2 originals)."""
    return _NumpyOnlyUnpickler(f, encoding="bytes").load()


def find_cifar(folder: os.PathLike | str, which: str) -> Path | None:
    """Returns the tarball or extracted folder of `which` found in `folder`, or None.

    Accepts `folder/<archive>`, `folder/<extracted folder>` or `folder` being the
    extracted folder itself.
    """
    layout, folder = LAYOUTS[which], Path(folder)
    first_member = layout.members["train"][0]
    for candidate in (folder / layout.folder, folder):
        if (candidate / first_member).is_file():
            return candidate
    if (folder / layout.archive).is_file():
        return folder / layout.archive
    return None


def _read_members(source: Path, layout: CifarLayout, names: tuple[str, ...]) -> list[dict]:
    if source.is_dir():
        out = []
        for name in names:
            with open(source / name, "rb") as f:
                out.append(load_pickle(f))
        return out
    with tarfile.open(source, "r:*") as tar:
        return [load_pickle(io.BytesIO(tar.extractfile(f"{layout.folder}/{name}").read())) for name in names]


def read_cifar_split(source: os.PathLike | str, which: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns (uint8 images N x 32 x 32 x 3 in HWC order, int64 labels) of one split.

    `source` is what `find_cifar` returned: the tarball or the extracted folder.
    """
    layout = LAYOUTS[which]
    batches = _read_members(Path(source), layout, layout.members[split])
    data = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b[layout.label_key], dtype=np.int64) for b in batches])
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW rows -> NHWC
    return np.ascontiguousarray(images), labels
