"""Named, weighted loss terms: what a method's config composes.

A method's config is a weight per term name, e.g. DFAD is
``generator.terms = {'adv_l1': 1}``, ``student.terms = {'l1': 1}``; DAFL is
``generator.terms = {'one_hot': 1, 'activation': 0.1, 'balance': 5}``,
``student.terms = {'kd': 1}``. Each entry adapts one pure function of
``dfkd_jax.terms`` to the arrays a step has at hand (a ``View``), so the step
itself is the same for every method. A term declares what it ``needs`` beyond
the teacher's logits and features (the student's outputs, block-group outputs,
the teacher's BatchNorm input statistics, the projected student keys and the
R2M queue); the round computes exactly those.

Generator terms return a scalar (minimised by the generator); student terms
return one value per sample (a scalar broadcasts), so a method can weight samples
(CuDFKD's self-paced weight), and the step takes their mean over the global batch.
A term computed on per-pixel logits ``(B, H, W, K)`` (segmentation) gives a value
per pixel; ``per_sample`` averages it over every non-batch axis, so the batch mean
of a per-sample term is the mean over all pixels (DFAD's ``F.l1_loss`` on
``(B, K, H, W)`` logits), and the generator terms, plain means, need nothing.

A term's weight can follow a ramp over the run (``ramps``): 0 before a fraction
``begin`` of the run, then growing linearly, flat after ``end``. A ramp ``(begin, end)``
reaches the configured weight at ``end``; a ramp ``(begin, end, rounds)`` grows by the
configured weight every ``rounds`` rounds, so its final strength is
``weight * (end - begin) * run_rounds / rounds``: CuDFKD's adversarial curriculum
``alpha_adv(e)``, which grows by ``grad_adv`` per 40-round epoch, keeps its published
slope at any run length. A ramp ``(begin, end, rounds, start)`` starts from ``start`` times
the weight (CuDFKD's WRN script: ``--adv 0.5 --grad_adv 0.05`` is weight 0.05 with start 10).

Reductions: the per-sample KL of ``kl`` and ``adv_kl`` and the batch JS of ``adv_js`` are
summed over classes (PyTorch's ``'batchmean'``). With ``hparams.kl_reduction='mean'``
they are also divided by the number of classes K, as PyTorch's default ``'mean'``
reduction of ``F.kl_div`` / ``nn.KLDivLoss`` does (ZSKT's solver, PRE-DFKD's
``JS_divergence``): next to the other terms such a term is K times weaker.
``hparams.adv_detach_teacher`` makes the adversarial terms reach the generator through
the student only (PRE-DFKD passes ``outputs_T.detach()``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp

from dfkd_jax import terms


class View(flax.struct.PyTreeNode):
    """What one step sees of a synthetic batch (fields a term does not need are None)."""

    x: jax.Array  # the synthetic images, as the networks consume them
    t_logits: jax.Array
    t_feature: Any = None
    s_logits: Any = None
    s_feature: Any = None
    t_blocks: Any = None  # teacher block-group outputs
    s_blocks: Any = None
    # per teacher: [(batch_mean, batch_var, running_mean, running_var)] per BN layer (dfkd_jax.ensemble)
    t_bn: Any = None
    s_key: Any = None  # L2-normalised student features, projected to the teacher's width
    s_projected: Any = None  # the same before normalisation, with gradient to student and projector
    queue: Any = None  # (N, D) R2M queue of past student keys
    progress: Any = 0.0  # fraction of the run done, in [0, 1] (for schedules)
    x_clean: Any = None  # the batch before augmentation (inversion: the image priors read it)
    targets: Any = None  # sampled class targets (inversion); None: the teacher's argmax
    t_conv1: Any = None  # the first teacher's first-convolution output (soft-targeted synthesis's L_a)
    t_per_logits: Any = None  # every teacher's own logits (a tuple; t_logits is their mean)
    t_features: Any = None  # every teacher's pooled feature (a tuple, detached; MTCKI's student contrast)


@dataclasses.dataclass(frozen=True)
class HParams:
    """Static hyperparameters the terms read (``config.student.tau`` and ``config.hparams``)."""

    tau: float = 1.0  # the student's kd temperature
    balance_log_base: float = 0.0  # 0 = natural log
    balance_tau: float = 1.0
    adv_tau: float = 3.0  # temperature of adv_kd and adv_js
    r2m_temperature: float = 0.07
    r2m_window: float = 0.9  # k: the width of the kept band of negatives, a fraction of the queue
    r2m_begin: float = 0.25  # b: fraction of the run at which the band starts sliding
    r2m_end: float = 0.75  # f: fraction at which it reaches the hardest negatives
    relation_temperature: float = 0.07
    relation_anchor: str = "teacher"  # 'teacher': rows of t s^T (AdaDFKD's code) | 'student': rows of s t^T
    kl_reduction: str = "batchmean"  # 'mean': kl, adv_kl and adv_js also divided by the number of classes
    adv_detach_teacher: bool = False  # adversarial terms: no gradient through the teacher's logits
    target_tau: float = 20.0  # temperature of soft_ce / soft_kl (ZSKD, soft-targeted synthesis)
    # several teachers: how one_hot and bn combine them. 'ensemble': one_hot on the mean logits, bn the mean
    # over teachers | 'mean': both the mean over teachers of each teacher's own term | 'sum': both the sum
    teacher_reduction: str = "ensemble"
    mt_temperature: float = 0.2  # MTCKI's multi-teacher-student InfoNCE

    @classmethod
    def from_config(cls, cfg) -> "HParams":
        h = cfg.hparams
        return cls(tau=float(cfg.student.tau), balance_log_base=float(h.balance_log_base),
                   balance_tau=float(h.balance_tau),
                   adv_tau=float(h.adv_tau), r2m_temperature=float(h.r2m_temperature),
                   r2m_window=float(h.r2m_window), r2m_begin=float(h.r2m_begin), r2m_end=float(h.r2m_end),
                   relation_temperature=float(h.relation_temperature), relation_anchor=str(h.relation_anchor),
                   kl_reduction=str(h.kl_reduction), adv_detach_teacher=bool(h.adv_detach_teacher),
                   target_tau=float(h.target_tau), teacher_reduction=str(h.teacher_reduction),
                   mt_temperature=float(h.mt_temperature))


@dataclasses.dataclass(frozen=True)
class Term:
    fn: Callable[[View, HParams], jax.Array]
    needs: frozenset = frozenset()  # subset of NEEDS
    doc: str = ""


NEEDS = ("student", "t_feature", "t_blocks", "s_blocks", "bn", "key", "queue", "conv1", "t_features")


def _log_base(h: HParams):
    return h.balance_log_base or None


def _per_class(h: HParams, value, logits):
    """``value`` divided by the number of classes under ``kl_reduction='mean'``."""
    return value / logits.shape[-1] if h.kl_reduction == "mean" else value


def _adv_t(v: View, h: HParams):
    """The teacher's logits as the adversarial terms see them."""
    return jax.lax.stop_gradient(v.t_logits) if h.adv_detach_teacher else v.t_logits


