"""Named, weighted loss terms: what a method's config composes.

A method's config is a weight per term name, e.g. DFAD is
``generator.terms = {'adv_l1': 1}``, ``student.terms = {'l1': 1}``; DAFL is
``generator.terms = {'one_hot': 1, 'activation': 0.1, 'balance': 5}``,
``student.terms = {'kd': 1}``. Each entry adapts one pure function of
``dfkd_jax.terms`` to the arrays a step has at hand (a ``View``), so the step
itself is the same for every method.

Generator terms return a scalar (minimised by the generator); student terms
return one value per sample (so a method can weight samples, e.g. self-paced
learning) and the step takes their mean over the global batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp

from dfkd_jax import terms


@flax.struct.dataclass
class View:
    """What one step sees of a synthetic batch."""

    x: jax.Array  # the synthetic images, as the networks consume them
    t_logits: jax.Array
    t_feature: jax.Array
    s_logits: Any = None
    s_feature: Any = None
    round: Any = 0  # the round index (for schedules)


@dataclasses.dataclass(frozen=True)
class HParams:
    """Static hyperparameters the terms read (from ``config.student``/``config.hparams``)."""

    tau: float = 1.0
    balance_log_base: float = 0.0  # 0 = natural log

    @classmethod
    def from_config(cls, cfg) -> "HParams":
        return cls(tau=float(cfg.student.tau), balance_log_base=float(cfg.hparams.balance_log_base))


@dataclasses.dataclass(frozen=True)
class Term:
    fn: Callable[[View, HParams], jax.Array]
    needs_student: bool = False
    doc: str = ""


def _log_base(h: HParams):
    return h.balance_log_base or None


GENERATOR_TERMS: dict[str, Term] = {
    "adv_l1": Term(lambda v, h: -jnp.mean(terms.l1(v.s_logits, v.t_logits)), True,
                   "DFAD Eq. 5: maximise the student-teacher L1 discrepancy (classification)."),
    "adv_log_l1": Term(lambda v, h: -jnp.log(jnp.mean(terms.l1(v.s_logits, v.t_logits)) + 1.0), True,
                       "DFAD Eq. 6: -log(L1 + 1), the segmentation form; bounded gradient as L1 grows."),
    "one_hot": Term(lambda v, h: jnp.mean(terms.one_hot(v.t_logits)), False,
                    "DAFL Eq. 2: cross-entropy of the teacher against its own argmax."),
    "activation": Term(lambda v, h: terms.activation(v.t_feature), False,
                       "DAFL Eq. 3: -mean |f_T| of the teacher's features."),
    "balance": Term(lambda v, h: terms.balance(v.t_logits, log_base=_log_base(h)), False,
                    "DAFL Eq. 4: -H(p_bar), spreads the batch over classes."),
}

STUDENT_TERMS: dict[str, Term] = {
    "l1": Term(lambda v, h: terms.l1(v.s_logits, v.t_logits), True, "DFAD Eq. 4: mean |s - t| over classes."),
    "kd": Term(lambda v, h: terms.kd(v.s_logits, v.t_logits, h.tau), True,
               "Hinton KD: tau^2 KL(softmax(t/tau) || softmax(s/tau))."),
}


def needs_student(weights: dict[str, float], registry: dict[str, Term]) -> bool:
    return any(registry[name].needs_student for name, w in weights.items() if w)


def combine(weights: dict[str, float], registry: dict[str, Term], view: View, h: HParams):
    """``(sum_i w_i * term_i, {name: term_i})`` over the terms with non-zero weight."""
    parts = {name: registry[name].fn(view, h) for name, w in weights.items() if w}
    total = sum(float(weights[name]) * value for name, value in parts.items())
    return total, parts
