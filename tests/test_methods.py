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
from dfkd_jax.engine.round import RoundSpec, self_paced_lambda, student_objective
from dfkd_jax.core.sharding import make_mesh
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
                           queue=queue, t_bn=(bn,), progress=0.6,
                           t_blocks=(jax.random.normal(ks[8], (B, 3, 3, 2)),),
                           s_blocks=(jax.random.normal(ks[9], (B, 3, 3, 1)),))


def _combine(method, view, progress=0.6):
    c = methods.configure(base_config(), method)
    h = objectives.HParams.from_config(c)
    ramps = {k: tuple(v) for k, v in c.generator.ramps.items()}
    g, _ = objectives.combine(dict(c.generator.terms), objectives.GENERATOR_TERMS, view.replace(progress=progress),
                              h, ramps, int(c.train.rounds))
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


def _np_log_softmax(x, tau=1.0):
    x = np.asarray(x, np.float64) / tau
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _torch_kl_div(log_q, p, reduction):
    """``F.kl_div(log_q, p, reduction)`` written out: sum p (log p - log q), reduced as PyTorch does."""
    pointwise = p * (np.log(p) - log_q)
    return {"mean": pointwise.mean(), "batchmean": pointwise.sum() / p.shape[0], "none": pointwise}[reduction]


def test_zskt_losses_take_pytorch_mean_kl():
    """ZSKT solver.py l. 217-243: F.kl_div(log_softmax(s), softmax(t)) with the default 'mean' reduction
    (/ B*K) for the generator (minus it) and the student (plus 250 x attention)."""
    v = _view()
    c, g, s = _combine("zskt", v)
    assert c.hparams.kl_reduction == "mean" and c.student.batch == "regenerate" and c.generator.arch == "zskt"
    log_q, p = _np_log_softmax(v.s_logits), np.exp(_np_log_softmax(v.t_logits))
    kl_mean = _torch_kl_div(log_q, p, "mean")
    assert g == pytest.approx(-kl_mean, rel=1e-5)
    # the student's objective is the batch mean of its per-sample terms
    att = float(terms.attention(v.s_blocks, v.t_blocks))
    assert float(np.mean(s)) == pytest.approx(kl_mean + 250 * att, rel=1e-5)
    # 'batchmean' (the switch) is K times stronger
    h = objectives.HParams(kl_reduction="batchmean")
    assert float(objectives.adv_kl(v, h)) == pytest.approx(-_torch_kl_div(log_q, p, "batchmean"), rel=1e-5)
    assert _torch_kl_div(log_q, p, "batchmean") == pytest.approx(K * kl_mean)


def test_dfq_losses():
    """CMI's DFQ: KLDiv() at T 1, 'batchmean', for both; bn + one_hot + 20 balance (natural log)."""
    v = _view()
    c, g, s = _combine("dfq", v)
    assert (c.generator.arch, c.generator.b1, c.generator.b2, c.student.weight_decay) == ("large", 0.5, 0.999, 1e-4)
    assert (c.generator.student_mode, c.student.generator_mode) == ("eval", "eval")
    log_q, p = _np_log_softmax(v.s_logits), np.exp(_np_log_softmax(v.t_logits))
    kl = _torch_kl_div(log_q, p, "none").sum(1)
    logp_t = _np_log_softmax(v.t_logits)
    one_hot = -np.mean(logp_t[np.arange(B), logp_t.argmax(1)])
    p_bar = p.mean(0)
    want = -kl.mean() + float(terms.bn_stats(v.t_bn[0])) + one_hot + 20 * np.sum(p_bar * np.log(p_bar))
    assert g == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(s, kl, rtol=1e-5)


def _np_js_module(student, teacher, tau=3.0, reduction="mean"):
    """PRE-DFKD utils/aux.py l. 70-85, JS_divergence(outputs, outputs_student), written out."""
    P = np.exp(_np_log_softmax(student, tau))
    Q = np.exp(_np_log_softmax(teacher, tau))
    M = 0.5 * (P + Q)
    P, Q, M = (np.clip(a, 0.01, 0.99) for a in (P, Q, M))
    loss = 0.5 * _torch_kl_div(np.log(P), M, reduction) + 0.5 * _torch_kl_div(np.log(Q), M, reduction)
    return 1.0 - np.clip(loss, 0.0, 1.0)


