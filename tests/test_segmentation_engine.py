"""DFAD for segmentation on the engine: per-pixel rounds, 1 vs 4 devices, mIoU evaluation, grids, the CLI.

Tiny DeepLabV3s (ResNet-50 at 1/16 width -> MobileNetV2 at 1/8) on 32x32 single-channel
inputs with 11 classes; the teacher is untrained (the engine's numbers do not depend on
its quality). Compiling DeepLabV3s takes minutes on 2 CPU cores (a ResNet-50 and a
MobileNetV2, for 4 simulated devices), so these tests are under -m slow; the pieces they
put together (per-pixel terms, confusion matrices, mIoU, grids, the generator's output
space) are tested in the default suite by tests/test_segmentation.py.
"""

from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from dfkd_jax import metrics, methods
from dfkd_jax.config import base_config
from dfkd_jax.engine.distiller import Distiller
from dfkd_jax.engine.loop import save_samples
from dfkd_jax.core.sharding import make_mesh
from dfkd_jax.models import build_model
from dfkd_jax.teacher import Teacher, TeacherMeta

TEACHER, STUDENT = "deeplabv3_resnet50@0.0625", "deeplabv3_mobilenetv2@0.125"


@pytest.fixture(scope="module")
def seg_teacher() -> Teacher:
    model = build_model(TEACHER, 11)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 1)), train=False)
    # non-trivial BN statistics, so that eval-mode outputs vary across pixels and classes
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 32, 32, 1))
    _, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
    meta = TeacherMeta(TEACHER, "fashion_mnist_scenes", 11, (32, 32, 1), (0.5,), (0.5,))
    return Teacher(model, jax.device_get({"params": variables["params"], "batch_stats": upd["batch_stats"]}), meta)


def seg_config(batch: str = "fresh"):
    c = methods.dfad.configure_segmentation(base_config())
    c.data.dataset = "fashion_mnist_scenes"
    c.teacher.arch, c.student.arch = TEACHER, STUDENT
    c.generator.nz, c.generator.ngf = 16, 4
    c.student.steps = 1
    c.student.batch = batch
    c.student.pool_size = 16
    c.train.batch_size = 8
    c.train.rounds = 4
    c.train.progress = False
    return c


@pytest.mark.slow
def test_segmentation_evaluation_is_miou(seg_teacher):
    d = Distiller.from_config(seg_config(), seg_teacher)
    assert d.task == "segmentation" and d.evaluator.headline == ("miou", "teacher_miou")
    assert d.synth.spec.output_space == "tanh"  # GeneratorB; with mean = std = 0.5 its output is the input
    state = d.init(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 32, 32, 1)).astype(np.float32)
    y = rng.integers(0, 11, (10, 32, 32)).astype(np.uint8)
    y[:, :4] = 255
    ev = d.evaluator.evaluate(state, x, y, batch_size=4)  # 3 batches, the last one padded
    assert set(ev) == {"miou", "pixel_accuracy", "teacher_miou", "teacher_pixel_accuracy", "agree"}
    t_logits, _ = seg_teacher.model.apply(seg_teacher.variables, x, train=False)
    cm = metrics.confusion_matrix(t_logits, y, np.ones(10), 11)
    want = metrics.segmentation_scores(cm)
    assert ev["teacher_miou"] == pytest.approx(want["miou"], rel=1e-5)
    assert ev["teacher_pixel_accuracy"] == pytest.approx(want["pixel_accuracy"], rel=1e-5)
    assert 0.0 <= ev["agree"] <= 1.0


def _relative(a, b) -> float:
    """||a - b|| / ||b|| over all leaves of two trees (float64)."""
    num = sum(float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2))
              for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    return (num / sum(float(np.sum(np.asarray(y, np.float64) ** 2)) for y in jax.tree.leaves(b))) ** 0.5


@pytest.mark.slow
@pytest.mark.parametrize("arch", [TEACHER, STUDENT])
def test_segmentation_gradients_on_four_devices_agree_to_float_order(arch):
    """What "the same numbers" can mean for these models. In train mode their BatchNorms (batch
    statistics of 4x4 maps, mostly dilation padding, in an untrained net) make the parameter gradient
    depend on the order of float sums: on one device, the same 8 images in reverse order -- the same
    gradient in exact arithmetic -- change it by ~1e-2 of its norm (BN biases of the MobileNetV2's
    inverted residuals by up to 75% of theirs). The gradient with the batch sharded over 4 devices must
    be as close to the one-device gradient as that reordering is (x3); in eval mode, to 1e-5."""
    model = build_model(arch, 11)
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 32, 32, 1))
    variables = model.init(jax.random.PRNGKey(0), x[:2], train=False)
    sharded = jax.device_put(x, NamedSharding(make_mesh(jax.devices()[:4]), PartitionSpec("data")))
    for train in (False, True):
        def loss(params, images):
            v = {"params": params, "batch_stats": variables["batch_stats"]}
            logits, _ = (model.apply(v, images, train=True, mutable=["batch_stats"])[0] if train
                         else model.apply(v, images, train=False))
            return jnp.mean(jnp.abs(logits - 0.1))  # the student's per-pixel L1 against a constant
        grad = jax.jit(jax.grad(loss))
        one, four, reversed_ = grad(variables["params"], x), grad(variables["params"], sharded), grad(
            variables["params"], x[::-1])
        if train:
            assert _relative(four, one) <= 3 * _relative(reversed_, one) + 1e-6
        else:
            assert _relative(four, one) <= 1e-5 and _relative(reversed_, one) <= 1e-5


