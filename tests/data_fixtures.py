"""Helpers that write tiny datasets in the real on-disk formats, for tests.

Each returns {'train': (images, labels), 'test': (images, labels)} with the
images in the layout `dfkd_jax.data.load_split` returns (uint8 NHWC) and int32
labels, so a test can compare what it loads with what was written.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

from dfkd_jax.data import cifar
from dfkd_jax.data.idx import write_idx


def write_fake_idx_dataset(
    folder: os.PathLike | str, n_train: int = 64, n_test: int = 32, seed: int = 0, gzip: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Writes the four MNIST-style IDX files (28x28 random images, labels 0..9) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gzip else ""
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, (n,), dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        out[split] = (images[..., None], labels.astype(np.int32))
    return out


def write_fake_cifar_tarball(
    folder: os.PathLike | str,
    which: str = "cifar10",
    n_per_batch: int = 8,
    seed: int = 0,
    extracted: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Writes `cifar-10-python.tar.gz` / `cifar-100-python.tar.gz` into `folder`.

    Same layout as the originals: pickled dicts with bytes keys, b'data' an
    (N, 3072) uint8 array of CHW rows. Each pickle file holds `n_per_batch`
    images (CIFAR-10: 5 train batches; CIFAR-100: one train file of
    5 * n_per_batch). With `extracted`, writes the extracted folder instead.
    """
    layout = cifar.LAYOUTS[which]
    rng = np.random.default_rng(seed)
    num_classes = 10 if which == "cifar10" else 100
    files: dict[str, bytes] = {}
    out = {}
    for split, members in layout.members.items():
        per_file = n_per_batch * 5 // len(members) if split == "train" else n_per_batch
        chunks = []
        for member in members:
            images = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
            labels = rng.integers(0, num_classes, (per_file,)).tolist()
            batch = {
                b"batch_label": f"fake {member}".encode(),
                b"data": images.transpose(0, 3, 1, 2).reshape(per_file, 3072),  # HWC -> CHW rows
                b"filenames": [f"img_{i}.png".encode() for i in range(per_file)],
                layout.label_key: labels,
            }
            if which == "cifar100":
                batch[b"coarse_labels"] = [label // 5 for label in labels]
            files[member] = pickle.dumps(batch, protocol=3)
            chunks.append((images, np.asarray(labels, np.int32)))
        out[split] = (np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]))
    meta = "batches.meta" if which == "cifar10" else "meta"
    files[meta] = pickle.dumps({b"label_names": [b"x"] * num_classes}, protocol=3)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if extracted:
        (folder / layout.folder).mkdir(exist_ok=True)
        for member, data in files.items():
            (folder / layout.folder / member).write_bytes(data)
    else:
        with tarfile.open(folder / layout.archive, "w:gz") as tar:
            for member, data in files.items():
                info = tarfile.TarInfo(f"{layout.folder}/{member}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out
