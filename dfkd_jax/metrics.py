"""Evaluation metrics as masked per-batch sums.

Each batch function takes a float ``mask`` of shape ``(B,)`` (1 for real
examples, 0 for padding added to fill the last batch) and returns the *sum*
over the batch of the per-example quantity times the mask, as a float32
scalar. An evaluation loop adds these sums up and divides by the number of
real examples (``mask.sum()`` accumulated), so padded examples never count.
Under ``jax.jit`` with the batch sharded the sums are over the global batch.

Segmentation: ``confusion_matrix`` is the per-batch sum (a ``(K, K)`` count of
pixels by true and predicted class, ignored pixels left out), accumulated on the
device like the other sums; ``segmentation_scores`` turns the total into mIoU and
pixel accuracy on the host at the end. ``pixel_agreement`` is Agree@1 per pixel.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["correct", "agreement", "loyalty", "js_base2", "summarise", "calibration", "confusion_matrix",
           "segmentation_scores", "pixel_agreement"]


def correct(logits, labels, mask) -> jax.Array:
    """Number of real examples whose top-1 prediction equals the label (accuracy numerator)."""
    hit = (jnp.argmax(logits, axis=-1) == jnp.asarray(labels)).astype(jnp.float32)
    return jnp.sum(hit * jnp.asarray(mask, jnp.float32))


def agreement(s_logits, t_logits, mask) -> jax.Array:
    """Agree@1 numerator (AdaDFKD): number of real examples where top-1 of the student == top-1 of the teacher."""
    hit = (jnp.argmax(s_logits, axis=-1) == jnp.argmax(t_logits, axis=-1)).astype(jnp.float32)
    return jnp.sum(hit * jnp.asarray(mask, jnp.float32))


def js_base2(s_logits, t_logits) -> jax.Array:
    """Textbook Jensen-Shannon divergence, in bits, between softmax(s) and softmax(t). ``(B,)``.

    ``JS = 1/2 KL(P||M) + 1/2 KL(Q||M)``, ``M = (P + Q)/2``, log base 2, so
    ``0 <= JS <= 1``; no clamping of probabilities (logs from log-softmax, so
    zero probabilities contribute 0). Clipped to [0, 1] against rounding.
    """
    lp = jax.nn.log_softmax(jnp.asarray(s_logits, jnp.float32), axis=-1)
    lq = jax.nn.log_softmax(jnp.asarray(t_logits, jnp.float32), axis=-1)
    lm = jnp.logaddexp(lp, lq) - math.log(2.0)
    nats = 0.5 * jnp.sum(jnp.exp(lp) * (lp - lm), -1) + 0.5 * jnp.sum(jnp.exp(lq) * (lq - lm), -1)
    return jnp.clip(nats / math.log(2.0), 0.0, 1.0)


def loyalty(s_logits, t_logits, mask) -> jax.Array:
    """Probability-loyalty numerator (AdaDFKD): ``sum_i mask_i (1 - sqrt(JS_2(p_s,i, p_t,i)))``.

    JS in base 2 (``js_base2``), so each per-example loyalty lies in [0, 1]:
    1 for identical predictions, 0 for disjoint supports.
    """
    per = 1.0 - jnp.sqrt(js_base2(s_logits, t_logits))
    return jnp.sum(per * jnp.asarray(mask, jnp.float32))


def confusion_matrix(logits, labels, mask, num_classes: int, ignore_label: int = 255) -> jax.Array:
    """``(K, K)`` float32 pixel counts, rows = true class, columns = predicted (argmax) class.

    ``logits`` ``(B, H, W, K)``, ``labels`` integer ``(B, H, W)``, ``mask`` ``(B,)``. Pixels of
    padded examples, pixels labelled ``ignore_label`` and labels outside ``[0, K)`` are not
    counted (DFAD's ``StreamSegMetrics``). A ``bincount`` on the device: no host sync.
    """
    labels = jnp.asarray(labels).astype(jnp.int32)
    pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
    weight = valid.astype(jnp.float32) * jnp.asarray(mask, jnp.float32).reshape((-1,) + (1,) * (labels.ndim - 1))
    index = jnp.where(valid, labels * num_classes + pred, 0)
    counts = jnp.bincount(index.reshape(-1), weights=weight.reshape(-1), length=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def segmentation_scores(confusion) -> dict:
    """mIoU and pixel accuracy of an accumulated confusion matrix (host, float64).

    IoU_c = TP / (TP + FP + FN); mIoU is the mean over the classes whose union is not
    empty (``nanmean``, as DFAD's ``StreamSegMetrics``); pixel accuracy = trace / total.
    Returns ``{'miou', 'pixel_accuracy', 'iou': list per class (NaN where the union is empty)}``.
    """
    cm = np.asarray(confusion, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)
    total = cm.sum()
    miou = float(np.nanmean(iou)) if np.any(union > 0) else float("nan")
    return {"miou": miou, "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
            "iou": [float(v) for v in iou]}


def pixel_agreement(s_logits, t_logits, mask) -> jax.Array:
    """Per-pixel Agree@1 numerator: the fraction of pixels where the two argmax maps agree, summed over
    the real examples (divide by their count, as for ``agreement``). ``t_logits`` may also be the
    teacher's argmax map itself ((B, H, W) integers, one axis fewer than ``s_logits``)."""
    t_pred = t_logits if t_logits.ndim == s_logits.ndim - 1 else jnp.argmax(t_logits, axis=-1)
    hit = (jnp.argmax(s_logits, axis=-1) == t_pred).astype(jnp.float32)
    per = jnp.mean(hit.reshape(hit.shape[0], -1), axis=-1)
    return jnp.sum(per * jnp.asarray(mask, jnp.float32))


def summarise(history: Sequence[float]) -> dict[str, float]:
    """Best, last and mean of a per-epoch metric history (CuDFKD's stability view).

    Returns ``{'best': max, 'last': history[-1], 'mean': mean}`` as Python floats;
    all NaN for an empty history.
    """
    vals = [float(v) for v in history]
    if not vals:
        nan = float("nan")
        return {"best": nan, "last": nan, "mean": nan}
    return {"best": max(vals), "last": vals[-1], "mean": sum(vals) / len(vals)}


def calibration(logits, labels, bins: int = 15) -> dict[str, float]:
    """A classifier's confidence on a labelled set (host numpy): the mean max-probability and the
    expected calibration error (Guo et al., ICML 2017, Eq. 3).

    ``ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)|`` over ``bins`` equal-width confidence bins
    ``(k/bins, (k+1)/bins]`` (a confidence of exactly 0 joins the first), where ``conf`` is the
    max softmax probability and ``acc`` the top-1 accuracy of the examples in the bin.
    """
    import numpy as np

    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    conf = p.max(-1)
    hit = (p.argmax(-1) == np.asarray(labels)).astype(np.float64)
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(hit[sel].mean() - conf[sel].mean())
    return {"mean_max_prob": float(conf.mean()), "ece": float(ece), "accuracy": float(hit.mean())}
