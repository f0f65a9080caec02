"""The round: k generator updates then m student updates, one jitted call.

``round(state, teacher_variables) -> (state, metrics)``. k and m are static and the
loops are unrolled (a rolled ``lax.scan`` around convolutions is many times slower
on XLA:CPU). The teacher is always in eval mode and never updated. Random numbers
come from ``fold_in(state.rng, state.round)`` on the device.

Online-generator family (DFAD, DAFL, ...): each generator update draws z, makes
x = G(z) (train-mode BatchNorm), and minimises the weighted generator terms, with
gradients reaching G through the teacher (and the student for adversarial terms).
Each student update uses either a fresh batch G(z') with the generator frozen
(``student.batch = 'fresh'``, DFAD) or the images of the last generator update,
made before that update (``'reuse'``, DAFL: both networks learn from one batch per
iteration), or on a batch drawn from the on-device pool that every generator update
pushes its batch into (``'pool'``, see ``dfkd_jax.pool``): the student then takes
many cheap updates per expensive generator update without fitting one batch. During generator updates the student's BatchNorm statistics are not
updated (only its own updates move them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from dfkd_jax import objectives
from dfkd_jax import pool as pool_lib
from dfkd_jax.engine.state import DistillState, ModelState


def _forward(model, variables: dict, x, train: bool):
    """``(logits_or_images, aux, new_batch_stats)`` for any of our models."""
    if train and "batch_stats" in variables:
        out, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return out, upd["batch_stats"]
    return model.apply(variables, x, train=train), variables.get("batch_stats", {})


def _apply_update(ms: ModelState, tx, grads, batch_stats) -> ModelState:
    updates, opt_state = tx.update(grads, ms.opt_state, ms.params)
    params = jax.tree.map(lambda p, u: p + u, ms.params, updates)
    return ModelState(params=params, batch_stats=batch_stats, opt_state=opt_state)


@dataclasses.dataclass(frozen=True)
class RoundSpec:
    """The static description of a round (hashable: it is closed over by jit)."""

    generator_steps: int
    student_steps: int
    student_batch: str  # 'fresh' | 'reuse' | 'pool'
    batch_size: int
    nz: int
    generator_terms: tuple[tuple[str, float], ...]
    student_terms: tuple[tuple[str, float], ...]
    hparams: objectives.HParams
    # (mean, std) applied to generator outputs in pixel space ([0, 1]); None if already normalised
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None


def generate(generator, spec: RoundSpec, variables: dict, z):
    """``(x, new_batch_stats)``: generator images in the networks' input space (train-mode BN)."""
    x, stats = _forward(generator, variables, z, train=True)
    if spec.normalize is not None:
        mean, std = (jnp.asarray(v, x.dtype) for v in spec.normalize)
        x = (x - mean) / std
    return x, stats


def make_round(spec: RoundSpec, generator, student, teacher, tx_g, tx_s,
               batch_sharding: NamedSharding | None) -> Callable[[DistillState, Any], tuple[DistillState, dict]]:
    g_weights = dict(spec.generator_terms)
    s_weights = dict(spec.student_terms)
    g_needs_student = objectives.needs_student(g_weights, objectives.GENERATOR_TERMS)

    def shard(a):
        return a if batch_sharding is None else jax.lax.with_sharding_constraint(a, batch_sharding)

    def draw_z(key):
        return shard(jax.random.normal(key, (spec.batch_size, spec.nz), jnp.float32))

    def teacher_forward(t_vars, x):
        t_logits, t_aux = teacher.apply(t_vars, x, train=False)
        return t_logits, t_aux["feature"]

    def generator_update(g: ModelState, s: ModelState, t_vars, key, rnd):
        z = draw_z(key)

        def loss_fn(params):
            x, g_stats = generate(generator, spec, {"params": params, "batch_stats": g.batch_stats}, z)
            x = shard(x)
            t_logits, t_feature = teacher_forward(t_vars, x)
            s_logits = s_feature = None
            if g_needs_student:
                (s_logits, s_aux), _ = _forward(student, s.variables(), x, train=True)
                s_feature = s_aux["feature"]
            view = objectives.View(x=x, t_logits=t_logits, t_feature=t_feature, s_logits=s_logits,
                                   s_feature=s_feature, round=rnd)
            total, parts = objectives.combine(g_weights, objectives.GENERATOR_TERMS, view, spec.hparams)
            return total, (parts, g_stats, x, t_logits, t_feature)

        (total, (parts, g_stats, x, t_logits, t_feature)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            g.params)
        g = _apply_update(g, tx_g, grads, g_stats)
        metrics = {"generator/loss": total, **{f"generator/{n}": v for n, v in parts.items()}}
        batch = (jax.lax.stop_gradient(x), jax.lax.stop_gradient(t_logits), jax.lax.stop_gradient(t_feature))
        return g, metrics, batch

    def student_update(s: ModelState, batch, rnd):
        x, t_logits, t_feature = batch

        def loss_fn(params):
            (s_logits, s_aux), s_stats = _forward(student, {**s.variables(), "params": params}, x, train=True)
            view = objectives.View(x=x, t_logits=t_logits, t_feature=t_feature, s_logits=s_logits,
                                   s_feature=s_aux["feature"], round=rnd)
            per_sample, parts = objectives.combine(s_weights, objectives.STUDENT_TERMS, view, spec.hparams)
            return jnp.mean(per_sample), (parts, s_stats)

        (loss, (parts, s_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(s.params)
        s = _apply_update(s, tx_s, grads, s_stats)
        return s, {"student/loss": loss, **{f"student/{n}": jnp.mean(v) for n, v in parts.items()}}

    def fresh_batch(g: ModelState, t_vars, key):
        x, _ = generate(generator, spec, g.variables(), draw_z(key))
        x = jax.lax.stop_gradient(shard(x))
        t_logits, t_feature = teacher_forward(t_vars, x)
        return x, jax.lax.stop_gradient(t_logits), jax.lax.stop_gradient(t_feature)

    def round_fn(state: DistillState, t_vars) -> tuple[DistillState, dict]:
        key = jax.random.fold_in(state.rng, state.round)
        keys = jax.random.split(key, spec.generator_steps + spec.student_steps)
        g, s, pool = state.generator, state.student, state.pool
        history: dict[str, list] = {}
        last_batch = None
        for i in range(spec.generator_steps):
            g, m, last_batch = generator_update(g, s, t_vars, keys[i], state.round)
            if spec.student_batch == "pool":
                pool = pool_lib.push(pool, last_batch[0], last_batch[1])
            for k_, v in m.items():
                history.setdefault(k_, []).append(v)
        for j in range(spec.student_steps):
            key_j = keys[spec.generator_steps + j]
            if spec.student_batch == "reuse" and last_batch is not None:
                batch = last_batch
            elif spec.student_batch == "pool":
                x, t_logits = pool_lib.sample(pool, key_j, spec.batch_size)
                batch = (shard(x), shard(t_logits), None)
            else:
                batch = fresh_batch(g, t_vars, key_j)
            s, m = student_update(s, batch, state.round)
            for k_, v in m.items():
                history.setdefault(k_, []).append(v)
        metrics = {k_: jnp.mean(jnp.stack(v)) for k_, v in history.items()}
        new_state = state.replace(round=state.round + 1, generator=g, student=s, pool=pool)
        return new_state, metrics

    return round_fn