def test_predfkd_losses_take_pytorch_mean_js_and_detach_the_teacher():
    """PRE-DFKD: nn.KLDivLoss() ('mean': / B*K) inside the JS before the clamp, the teacher detached."""
    v = _view()
    c, g, s = _combine("predfkd", v)
    assert (c.hparams.kl_reduction, c.hparams.adv_detach_teacher) == ("mean", True)
    assert (c.generator.bn_eps, c.generator.init, c.memory.nz, c.memory.replay_mode) == (0.8, "uniform", 1000, "eval")
    logp_t = _np_log_softmax(v.t_logits)
    p_bar = np.exp(logp_t).mean(0)
    want = -np.mean(logp_t[np.arange(B), logp_t.argmax(1)]) + 5 * np.sum(p_bar * np.log10(p_bar)) \
        - 0.1 * np.mean(np.abs(np.asarray(v.t_feature))) + _np_js_module(v.s_logits, v.t_logits)
    assert g == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(s, np.abs(np.asarray(v.s_logits) - np.asarray(v.t_logits)).mean(1), rtol=1e-6)
    # the adversarial term reaches the generator through the student only
    h = objectives.HParams.from_config(c)
    g_t = jax.grad(lambda t: objectives.adv_js(v.replace(t_logits=t), h))(v.t_logits)
    g_s = jax.grad(lambda x: objectives.adv_js(v.replace(s_logits=x), h))(v.s_logits)
    assert float(jnp.abs(g_t).max()) == 0.0 and float(jnp.abs(g_s).max()) > 0.0
    # 'batchmean' (the switch) is DeepInversion's ADI form
    h_bm = objectives.HParams(kl_reduction="batchmean", adv_tau=3.0)
    assert float(objectives.adv_js(v, h_bm)) == pytest.approx(_np_js_module(v.s_logits, v.t_logits,
                                                                            reduction="batchmean"), rel=1e-5)


def test_cudfkd_losses():
    """CuDFKD (DataFree cudfkd.py l. 108-131, the script's --loss l1): one_hot + bn - 20 H(p_bar at T 20)
    + alpha(e) * (-mean mask * 9 KL_3); the student's L1 (nn.L1Loss: mean over batch and classes)."""
    v = _view()
    c, _, s = _combine("cudfkd", v)
    assert dict(c.student.terms) == {"l1": 1.0} and (c.generator.arch, c.generator.init) == ("large", "normal")
    # DCGAN_Generator_CIFAR10's Adam (cudfkd.py l. 64) and the BatchNorm modes (l. 75: student eval in the
    # generator's step; l. 165: generator eval when sampling for the student)
    assert (c.generator.b1, c.generator.b2) == (0.9, 0.99)
    assert (c.generator.student_mode, c.student.generator_mode) == ("eval", "eval")
    p20 = np.exp(_np_log_softmax(v.t_logits, 20.0)).mean(0)
    logp_t = _np_log_softmax(v.t_logits)
    base = float(terms.bn_stats(v.t_bn[0])) - np.mean(logp_t[np.arange(B), logp_t.argmax(1)]) \
        + 20 * np.sum(p20 * np.log(p20))
    mask = (np.asarray(v.s_logits).argmax(1) == np.asarray(v.t_logits).argmax(1))
    kl3 = _torch_kl_div(_np_log_softmax(v.s_logits, 3.0), np.exp(_np_log_softmax(v.t_logits, 3.0)), "none").sum(1)
    adv = -np.mean(9 * kl3 * mask)
    rounds = c.train.rounds  # 10,000: alpha grows by 0.5 per 40 rounds inside [25%, 75%]
    for progress in (0.1, 0.5, 0.6, 0.9):
        alpha = 0.5 * np.clip(progress - 0.25, 0, 0.5) * rounds / 40
        _, g, _ = _combine("cudfkd", v, progress)
        assert g == pytest.approx(base + alpha * adv, rel=1e-5, abs=1e-5), progress
    np.testing.assert_allclose(np.mean(s), np.abs(np.asarray(v.s_logits) - np.asarray(v.t_logits)).mean(), rtol=1e-6)


