"""Every method's losses against hand compositions of the terms, the R2M band and InfoNCE
against a loop written out by hand, the self-paced student objective, and every method
through the engine (1 and 4 devices agree for the method with the most state)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfkd_jax import methods, objectives, terms
from dfkd_jax.config import base_config
from dfkd_jax.engine.checkpoint import Checkpoints
from dfkd_jax.engine.distiller import Distiller
from dfkd_jax.engine.round import RoundSpec, student_objective
from dfkd_jax.engine.sharding import make_mesh
from tests.helpers import bn_teacher, tiny_config

B, K, D = 6, 5, 4


def _view(seed=0, n_queue=10):
    ks = jax.random.split(jax.random.PRNGKey(seed), 10)
    s_key = terms.l2_normalize(jax.random.normal(ks[4], (B, D)))
    queue = terms.l2_normalize(jax.random.normal(ks[5], (n_queue, D)))
    bn = [(jax.random.normal(ks[6], (3,)), jnp.abs(jax.random.normal(ks[7], (3,))) + 0.5,
           jnp.zeros(3), jnp.ones(3))]
    return objectives.View(x=jnp.zeros((B, 2, 2, 1)), t_logits=2 * jax.random.normal(ks[0], (B, K)),
                           s_logits=2 * jax.random.normal(ks[1], (B, K)), t_feature=jax.random.normal(ks[2], (B, D)),
                           s_feature=jax.random.normal(ks[3], (B, D)), s_key=s_key, s_projected=s_key * 3.0,
                           queue=queue, t_bn=bn, progress=0.6,
                           t_blocks=(jax.random.normal(ks[8], (B, 3, 3, 2)),),
                           s_blocks=(jax.random.normal(ks[9], (B, 3, 3, 1)),))


def _combine(method, view, progress=0.6):
    c = methods.configure(base_config(), method)
    h = objectives.HParams.from_config(c)
    ramps = {k: tuple(v) for k, v in c.generator.ramps.items()}
    g, _ = objectives.combine(dict(c.generator.terms), objectives.GENERATOR_TERMS, view.replace(progress=progress),
                              h, ramps)
    s, _ = objectives.combine(dict(c.student.terms), objectives.STUDENT_TERMS, view, h)
    return c, float(g), np.asarray(s)


def test_dfad_losses():
    v = _view()
    _, g, s = _combine("dfad", v)
    l1 = np.mean(np.abs(np.asarray(v.s_logits) - np.asarray(v.t_logits)), axis=1)
    assert g == pytest.approx(-l1.mean(), rel=1e-6)
    np.testing.assert_allclose(s, l1, rtol=1e-6)


def test_dafl_losses():
    v = _view()
    _, g, s = _combine("dafl", v)
    t = np.asarray(v.t_logits, np.float64)
    logp = t - np.log(np.exp(t).sum(1, keepdims=True))
    one_hot = -np.mean(logp[np.arange(B), t.argmax(1)])
    p_bar = np.exp(logp).mean(0)
    balance = np.sum(p_bar * np.log10(p_bar))
    activation = -np.mean(np.abs(np.asarray(v.t_feature)))
    assert g == pytest.approx(one_hot + 0.1 * activation + 5 * balance, rel=1e-5)
    np.testing.assert_allclose(s, np.asarray(terms.kd(v.s_logits, v.t_logits, 1.0)), rtol=1e-6)


def test_zskt_losses():
    v = _view()
    _, g, s = _combine("zskt", v)
    kl = np.asarray(terms.kl(v.t_logits, v.s_logits, 1.0))
    assert g == pytest.approx(-kl.mean(), rel=1e-6)
    np.testing.assert_allclose(s, kl + 250 * float(terms.attention(v.s_blocks, v.t_blocks)), rtol=1e-6)


def test_dfq_losses():
    v = _view()
    _, g, s = _combine("dfq", v)
    kl = np.asarray(terms.kl(v.t_logits, v.s_logits, 1.0))
    want = -kl.mean() + float(terms.bn_stats(v.t_bn)) + float(jnp.mean(terms.one_hot(v.t_logits))) \
        + 20 * float(terms.balance(v.t_logits))
    assert g == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(s, kl, rtol=1e-6)


def test_predfkd_losses():
    v = _view()
    _, g, s = _combine("predfkd", v)
    want = float(jnp.mean(terms.one_hot(v.t_logits))) + 5 * float(terms.balance(v.t_logits, log_base=10.0)) \
        + 0.1 * float(terms.activation(v.t_feature)) \
        + 1.0 - float(np.clip(np.mean(np.asarray(terms.js(v.s_logits, v.t_logits, 3.0))), 0, 1))
    assert g == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(s, np.asarray(terms.l1(v.s_logits, v.t_logits)), rtol=1e-6)


@pytest.mark.parametrize("method", ["cudfkd", "adadfkd"])
def test_curriculum_methods_losses(method):
    """CuDFKD: one_hot + bn + 20 balance(tau 20) + alpha(e) * masked 9 KL_3; AdaDFKD adds 0.1 R2M.
    alpha ramps from 0 at 25% of the run to grad_adv * 0.5 * epochs at 75%."""
    v = _view()
    grad_adv, epochs = (0.5, 250) if method == "cudfkd" else (0.05, 300)
    base = float(terms.bn_stats(v.t_bn)) + float(jnp.mean(terms.one_hot(v.t_logits))) \
        + 20 * float(terms.balance(v.t_logits, tau=20.0))
    s_, t_ = np.asarray(v.s_logits), np.asarray(v.t_logits)
    mask = (s_.argmax(1) == t_.argmax(1)).astype(np.float64)
    adv = float(np.mean(-mask * 9 * np.asarray(terms.kl(v.t_logits, v.s_logits, 3.0))))
    r2m = float(objectives.r2m(v.replace(progress=0.6), objectives.HParams(r2m_window=0.9)))
    extra = 0.1 * r2m if method == "adadfkd" else 0.0
    for progress, ramp in ((0.1, 0.0), (0.5, 0.5), (0.6, 0.7), (0.9, 1.0)):
        if method == "adadfkd":
            extra = 0.1 * float(objectives.r2m(v.replace(progress=progress), objectives.HParams(r2m_window=0.9)))
        _, g, _ = _combine(method, v, progress)
        assert g == pytest.approx(base + ramp * grad_adv * 0.5 * epochs * adv + extra, rel=1e-5, abs=1e-5), progress
    assert r2m > 0
    _, _, s = _combine(method, v)
    kd = np.asarray(terms.kd(v.s_logits, v.t_logits, 20.0))
    rel = np.asarray(terms.batch_info_nce(v.s_projected, v.t_feature, 0.07)) if method == "adadfkd" else 0.0
    np.testing.assert_allclose(s, kd + 0.1 * rel, rtol=1e-5)


def test_r2m_band_slides_from_easy_to_hard():
    h = objectives.HParams(r2m_window=0.8, r2m_begin=0.25, r2m_end=0.75)
    for progress, lo in ((0.0, 0.0), (0.25, 0.0), (0.5, 0.1), (0.75, 0.2), (1.0, 0.2)):
        got = [float(x) for x in objectives.r2m_band(progress, h)]
        assert got == pytest.approx([lo, lo + 0.8], abs=1e-6)


@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_r2m_against_a_hand_loop(progress):
    """Sort q.Q ascending, keep ranks [floor(lo N), floor(hi N)), InfoNCE at 0.07 with the positive first."""
    v = _view(seed=3, n_queue=10)
    h = objectives.HParams(r2m_window=0.6, r2m_temperature=0.07)
    got = float(objectives.r2m(v.replace(progress=progress), h))
    lo, hi = (float(x) for x in objectives.r2m_band(progress, h))
    q = np.asarray(v.t_feature, np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k, queue = np.asarray(v.s_key, np.float64), np.asarray(v.queue, np.float64)
    n = len(queue)
    losses = []
    for i in range(B):
        order = np.argsort(q[i] @ queue.T)
        kept = order[math.floor(lo * n): math.floor(hi * n)]
        logits = np.concatenate([[q[i] @ k[i]], queue[kept] @ q[i]]) / 0.07
        losses.append(-(logits[0] - np.log(np.sum(np.exp(logits)))))
    assert got == pytest.approx(np.mean(losses), rel=1e-5)


def test_ramp_factor():
    assert [float(objectives.ramp_factor(p, (0.25, 0.75))) for p in (0, 0.25, 0.5, 0.75, 1)] == \
        pytest.approx([0, 0, 0.5, 1, 1])
    assert [float(objectives.ramp_factor(p, (0.5, 0.5))) for p in (0.4, 0.5)] == [0.0, 1.0]


def test_self_paced_student_objective():
    """loss = mean_i v_i * l_i, v_i = (1 + e^-lam) / (1 + e^(l_i - lam)), lam = 2 + 10 * progress."""
    v = _view()
    spec = RoundSpec(1, 1, "fresh", B, 4, (), (("kd", 1.0),), objectives.HParams(tau=4.0), self_paced=(2.0, 10.0))
    loss, parts, extra = student_objective(spec, v.replace(progress=0.1))
    l = np.asarray(terms.kd(v.s_logits, v.t_logits, 4.0), np.float64)
    lam = 2.0 + 10.0 * 0.1
    w = (1 + np.exp(-lam)) / (1 + np.exp(l - lam))
    assert float(loss) == pytest.approx(np.mean(w * l), rel=1e-5)
    assert float(extra["student/self_paced_weight"]) == pytest.approx(w.mean(), rel=1e-5)
    # v has no gradient: d loss / d s equals mean_i v_i * d l_i / d s
    spec_off = RoundSpec(1, 1, "fresh", B, 4, (), (("kd", 1.0),), objectives.HParams(tau=4.0))
    g = jax.grad(lambda s: student_objective(spec, v.replace(s_logits=s, progress=0.1))[0])(v.s_logits)
    g_l = jax.jacrev(lambda s: terms.kd(s, v.t_logits, 4.0))(v.s_logits)  # (B, B, K)
    np.testing.assert_allclose(g, np.einsum("i,ibk->bk", w, g_l) / B, rtol=1e-4, atol=1e-7)
    assert float(student_objective(spec_off, v)[0]) == pytest.approx(l.mean(), rel=1e-5)


@pytest.fixture(scope="module")
def teacher():
    return bn_teacher()


def _config(method):
    c = tiny_config(method, rounds=4)
    c.generator.arch = "dafl"
    c.generator.nz = 16
    c.hparams.r2m_queue_size = 32
    c.memory.batch_size, c.memory.nz, c.memory.update_steps = 4, 8, 1
    return c


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow)
                                    for m in ("zskt", "predfkd", "dfq", "cudfkd")])
def test_method_runs_through_the_engine(teacher, method):
    """Under -m slow (up to a minute each to compile on 2 cores; the default suite covers the pieces:
    bn, ramps and self-paced weights in the AdaDFKD test below, the memory in test_memory.py, the
    attention term in test_terms.py; tools/results.py runs every method at full size)."""
    config = _config(method)
    if method == "predfkd":
        config.student.steps = 1  # one replay + VAE update + student update: the memory's whole path
    d = Distiller.from_config(config, teacher, make_mesh(jax.devices()[:1]))
    state = d.init(0)
    before = jax.device_get(state.student.params)
    for _ in range(2):
        state, metrics = d.round(state)
    metrics = jax.device_get(metrics)
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert not np.allclose(before["fc2"]["kernel"], jax.device_get(state.student.params)["fc2"]["kernel"])
    expected = {"zskt": "student/attention", "dfq": "generator/bn", "cudfkd": "student/self_paced_weight",
                "predfkd": "memory/reconstruction"}[method]
    assert expected in metrics
    if method == "predfkd":  # the memory learns during the first update_steps student updates
        assert not np.allclose(jax.device_get(state.memory.params["decoder"]["l1_0"]["kernel"]),
                               jax.device_get(d.init(0).memory.params["decoder"]["l1_0"]["kernel"]))


def test_adadfkd_state_and_devices(teacher, tmp_path):
    """The queue and the learned projector live in the state and its checkpoint; 1 and 4 devices agree (SGD)."""
    config = _config("adadfkd")
    for section in (config.generator, config.student):
        section.optimizer, section.lr = "sgd", 0.01
    out = {}
    for n in (1, 4):
        d = Distiller.from_config(config, teacher, make_mesh(jax.devices()[:n]))
        assert d.feature_dims == (24, 60)  # TinyBNNet's 24-wide feature, LeNet-5-half's 60
        state = d.init(0)
        q0, p0 = jax.device_get((state.queue.keys, state.projector.params))
        for _ in range(3):
            state, metrics = d.round(state)
        out[n] = jax.device_get((state.student.params, state.generator.params, state.projector.params,
                                 state.queue.keys))
    q, ptr = out[1][3], int(state.queue.ptr)
    assert ptr == (3 * config.train.batch_size) % config.hparams.r2m_queue_size
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(q[:ptr], q0[:ptr]) and np.allclose(q[ptr:], q0[ptr:])
    assert not np.allclose(out[1][2]["kernel"], p0["kernel"])  # the projector learns
    assert {"generator/r2m", "student/relation"} <= set(jax.device_get(metrics))
    chex.assert_trees_all_close(out[1], out[4], rtol=1e-4, atol=1e-6)
    ckpts = Checkpoints(str(tmp_path / "ckpt"))
    ckpts.save(3, state, {"history": [], "elapsed": 0.0})
    ckpts.wait()
    restored, _ = ckpts.restore(3, d.abstract_state())
    ckpts.close()
    chex.assert_trees_all_equal(jax.device_get((state.queue, state.projector)),
                                jax.device_get((restored.queue, restored.projector)))


def test_bn_term_needs_a_teacher_with_batchnorm():
    from tests.helpers import random_teacher
    with pytest.raises(ValueError, match="BatchNorm.*generator.terms.bn=0"):
        Distiller.from_config(_config("dfq"), random_teacher(), make_mesh(jax.devices()[:1]))