def kl_term(v: View, h: HParams):
    """ZSKT / DFQ student term: per-sample KL(t || s) at tau 1 (/ K under ``kl_reduction='mean'``)."""
    return _per_class(h, terms.kl(v.t_logits, v.s_logits, 1.0), v.t_logits)


def adv_kl(v: View, h: HParams):
    """ZSKT (Eq. 1) / DFQ generator term: -mean_i KL(t_i || s_i) at tau 1 (/ K under ``kl_reduction='mean'``)."""
    return -jnp.mean(_per_class(h, terms.kl(_adv_t(v, h), v.s_logits, 1.0), v.t_logits))


def adv_js(v: View, h: HParams):
    """ADI / PRE-DFKD: ``1 - clip(mean_i JS_tau(s_i, t_i) [/ K], 0, 1)``, probabilities clamped to [0.01, 0.99].

    PRE-DFKD's ``JS_divergence`` takes ``nn.KLDivLoss()``'s default 'mean' (/ (B K)) before the
    clamp (``kl_reduction='mean'``); DeepInversion's ADI takes 'batchmean'.
    """
    js = _per_class(h, terms.js(v.s_logits, _adv_t(v, h), h.adv_tau), v.t_logits)
    return 1.0 - jnp.clip(jnp.mean(js), 0.0, 1.0)


def adv_js_neg(v: View, h: HParams):
    """ADI as the CMI / Fast-Datafree code computes it: ``-mean_i JS_tau(s_i, t_i)`` (``deepinversion.py``
    l. 91, ``loss_adv = -jsdiv(s_out, t_out, T=3)``, batchmean), the probabilities clamped to [0.01, 0.99].

    DeepInversion's ``1 - JS`` (``adv_js``) differs by the constant 1 and by the clip of the mean to
    [0, 1]; both have the same gradient while the mean lies in (0, 1)."""
    return -jnp.mean(_per_class(h, terms.js(v.s_logits, _adv_t(v, h), h.adv_tau), v.t_logits))


