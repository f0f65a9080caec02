"""Loss terms shared by the DFKD methods (each docstring names the paper and equation;
docs/fidelity.md maps them to the reference code).

Every function here is a pure function of arrays: no Python control flow on
values, no state, safe under ``jax.jit`` and ``jax.grad``. Logit inputs have
shape ``(B, K)``; they are cast to float32 before any softmax/log. The
class-wise terms (``kd``, ``kl``, ``l1``) reduce the last axis only, so on
per-pixel logits ``(B, H, W, K)`` they return a value per pixel ``(B, H, W)``
(``dfkd_jax.objectives.per_sample`` averages it per sample).

Return shapes
    * Per-sample terms (``kd``, ``kl``, ``l1``, ``one_hot``, ``js``,
      ``adi_competition``, ``cmi_adversarial``, ``info_nce``,
      ``batch_info_nce``, ``self_paced_weight``) return ``(B,)`` so that a
      caller can weight samples (CuDFKD/AdaDFKD self-paced learning) before
      taking ``.mean()``.
    * Batch-level terms (``balance``, ``activation``, ``bn_stats``,
      ``total_variation``, ``attention``, ``adi_competition_batch``) return a
      scalar.

Global-batch semantics: under ``jax.jit`` with the batch axis sharded over
devices (GSPMD / ``NamedSharding``), every mean, every batch statistic (the
batch mean of the softmax in ``balance``, the B x B similarity matrix of
``batch_info_nce``, ...) is taken over the *global* batch, exactly as on one
device. Inside ``shard_map``/``pmap`` this does not hold: there the arrays are
per-device shards and the caller must reduce across devices itself.

Nothing here detaches the teacher: in the adversarial generator steps the
gradient must reach the generator through both networks. Callers apply
``jax.lax.stop_gradient`` where a method says so. The weights of each term
(e.g. ZSKT's beta = 250, DAFL's 5 on ``balance``) are applied by the caller.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = [
    "l2_normalize", "kd", "kl", "l1", "adv_log_l1", "one_hot", "balance", "activation", "js",
    "adi_competition", "adi_competition_batch", "cmi_adversarial", "bn_stats",
    "total_variation", "total_variation_l2", "attention_map", "attention",
    "info_nce", "batch_info_nce", "self_paced_weight",
]


def _f32(x) -> Array:
    return jnp.asarray(x).astype(jnp.float32)


def _safe_norm(x: Array) -> Array:
    """L2 norm of the whole array with gradient 0 (not NaN) at x == 0 (as ``torch.norm``)."""
    sq = jnp.sum(jnp.square(x))
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-12) -> Array:
    """``x / max(||x||_2, eps)`` along ``axis`` (``torch.nn.functional.normalize``).

    Written as ``x * rsqrt(max(sum x^2, eps^2))`` so that the gradient is finite
    (zero) for an all-zero vector.
    """
    x = _f32(x)
    sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def _kl_rows(t_logits: Array, s_logits: Array, tau) -> Array:
    """Row-wise KL(softmax(t/tau) || softmax(s/tau)) via log_softmax (stable)."""
    log_p_t = jax.nn.log_softmax(_f32(t_logits) / tau, axis=-1)
    log_p_s = jax.nn.log_softmax(_f32(s_logits) / tau, axis=-1)
    p_t = jnp.exp(log_p_t)
    return jnp.sum(p_t * (log_p_t - log_p_s), axis=-1)


def kd(s_logits: Array, t_logits: Array, tau) -> Array:
    """Hinton KD term, per sample: ``tau^2 * KL(softmax(t/tau) || softmax(s/tau))``.

    Hinton, Vinyals & Dean 2015, "Distilling the knowledge in a neural network"
    (soft-target loss; the tau^2 factor keeps gradient magnitudes independent of
    tau). Equals ``F.kl_div(log_softmax(s/T), softmax(t/T), 'none').sum(1) * T*T``
    of the reference code bases. Returns ``(B,)``; the batch mean is Hinton's
    KD loss at temperature tau.
    """
    return (tau * tau) * _kl_rows(t_logits, s_logits, tau)


def kl(t_logits: Array, s_logits: Array, tau=1.0) -> Array:
    """Per-sample ``KL(softmax(t/tau) || softmax(s/tau))`` without the tau^2 factor. ``(B,)``.

    NB the argument order: the *target* distribution comes first. This is the
    KL of ZSKT (Micaelli & Storkey 2019; the generator maximises it, the
    student minimises it, tau = 1) and DFQ (Choi et al. 2020).
    """
    return _kl_rows(t_logits, s_logits, tau)


def l1(s_logits: Array, t_logits: Array) -> Array:
    """DFAD's MAE, per sample: ``mean_c |s_c - t_c|``. ``(B,)``.

    Fang et al. 2019, "Data-Free Adversarial Distillation", Eq. 4 (imitation) /
    Eq. 5 (the generator maximises it). The batch mean equals
    ``F.l1_loss(s, t)`` (mean over batch and classes).
    """
    return jnp.mean(jnp.abs(_f32(s_logits) - _f32(t_logits)), axis=-1)


def adv_log_l1(s_logits: Array, t_logits: Array) -> Array:
    """DFAD's generator loss for segmentation, a scalar: ``-log(L1(s, t) + 1)``.

    Fang et al. 2019, Eq. 6, as ``DFAD_camvid_deeplab.py`` computes it:
    ``-torch.log(F.l1_loss(s_logit, t_logit) + 1)``, with L1 the mean absolute logit
    difference over every element (batch, classes and pixels for ``(B, H, W, K)``
    logits). The log keeps the generator's gradient bounded as the discrepancy grows:
    d/dL1 = -1 / (L1 + 1).
    """
    return -jnp.log(jnp.mean(jnp.abs(_f32(s_logits) - _f32(t_logits))) + 1.0)


def one_hot(t_logits: Array, labels: Array | None = None) -> Array:
    """Cross-entropy of the teacher's logits against a target, per sample. ``(B,)``.

    * ``labels is None``: the target is ``argmax t`` (DAFL, Chen et al. 2019,
      Eq. 2, the one-hot loss: the teacher should be confident).
    * ``labels`` integer ``(B,)``: CE(t, y) for given (e.g. sampled) targets, as
      in the inversion methods (DeepInversion, CMI).
    * ``labels`` float ``(B, K)``: soft targets, ``-sum_c y_c log softmax(t)_c``.

    The dispatch is on ``labels.ndim``, a static property.
    """
    logp = jax.nn.log_softmax(_f32(t_logits), axis=-1)
    if labels is None:
        labels = jnp.argmax(t_logits, axis=-1)
    labels = jnp.asarray(labels)
    if labels.ndim == logp.ndim:  # soft targets (B, K)
        return -jnp.sum(_f32(labels) * logp, axis=-1)
    return -jnp.take_along_axis(logp, labels.astype(jnp.int32)[:, None], axis=-1)[:, 0]


def soft_kl(t_logits: Array, targets: Array, tau=1.0) -> Array:
    """``KL(y || softmax(t / tau))`` per sample for soft targets ``y`` ``(B, K)``. ``(B,)``.

    Wang 2021 (soft-targeted transfer set synthesis): the synthesised input should make the
    teacher's tempered softmax match a sampled soft target. Terms with ``y_c = 0`` count 0
    (``0 log 0 = 0``). Equals ``one_hot(t / tau, y)`` minus the entropy of ``y``: the same
    gradient, a minimum of 0.
    """
    y = _f32(targets)
    logp = jax.nn.log_softmax(_f32(t_logits) / tau, axis=-1)
    y_log_y = jnp.where(y > 0, y * jnp.log(jnp.where(y > 0, y, 1.0)), 0.0)
    return jnp.sum(y_log_y - y * logp, axis=-1)


def balance(t_logits: Array, log_base: float | None = None, tau=1.0) -> Array:
    """DAFL information-entropy loss: ``sum_c p_bar_c log p_bar_c = -H(p_bar)``. Scalar.

    Chen et al. 2019 (DAFL), Eq. 4: ``p_bar = mean_i softmax(t_i / tau)``;
    minimising this maximises the entropy of the batch-mean prediction, i.e.
    spreads the batch over the classes. ``log_base=10`` gives DAFL's released
    ``torch.log10`` form; ``None`` is the natural log (CMI's
    ``class_balance_loss``). ``tau`` (default 1) allows CuDFKD's
    ``H(p_bar at tau)``. ``log p_bar`` is computed as a log-mean-exp of
    log-softmaxes, so it stays finite even if some ``p_bar_c`` underflow.
    The mean is over the global batch (see module docstring).
    """
    logp = jax.nn.log_softmax(_f32(t_logits) / tau, axis=-1)
    b = logp.shape[0]
    log_pbar = jax.nn.logsumexp(logp, axis=0) - math.log(b)
    value = jnp.sum(jnp.exp(log_pbar) * log_pbar)
    if log_base is not None:
        value = value / math.log(log_base)
    return value


def activation(features: Array) -> Array:
    """DAFL activation loss: ``-mean |f|`` over batch and features. Scalar.

    Chen et al. 2019 (DAFL), Eq. 3 (``-1/n sum_i ||f_T^i||_1``; the released code
    takes ``-features.abs().mean()``, i.e. also divides by the width, which is
    what is implemented). ``features`` may have any shape.
    """
    return -jnp.mean(jnp.abs(_f32(features)))


def js(s_logits: Array, t_logits: Array, tau=3.0,
       clamp: tuple[float, float] | None = (0.01, 0.99), standard: bool = False) -> Array:
    """Jensen-Shannon-type divergence of ADI / PRE-DFKD, per sample. ``(B,)``.

    Reference behaviour (DeepInversion/ADI, Yin et al. 2020, Eq. 8, and the
    ``jsdiv`` of the CMI / PRE-DFKD code bases), reproduced exactly by default:

        P = softmax(s/tau), Q = softmax(t/tau), M = (P + Q) / 2   (M from the *unclamped* P, Q)
        P, Q, M each clamped elementwise to [lo, hi] = clamp, *without* renormalising
        js = 1/2 * sum_c M_c (ln M_c - ln P_c) + 1/2 * sum_c M_c (ln M_c - ln Q_c)

    Natural log. Note the direction: the reference writes
    ``F.kl_div(log P, M)``, which is ``KL(M || P)``, so the default is
    ``(KL(M||P) + KL(M||Q)) / 2``, NOT the textbook ``(KL(P||M) + KL(Q||M)) / 2``.
    Because of this direction and the clamp the value is not bounded by ln 2 (it
    reaches about 1.6 nats for two opposite one-hot predictions over 2 classes),
    which is why the references clamp the batch mean to [0, 1]
    (see ``adi_competition_batch``). The clamp also zeroes the gradient of any
    probability outside [lo, hi] (as ``torch.clamp``).

    ``standard=True`` gives the textbook direction ``(KL(P||M) + KL(Q||M)) / 2``
    (same clamping rule). ``clamp=None`` disables clamping; logs are then
    computed from log-softmaxes (stable). The function is symmetric in (s, t).
    """
    ls = jax.nn.log_softmax(_f32(s_logits) / tau, axis=-1)
    lt = jax.nn.log_softmax(_f32(t_logits) / tau, axis=-1)
    if clamp is None:
        lm = jnp.logaddexp(ls, lt) - math.log(2.0)
        p, q, m = jnp.exp(ls), jnp.exp(lt), jnp.exp(lm)
        log_p, log_q, log_m = ls, lt, lm
    else:
        lo, hi = clamp
        p, q = jnp.exp(ls), jnp.exp(lt)
        m = 0.5 * (p + q)
        p, q, m = jnp.clip(p, lo, hi), jnp.clip(q, lo, hi), jnp.clip(m, lo, hi)
        log_p, log_q, log_m = jnp.log(p), jnp.log(q), jnp.log(m)
    if standard:
        return 0.5 * jnp.sum(p * (log_p - log_m), -1) + 0.5 * jnp.sum(q * (log_q - log_m), -1)
    return 0.5 * jnp.sum(m * (log_m - log_p), -1) + 0.5 * jnp.sum(m * (log_m - log_q), -1)


def adi_competition(s_logits: Array, t_logits: Array, tau=3.0,
                    clamp: tuple[float, float] | None = (0.01, 0.99)) -> Array:
    """ADI competition term, per sample: ``1 - js(s, t, tau, clamp)``. ``(B,)``.

    DeepInversion / Adaptive DeepInversion (Yin et al. 2020, Eq. 8,
    ``R_compete = 1 - JS(p_T, p_S)``), also PRE-DFKD's generator term. No clip
    is applied per sample; the reference clips the *batch mean* of ``js`` to
    [0, 1] before ``1 - .``: use ``adi_competition_batch`` for that exact form.
    Gradients of both are identical whenever the batch-mean js lies in (0, 1).
    """
    return 1.0 - js(s_logits, t_logits, tau=tau, clamp=clamp)


def adi_competition_batch(s_logits: Array, t_logits: Array, tau=3.0,
                          clamp: tuple[float, float] | None = (0.01, 0.99)) -> Array:
    """Reference form of the ADI term: ``1 - clip(mean_i js_i, 0, 1)``. Scalar.

    (DeepInversion's ``1 - torch.clamp(loss_verifier_cig, 0, 1)`` with a
    ``batchmean`` KL; PRE-DFKD's ``1 - clamp(JS_3(t, s), 0, 1)``.) The mean is
    over the global batch.
    """
    return 1.0 - jnp.clip(jnp.mean(js(s_logits, t_logits, tau=tau, clamp=clamp)), 0.0, 1.0)


def cmi_adversarial(s_logits: Array, t_logits: Array, tau=1.0) -> Array:
    """CMI's masked adversarial term, per sample: ``-1[argmax s == argmax t] * tau^2 KL(t || s)``. ``(B,)``.

    Fang et al. 2021, "Contrastive Model Inversion for Data-Free Knowledge
    Distillation" (the adversarial distillation term): the generator only
    pushes samples on which student and teacher still agree, so that it does
    not keep enlarging disagreement on samples the student already gets wrong.
    The released code computes it with its ``kldiv`` helper, which multiplies by
    ``T*T``; the factor is kept so that the term equals ``-mask * kd`` at any
    tau. At the default (and published) tau = 1 it is exactly
    ``-mask * KL(t||s)``. The mask is a non-differentiable 0/1 weight.
    """
    mask = (jnp.argmax(s_logits, axis=-1) == jnp.argmax(t_logits, axis=-1)).astype(jnp.float32)
    return -mask * kd(s_logits, t_logits, tau)


def bn_stats(stats: Sequence[tuple[Array, Array, Array, Array]]) -> Array:
    """DeepInversion's BN-statistics prior. Scalar.

    Yin et al. 2020, "Dreaming to Distill", Eq. 4 (R_feature):
    ``sum_l ||mu_l(x) - mu_l^run||_2 + ||sigma_l^2(x) - sigma_l^2,run||_2``,
    plain (not squared) L2 norms over the channel vector, as in the released
    ``DeepInversionHook`` (``torch.norm(running_var - var, 2) + torch.norm(running_mean - mean, 2)``).

    ``stats`` is a sequence of ``(batch_mean, batch_var, running_mean, running_var)``
    per BN layer (as produced by ``dfkd_jax.bn_capture.apply_with_bn_stats``):
    ``batch_var`` is the biased variance of the BN layer's *input* over every
    axis but the channel axis (N, H, W). The norms have gradient 0 (not NaN)
    when the statistics match exactly. An empty sequence gives 0.
    """
    total = jnp.zeros((), jnp.float32)
    for mean, var, rmean, rvar in stats:
        total = total + _safe_norm(_f32(mean) - _f32(rmean)) + _safe_norm(_f32(var) - _f32(rvar))
    return total


def _tv_diffs(x: Array) -> tuple[Array, Array, Array, Array]:
    x = _f32(x)
    return (
        x[:, :, :-1, :] - x[:, :, 1:, :],      # horizontal: neighbours along W
        x[:, :-1, :, :] - x[:, 1:, :, :],      # vertical: neighbours along H
        x[:, 1:, :-1, :] - x[:, :-1, 1:, :],   # anti-diagonal: (h+1, w) vs (h, w+1)
        x[:, :-1, :-1, :] - x[:, 1:, 1:, :],   # diagonal: (h, w) vs (h+1, w+1)
    )


def total_variation(x: Array) -> Array:
    """Anisotropic L1 total-variation prior of an NHWC batch. Scalar.

    DeepInversion (Yin et al. 2020, Eq. 3's R_prior; the ``loss_var_l1`` of the
    released ``get_image_prior_losses``, which CMI uses as its ``tv`` term).
    Exact reading, with x of shape (B, H, W, C):

        d1 = x[:, :, :-1] - x[:, :, 1:]            (horizontal, (B, H, W-1, C))
        d2 = x[:, :-1, :] - x[:, 1:, :]            (vertical,   (B, H-1, W, C))
        d3 = x[:, 1:, :-1] - x[:, :-1, 1:]         (anti-diagonal, (B, H-1, W-1, C))
        d4 = x[:, :-1, :-1] - x[:, 1:, 1:]         (diagonal,      (B, H-1, W-1, C))
        tv = mean|d1| + mean|d2| + mean|d3| + mean|d4|

    each mean over all elements (batch, positions, channels) of that difference
    tensor, the four means summed (not averaged). The reference's ``/255 ... *255``
    cancels and is omitted. Computed on whatever space ``x`` is in (the
    references use the normalised image).
    """
    return jnp.asarray(sum(jnp.mean(jnp.abs(d)) for d in _tv_diffs(x)))


def total_variation_l2(x: Array) -> Array:
    """DeepInversion's L2 variant (``loss_var_l2``): sum of the Frobenius norms of the
    four difference tensors of ``total_variation`` (whole batch, not per sample). Scalar."""
    return jnp.asarray(sum(_safe_norm(d) for d in _tv_diffs(x)))


def attention_map(a: Array, eps: float = 1e-12) -> Array:
    """ZSKT / AT spatial attention map: ``normalize(mean_c a^2)`` flattened. ``(B, H*W)``.

    Zagoruyko & Komodakis 2017 (AT, F^2_mean with p = 2) as used by Micaelli &
    Storkey 2019 (ZSKT's f(A) in the student's attention term): channel mean of squared activations of
    an NHWC block output, flattened over positions, L2-normalised per sample.
    """
    a = _f32(a)
    am = jnp.mean(jnp.square(a), axis=-1).reshape(a.shape[0], -1)
    return l2_normalize(am, axis=-1, eps=eps)


def attention(blocks_s: Sequence[Array], blocks_t: Sequence[Array], spatial_mean: bool = True) -> Array:
    """ZSKT attention-transfer term (without beta). Scalar.

    Micaelli & Storkey 2019, student loss, attention term: ``sum_l || f(A_t^l)/||f(A_t^l)|| - f(A_s^l)/||f(A_s^l)|| ||``
    over the block groups l. The paper writes an L2 norm; its released code
    (which is where beta = 250 comes from) computes, per group,
    ``(at(x) - at(y)).pow(2).mean()``, i.e. the squared difference averaged over
    the batch AND the H*W positions. Default ``spatial_mean=True`` implements
    that code convention, so beta = 250 keeps its meaning:

        sum_l mean_{i, j} (a(A_s^l)_ij - a(A_t^l)_ij)^2

    ``spatial_mean=False`` gives ``sum_l mean_i ||a(A_s^l)_i - a(A_t^l)_i||_2^2``
    (larger by a factor H_l*W_l per group). Groups pair up by position; each pair
    must share spatial size (channels may differ).
    """
    if len(blocks_s) != len(blocks_t):
        raise ValueError(f"attention: {len(blocks_s)} student blocks vs {len(blocks_t)} teacher blocks")
    total = jnp.zeros((), jnp.float32)
    for a_s, a_t in zip(blocks_s, blocks_t):
        d = jnp.square(attention_map(a_s) - attention_map(a_t))
        total = total + (jnp.mean(d) if spatial_mean else jnp.mean(jnp.sum(d, axis=-1)))
    return total


def info_nce(q: Array, k_pos: Array, negatives: Array, temperature,
             mask: Array | None = None) -> Array:
    """InfoNCE with the positive at index 0, per anchor. ``(B,)``.

    van den Oord et al. 2018 / MoCo (He et al. 2020), as used by AdaDFKD's R2M
    (Li et al. 2024). Inputs are assumed already L2-normalised:
    ``q`` (B, D) anchors, ``k_pos`` (B, D) positives, ``negatives`` either a
    shared queue (N, D) or per-anchor negatives (B, N, D).

        logits_i = [q_i . k_i, q_i . n_i1, ..., q_i . n_iN] / temperature
        loss_i   = -log softmax(logits_i)_0

    ``mask`` (B, N) bool, True = keep: masked-out negatives get logit -inf and
    drop out of the softmax (AdaDFKD's difficulty window). With every negative
    masked the loss is 0. No stop-gradient is applied (callers detach keys).
    """
    q, k_pos, negatives = _f32(q), _f32(k_pos), _f32(negatives)
    pos = jnp.sum(q * k_pos, axis=-1, keepdims=True)
    if negatives.ndim == 2:
        neg = q @ negatives.T
    else:
        neg = jnp.einsum("bd,bnd->bn", q, negatives)
    if mask is not None:
        neg = jnp.where(mask, neg, -jnp.inf)
    logits = jnp.concatenate([pos, neg], axis=-1) / temperature
    return -jax.nn.log_softmax(logits, axis=-1)[:, 0]


def batch_info_nce(f_a: Array, f_b: Array, temperature) -> Array:
    """In-batch InfoNCE: row i of ``f_a`` must pick out row i of ``f_b``. ``(B,)``.

    Both inputs are L2-normalised here; ``logits = f_a @ f_b^T / temperature``
    (B x B, over the global batch), ``loss_i = -log softmax(logits_i)_i``.
    AdaDFKD's student relation term (``dfkd_jax.objectives.relation``, temperature 0.07)
    passes ``f_a = teacher features`` and ``f_b = student features`` (projected) with the
    default ``hparams.relation_anchor='teacher'`` (the released ``difficulty_mining``), and
    the reverse with ``'student'``. Not symmetrised.
    """
    a = l2_normalize(f_a)
    b = l2_normalize(f_b)
    logp = jax.nn.log_softmax((a @ b.T) / temperature, axis=-1)
    return -jnp.diagonal(logp)


def multi_teacher_info_nce(s_projected: Sequence[Array], t_features: Sequence[Array], temperature) -> Array:
    """MTCKI's multi-teacher-student contrastive term, per sample. ``(B,)``.

    Multi-teacher contrastive knowledge inversion (only the abstract is public: "a
    multi-teacher-student contrastive loss" strengthens the student's representation). Reading
    (``dfkd_jax.methods.mtcki``): for every teacher m, with ``a_i = normalise(s_projected[m]_i)``
    (the student's feature mapped to teacher m's width) and ``b_j = normalise(t_features[m]_j)``,

        logits^m_ij = <a_i, b_j> / temperature           (B x B over the global batch)
        loss^m_i    = -log softmax(logits^m_i)_i          (student i must pick teacher m's feature of sample i)
        loss_i      = mean_m loss^m_i

    The teachers' features get no gradient (``stop_gradient``); the student's side does (to the
    student and to its projections). With one teacher this is ``batch_info_nce(s, t)``.
    """
    if len(s_projected) != len(t_features) or not t_features:
        raise ValueError(f"multi_teacher_info_nce: {len(s_projected)} student projections for "
                         f"{len(t_features)} teachers")
    per = [batch_info_nce(s, jax.lax.stop_gradient(t), temperature) for s, t in zip(s_projected, t_features)]
    return per[0] if len(per) == 1 else jnp.mean(jnp.stack(per), axis=0)


def self_paced_weight(losses: Array, lam) -> Array:
    """CuDFKD's self-paced sample weight, per sample, without gradient. ``(B,)``.

    Li et al. 2022 (CuDFKD), soft self-paced regulariser:
    ``v = (1 + exp(-lam)) / (1 + exp(l - lam))``, computed as
    ``(1 + exp(-lam)) * sigmoid(lam - l)`` (no overflow for large l). v = 1 at
    l = 0 and decreases with the loss, so hard samples count less early on;
    lam grows during training. Wrapped in ``stop_gradient`` (the weight is a
    constant of the student update), so ``grad(v) == 0``.
    """
    l = jax.lax.stop_gradient(_f32(losses))
    lam = jax.lax.stop_gradient(_f32(lam))
    return jax.lax.stop_gradient((1.0 + jnp.exp(-lam)) * jax.nn.sigmoid(lam - l))
