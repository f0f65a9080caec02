"""MTCKI: the terms over several teachers by hand, the student's multi-teacher contrast through its adapter, the
instance embedding, and a tiny run with two teachers of different architectures (and its transfer set)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfkd_jax import objectives, terms
from dfkd_jax.engine.distiller import Distiller
from dfkd_jax.core.sharding import batch_sharding, make_mesh
from dfkd_jax.ensemble import TeacherView
from dfkd_jax.errors import ConfigError
from dfkd_jax.models import build_model
from dfkd_jax.synthesis.generator_inversion import instance_embedding
from dfkd_jax.teacher import Teacher, TeacherMeta
from tests.helpers import TinyBNNet, bn_teacher, random_teacher, tiny_config


def _np_ce(logits, y):
    logits = np.asarray(logits, np.float64)
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    return lse - logits[np.arange(len(y)), y]


def test_one_hot_and_bn_over_teachers_by_hand():
    rng = np.random.default_rng(0)
    t1, t2 = (rng.normal(size=(4, 3)).astype(np.float32) for _ in range(2))
    y = np.array([0, 2, 1, 1])
    stats = lambda: [tuple(rng.normal(size=(5,)).astype(np.float32) for _ in range(4))]  # noqa: E731
    bn1, bn2 = stats(), stats()
    view = objectives.View(x=jnp.zeros((4, 1)), t_logits=(t1 + t2) / 2, t_per_logits=(t1, t2), targets=y,
                           t_bn=(bn1, bn2))
    oh, bn = objectives.GENERATOR_TERMS["one_hot"].fn, objectives.GENERATOR_TERMS["bn"].fn
    ce1, ce2 = _np_ce(t1, y).mean(), _np_ce(t2, y).mean()
    b1, b2 = (sum(np.linalg.norm(m - rm) + np.linalg.norm(v - rv) for m, v, rm, rv in s) for s in (bn1, bn2))
    for reduction, want_oh, want_bn in (("mean", (ce1 + ce2) / 2, (b1 + b2) / 2), ("sum", ce1 + ce2, b1 + b2),
                                        ("ensemble", _np_ce((t1 + t2) / 2, y).mean(), (b1 + b2) / 2)):
        h = objectives.HParams(teacher_reduction=reduction)
        np.testing.assert_allclose(float(oh(view, h)), want_oh, rtol=1e-5, err_msg=reduction)
        np.testing.assert_allclose(float(bn(view, h)), want_bn, rtol=1e-5, err_msg=reduction)
    one = view.replace(t_logits=t1, t_per_logits=(t1,), t_bn=(bn1,))
    for reduction in ("mean", "sum", "ensemble"):  # one teacher: every reduction is that teacher's term
        np.testing.assert_allclose(float(oh(one, objectives.HParams(teacher_reduction=reduction))), ce1, rtol=1e-5)


def test_mt_contrast_adapter_splits_the_projection_per_teacher():
    """The projector's output is one block per teacher (teachers' order and widths); each block is contrasted with
    its teacher's feature at hparams.mt_temperature."""
    rng = np.random.default_rng(1)
    f1, f2 = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    s = rng.normal(size=(5, 7)).astype(np.float32)
    view = objectives.View(x=jnp.zeros((5, 1)), t_logits=jnp.zeros((5, 2)), s_projected=s, t_features=(f1, f2))
    got = objectives.STUDENT_TERMS["mt_contrast"].fn(view, objectives.HParams(mt_temperature=0.3))
    want = terms.multi_teacher_info_nce((s[:, :4], s[:, 4:]), (f1, f2), 0.3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
    assert got.shape == (5,)
    with pytest.raises(ValueError, match="width"):
        objectives.STUDENT_TERMS["mt_contrast"].fn(view.replace(s_projected=s[:, :6]), objectives.HParams())


def test_mt_contrast_over_the_global_batch_on_four_devices():
    """The batch sharded over the 4 test devices: the contrast is over the global batch (one-device numbers)."""
    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)
    s = rng.normal(size=(8, 7)).astype(np.float32)
    fn = jax.jit(lambda s, a, b: objectives.STUDENT_TERMS["mt_contrast"].fn(
        objectives.View(x=s, t_logits=s, s_projected=s, t_features=(a, b)), objectives.HParams()))
    one = fn(s, f1, f2)
    sharded = batch_sharding(make_mesh(jax.devices()[:4]))
    four = fn(*(jax.device_put(v, sharded) for v in (s, f1, f2)))
    np.testing.assert_allclose(np.asarray(four), np.asarray(one), rtol=1e-5, atol=1e-6)


def test_instance_embedding_concatenated_or_averaged():
    a, b = jnp.ones((2, 3)), jnp.arange(6.0).reshape(2, 3)
    tv = TeacherView(logits=jnp.zeros((2, 2)), per_logits=(), per_feature=(a, b), per_bn_means=(b, a))
    np.testing.assert_allclose(np.asarray(instance_embedding(tv, "feature", "concat")), np.concatenate([a, b], 1))
    np.testing.assert_allclose(np.asarray(instance_embedding(tv, "bn_means", "mean")), (np.asarray(a) + b) / 2)


