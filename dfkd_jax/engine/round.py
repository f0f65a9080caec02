"""The round: k generator updates then m student updates, one jitted call.

``round(state, teacher_variables) -> (state, metrics)``. k and m are static and the
loops are unrolled (a rolled ``lax.scan`` around convolutions is many times slower
on XLA:CPU). The teacher is always in eval mode and never updated. Random numbers
come from ``fold_in(state.rng, state.round)`` on the device.

Online-generator family (DFAD, DAFL, ...): each generator update draws z, makes
x = G(z) (train-mode BatchNorm), and minimises the weighted generator terms, with
gradients reaching G through the teacher (and the student for adversarial terms).
Each student update uses either a fresh batch G(z') with the generator frozen
(``student.batch = 'fresh'``, DFAD), or the images of the last generator update,
made before that update (``'reuse'``, DAFL: both networks learn from one batch per
iteration), or the last generator update's z passed through the *updated* generator
(``'regenerate'``, ZSKT's loader: the same z serves one generator step and then the
student steps, the images recomputed after the generator's step; the teacher's logits
on them are computed once), or a batch drawn from the on-device pool that every
generator update pushes its batch into (``'pool'``, see ``dfkd_jax.pool``): the student
then takes many cheap updates per expensive generator update without fitting one batch.

BatchNorm modes (per method, from its reference code):
- ``student_mode`` (``config.generator.student_mode``): the student's mode inside the
  generator's update. ``'train'`` normalises with the batch's statistics (DFAD, ZSKT,
  PRE-DFKD keep the student in train mode); ``'eval'`` with its running averages (the
  CMI-derived DFQ, CuDFKD and AdaDFKD call ``student.eval()`` in ``synthesize``). Either
  way the student's running averages are not moved by generator updates (only its own
  updates move them; PyTorch's train-mode forward would also move them, a side effect
  the student's next update mostly overwrites).
- ``generator_mode`` (``config.student.generator_mode``): the generator's mode when it
  makes the student's batches (``'fresh'``, ``'regenerate'``) and the sample grids.
  ``'train'``: batch statistics; ``'eval'``: the running averages that its own updates
  maintain (the CMI-derived code's ``sample()`` calls ``generator.eval()``).

What a step computes beyond logits and features follows from the terms' ``needs``
(``dfkd_jax.objectives``): the teacher's BatchNorm input statistics (``bn``, via
``dfkd_jax.bn_capture``), block-group outputs (ZSKT's attention), projected student
keys and the key queue (AdaDFKD). Schedules (term-weight ramps, the R2M band, the
self-paced lambda) read ``progress`` = (round + step fraction) / rounds, a traced
value, so they never recompile. With ``self_paced`` the student's per-sample loss is
weighted by CuDFKD's v (computed without gradient) before the batch mean, at
``lambda = lambda_0 + alpha * (student updates so far)`` (its ``lambda_scheduler``).

With a generative memory (PRE-DFKD, ``spec.memory``) every student update also replays
``memory.batch_size`` samples from the VAE (``dfkd_jax.memory.replay``, decoded in
``memory.replay_mode``; PRE-DFKD: eval) and learns from the novel batch and the replayed
one together (one concatenated batch, one mean: ``F.l1_loss`` on ``torch.cat``); after
each of the first ``update_steps`` student updates of a round the VAE takes an Adam step
on half of the novel batch plus a replay of its own in train mode (the order of
PRE-DFKD's ``main.py``: ``distill_knowledge`` then ``train_memory_generator``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from dfkd_jax import memory as memory_lib
from dfkd_jax import objectives, terms
from dfkd_jax.bn_capture import apply_with_bn_stats
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
    student_batch: str  # 'fresh' | 'reuse' | 'regenerate' | 'pool'
    batch_size: int
    nz: int
    generator_terms: tuple[tuple[str, float], ...]
    student_terms: tuple[tuple[str, float], ...]
    hparams: objectives.HParams
    # (mean, std) applied to generator outputs in pixel space ([0, 1]); None if already normalised
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    rounds: int = 1  # length of the run: schedules read progress = round / rounds
    generator_ramps: tuple[tuple[str, tuple[float, float]], ...] = ()
    student_ramps: tuple[tuple[str, tuple[float, float]], ...] = ()
    # CuDFKD's self-paced student weight: (lambda_0, alpha: lambda's growth per student update); None = off
    self_paced: tuple[float, float] | None = None
    memory: "MemorySpec | None" = None  # PRE-DFKD's generative memory
    student_mode: str = "train"  # the student's BatchNorm mode in generator updates: 'train' | 'eval'
    generator_mode: str = "train"  # the generator's BatchNorm mode making the student's batches


@dataclasses.dataclass(frozen=True)
class MemorySpec:
    """PRE-DFKD's memory (``config.memory``, see ``dfkd_jax.memory``)."""

    nz: int
    batch_size: int
    update_steps: int
    kl_weight: float
    z_lr: float
    replay_mode: str = "train"  # the decoder's BatchNorm mode when replaying to the student
    # the replay objective's weights: the generator's balance and one_hot weights (PRE-DFKD's opt.ie, opt.oh)
    balance_weight: float = 5.0
    one_hot_weight: float = 1.0