def _over_teachers(per_teacher, h: HParams):
    """One value per teacher combined: their sum under ``teacher_reduction='sum'``, else their mean."""
    if len(per_teacher) == 1:
        return per_teacher[0]
    stacked = jnp.stack(per_teacher)
    return jnp.sum(stacked) if h.teacher_reduction == "sum" else jnp.mean(stacked)


def bn_term(v: View, h: HParams):
    """DeepInversion's R_feature (Eq. 4), per teacher the sum over its BN layers, then the mean over
    the teachers (one teacher: its sum; copies of one teacher: the same value), or their sum under
    ``teacher_reduction='sum'`` (MTCKI's "summed over teachers"). Teachers without BatchNorm have no
    statistics to match: the reduction runs over the teachers that have BN layers (MTCKI with a BN-free
    LeNet-5 beside BN teachers; ``Distiller.from_config`` refuses the term when no teacher has any)."""
    with_bn = [stats for stats in v.t_bn if len(stats)]
    return _over_teachers([terms.bn_stats(stats) for stats in with_bn] or [jnp.zeros((), jnp.float32)], h)


def one_hot_term(v: View, h: HParams):
    """DAFL Eq. 2 / the inversion family's CE(t, y), batch mean. Several teachers: with
    ``teacher_reduction='ensemble'`` the CE of the ensemble's (mean) logits; with 'mean' / 'sum' the
    mean / sum over teachers of each teacher's own CE (MTCKI's reading; without targets each
    teacher against its own argmax)."""
    per = v.t_per_logits
    if h.teacher_reduction == "ensemble" or per is None or len(per) == 1:
        return jnp.mean(terms.one_hot(v.t_logits, v.targets))
    return _over_teachers([jnp.mean(terms.one_hot(t, v.targets)) for t in per], h)


def mt_contrast(v: View, h: HParams):
    """MTCKI's multi-teacher-student InfoNCE (``terms.multi_teacher_info_nce``), per sample: the student's
    projected feature (``s_projected``, one block of the projector's output per teacher, in the teachers'
    order and widths) against each teacher's own detached feature over the batch, at ``mt_temperature``."""
    widths = [int(f.shape[-1]) for f in v.t_features]
    if v.s_projected.shape[-1] != sum(widths):
        raise ValueError(f"mt_contrast: the student's projected feature has width {v.s_projected.shape[-1]}, the "
                         f"teachers' features {widths} (sum {sum(widths)})")
    cuts = [sum(widths[:i + 1]) for i in range(len(widths) - 1)]
    return terms.multi_teacher_info_nce(jnp.split(v.s_projected, cuts, axis=-1), v.t_features, h.mt_temperature)


def _clean(v: View):
    return v.x if v.x_clean is None else v.x_clean


def relation(v: View, h: HParams):
    """AdaDFKD's student relation InfoNCE over the batch, per sample, at ``relation_temperature``.

    ``relation_anchor='teacher'`` (the released ``difficulty_mining``: ``cross_entropy(t s^T / tau,
    arange)``): each teacher feature must pick out its own student feature among the batch's;
    ``'student'``: each projected student feature must pick out its teacher feature.
    """
    if h.relation_anchor == "teacher":
        return terms.batch_info_nce(v.t_feature, v.s_projected, h.relation_temperature)
    return terms.batch_info_nce(v.s_projected, v.t_feature, h.relation_temperature)


def r2m_band(progress, h: HParams):
    """AdaDFKD's difficulty band ``[h(e), h(e) + k)`` as fractions of the sorted queue.

    ``h(e) = clip((1 - k) (e - bE) / ((f - b) E), 0, 1 - k)`` with ``e / E = progress``:
    the band starts on the least similar (easiest) negatives and slides to the most
    similar (hardest) ones between fractions b and f of the run.
    """
    k = h.r2m_window
    lo = jnp.clip((1.0 - k) * (progress - h.r2m_begin) / (h.r2m_end - h.r2m_begin), 0.0, 1.0 - k)
    return lo, lo + k