@pytest.mark.slow
def test_segmentation_round_one_and_four_devices_agree(seg_teacher):
    """The per-pixel DFAD round on 1 and 4 devices: finite losses, the first generator loss (before any
    update) equal to float order. Beyond that these toy rounds amplify float-order differences (the
    train-mode BN of the test above, the sign of L1's gradient): on one device, XLA's convolutions against
    the matrix-product ones (the same function, other sums) already give updates -- parameters after two
    rounds minus the initial ones -- that differ by O(1) in places. So the 4-device updates must be as close
    to the 1-device ones as that (x3, over the whole update); per-device BN statistics, a wrong
    reduction or another batch would exceed it."""
    config = seg_config()
    for section in (config.generator, config.student):
        section.optimizer, section.lr = "sgd", 0.01
    out = {}
    for n, impl in ((1, "xla"), (1, "matmul"), (4, "xla")):
        config.conv_impl = impl
        d = Distiller.from_config(config, seg_teacher, make_mesh(jax.devices()[:n]))
        state = d.init(0)
        start = jax.device_get((state.student.params, state.generator.params))
        history = []
        for _ in range(2):
            state, m = d.round(state)
            history.append({k: float(v) for k, v in jax.device_get(m).items()})
        m = history[-1]
        assert set(m) >= {"generator/adv_log_l1", "student/l1"} and all(np.isfinite(v) for v in m.values())
        assert m["generator/loss"] == pytest.approx(m["generator/adv_log_l1"]) and m["generator/adv_log_l1"] < 0
        end = jax.device_get((state.student.params, state.generator.params))
        out[n, impl] = history, jax.tree.map(lambda a, b: a - b, end, start)
    first = out[1, "xla"][0][0]["generator/adv_log_l1"]
    assert out[4, "xla"][0][0]["generator/adv_log_l1"] == pytest.approx(first, rel=1e-4)
    for i in range(2):  # student, generator
        reordered = _relative(out[1, "matmul"][1][i], out[1, "xla"][1][i])
        assert _relative(out[4, "xla"][1][i], out[1, "xla"][1][i]) <= 3 * reordered + 1e-6


@pytest.mark.slow
def test_segmentation_pool_round_and_sample_grid(seg_teacher, tmp_path):
    d = Distiller.from_config(seg_config("pool"), seg_teacher)
    state = d.init(0)
    assert state.pool.t_logits.shape == (16, 32, 32, 11)
    state, m = d.round(state)
    assert int(state.pool.count) == 8 and np.isfinite(float(m["student/loss"]))
    images = d.evaluator.sample(state, 8)
    t, s = d.evaluator.predict(state, images)
    assert t.shape == s.shape == (8, 32, 32) and t.max() < 11
    save_samples(d, state, str(tmp_path / "samples" / "round_000001.png"))
    assert (tmp_path / "samples" / "round_000001.png").is_file()


@pytest.mark.slow
def test_segmentation_run_and_evaluate_cli(seg_teacher, tmp_path, monkeypatch):
    """train_and_evaluate on scenes built from fake Fashion-MNIST files, then python -m dfkd_jax.evaluate."""
    from data_fixtures import write_fake_idx_dataset

    from dfkd_jax.data import scenes
    from dfkd_jax.engine.loop import train_and_evaluate
    from dfkd_jax.evaluate import main as evaluate_main
    from dfkd_jax.teacher import load_teacher, save_teacher

    monkeypatch.setattr(scenes, "NUM_SCENES", {"train": 8, "test": 12})
    write_fake_idx_dataset(tmp_path / "src", n_train=16, n_test=16)
    teacher_dir = save_teacher(str(tmp_path / "teacher"), seg_teacher.variables, seg_teacher.meta)
    config = seg_config()
    config.teacher.checkpoint = teacher_dir
    config.data.source_dir = str(tmp_path / "src")
    config.data.data_dir = str(tmp_path / "tfds")
    config.train.rounds, config.train.eval_every, config.train.sample_every = 2, 1, 2
    results = train_and_evaluate(config, str(tmp_path / "run"), load_teacher(teacher_dir), log=lambda m: None,
                                 teacher_dir=teacher_dir)
    assert results["metric"] == "miou" and len(results["history"]) == 2
    mious = [h["miou"] for h in results["history"]]
    assert (results["student"]["best"], results["student"]["last"]) == (max(mious), mious[-1])
    assert "pixel_accuracy" in results["teacher"]
    assert (tmp_path / "run" / "samples" / "round_000002.png").is_file()
    out = tmp_path / "eval.json"
    evaluate_main([str(tmp_path / "run"), "--against", teacher_dir, "--data_dir", str(tmp_path / "tfds"),
                   "--json", str(out)])
    res = json.load(open(out))
    assert res["task"] == "segmentation" and res["examples"] == 12
    assert res["reference_miou"] == pytest.approx(results["teacher"]["miou"], rel=1e-5)
    assert res["miou"] == pytest.approx(results["history"][-1]["miou"], rel=1e-5)
