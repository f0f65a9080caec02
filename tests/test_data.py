"""Tests of dfkd_jax.data: raw formats, tfds builders (no TensorFlow), load_split, pipeline."""

from __future__ import annotations

import io
import os
import pickle
import time
import types
import urllib.error
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import dfkd_jax.data as data
from data_fixtures import write_fake_cifar_tarball, write_fake_idx_dataset
from dfkd_jax.data import builders, cifar, idx, pipeline

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No system folders, no network, default data_dir inside tmp_path."""
    monkeypatch.setattr(builders, "SYSTEM_DIRS", {name: () for name in builders.SYSTEM_DIRS})
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(builders.urllib.request, "urlopen", no_network)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "default_tfds"))
    monkeypatch.delenv(builders.NO_DOWNLOAD_ENV, raising=False)
    return calls


# ------------------------------------------------------------------------------- raw formats


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    for shape in [(5,), (3, 28, 28), (2, 3, 4, 5)]:
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        path = tmp_path / f"a{len(shape)}{suffix}"
        idx.write_idx(path, array)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
        back = idx.read_idx(path)
        assert back.shape == shape and back.dtype == np.uint8
        np.testing.assert_array_equal(back, array)


def test_idx_header_bytes_and_bad_magic(tmp_path):
    idx.write_idx(tmp_path / "l", np.array([1, 2, 3], np.uint8))
    assert (tmp_path / "l").read_bytes() == b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02\x03"
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="magic"):
        idx.read_idx(tmp_path / "bad")


def test_cifar_chw_to_hwc_hand_built_pixel(tmp_path):
    write_fake_cifar_tarball(tmp_path, "cifar10", n_per_batch=2, extracted=True)
    row = np.zeros((2, 3072), np.uint8)
    row[1, 2 * 1024 + 5 * 32 + 7] = 200  # image 1, blue plane, row 5, column 7
    batch = {b"data": row, b"labels": [3, 4], b"batch_label": b"x", b"filenames": [b"a", b"b"]}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(batch))
    images, labels = cifar.read_cifar_split(cifar.find_cifar(tmp_path, "cifar10"), "cifar10", "test")
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert images[1, 5, 7, 2] == 200 and images.sum() == 200
    np.testing.assert_array_equal(labels, [3, 4])


# A batch pickled the way the original CIFAR files are (Python 2, numpy 1: byte strings,
# numpy.core.multiarray), written by hand: data [[0, 1, 2], [3, 4, 5]], labels [1, 2].
_PY2_STYLE_PICKLE = (
    b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03"
    b"K\x00\x85U\x01b\x87Rq\x04(K\x01K\x02K\x03\x86cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87Rq\x06"
    b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x06\x00\x01\x02\x03\x04\x05tb"
    b"U\x06labels]q\x07(K\x01K\x02eu."
)


def test_cifar_unpickler_reads_python2_pickles_and_refuses_code():
    batch = cifar.load_pickle(io.BytesIO(_PY2_STYLE_PICKLE))
    np.testing.assert_array_equal(batch[b"data"], [[0, 1, 2], [3, 4, 5]])
    assert batch[b"data"].dtype == np.uint8 and batch[b"labels"] == [1, 2]
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        cifar.load_pickle(io.BytesIO(pickle.dumps(os.getcwd, protocol=3)))


# ------------------------------------------------------------------------------- specs


def test_specs():
    assert set(data.SPECS) == {"fashion_mnist", "mnist", "cifar10", "cifar100", "fashion_mnist32x3",
                               "fashion_mnist_scenes", "camvid", "nyuv2", "imagenet"}
    fm, fm3 = data.get_spec("fashion_mnist"), data.get_spec("fashion_mnist32x3")
    assert (fm.raw_shape, fm.image_shape, fm.mean, fm.std) == ((28, 28, 1), (32, 32, 1), (0.2860,), (0.3530,))
    assert fm3.image_shape == (32, 32, 3) and fm3.mean == (0.2860,) * 3 and fm3.std == (0.3530,) * 3
    assert data.get_spec("cifar100").num_classes == 100
    for spec in data.SPECS.values():
        assert len(spec.mean) == len(spec.std) == spec.image_shape[-1]
    with pytest.raises(ValueError, match="cifar10, cifar100, fashion_mnist"):
        data.get_spec("tiny_imagenet")


# ------------------------------------------------------------------------------- load_split


def _assert_same(loaded, written):
    images, labels = loaded
    assert images.dtype == np.uint8 and labels.dtype == np.int32
    np.testing.assert_array_equal(images, written[0])
    np.testing.assert_array_equal(labels, written[1])


@pytest.mark.parametrize("name,gzip", [("fashion_mnist", True), ("mnist", False)])
def test_idx_dataset_builds_and_loads_exactly(tmp_path, name, gzip):
    written = write_fake_idx_dataset(tmp_path / "src", n_train=40, n_test=24, seed=1, gzip=gzip)
    for split in ("train", "test"):
        loaded = data.load_split(name, split, data_dir=str(tmp_path / "tfds"), source_dir=str(tmp_path / "src"))
        assert loaded[0].shape == (len(written[split][0]), 28, 28, 1)
        _assert_same(loaded, written[split])
    assert (tmp_path / "tfds" / f"dfkd_{name}" / "1.0.0" / "dataset_info.json").is_file()


@pytest.mark.parametrize("which", ["cifar10", "cifar100"])
@pytest.mark.parametrize("extracted", [False, True])
def test_cifar_builds_and_loads_exactly(tmp_path, which, extracted):
    written = write_fake_cifar_tarball(tmp_path / "src", which, n_per_batch=4, seed=2, extracted=extracted)
    for split in ("train", "test"):
        loaded = data.load_split(which, split, data_dir=str(tmp_path / "tfds"), source_dir=str(tmp_path / "src"))
        assert loaded[0].shape == (20 if split == "train" else 4, 32, 32, 3)
        _assert_same(loaded, written[split])


def test_system_folder_is_used(tmp_path, monkeypatch):
    written = write_fake_idx_dataset(tmp_path / "system", n_train=8, n_test=8)
    monkeypatch.setitem(builders.SYSTEM_DIRS, "fashion_mnist", (str(tmp_path / "nowhere"), str(tmp_path / "system")))
    _assert_same(data.load_split("fashion_mnist", "test"), written["test"])  # default data_dir: the env var
    assert (tmp_path / "default_tfds" / "dfkd_fashion_mnist").is_dir()


def test_download_path_with_fake_server(tmp_path, monkeypatch, isolated):
    written = write_fake_cifar_tarball(tmp_path / "server", "cifar10", n_per_batch=2)

    def fake_urlopen(url, timeout):
        isolated.append(url)
        assert url == builders.URLS["cifar10"] and timeout <= 30
        return open(tmp_path / "server" / "cifar-10-python.tar.gz", "rb")

    monkeypatch.setattr(builders.urllib.request, "urlopen", fake_urlopen)
    _assert_same(data.load_split("cifar10", "test", data_dir=str(tmp_path / "tfds")), written["test"])
    assert (tmp_path / "tfds" / "downloads" / "dfkd_cifar10" / "cifar-10-python.tar.gz").is_file()
    assert isolated == [builders.URLS["cifar10"]]


def test_fashion_mnist32x3(tmp_path):
    written = write_fake_idx_dataset(tmp_path / "src", n_train=8, n_test=6)
    images, labels = data.load_split("fashion_mnist32x3", "test", data_dir=str(tmp_path / "t"), source_dir=str(tmp_path / "src"))
    raw = written["test"][0]
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(images[:, 2:30, 2:30, c], raw[..., 0])
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert not images[:, border].any()
    np.testing.assert_array_equal(labels, written["test"][1])
    spec = data.get_spec("fashion_mnist32x3")
    np.testing.assert_array_equal(data.preprocess(images, spec), data.preprocess(raw, spec))


def test_second_load_does_not_rebuild(tmp_path, monkeypatch):
    written = write_fake_idx_dataset(tmp_path / "src", n_train=8, n_test=8)
    data.load_split("mnist", "train", data_dir=str(tmp_path / "t"), source_dir=str(tmp_path / "src"))

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(builders._RawFilesBuilder, "download_and_prepare", fail)
    monkeypatch.setattr(builders, "locate_source", fail)
    for name in (tmp_path / "src").iterdir():
        name.unlink()
    _assert_same(data.load_split("mnist", "test", data_dir=str(tmp_path / "t")), written["test"])


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist", "cifar10", "cifar100", "fashion_mnist32x3"])
def test_missing_dataset_raises_quickly_with_fix(tmp_path, name, isolated):
    start = time.monotonic()
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_split(name, "train", data_dir=str(tmp_path / "t"))
    assert time.monotonic() - start < 5
    assert isinstance(err.value, FileNotFoundError)
    message = str(err.value)
    assert "--config.data.source_dir=" in message and "network disabled in tests" in message
    if name.startswith("fashion_mnist"):
        assert "apt-get update && apt-get install dataset-fashion-mnist" in message
    elif name == "mnist":
        assert "train-images-idx3-ubyte.gz" in message
    else:
        assert f"{name[:5]}-{name[5:]}-python.tar.gz" in message
    assert len(isolated) >= 1  # the download was tried (and failed), nothing else touched the network
    assert not list((tmp_path / "t").glob("*/1.0.0/dataset_info.json"))  # nothing half-built


def test_missing_with_downloads_disabled_and_bad_source_dir(tmp_path, monkeypatch, isolated):
    monkeypatch.setenv(builders.NO_DOWNLOAD_ENV, "1")
    with pytest.raises(data.DatasetNotFoundError, match=builders.NO_DOWNLOAD_ENV):
        data.load_split("cifar10", "test", data_dir=str(tmp_path / "t"))
    with pytest.raises(data.DatasetNotFoundError, match="does not hold the raw files"):
        data.load_split("mnist", "test", data_dir=str(tmp_path / "t"), source_dir=str(tmp_path))
    assert isolated == []


def test_load_split_rejects_bad_names(tmp_path):
    with pytest.raises(ValueError, match="valid splits"):
        data.load_split("mnist", "validation", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="valid names"):
        data.load_split("svhn", "train", data_dir=str(tmp_path))


@pytest.mark.slow
@pytest.mark.skipif(not REAL_FMNIST.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setitem(builders.SYSTEM_DIRS, "fashion_mnist", (str(REAL_FMNIST),))
    x_train, y_train = data.load_split("fashion_mnist", "train", data_dir=str(tmp_path))
    x_test, y_test = data.load_split("fashion_mnist", "test", data_dir=str(tmp_path))
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    assert abs(x_train.mean() / 255 - 0.2860) < 1e-3


# ------------------------------------------------------------------------------- pipeline


def test_preprocess_by_hand():
    images = np.zeros((2, 28, 28, 1), np.uint8)
    images[1, 3, 4, 0] = 51  # 51 / 255 = 0.2
    x = data.preprocess(images, data.get_spec("mnist"))
    assert x.shape == (2, 32, 32, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[1, 5, 6, 0], (0.2 - 0.1307) / 0.3081, rtol=1e-6)
    np.testing.assert_allclose(x[1, 0, 0, 0], -0.1307 / 0.3081, rtol=1e-6)  # padding
    rgb = np.zeros((1, 32, 32, 3), np.uint8)
    rgb[0, 0, 0] = (255, 0, 51)
    y = data.preprocess(rgb, data.get_spec("cifar10"))
    np.testing.assert_allclose(y[0, 0, 0], [(1 - 0.4914) / 0.2023, -0.4822 / 0.1994, (0.2 - 0.4465) / 0.2010], rtol=1e-6)
    three = data.preprocess(images, data.get_spec("fashion_mnist32x3"))
    assert three.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(three[1, 5, 6], [(0.2 - 0.2860) / 0.3530] * 3, rtol=1e-6)
    with pytest.raises(ValueError, match="cannot fit"):
        data.preprocess(rgb, data.get_spec("mnist"))


def _data_sharding():
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    return NamedSharding(mesh, P("data"))


def test_eval_batches_fixed_shapes_padding_and_mask():
    images = np.arange(10 * 2 * 2 * 1, dtype=np.float32).reshape(10, 2, 2, 1) + 1
    labels = np.arange(10, dtype=np.int32) + 1
    batches = list(data.eval_batches(images, labels, 4))
    assert len(batches) == 3
    for x, y, mask in batches:
        assert x.shape == (4, 2, 2, 1) and y.shape == (4,) and mask.shape == (4,)
    x, y, mask = batches[-1]
    np.testing.assert_array_equal(mask, [1, 1, 0, 0])
    assert not x[2:].any() and not y[2:].any()
    assert sum(float(m.sum()) for _, _, m in batches) == 10
    np.testing.assert_array_equal(np.concatenate([b[1][b[2] > 0] for b in batches]), labels)


def test_eval_batches_sharded():
    sharding = _data_sharding()
    bs = 2 * jax.device_count()
    n = 3 * jax.device_count() + 1
    images, labels = np.ones((n, 4, 4, 1), np.float32), np.arange(n, dtype=np.int32)
    total = 0.0
    for x, y, mask in data.eval_batches(images, labels, bs, sharding=sharding):
        for a in (x, y, mask):
            assert isinstance(a, jax.Array) and a.shape[0] == bs and a.sharding == sharding
        total += float(mask.sum())
    assert total == n


def test_batch_size_must_divide_over_devices():
    fake = types.SimpleNamespace(spec=P("data"), mesh=types.SimpleNamespace(shape={"data": 4}))
    with pytest.raises(ValueError, match="not divisible by the 4 devices"):
        next(data.eval_batches(np.zeros((8, 1)), np.zeros(8), 6, sharding=fake))
    with pytest.raises(ValueError, match="not divisible"):
        next(data.train_batches(np.zeros((8, 1)), np.zeros(8), 6, np.random.default_rng(0), sharding=fake))
    assert pipeline._batch_shards(NamedSharding(jax.make_mesh((1,), ("data",)), P())) == 1


def test_train_batches_one_epoch_each_example_at_most_once():
    n, bs = 23, 5
    images = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
    labels = np.arange(n, dtype=np.int32)
    batches = list(data.train_batches(images, labels, bs, np.random.default_rng(0)))
    assert len(batches) == n // bs
    seen = np.concatenate([y for _, y in batches])
    assert len(seen) == len(set(seen.tolist())) == (n // bs) * bs
    for x, y in batches:
        assert x.shape == (bs, 1, 1, 1)
        np.testing.assert_array_equal(x[:, 0, 0, 0], y)  # images and labels stay paired
    other = np.concatenate([y for _, y in data.train_batches(images, labels, bs, np.random.default_rng(1))])
    assert not np.array_equal(seen, other)
    sharding = _data_sharding()
    bs = jax.device_count()
    x, y = next(data.train_batches(images, labels, bs, np.random.default_rng(0), sharding=sharding))
    assert x.sharding == sharding and y.shape == (bs,)


_CONCURRENT_LOAD = """
import sys, time
from pathlib import Path
import numpy as np
import dfkd_jax.data as data
tmp = Path(sys.argv[1])
while not (tmp / "go").exists():
    time.sleep(0.01)
images, labels = data.load_split("fashion_mnist", "test", data_dir=str(tmp / "tfds"), source_dir=str(tmp / "src"))
np.save(tmp / f"out{sys.argv[2]}.npy", images)
"""


def test_processes_started_together_build_the_dataset_once(tmp_path):
    """Runs launched together on a fresh machine: each process finds or builds the dataset; none fails
    on the other's build (tfds renames its build folder into place: the second rename used to raise)."""
    import subprocess
    import sys

    written = write_fake_idx_dataset(tmp_path / "src", n_train=400, n_test=300, seed=3)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT_LOAD, str(tmp_path), str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(3)]
    time.sleep(3.0)  # the imports, so that the three builds start together
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outs)
    for i in range(3):
        np.testing.assert_array_equal(np.load(tmp_path / f"out{i}.npy"), written["test"][0])
