"""Transfer sets: synthesise once, train many students.

``export(directory, images, logits, ...)`` writes a run's pool as a tensorflow-datasets dataset that tfds
reads without TensorFlow (ArrayRecord files of plain ``tfds.features.Tensor`` features, as
``dfkd_jax.data.builders``): one ``train`` split of ``{'image', 'logits', 'label'}`` with the
images in pixel space (uint8 ``round(255 p)`` when the pool stored uint8, else float32), the
teachers' logits on them (the pool's, or computed at export when the pool did not keep them) and
``label`` = the logits' argmax. Beside it ``transfer.json`` holds the metadata (teachers, method,
config, counts) and ``classes.png`` shows up to 8 images per class, a labelled row per class the
teachers predict.

Reading it back: ``tfds.builder_from_directory(<dir>/dfkd_transfer_set/1.0.0)`` (``read``), or
as a run mode: ``--config.synthesis.transfer_set=DIR`` fills the pool from the set at the start and
skips synthesis (``TransferSetSource``); the student then learns with the run's usual
augmentation, evaluation, checkpoints and results. An augmented draw is labelled by the run's
teachers; ``student.augment='none'`` with stored logits needs no teacher forward at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from dfkd_jax import pool as pool_lib
from dfkd_jax.engine import outputs
from dfkd_jax.errors import ConfigError
from dfkd_jax.synthesis.base import draw_from_pool, latest_from_pool

NAME = "dfkd_transfer_set"
VERSION = "1.0.0"
META_FILE = "transfer.json"


class TransferSetBuilder(tfds.core.GeneratorBasedBuilder):
    """A transfer set from arrays in memory (``images``, ``logits``), written as ArrayRecord."""

    name = NAME
    RELEASE_NOTES = {VERSION: "A synthetic transfer set exported by dfkd_jax."}
    VERSION = tfds.core.Version(VERSION)

    def __init__(self, *, images=None, logits=None, description: str = "", **kwargs):
        self._images, self._logits, self._description = images, logits, description
        kwargs.setdefault("file_format", tfds.core.file_adapters.FileFormat.ARRAY_RECORD)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        shape, k = self._images.shape[1:], self._logits.shape[1]
        return tfds.core.DatasetInfo(
            builder=self, description=self._description,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=shape, dtype=self._images.dtype,
                                              encoding=tfds.features.Encoding.BYTES),
                "logits": tfds.features.Tensor(shape=(k,), dtype=np.float32, encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            }),
            disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        labels = np.argmax(self._logits, axis=-1)
        for i in range(self._images.shape[0]):
            yield i, {"image": self._images[i], "logits": self._logits[i], "label": int(labels[i])}


def pool_arrays(pool) -> tuple[np.ndarray, np.ndarray | None]:
    """The filled part of a pool, oldest first: (pixels in the storage dtype, logits or None)."""
    x, logits, ptr, count = jax.device_get((pool.x, pool.t_logits, pool.ptr, pool.count))
    size, count, ptr = x.shape[0], int(count), int(ptr)
    order = (np.arange(count) + (ptr - count)) % size
    images = np.asarray(x)[order]
    if images.dtype != np.uint8:
        images = images.astype(np.float32)
    return images, (None if logits is None else np.asarray(logits, np.float32)[order])


def export(directory: str, images: np.ndarray, logits: np.ndarray | None, num_classes: int, metadata: dict[str, Any],
           class_names=()) -> str:
    """Write pixel-space ``images`` (a pool's, ``pool_arrays``) and the teachers' ``logits`` on them as a
    transfer set in ``directory``; returns the dataset folder. The run labels a pool that kept no logits
    with ``distiller.evaluator.pixel_logits`` first; ``logits=None`` stores zeros (``logits_stored: false``)."""
    if images.shape[0] == 0:
        raise ConfigError("The pool is empty: nothing to export. Export after at least one round.")
    stored = logits is not None
    if not stored:
        logits = np.zeros((images.shape[0], num_classes), np.float32)
    logits = np.asarray(logits, np.float32)
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    builder = TransferSetBuilder(images=images, logits=logits, data_dir=directory,
                                 description=f"dfkd_jax transfer set: {metadata.get('method', '')}")
    with _quiet_tfds():  # no "Downloading and preparing dataset Unknown size" for a set made from memory
        builder.download_and_prepare(download_dir=os.path.join(directory, "downloads"))
    meta = {**metadata, "count": int(images.shape[0]), "image_shape": list(images.shape[1:]),
            "image_dtype": str(images.dtype), "num_classes": int(num_classes),
            "logits_stored": bool(stored), "tfds_dir": os.path.relpath(dataset_dir(directory), directory)}
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f, indent=2, default=str)
    pixels = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    grid = os.path.join(directory, "classes.png")
    if stored:
        outputs.save_class_grid(grid, pixels, np.argmax(logits, axis=-1), num_classes, 0.0, 1.0, class_names)
    else:
        outputs.save_grid(grid, pixels[-64:], 0.0, 1.0)
    return dataset_dir(directory)


@contextlib.contextmanager
def _quiet_tfds():
    """tfds' progress bars and its printed lines (to stdout) off for the duration."""
    import io
    tfds.display_progress_bar(False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tfds.display_progress_bar(True)


def dataset_dir(directory: str) -> str:
    return os.path.join(os.path.abspath(directory), NAME, VERSION)


def read(directory: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(images, logits, metadata)`` of a transfer set, read through tfds (no TensorFlow)."""
    meta_path = os.path.join(directory, META_FILE)
    if not os.path.isfile(meta_path):
        raise ConfigError(f"No transfer set at {directory} (expected {META_FILE}). Export one with "
                          "--config.synthesis.export=DIR in the run that synthesises it.")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        source = tfds.builder_from_directory(dataset_dir(directory)).as_data_source(split="train")
        items = [source[i] for i in range(len(source))]
        images = np.stack([np.asarray(it["image"]) for it in items])
        logits = np.stack([np.asarray(it["logits"], np.float32) for it in items])
    except Exception as e:  # noqa: BLE001 - a damaged file (json, tfds metadata, ArrayRecord): one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"The transfer set at {directory} cannot be read ({type(e).__name__}: {first}). "
                          "It is damaged or incomplete: copy it again, or export it again with "
                          "--config.synthesis.export=DIR.") from None
    return images, logits, meta


def check_export_folder(directory: str) -> None:
    """Refuse to export into a folder that holds files but is not a transfer set (checked before a run)."""
    directory = os.path.abspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ConfigError(f"config.synthesis.export: {directory} is a file. Choose a new folder for the transfer set.")
    if os.path.isdir(directory) and os.listdir(directory) and not os.path.isfile(os.path.join(directory, META_FILE)):
        raise ConfigError(f"config.synthesis.export: {directory} already holds files that are not a transfer set. "
                          "Choose a new or empty folder (an existing transfer set there is replaced).")


def load_into_pool(directory: str, pool, distiller):
    """``pool`` filled with the transfer set in ``directory`` (replicated on the run's mesh)."""
    images, logits, meta = read(directory)
    t_meta = distiller.teacher.meta
    if tuple(images.shape[1:]) != tuple(t_meta.input_shape) or logits.shape[1] != t_meta.num_classes:
        raise ConfigError(f"The transfer set at {directory} holds {images.shape[1:]} images of {logits.shape[1]} "
                          f"classes; the run's teachers take {t_meta.input_shape} with {t_meta.num_classes}.")
    n = images.shape[0]
    if n > pool.size:
        raise ConfigError(f"The transfer set at {directory} holds {n} images; config.student.pool_size is "
                          f"{pool.size}. Set --config.student.pool_size={n} (or more).")
    pixels = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
    x = np.zeros(pool.x.shape, np.float32)
    x[:n] = pixels
    stored = np.asarray(jax.device_get(pool_lib.encode(jnp.asarray(x), pool.x.dtype)))
    new = pool_lib.Pool(x=stored, t_logits=None, ptr=np.asarray(n % pool.size, np.int32),
                        count=np.asarray(n, np.int32))
    if pool.t_logits is not None:
        full = np.zeros(pool.t_logits.shape, np.float32)
        full[:n] = logits
        if not meta.get("logits_stored", False) and distiller.spec.augment == "none":
            raise ConfigError(f"The transfer set at {directory} has no stored logits; train from it with "
                              "--config.student.augment=crop_flip (the teachers label each drawn batch).")
        new = new.replace(t_logits=full)
    return jax.device_put(new, distiller._repl)


@dataclasses.dataclass(eq=False)
class TransferSetSource:
    """The synthesiser of a transfer-set run: no synthesis, the student draws from the stored set."""

    student: Any
    ensemble: Any
    shard: Any
    augment: str = "crop_flip"
    batch_size: int = 0
    steps = 0
    nz = 1
    fixed_carry = True

    def init(self, key, aux_key):
        return None

    def begin(self, state, key, round_):
        return state, {}

    def step(self, state, carry, pool, ctx, key, progress):  # never called: steps = 0
        return state, carry, pool, {}

    def end(self, state, carry, pool, ctx, key):
        return state, carry, pool, {}

    def student_batch(self, state, carry, pool, ctx, key):
        return draw_from_pool(pool, key, self.batch_size, self.augment, self.ensemble, self.shard)

    def sample(self, state, pool, z):
        return latest_from_pool(pool, self.ensemble, z.shape[0])