def generate(generator, spec: RoundSpec, variables: dict, z, train: bool = True):
    """``(x, new_batch_stats)``: generator images in the networks' input space (BatchNorm in train
    mode, or with its running averages when ``train`` is False)."""
    x, stats = _forward(generator, variables, z, train=train)
    if spec.normalize is not None:
        mean, std = (jnp.asarray(v, x.dtype) for v in spec.normalize)
        x = (x - mean) / std
    return x, stats


def self_paced_lambda(spec: RoundSpec, progress):
    """CuDFKD's ``lambda = lambda_0 + alpha * iteration``, the iteration counted in student updates
    from 0 (``progress * rounds * student_steps`` = round * steps + step)."""
    lam0, alpha = spec.self_paced
    return lam0 + alpha * (progress * (spec.rounds * spec.student_steps))


def student_objective(spec: RoundSpec, view: objectives.View):
    """``(loss, parts, extra)``: the student's weighted terms, per sample (per-pixel values averaged
    over the pixels: ``objectives.per_sample``), then (with ``spec.self_paced``) CuDFKD's self-paced
    weight ``v_i`` (no gradient) at ``self_paced_lambda``, then the mean over the global batch."""
    per_sample, parts = objectives.combine(dict(spec.student_terms), objectives.STUDENT_TERMS, view, spec.hparams,
                                           dict(spec.student_ramps), spec.rounds, reduce=objectives.per_sample)
    per_sample = jnp.broadcast_to(per_sample, (view.x.shape[0],))
    extra = {}
    if spec.self_paced is not None:
        lam = self_paced_lambda(spec, view.progress)
        extra["student/self_paced_lambda"] = lam
        v = terms.self_paced_weight(per_sample, lam)
        extra["student/self_paced_weight"] = jnp.mean(v)
        per_sample = v * per_sample
    return jnp.mean(per_sample), parts, extra