def test_adadfkd_losses():
    """AdaDFKD (DFKD at cd281c4): the current script's constant, unmasked adversarial 9 KL_3 at weight 1,
    + 0.1 R2M; the student's KD at T 20 + 0.1 x cross_entropy(t s^T / 0.07, arange) (difficulty_mining)."""
    v = _view()
    kl3 = _torch_kl_div(_np_log_softmax(v.s_logits, 3.0), np.exp(_np_log_softmax(v.t_logits, 3.0)), "none").sum(1)
    p20 = np.exp(_np_log_softmax(v.t_logits, 20.0)).mean(0)
    logp_t = _np_log_softmax(v.t_logits)
    base = float(terms.bn_stats(v.t_bn[0])) - np.mean(logp_t[np.arange(B), logp_t.argmax(1)]) \
        + 20 * np.sum(p20 * np.log(p20))
    for progress in (0.1, 0.6):
        c, g, s = _combine("adadfkd", v, progress)
        r2m = float(objectives.r2m(v.replace(progress=progress), objectives.HParams.from_config(c)))
        assert g == pytest.approx(base - np.mean(9 * kl3) + 0.1 * r2m, rel=1e-5), progress
    kd20 = 400 * _torch_kl_div(_np_log_softmax(v.s_logits, 20.0), np.exp(_np_log_softmax(v.t_logits, 20.0)),
                               "none").sum(1)
    t_n = np.asarray(v.t_feature, np.float64)
    s_n = np.asarray(v.s_projected, np.float64)
    t_n, s_n = (a / np.linalg.norm(a, axis=1, keepdims=True) for a in (t_n, s_n))
    rel = -np.diag(_np_log_softmax(t_n @ s_n.T / 0.07))  # row i: teacher i picks student i
    np.testing.assert_allclose(s, kd20 + 0.1 * rel, rtol=1e-4)  # float32 KD at T 20 (x 400)
    # the switch: each student feature picks its teacher feature (the transpose)
    h = objectives.HParams(relation_anchor="student", relation_temperature=0.07)
    np.testing.assert_allclose(objectives.relation(v, h), -np.diag(_np_log_softmax(s_n @ t_n.T / 0.07)), rtol=1e-5)
    # the older scripts' form (f6ab653): masked, ramped from 0 by 0.05 per 40-round epoch
    c = methods.adadfkd.configure(base_config(), adv=0.0, grad_adv=0.05, masked=True)
    assert dict(c.generator.terms)["adv_kd_masked"] == 0.05 and tuple(c.generator.ramps["adv_kd_masked"]) == \
        (0.25, 0.75, 40)
    with pytest.raises(ValueError, match="either"):
        methods.adadfkd.configure(base_config(), adv=1.0, grad_adv=0.05)
    # the BatchNorm modes of DFKD's adadfkd.py (l. 112: student eval in the generator's step; l. 185: generator
    # eval when sampling for the student)
    c = methods.adadfkd.configure(base_config())
    assert (c.generator.student_mode, c.student.generator_mode) == ("eval", "eval")


@pytest.mark.parametrize("rounds", [150, 420, 10_000])
def test_curriculum_strengths_follow_the_run_length(rounds):
    """CuDFKD's alpha_adv grows by grad_adv = 0.5 per 40-round epoch between 25% and 75% of the run
    (DataFree datafree_kd.py l. 698-700), and lambda by alpha = 1e-4 per student update (l. 774-778),
    whatever --config.train.rounds is: the strength at the end of a run follows its length."""
    c = methods.configure(base_config(), "cudfkd")
    c.train.rounds = rounds  # what --config.train.rounds does after the config file
    ramp = tuple(c.generator.ramps["adv_kd_masked"])
    w = dict(c.generator.terms)["adv_kd_masked"]
    for r in (0, int(0.25 * rounds), int(0.5 * rounds), rounds):
        by_hand = 0.5 * min(max(r - 0.25 * rounds, 0.0), 0.5 * rounds) / 40
        assert w * float(objectives.ramp_factor(r / rounds, ramp, rounds)) == pytest.approx(by_hand, abs=1e-4)
    spec = RoundSpec(c.student.steps, B, (("l1", 1.0),), objectives.HParams(), rounds=rounds,
                     self_paced=(c.hparams.spl_lambda0, c.hparams.spl_alpha))
    for rnd, step in ((0, 0), (3, 7), (rounds - 1, c.student.steps - 1)):
        k = rnd * c.student.steps + step  # the reference's global_iter before this update
        lam = float(self_paced_lambda(spec, (rnd + step / c.student.steps) / rounds))
        assert lam == pytest.approx(2.0 + 1e-4 * k, rel=1e-5)


def _fashion_mnist_distiller(method, rounds):
    """``configs/fashion_mnist/<method>.py`` with ``--config.train.rounds=rounds`` applied after it, turned
    into the Distiller (schedules only: nothing is compiled or run; the LeNet-5 teacher's weights are zeros
    of the right shapes, as no network is applied)."""
    import importlib.util
    import os

    from dfkd_jax.models import build_model
    from dfkd_jax.teacher import Teacher, TeacherMeta
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "fashion_mnist",
                        f"{method}.py")
    spec = importlib.util.spec_from_file_location(f"fm_{method}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    assert c.train.rounds == 420  # the file's own length
    c.train.rounds = rounds
    model = build_model("lenet5", 10)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)), train=False))
    teacher = Teacher(model, jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes),
                      TeacherMeta("lenet5", "fashion_mnist", 10, (32, 32, 1), (0.2860,), (0.3530,)))
    return Distiller.from_config(c, teacher, make_mesh(jax.devices()[:1]))


