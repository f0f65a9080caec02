"""Datasets for dfkd_jax: build once with tensorflow-datasets (no TensorFlow), load as numpy.

    images, labels = load_split("fashion_mnist", "test")   # uint8 NHWC, int32
    x = preprocess(images, get_spec("fashion_mnist"))       # float32 (N, 32, 32, 1)
    for x, y, mask in eval_batches(x, labels, 256): ...

The first `load_split` of a dataset builds it as ArrayRecord files under
`data_dir` (see `builders.py` for where the raw files come from); later calls
only read them.
"""

from __future__ import annotations

import os

import numpy as np

from dfkd_jax.errors import DatasetNotFoundError
from dfkd_jax.data.pipeline import eval_batches, fit_shape, preprocess, train_batches
from dfkd_jax.data.specs import SPECS, DatasetSpec, get_spec

__all__ = [
    "DatasetNotFoundError",
    "DatasetSpec",
    "SPECS",
    "default_data_dir",
    "eval_batches",
    "get_spec",
    "load_split",
    "preprocess",
    "train_batches",
]

DATA_DIR_ENV = "DFKD_JAX_DATA_DIR"

SPLITS = ("train", "test")

# Datasets that are another dataset converted in memory.
_DERIVED = {"fashion_mnist32x3": "fashion_mnist"}


def default_data_dir() -> str:
    """$DFKD_JAX_DATA_DIR, else ~/tensorflow_datasets."""
    return os.environ.get(DATA_DIR_ENV) or os.path.expanduser("~/tensorflow_datasets")


def load_split(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    source_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns the whole `split` ('train' or 'test') of dataset `name` as numpy arrays.

    Returns (uint8 images of shape (N, *get_spec(name).raw_shape), int32 labels).
    Builds the dataset into `data_dir` (default: `default_data_dir()`) first if
    it is not there, from the raw files in `source_dir`, a known system folder,
    or a download. Raises DatasetNotFoundError, saying how to provide the files,
    when they cannot be found.
    """
    spec = get_spec(name)
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if name == "imagenet":  # read from its wnid folders on each call (dfkd_jax.data.imagenet); nothing is built
        from dfkd_jax.data import imagenet

        if not source_dir:
            raise DatasetNotFoundError("ImageNet is not downloaded by dfkd_jax: pass its folder as source_dir "
                                       f"(--config.data.source_dir), holding {imagenet.LAYOUT}.")
        return imagenet.read_imagenet(os.path.expanduser(source_dir), split)
    from dfkd_jax.data import builders  # imports tensorflow_datasets: only when loading

    base = _DERIVED.get(name, name)
    builder = builders.prepare(base, os.path.expanduser(data_dir or default_data_dir()), source_dir)
    images, labels = builders.read_prepared(builder, split)
    if base != name:
        images = fit_shape(images, spec.raw_shape)
    return images, labels