def make_round(spec: RoundSpec, generator, student, teacher, tx_g, tx_s,
               batch_sharding: NamedSharding | None, projector=None, vae=None,
               tx_m=None) -> Callable[[DistillState, Any], tuple[DistillState, dict]]:
    """The round function. ``projector``: the Flax module mapping student features to the teacher's width;
    ``vae``/``tx_m``: the generative memory and its optimiser (when ``spec.memory``)."""
    g_weights = dict(spec.generator_terms)
    s_weights = dict(spec.student_terms)
    g_ramps = dict(spec.generator_ramps)
    g_needs = objectives.needs(g_weights, objectives.GENERATOR_TERMS)
    s_needs = objectives.needs(s_weights, objectives.STUDENT_TERMS)

    def shard(a):
        return a if batch_sharding is None else jax.lax.with_sharding_constraint(a, batch_sharding)

    def draw_z(key):
        return shard(jax.random.normal(key, (spec.batch_size, spec.nz), jnp.float32))

    def progress(rnd, step=0, steps=1):
        return (rnd.astype(jnp.float32) + step / steps) / spec.rounds

    def teacher_forward(t_vars, x, with_bn=False):
        """``(logits, aux, bn_stats)`` of the eval-mode teacher."""
        if with_bn:
            (t_logits, t_aux), bn = apply_with_bn_stats(teacher, t_vars, x, train=False)
            return t_logits, t_aux, bn
        t_logits, t_aux = teacher.apply(t_vars, x, train=False)
        return t_logits, t_aux, None

    def project(p_params, s_feature):
        return s_feature if p_params is None else projector.apply({"params": p_params}, s_feature)

    def generator_update(g: ModelState, s: ModelState, p_params, queue, t_vars, key, prog):
        z = draw_z(key)

        def loss_fn(params):
            x, g_stats = generate(generator, spec, {"params": params, "batch_stats": g.batch_stats}, z)
            x = shard(x)
            t_logits, t_aux, t_bn = teacher_forward(t_vars, x, with_bn="bn" in g_needs)
            view = objectives.View(x=x, t_logits=t_logits, t_feature=t_aux["feature"], t_bn=t_bn,
                                   queue=None if queue is None else queue.keys, progress=prog)
            if "student" in g_needs:
                (s_logits, s_aux), _ = _forward(student, s.variables(), x, train=spec.student_mode == "train")
                view = view.replace(s_logits=s_logits, s_feature=s_aux["feature"])
                if "key" in g_needs:
                    s_key = terms.l2_normalize(project(p_params, s_aux["feature"]))
                    view = view.replace(s_key=jax.lax.stop_gradient(s_key))
            total, parts = objectives.combine(g_weights, objectives.GENERATOR_TERMS, view, spec.hparams, g_ramps,
                                              spec.rounds)
            return total, (parts, g_stats, view)

        (total, (parts, g_stats, view)), grads = jax.value_and_grad(loss_fn, has_aux=True)(g.params)
        g = _apply_update(g, tx_g, grads, g_stats)
        if queue is not None:
            queue = pool_lib.push_keys(queue, view.s_key)
        metrics = {"generator/loss": total, **{f"generator/{n}": v for n, v in parts.items()}}
        batch = (jax.lax.stop_gradient(view.x), jax.lax.stop_gradient(view.t_logits),
                 jax.lax.stop_gradient(view.t_feature))
        return g, queue, metrics, batch, z

    def student_update(s: ModelState, proj: ModelState | None, batch, t_vars, prog):
        x, t_logits, t_feature = batch
        t_blocks = None
        if "t_blocks" in s_needs or ("t_feature" in s_needs and t_feature is None):
            _, t_aux, _ = teacher_forward(t_vars, x)
            t_feature, t_blocks = jax.lax.stop_gradient((t_aux["feature"], t_aux.get("blocks")))
        use_proj = proj is not None and "key" in s_needs

        def loss_fn(params, p_params):
            (s_logits, s_aux), s_stats = _forward(student, {**s.variables(), "params": params}, x, train=True)
            view = objectives.View(x=x, t_logits=t_logits, t_feature=t_feature, t_blocks=t_blocks,
                                   s_logits=s_logits, s_feature=s_aux["feature"], s_blocks=s_aux.get("blocks"),
                                   progress=prog)
            if "key" in s_needs:
                view = view.replace(s_projected=project(p_params, s_aux["feature"]))
            loss, parts, extra = student_objective(spec, view)
            return loss, (parts, s_stats, extra)

        p_params = proj.params if use_proj else None
        (loss, (parts, s_stats, extra)), (grads, p_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1),
                                                                              has_aux=True)(s.params, p_params)
        s = _apply_update(s, tx_s, grads, s_stats)
        if use_proj:
            proj = _apply_update(proj, tx_s, p_grads, proj.batch_stats)
        return s, proj, {"student/loss": loss, **{f"student/{n}": jnp.mean(v) for n, v in parts.items()}, **extra}

    def teacher_logits_fn(t_vars):
        return lambda images: teacher.apply(t_vars, images, train=False)[0]

    def with_replay(mem: ModelState, batch, t_vars, key):
        """The student's batch with ``memory.batch_size`` samples replayed from the memory appended
        (PRE-DFKD's ``distill_knowledge``: decoder in ``replay_mode``)."""
        ms = spec.memory
        t_fn = teacher_logits_fn(t_vars)
        x_mem = shard(memory_lib.replay(vae, mem.variables(), key, ms.batch_size, ms.nz, t_fn, ms.z_lr,
                                        spec.hparams.balance_log_base or None, ms.balance_weight, ms.one_hot_weight,
                                        train=ms.replay_mode == "train"))
        t_mem = jax.lax.stop_gradient(t_fn(x_mem))
        return jnp.concatenate([batch[0], x_mem]), jnp.concatenate([batch[1], t_mem]), None

    def memory_update(mem: ModelState, x_novel, t_vars, key):
        """One Adam step of the VAE on half the novel batch plus its own replay in train mode
        (PRE-DFKD's ``train_memory_generator``, run after the student's step)."""
        ms = spec.memory
        k_fit, k_vae = jax.random.split(key)
        t_fn = teacher_logits_fn(t_vars)
        x_old = shard(memory_lib.replay(vae, mem.variables(), k_fit, ms.batch_size, ms.nz, t_fn, ms.z_lr,
                                        spec.hparams.balance_log_base or None, ms.balance_weight, ms.one_hot_weight,
                                        train=True))
        x_fit = jnp.concatenate([x_novel[: spec.batch_size // 2], x_old])

        def loss_fn(params):
            return memory_lib.vae_loss(vae, {**mem.variables(), "params": params}, x_fit, k_vae, t_fn, ms.kl_weight)

        (loss, (stats, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(mem.params)
        mem = _apply_update(mem, tx_m, grads, stats)
        return mem, {"memory/loss": loss, **{f"memory/{n}": v for n, v in parts.items()}}

    def fresh_batch(g: ModelState, t_vars, z):
        """The student's batch G(z) from the current generator (no gradient to it)."""
        x, _ = generate(generator, spec, g.variables(), z, train=spec.generator_mode == "train")
        x = jax.lax.stop_gradient(shard(x))
        t_logits, t_aux, _ = teacher_forward(t_vars, x)
        return x, jax.lax.stop_gradient(t_logits), jax.lax.stop_gradient(t_aux["feature"])

    def round_fn(state: DistillState, t_vars) -> tuple[DistillState, dict]:
        key = jax.random.fold_in(state.rng, state.round)
        keys = jax.random.split(key, spec.generator_steps + spec.student_steps)
        g, s, pool, queue, proj, mem = (state.generator, state.student, state.pool, state.queue, state.projector,
                                        state.memory)
        history: dict[str, list] = {}
        last_batch = last_z = None

        def record(m):
            for k_, v in m.items():
                history.setdefault(k_, []).append(v)

        for i in range(spec.generator_steps):
            g, queue, m, last_batch, last_z = generator_update(
                g, s, None if proj is None else proj.params, queue, t_vars, keys[i],
                progress(state.round, i, spec.generator_steps))
            if spec.student_batch == "pool":
                pool = pool_lib.push(pool, last_batch[0], last_batch[1])
            record(m)
        if spec.student_batch == "regenerate" and spec.student_steps:
            last_batch = fresh_batch(g, t_vars, last_z)  # once: the generator does not change below
        for j in range(spec.student_steps):
            key_j = keys[spec.generator_steps + j]
            if spec.student_batch in ("reuse", "regenerate"):
                batch = last_batch
            elif spec.student_batch == "pool":
                x, t_logits = pool_lib.sample(pool, key_j, spec.batch_size)
                batch = (shard(x), shard(t_logits), None)
            else:
                batch = fresh_batch(g, t_vars, draw_z(key_j))
            x_novel = batch[0]
            if spec.memory is not None:
                batch = with_replay(mem, batch, t_vars, jax.random.fold_in(key_j, 1))
            s, proj, m = student_update(s, proj, batch, t_vars, progress(state.round, j, spec.student_steps))
            record(m)
            if spec.memory is not None and j < spec.memory.update_steps:
                mem, m = memory_update(mem, x_novel, t_vars, jax.random.fold_in(key_j, 2))
                record(m)
        metrics = {k_: jnp.mean(jnp.stack(v)) for k_, v in history.items()}
        new_state = state.replace(round=state.round + 1, generator=g, student=s, pool=pool, queue=queue,
                                  projector=proj, memory=mem)
        return new_state, metrics

    return round_fn