@pytest.mark.parametrize("rounds", [150, 420])
def test_fashion_mnist_curricula_follow_the_run_length(rounds):
    """The Fashion-MNIST CuDFKD / AdaDFKD configs with --config.train.rounds changed: the schedules the Distiller
    builds follow the new length. CuDFKD's alpha_adv = 0.5 x (rounds into [25%, 75%]) / 40 (at the end 0.9375 for
    150 rounds, 2.625 for 420); lambda = lambda_0 + 1e-4 x (student updates so far) for both; AdaDFKD's R2M band
    starts at (1 - 0.9) x (progress - 0.25) / 0.5, its adversarial weight a constant 1."""
    import types
    for method, lam0 in (("cudfkd", 2.0), ("adadfkd", 2.2)):
        d = _fashion_mnist_distiller(method, rounds)
        steps = d.spec.round.student_steps
        assert (d.spec.round.rounds, d.synth.spec.rounds) == (rounds, rounds)

        def progress(rnd, step, n):  # the engine's progress at step `step` of `n` in round `rnd`
            return float(d.round_fn._progress(types.SimpleNamespace(round=jnp.asarray(rnd, jnp.int32)), step, n))

        for rnd, step in ((0, 0), (rounds // 2, 3), (rounds - 1, steps - 1)):
            lam = float(self_paced_lambda(d.spec.round, progress(rnd, step, steps)))
            assert lam == pytest.approx(lam0 + 1e-4 * (rnd * steps + step), rel=1e-6), (method, rnd, step)
        terms_g, ramps = dict(d.synth.spec.terms), dict(d.synth.spec.ramps)
        if method == "cudfkd":
            w, ramp = terms_g["adv_kd_masked"], ramps["adv_kd_masked"]
            for rnd in (0, rounds // 4, rounds // 2, (3 * rounds) // 4 + 1, rounds - 1):
                by_hand = 0.5 * min(max(rnd - 0.25 * rounds, 0.0), 0.5 * rounds) / 40
                got = w * float(objectives.ramp_factor(progress(rnd, 0, 1), ramp, d.synth.spec.rounds))
                assert got == pytest.approx(by_hand, abs=1e-5), rnd
            end = w * float(objectives.ramp_factor(1.0, ramp, d.synth.spec.rounds))
            assert end == pytest.approx({150: 0.9375, 420: 2.625}[rounds], rel=1e-6)
        else:
            assert terms_g["adv_kd"] == 1.0 and not ramps
            for rnd in (0, rounds // 2, (5 * rounds) // 8, rounds - 1):
                p = rnd / rounds
                lo = float(objectives.r2m_band(progress(rnd, 0, 1), d.synth.spec.hparams)[0])
                assert lo == pytest.approx(min(max(0.1 * (p - 0.25) / 0.5, 0.0), 0.1), abs=1e-6), rnd


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
    spec = RoundSpec(1, B, (("kd", 1.0),), objectives.HParams(tau=4.0), self_paced=(2.0, 10.0))
    loss, parts, extra = student_objective(spec, v.replace(progress=0.1))
    l = np.asarray(terms.kd(v.s_logits, v.t_logits, 4.0), np.float64)
    lam = 2.0 + 10.0 * 0.1
    w = (1 + np.exp(-lam)) / (1 + np.exp(l - lam))
    assert float(loss) == pytest.approx(np.mean(w * l), rel=1e-5)
    assert float(extra["student/self_paced_weight"]) == pytest.approx(w.mean(), rel=1e-5)
    # v has no gradient: d loss / d s equals mean_i v_i * d l_i / d s
    spec_off = RoundSpec(1, B, (("kd", 1.0),), objectives.HParams(tau=4.0))
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


@pytest.mark.slow  # moved out of the default suite to keep it under 10 minutes on 2 cores
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
        q0, p0 = jax.device_get((state.synth.queue.keys, state.projector.params))
        for _ in range(3):
            state, metrics = d.round(state)
        out[n] = jax.device_get((state.student.params, state.generator.params, state.projector.params,
                                 state.synth.queue.keys))
    q, ptr = out[1][3], int(state.synth.queue.ptr)
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
    chex.assert_trees_all_equal(jax.device_get((state.synth.queue, state.projector)),
                                jax.device_get((restored.synth.queue, restored.projector)))


def test_bn_term_needs_a_teacher_with_batchnorm():
    from tests.helpers import random_teacher
    with pytest.raises(ValueError, match="BatchNorm.*generator.terms.bn=0"):
        Distiller.from_config(_config("dfq"), random_teacher(), make_mesh(jax.devices()[:1]))
