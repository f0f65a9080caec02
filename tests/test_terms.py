"""Each term of dfkd_jax.terms against a value computed independently in numpy (formulas written out here)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfkd_jax import terms as _terms


class _Jitted:
    """``terms.f(*args, **kw)`` run as one jitted computation (kw closed over as constants):
    one compile per call is much cheaper on CPU than eager op-by-op dispatch."""

    def __getattr__(self, name):
        fn = getattr(_terms, name)
        return lambda *args, **kw: jax.jit(lambda *a: fn(*a, **kw))(*args)


terms = _Jitted()

S = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
T = np.array([[3.0, 2.0, 1.0], [1.0, 0.0, -1.0]], np.float32)


def np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol, atol=tol)


# ---------------------------------------------------------------- kd / kl
def test_kd_by_hand():
    # 2 classes, tau 1: p_t = softmax([ln3, 0]) = [.75, .25], p_s = softmax([0, 0]) = [.5, .5]
    # KL = .75 ln(.75/.5) + .25 ln(.25/.5) = .304099 - .173287 = 0.130812
    t = np.array([[math.log(3.0), 0.0]], np.float32)
    s = np.zeros((1, 2), np.float32)
    close(terms.kd(s, t, 1.0), [0.130812])


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_kd_kl_numpy(tau):
    pt, ps = np_softmax(T / tau), np_softmax(S / tau)
    kl_rows = np.array([sum(pt[i, c] * math.log(pt[i, c] / ps[i, c]) for c in range(3)) for i in range(2)])
    out = terms.kd(S, T, tau)
    assert out.shape == (2,)
    close(out, tau * tau * kl_rows)
    close(terms.kl(T, S, tau), kl_rows)          # kl takes the target first, no tau^2


def test_kd_gradient():
    x = jnp.asarray(T)
    g = jax.grad(lambda s: terms.kd(s, x, 4.0).sum())(x)
    close(g, np.zeros_like(T), tol=1e-6)         # zero at s == t
    # d/ds tau^2 KL = tau (p_s - p_t)
    g = jax.grad(lambda s: terms.kd(s, x, 4.0).sum())(jnp.asarray(S))
    close(g, 4.0 * (np_softmax(S / 4.0) - np_softmax(T / 4.0)))


def test_kd_stable_for_huge_logits():
    s = np.array([[1000.0, -1000.0, 0.0]], np.float32)
    t = np.array([[-1000.0, 1000.0, 0.0]], np.float32)
    v = terms.kd(s, t, 1.0)
    assert np.isfinite(np.asarray(v)).all()
    close(v, [2000.0], tol=1e-3)                 # p_t = e_2: -log p_s[1] = 2000


# ---------------------------------------------------------------- l1
def test_l1_by_hand():
    # sample 0: (|1-3| + 0 + |3-1|)/3 = 4/3; sample 1: (1 + 0 + 1)/3 = 2/3
    close(terms.l1(S, T), [4 / 3, 2 / 3])


# ---------------------------------------------------------------- one_hot
def test_one_hot_argmax_by_hand():
    # softmax([ln3, 0]) = [.75, .25], argmax 0: -ln .75 = 0.287682
    t = np.array([[math.log(3.0), 0.0], [0.0, math.log(3.0)]], np.float32)
    close(terms.one_hot(t), [0.287682, 0.287682])


def test_one_hot_labels_and_soft():
    p = np_softmax(T)
    close(terms.one_hot(T, jnp.array([2, 1])), [-math.log(p[0, 2]), -math.log(p[1, 1])])
    y = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], np.float32)
    want = [-sum(y[i, c] * math.log(p[i, c]) for c in range(3)) for i in range(2)]
    close(terms.one_hot(T, y), want)


# ---------------------------------------------------------------- balance
def test_balance_by_hand():
    # p = [.75, .25] and [.25, .75] -> p_bar = [.5, .5] -> sum p ln p = -ln 2 = -0.693147
    t = np.array([[math.log(3.0), 0.0], [0.0, math.log(3.0)]], np.float32)
    close(terms.balance(t), -0.693147)
    close(terms.balance(t, log_base=10), -0.301030)   # -log10(2)


def test_balance_numpy_and_tau():
    for tau in (1.0, 2.0):
        pbar = np_softmax(T / tau).mean(0)
        close(terms.balance(T, tau=tau), sum(pc * math.log(pc) for pc in pbar))
    assert terms.balance(T).shape == ()


# ---------------------------------------------------------------- activation
def test_activation_by_hand():
    f = np.array([[1.0, -2.0], [3.0, -4.0]], np.float32)
    close(terms.activation(f), -2.5)             # -(1+2+3+4)/4


# ---------------------------------------------------------------- js / adi
def np_js_reference(s, t, tau, lo=0.01, hi=0.99):
    P, Q = np_softmax(s / tau), np_softmax(t / tau)
    M = 0.5 * (P + Q)
    P, Q, M = np.clip(P, lo, hi), np.clip(Q, lo, hi), np.clip(M, lo, hi)
    # F.kl_div(log P, M) = sum M (log M - log P)  i.e. KL(M || P)
    return 0.5 * (M * (np.log(M) - np.log(P))).sum(-1) + 0.5 * (M * (np.log(M) - np.log(Q))).sum(-1)


def test_js_by_hand_clamped():
    # P -> [.99, .01] (clamped), Q -> [.01, .99], M = [.5, .5]
    # KL(M||P) = .5 (-0.683097) + .5 (3.912023) = 1.614463 = KL(M||Q)
    s = np.array([[10.0, -10.0]], np.float32)
    t = np.array([[-10.0, 10.0]], np.float32)
    close(terms.js(s, t, tau=1.0), [1.614463])
    close(terms.adi_competition(s, t, tau=1.0), [1 - 1.614463])
    close(terms.adi_competition_batch(s, t, tau=1.0), 0.0)     # batch mean clipped to 1
    # textbook JS without clamp: ~ln 2 for disjoint predictions
    close(terms.js(s, t, tau=1.0, clamp=None, standard=True), [math.log(2.0)], tol=1e-4)


def test_js_numpy_and_adi():
    want = np_js_reference(S, T, 3.0)
    close(terms.js(S, T), want)
    close(terms.js(T, S), want)                   # symmetric
    close(terms.adi_competition(S, T), 1 - want)
    close(terms.adi_competition_batch(S, T), 1 - np.clip(want.mean(), 0, 1))
    close(terms.js(S, S), [0.0, 0.0])
    # unclamped textbook form
    P, Q = np_softmax(S / 3), np_softmax(T / 3)
    M = 0.5 * (P + Q)
    std = 0.5 * (P * np.log(P / M)).sum(-1) + 0.5 * (Q * np.log(Q / M)).sum(-1)
    close(terms.js(S, T, clamp=None, standard=True), std)


# ---------------------------------------------------------------- cmi
def test_cmi_adversarial():
    s = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]], np.float32)
    t = np.array([[2.0, 0.0, 0.0], [2.0, 0.0, 1.0]], np.float32)   # agree on row 0 only
    pt, ps = np_softmax(t), np_softmax(s)
    kl0 = (pt[0] * np.log(pt[0] / ps[0])).sum()
    close(terms.cmi_adversarial(s, t), [-kl0, 0.0])


# ---------------------------------------------------------------- bn_stats
def test_bn_stats_by_hand():
    stats = [
        (jnp.array([3.0, 4.0]), jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0]), jnp.array([1.0, 2.0])),  # 5 + 0
        (jnp.array([1.0]), jnp.array([3.0]), jnp.array([0.0]), jnp.array([1.0])),                      # 1 + 2
    ]
    close(terms.bn_stats(stats), 8.0)
    close(terms.bn_stats([]), 0.0)


def test_bn_stats_grad_finite_at_match():
    def f(m):
        return terms.bn_stats([(m, m, jnp.ones(3), jnp.ones(3))])
    g = jax.grad(f)(jnp.ones(3))
    close(g, np.zeros(3))
    g = jax.grad(f)(jnp.array([1.0, 1.0, 4.0]))   # d/dm (|m-1| + |m-1|) on the 3rd coordinate
    close(g, [0.0, 0.0, 2.0])


# ---------------------------------------------------------------- tv
def test_total_variation_by_hand():
    # image [[1, 2], [4, 8]]: horizontal |1-2|,|4-8| -> 2.5; vertical |1-4|,|2-8| -> 4.5;
    # anti-diagonal |x10 - x01| = |4-2| = 2; diagonal |x00 - x11| = |1-8| = 7; sum 16
    x = np.array([[1.0, 2.0], [4.0, 8.0]], np.float32)[None, :, :, None]
    close(terms.total_variation(x), 16.0)


def test_total_variation_matches_nchw_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)      # NHWC
    y = x.transpose(0, 3, 1, 2).astype(np.float64)            # NCHW, as the reference code
    d1 = y[:, :, :, :-1] - y[:, :, :, 1:]
    d2 = y[:, :, :-1, :] - y[:, :, 1:, :]
    d3 = y[:, :, 1:, :-1] - y[:, :, :-1, 1:]
    d4 = y[:, :, :-1, :-1] - y[:, :, 1:, 1:]
    close(terms.total_variation(x), sum(np.abs(d).mean() for d in (d1, d2, d3, d4)))
    close(terms.total_variation_l2(x), sum(np.sqrt((d ** 2).sum()) for d in (d1, d2, d3, d4)))


# ---------------------------------------------------------------- attention
def test_attention_map_by_hand():
    # one sample, 1x2 positions, 2 channels: pos0 = [1, 1] -> mean sq 1; pos1 = [2, 0] -> 2
    a = np.array([[[[1.0, 1.0], [2.0, 0.0]]]], np.float32)     # (1, 1, 2, 2)
    close(terms.attention_map(a), [[1 / math.sqrt(5), 2 / math.sqrt(5)]])


def test_attention_numpy():
    rng = np.random.default_rng(1)
    bs = [rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 2, 2, 5))]
    bt = [rng.normal(size=(2, 4, 4, 6)), rng.normal(size=(2, 2, 2, 2))]

    def at(a):
        m = (a ** 2).mean(-1).reshape(a.shape[0], -1)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    code = sum(((at(s) - at(t)) ** 2).mean() for s, t in zip(bs, bt))
    sq = sum(((at(s) - at(t)) ** 2).sum(1).mean() for s, t in zip(bs, bt))
    f32 = lambda xs: [x.astype(np.float32) for x in xs]
    close(terms.attention(f32(bs), f32(bt)), code)
    close(terms.attention(f32(bs), f32(bt), spatial_mean=False), sq)
    close(terms.attention(f32(bs), f32(bs)), 0.0)


# ---------------------------------------------------------------- info_nce
def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_info_nce_numpy_and_mask():
    rng = np.random.default_rng(2)
    q, k = _unit(rng.normal(size=(2, 4))), _unit(rng.normal(size=(2, 4)))
    neg = _unit(rng.normal(size=(3, 4)))
    temp = 0.5

    def ref(qi, ki, negs):
        logits = np.concatenate([[qi @ ki], negs @ qi]) / temp
        return -(logits[0] - np.log(np.exp(logits).sum()))

    want = [ref(q[i], k[i], neg) for i in range(2)]
    out = terms.info_nce(q.astype(np.float32), k.astype(np.float32), neg.astype(np.float32), temp)
    assert out.shape == (2,)
    close(out, want)
    mask = np.array([[True, False, True], [False, False, False]])
    want_m = [ref(q[0], k[0], neg[[0, 2]]), 0.0]      # all negatives masked -> loss 0
    close(terms.info_nce(q, k, neg, temp, mask=mask), want_m)
    # per-anchor negatives (B, N, D)
    neg_b = _unit(rng.normal(size=(2, 3, 4)))
    close(terms.info_nce(q, k, neg_b, temp), [ref(q[i], k[i], neg_b[i]) for i in range(2)])
    g = jax.grad(lambda qq: terms.info_nce(qq, k, neg, temp, mask=mask).sum())(jnp.asarray(q, jnp.float32))
    assert np.isfinite(np.asarray(g)).all()


def test_batch_info_nce_numpy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    an, bn = _unit(a), _unit(b)
    sim = an @ bn.T / 0.07
    want = [-(sim[i, i] - np.log(np.exp(sim[i]).sum())) for i in range(3)]
    close(terms.batch_info_nce(a.astype(np.float32), b.astype(np.float32), 0.07), want, tol=1e-4)


def test_multi_teacher_info_nce_numpy():
    """MTCKI's term: per teacher, student i picks teacher m's feature of sample i among the batch's
    (both L2-normalised, / temperature); the cross-entropies averaged over the teachers."""
    rng = np.random.default_rng(4)
    s1, t1 = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))  # teacher 1: width 4
    s2, t2 = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))  # teacher 2: width 2

    def ce(s, t, temp):
        sim = _unit(s) @ _unit(t).T / temp
        return np.array([np.log(np.exp(sim[i]).sum()) - sim[i, i] for i in range(len(s))])

    want = (ce(s1, t1, 0.2) + ce(s2, t2, 0.2)) / 2
    f32 = lambda *a: [np.asarray(v, np.float32) for v in a]  # noqa: E731
    got = jax.jit(lambda a, b, c, d: _terms.multi_teacher_info_nce((a, b), (c, d), 0.2))(*f32(s1, s2, t1, t2))
    close(got, want, tol=1e-4)
    close(jax.jit(lambda a, c: _terms.multi_teacher_info_nce((a,), (c,), 0.5))(*f32(s1, t1)), ce(s1, t1, 0.5),
          tol=1e-4)
    # the teachers' features are detached; the student's side is not
    g_s, g_t = jax.grad(lambda a, c: _terms.multi_teacher_info_nce((a,), (c,), 0.2).mean(), argnums=(0, 1))(
        *f32(s1, t1))
    assert np.all(np.asarray(g_t) == 0) and np.abs(np.asarray(g_s)).sum() > 0


# ---------------------------------------------------------------- self-paced
def test_self_paced_weight():
    lam = 2.0
    l = np.array([0.0, 2.0, 5.0], np.float32)
    want = [(1 + math.exp(-lam)) / (1 + math.exp(li - lam)) for li in l]
    # by hand: l = 0 -> 1; l = lam -> (1 + e^-2)/2 = 0.567668
    close(want[:2], [1.0, 0.567668])
    close(terms.self_paced_weight(l, lam), want)
    g = jax.grad(lambda x: terms.self_paced_weight(x, lam).sum())(jnp.asarray(l))
    close(g, np.zeros(3))
    assert np.isfinite(np.asarray(terms.self_paced_weight(jnp.array([1e4]), lam))).all()


# ---------------------------------------------------------------- l2_normalize
def test_l2_normalize():
    close(terms.l2_normalize(jnp.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])
    g = jax.grad(lambda x: terms.l2_normalize(x).sum())(jnp.zeros((1, 3)))
    assert np.isfinite(np.asarray(g)).all()


# ---------------------------------------------------------------- jit
def test_terms_under_jit():
    """Eager (op by op) and jitted evaluation agree."""
    @jax.jit
    def f(s, t):
        return (_terms.kd(s, t, 4.0).mean() + _terms.l1(s, t).mean() + _terms.one_hot(t).mean()
                + _terms.balance(t) + _terms.js(s, t).mean() + _terms.cmi_adversarial(s, t).mean()
                + _terms.batch_info_nce(s, t, 0.1).mean() + _terms.self_paced_weight(_terms.l1(s, t), 2.0).mean())

    eager = (_terms.kd(S, T, 4.0).mean() + _terms.l1(S, T).mean() + _terms.one_hot(T).mean()
             + _terms.balance(T) + _terms.js(S, T).mean() + _terms.cmi_adversarial(S, T).mean()
             + _terms.batch_info_nce(S, T, 0.1).mean() + _terms.self_paced_weight(_terms.l1(S, T), 2.0).mean())
    close(f(S, T), eager)
