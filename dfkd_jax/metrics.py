"""Evaluation metrics as masked per-batch sums.

Each batch function takes a float ``mask`` of shape ``(B,)`` (1 for real
examples, 0 for padding added to fill the last batch) and returns the *sum*
over the batch of the per-example quantity times the mask, as a float32
scalar. An evaluation loop adds these sums up and divides by the number of
real examples (``mask.sum()`` accumulated), so padded examples never count.
Under ``jax.jit`` with the batch sharded the sums are over the global batch.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

__all__ = ["correct", "agreement", "loyalty", "js_base2", "summarise", "calibration"]


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