def _config(**changes):
    c = tiny_config("mtcki", rounds=3)
    c.generator.nz, c.generator.ngf = 8, 4
    c.generator.steps = 2
    c.student.steps = 2
    c.student.pool_size = 32
    c.student.pool_logits = True
    c.synthesis.batch_size = 8
    c.synthesis.bank_size, c.synthesis.n_neg = 16, 8
    c.synthesis.head_dim = 8
    c.synthesis.loop = "unroll"
    c.synthesis.embedding = "feature"  # the LeNet-5 has no BatchNorm
    del c.generator.terms["bn"]
    for k, v in changes.items():
        section, field = k.split(".")
        c[section][field] = v
    return c


def _shapes_only(model, arch):
    """A teacher whose variables are shapes only: enough to build a run's pieces, never run."""
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)), train=False))
    return Teacher(model, variables, TeacherMeta(arch, "fashion_mnist", 10, (32, 32, 1), (0.2860,), (0.3530,)))


def test_averaged_embeddings_need_equal_widths():
    teachers = [_shapes_only(build_model("lenet5", 10), "lenet5"), _shapes_only(TinyBNNet(), "tiny_bn")]
    with pytest.raises(ConfigError, match="embedding_fusion=concat"):
        Distiller.from_config(_config(**{"synthesis.embedding_fusion": "mean"}), teachers,
                              make_mesh(jax.devices()[:1]))


@pytest.fixture(scope="module")
def two_teacher_run():
    """Two rounds of MTCKI with a LeNet-5 (no BatchNorm, feature 120) and a TinyBNNet (BatchNorm, feature 24)."""
    teachers = [random_teacher(0), bn_teacher(1)]
    d = Distiller.from_config(_config(), teachers, make_mesh(jax.devices()[:1]))
    state = d.init(0)
    proj0 = jax.device_get(state.projector.params)
    for _ in range(2):
        state, metrics = d.round(state)
    return d, teachers, state, proj0, jax.device_get(metrics)


@pytest.mark.slow
def test_mtcki_round_with_two_teachers_of_different_architectures(two_teacher_run):
    d, _, state, proj0, m = two_teacher_run
    assert all(np.isfinite(v) for v in m.values()), m
    assert {"student/kd", "student/mt_contrast", "synthesis/contrast", "synthesis/one_hot"} <= set(m)
    assert d.feature_dims == (144, 60) and d.synth.embed_dim == 144
    assert int(state.pool.count) == 16 and int(state.synth.bank.count) == 16
    kernel0 = proj0["kernel"]
    kernel = np.asarray(jax.device_get(state.projector.params)["kernel"])
    assert kernel.shape == (60, 144) and np.abs(kernel - kernel0).max() > 0  # trained with the student


@pytest.mark.slow
def test_mtcki_transfer_set_reads_back_and_trains_another_student(two_teacher_run, tmp_path):
    from dfkd_jax import transfer
    d, teachers, state, _, _ = two_teacher_run
    transfer.export(str(tmp_path / "set"), *transfer.pool_arrays(state.pool), 10,
                    {"method": "mtcki", "teachers": ["lenet5", "tiny_bn"]})
    images, logits, meta = transfer.read(str(tmp_path / "set"))
    assert images.shape == (16, 32, 32, 1) and images.dtype == np.uint8 and meta["method"] == "mtcki"
    np.testing.assert_allclose(logits, np.asarray(state.pool.t_logits)[:16], rtol=1e-6)
    c2 = _config(**{"synthesis.transfer_set": str(tmp_path / "set")})
    c2.student.arch = "lenet5"
    d2 = Distiller.from_config(c2, teachers, make_mesh(jax.devices()[:1]))
    s2 = d2.init(0)
    s2, m2 = d2.round(s2)
    assert d2.synth.steps == 0 and int(s2.pool.count) == 16
    assert np.isfinite(float(m2["student/mt_contrast"])) and "synthesis/loss" not in m2


def test_mtcki_defaults_are_cmis_where_the_abstract_is_silent():
    import importlib.util
    import os

    from dfkd_jax.config import base_config, validate
    from dfkd_jax.methods import cmi, mtcki
    m, c = mtcki.configure(base_config()), cmi.configure(base_config())
    assert dict(m.generator.terms) == dict(c.generator.terms) and m.generator.steps == c.generator.steps == 200
    assert (m.synthesis.cr, m.synthesis.cr_temperature, m.synthesis.bank_size) == (0.8, 0.2, 40960)
    assert dict(m.student.terms) == {"kd": 1.0, "mt_contrast": 0.1} and m.student.tau == 20.0
    assert (m.hparams.teacher_reduction, m.synthesis.embedding_fusion) == ("mean", "concat")
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "fashion_mnist",
                        "mtcki.py")
    spec = importlib.util.spec_from_file_location("cfg_mtcki", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fm = module.get_config()
    validate(fm)
    assert (fm.synthesis.embedding, fm.synthesis.cr, fm.generator.steps) == ("feature", 0.8, 5)
    assert "bn" not in fm.generator.terms and fm.teacher.checkpoints == ""