def r2m(view: View, h: HParams) -> jax.Array:
    """AdaDFKD's Relationship Refinement Module loss (Li et al., Neural Networks 2024). Scalar.

    Reading of the released code (docs/fidelity.md, AdaDFKD): anchor ``q_i = normalise(f_T(x_i))``
    (gradient reaches the generator through the teacher), positive ``k_i`` = the
    student's projected, normalised feature on the same sample (no gradient), and as
    negatives the queue of past student keys, of which each anchor keeps only the band
    of ranks ``[h N, (h + k) N)`` of ``q_i . Q_j`` sorted ascending (``r2m_band``).
    InfoNCE at temperature 0.07 with the positive at index 0, averaged over the batch.
    """
    q = terms.l2_normalize(view.t_feature)
    k_pos = jax.lax.stop_gradient(view.s_key)
    queue = jax.lax.stop_gradient(view.queue)
    n = queue.shape[0]
    lo, hi = r2m_band(view.progress, h)
    sims = jax.lax.stop_gradient(q) @ queue.T
    rank = jnp.argsort(jnp.argsort(sims, axis=-1), axis=-1)
    keep = (rank >= jnp.floor(lo * n)) & (rank < jnp.floor(hi * n))
    return jnp.mean(terms.info_nce(q, k_pos, queue, h.r2m_temperature, mask=keep))


STUDENT = frozenset({"student"})

def _first_line(f: Callable) -> str:
    """The first line of ``f``'s docstring (a term's description)."""
    return (f.__doc__ or "").splitlines()[0]


GENERATOR_TERMS: dict[str, Term] = {
    "adv_l1": Term(lambda v, h: -jnp.mean(terms.l1(v.s_logits, _adv_t(v, h))), STUDENT,
                   "DFAD Eq. 5: maximise the student-teacher L1 discrepancy (classification)."),
    "adv_log_l1": Term(lambda v, h: terms.adv_log_l1(v.s_logits, _adv_t(v, h)), STUDENT,
                       "DFAD Eq. 6: -log(L1 + 1), the segmentation form; bounded gradient as L1 grows."),
    "adv_kl": Term(adv_kl, STUDENT, adv_kl.__doc__ or ""),
    "adv_kd": Term(lambda v, h: -jnp.mean(terms.kd(v.s_logits, _adv_t(v, h), h.adv_tau)), STUDENT,
                   "AdaDFKD (current script: adv 1.0, unmasked) / CuDFKD unmasked: maximise tau^2 KL_tau(t || s) "
                   "at tau = hparams.adv_tau (3: KL_3 x 9)."),
    "adv_js": Term(adv_js, STUDENT, _first_line(adv_js)),
    "adv_kd_masked": Term(lambda v, h: jnp.mean(terms.cmi_adversarial(v.s_logits, _adv_t(v, h), h.adv_tau)),
                          STUDENT, "CMI's masked form at tau = hparams.adv_tau: only samples on which s and t "
                          "agree (the CuDFKD released code, adv_type 'kl', tau 3)."),
    "one_hot": Term(one_hot_term, frozenset(),
                    "DAFL Eq. 2: cross-entropy of the teacher against its own argmax; the inversion "
                    "family's CE(t, y) against the round's sampled targets y (several teachers: "
                    "hparams.teacher_reduction)."),
    "adv_js_neg": Term(adv_js_neg, STUDENT, _first_line(adv_js_neg)),
    "tv": Term(lambda v, h: terms.total_variation(_clean(v)), frozenset(),
               "DeepInversion R_prior: L1 total variation of the un-augmented batch (get_image_prior_losses)."),
    "l2": Term(lambda v, h: terms._safe_norm(terms._f32(_clean(v))), frozenset(),
               "DeepInversion's l2 prior: the Frobenius norm of the whole un-augmented batch (torch.norm(inputs, 2))."),
    "activation": Term(lambda v, h: terms.activation(v.t_feature), frozenset(),
                       "DAFL Eq. 3: -mean |f_T| of the teacher's features."),
    "balance": Term(lambda v, h: terms.balance(v.t_logits, log_base=_log_base(h), tau=h.balance_tau), frozenset(),
                    "DAFL Eq. 4: -H(p_bar), spreads the batch over classes (p at tau = hparams.balance_tau)."),
    "bn": Term(bn_term, frozenset({"bn"}),
               "DeepInversion Eq. 4 (DFQ's BNS loss): teacher BN input statistics against the running ones "
               "(mean over teachers)."),
    "r2m": Term(r2m, frozenset({"student", "key", "queue"}), _first_line(r2m)),
    "soft_ce": Term(lambda v, h: jnp.mean(terms.one_hot(v.t_logits / h.target_tau, v.targets)), frozenset(),
                    "ZSKD (Nayak et al. 2019): CE(y, softmax(t / 20)) against the round's sampled "
                    "Dirichlet soft targets y, batch mean (the released code's softmax_cross_entropy mean)."),
    "soft_kl": Term(lambda v, h: jnp.mean(terms.soft_kl(v.t_logits, v.targets, h.target_tau)), frozenset(),
                    "Soft-targeted synthesis (Wang 2021): KL(y_soft || softmax(t / tau)), batch mean."),
    "conv1_activation": Term(lambda v, h: terms.activation(v.t_conv1), frozenset({"conv1"}),
                             "Soft-targeted synthesis's L_a: -mean |conv1 output| of the teacher (weight lambda_a)."),
}

STUDENT_TERMS: dict[str, Term] = {
    "l1": Term(lambda v, h: terms.l1(v.s_logits, v.t_logits), STUDENT, "DFAD Eq. 4: mean |s - t| over classes."),
    "kd": Term(lambda v, h: terms.kd(v.s_logits, v.t_logits, h.tau), STUDENT,
               "Hinton KD: tau^2 KL(softmax(t/tau) || softmax(s/tau))."),
    "kl": Term(kl_term, STUDENT, kl_term.__doc__ or ""),
    "attention": Term(lambda v, h: terms.attention(v.s_blocks, v.t_blocks), frozenset({"student", "t_blocks",
                                                                                           "s_blocks"}),
                      "ZSKT: attention transfer over block groups (weight beta = 250; code convention)."),
    "relation": Term(relation, frozenset({"student", "key", "t_feature"}), _first_line(relation)),
    "mt_contrast": Term(mt_contrast, frozenset({"student", "key", "t_features"}), _first_line(mt_contrast)),
}


# Terms defined on per-pixel logits (B, H, W, K) (segmentation): class-wise ones reduce the last axis
# only, image priors and BN statistics do not read logits. The others read pooled features, block
# outputs, class targets or a batch's class histogram, which a segmentation model does not have.
PER_PIXEL_GENERATOR_TERMS = frozenset({"adv_l1", "adv_log_l1", "adv_kl", "adv_kd", "tv", "l2", "bn"})
PER_PIXEL_STUDENT_TERMS = frozenset({"l1", "kd", "kl"})

def needs(weights: dict[str, float], registry: dict[str, Term]) -> frozenset:
    """Everything the terms with non-zero weight need (names from ``NEEDS``)."""
    out: frozenset = frozenset()
    for name, w in weights.items():
        if w:
            out = out | registry[name].needs
    return out


def ramp_factor(progress, ramp: tuple[float, ...], rounds: int = 1):
    """The factor on a ramped term's weight at ``progress`` (fraction of the run).

    ``(begin, end)``: 0 before ``begin``, 1 after ``end``, linear in between.
    ``(begin, end, period)``: ``clip(progress - begin, 0, end - begin) * rounds / period``, i.e. the
    weight grows by itself every ``period`` rounds of a run of ``rounds`` rounds.
    ``(begin, end, period, start)``: the same plus ``start`` (the factor before ``begin``).
    """
    begin, end = ramp[0], ramp[1]
    if len(ramp) >= 3:
        start = ramp[3] if len(ramp) == 4 else 0.0
        return start + jnp.clip(progress - begin, 0.0, end - begin) * (rounds / ramp[2])
    if end <= begin:
        return jnp.where(progress >= begin, 1.0, 0.0)
    return jnp.clip((progress - begin) / (end - begin), 0.0, 1.0)


def per_sample(value: jax.Array) -> jax.Array:
    """A term's value reduced to one number per sample: the mean over every axis but the first
    (per-pixel values of segmentation terms); scalars and ``(B,)`` vectors are returned as they are."""
    return value if value.ndim <= 1 else jnp.mean(value, axis=tuple(range(1, value.ndim)))


def combine(weights: dict[str, float], registry: dict[str, Term], view: View, h: HParams,
            ramps: dict[str, tuple[float, ...]] | None = None, rounds: int = 1, factors: dict | None = None,
            reduce: Callable | None = None):
    """``(sum_i w_i(progress) * term_i, {name: term_i})`` over the terms with non-zero weight
    (``rounds``: the run's length, for ramps with a period; ``factors``: traced multipliers of some
    weights, e.g. Fast's adversarial warm-up); ``reduce`` (e.g. ``per_sample``) is applied to each
    term's value first."""
    ramps = ramps or {}
    factors = factors or {}
    parts = {name: registry[name].fn(view, h) for name, w in weights.items() if w}
    if reduce is not None:
        parts = {name: reduce(v) for name, v in parts.items()}
    total: Any = 0.0
    for name, value in parts.items():
        w = float(weights[name])
        if name in ramps:
            w = w * ramp_factor(view.progress, ramps[name], rounds)
        if name in factors:
            w = w * factors[name]
        total = total + w * value
    return total, parts
