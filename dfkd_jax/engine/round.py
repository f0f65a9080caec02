"""The round: synthesis steps into the pool, student steps from it.

    state, carry = begin(state)                    # the synthesiser's per-round reset
    for i < k: state, carry = synthesis_step(i)    # dfkd_jax.synthesis.<kind>.step
    state, carry = end(state, carry)               # the round's samples handed to the pool
    for j < m: state = student_step(j)             # a batch from the synthesiser (pool draw, fresh
                                                   # generator batch, ...), one student update

What makes samples is a synthesiser (``dfkd_jax.synthesis``); this module knows none of them.
The teachers are always in eval mode and never updated; their variables are a constant argument
(a tuple, one entry per teacher, ``dfkd_jax.ensemble``). Random numbers come from
``fold_in(state.rng, state.round)`` on the device, split into one key per step (``k + m``), so a
round is the same whichever way its loops run (``RoundSpec.loop``):

- ``'unroll'``: one jitted call, the loops unrolled at trace time (a rolled ``lax.scan`` around
  convolutions is many times slower on XLA:CPU; the online generator's few steps);
- ``'scan'``: one jitted call, each loop a ``lax.scan`` over one step;
- ``'python'``: one jitted call per step, a Python loop around them (long inversion loops:
  CMI's 200 steps or ADI's 1000-2000 are neither unrolled into one program nor recompiled; the
  step index is a traced argument and nothing is read back to the host inside a round).

Student update: the weighted student terms per sample (``objectives.STUDENT_TERMS``), then with
``self_paced`` CuDFKD's weight ``v_i`` (no gradient) at ``lambda = lambda_0 + alpha * (student
updates so far)`` (its ``lambda_scheduler``), then the mean over the global batch. The teachers'
logits are those handed with the batch, or computed on it when the batch was augmented.
Schedules read ``progress`` = (round + step fraction) / rounds, a traced value. During the first
``warmup`` rounds the student does not learn (Fast's warm-up epochs).

With a generative memory (PRE-DFKD, ``spec.memory``) every student update also replays
``memory.batch_size`` samples from the VAE (``dfkd_jax.memory.replay``, decoded in
``memory.replay_mode``; PRE-DFKD: eval) and learns from the novel batch and the replayed
one together (one concatenated batch, one mean: ``F.l1_loss`` on ``torch.cat``); after
each of the first ``update_steps`` student updates of a round the VAE takes an Adam step
on half of the novel batch plus a replay of its own in train mode (the order of
PRE-DFKD's ``main.py``: ``distill_knowledge`` then ``train_memory_generator``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

import flax.linen as nn
import optax

from dfkd_jax import memory as memory_lib
from dfkd_jax import objectives, terms
from dfkd_jax.core.state import ModelState, apply_update
from dfkd_jax.engine.state import DistillState
from dfkd_jax.ensemble import Ensemble
from dfkd_jax.models import fast_conv
from dfkd_jax.synthesis.base import Context, Synthesiser, forward

LOOPS = ("unroll", "scan", "python")


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
    # the VAE (dfkd_jax.models.vae) and its Adam
    ngf: int = 64
    lr: float = 5e-4
    bn_eps: float = 1e-5
    init: str = "torch"  # the generators' init scheme (config.generator.init)


@dataclasses.dataclass(frozen=True)
class RoundSpec:
    """The static description of a round's student side and loops (hashable: closed over by jit). The
    synthesis side is the synthesiser's (its ``steps``, its spec)."""

    student_steps: int
    batch_size: int  # the student's batch
    student_terms: tuple[tuple[str, float], ...]
    hparams: objectives.HParams
    rounds: int = 1  # length of the run: schedules read progress = round / rounds
    student_ramps: tuple[tuple[str, tuple[float, ...]], ...] = ()
    # CuDFKD's self-paced student weight: (lambda_0, alpha: lambda's growth per student update); None = off
    self_paced: tuple[float, float] | None = None
    memory: MemorySpec | None = None  # PRE-DFKD's generative memory
    warmup: int = 0  # rounds without student updates
    loop: str = "unroll"
    synthesis_conv_impl: str = ""  # the synthesis steps' convolutions (dfkd_jax.models.fast_conv); '' = the round's


def self_paced_lambda(spec: RoundSpec, progress):
    """CuDFKD's ``lambda = lambda_0 + alpha * iteration``, the iteration counted in student updates
    from 0 (``progress * rounds * student_steps`` = round * steps + step)."""
    assert spec.self_paced is not None
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


def _mean_metrics(history: list[dict]) -> dict:
    out: dict[str, list] = {}
    for m in history:
        for k, v in m.items():
            out.setdefault(k, []).append(v)
    return {k: jnp.mean(jnp.stack(v)) for k, v in out.items()}


@dataclasses.dataclass(eq=False)
class Round:
    """The round's pieces over ``DistillState`` and the teachers' variables, and their compositions."""

    spec: RoundSpec
    synth: Synthesiser
    student: nn.Module
    ensemble: Ensemble
    tx_s: optax.GradientTransformation
    shard: Any  # the batch sharding constraint
    projector: nn.Module | None = None
    vae: nn.Module | None = None
    tx_m: optax.GradientTransformation | None = None

    def __post_init__(self):
        self.s_needs = objectives.needs(dict(self.spec.student_terms), objectives.STUDENT_TERMS)

    # -- keys, progress, context ------------------------------------------------------------------
    def _keys(self, state):
        rk = jax.random.fold_in(state.rng, state.round)
        return rk, jax.random.split(rk, self.synth.steps + self.spec.student_steps)

    def _progress(self, state, step, steps):
        return (state.round.astype(jnp.float32) + step / max(steps, 1)) / self.spec.rounds

    def _ctx(self, state, t_vars) -> Context:
        proj = state.projector
        return Context(student=state.student, projector=None if proj is None else proj.params, t_vars=tuple(t_vars),
                       round=state.round)

    # -- the pieces -------------------------------------------------------------------------------
    def begin(self, state: DistillState, t_vars):
        rk, _ = self._keys(state)
        synth, carry = self.synth.begin(state.synth, jax.random.fold_in(rk, 0xB0), state.round)
        return state.replace(synth=synth), carry

    def synthesis_step(self, state: DistillState, carry, t_vars, i):
        _, keys = self._keys(state)
        impl = self.spec.synthesis_conv_impl
        with fast_conv.using(impl) if impl else contextlib.nullcontext():  # read while the step is traced
            synth, carry, pool, m = self.synth.step(state.synth, carry, state.pool, self._ctx(state, t_vars), keys[i],
                                                    self._progress(state, i, self.synth.steps))
        return state.replace(synth=synth, pool=pool), carry, m

    def end(self, state: DistillState, carry, t_vars):
        rk, _ = self._keys(state)
        synth, carry, pool, m = self.synth.end(state.synth, carry, state.pool, self._ctx(state, t_vars),
                                               jax.random.fold_in(rk, 0xE0))
        return state.replace(synth=synth, pool=pool), carry, m

    def student_step(self, state: DistillState, carry, t_vars, j):
        _, keys = self._keys(state)
        key_j = keys[self.synth.steps + j]

        def learn(state):
            batch = self.synth.student_batch(state.synth, carry, state.pool, self._ctx(state, t_vars), key_j)
            return self._student_update(state, batch, t_vars, key_j, j)

        if not self.spec.warmup:
            return learn(state)
        shapes = jax.eval_shape(learn, state)[1]
        skip = lambda s: (s, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes))  # noqa: E731
        return jax.lax.cond(state.round >= self.spec.warmup, learn, skip, state)

    def finish(self, state: DistillState) -> DistillState:
        return state.replace(round=state.round + 1)

    # -- compositions -----------------------------------------------------------------------------
    def unrolled(self, state: DistillState, t_vars):
        """The whole round as one program, loops unrolled."""
        history = []
        state, carry = self.begin(state, t_vars)
        for i in range(self.synth.steps):
            state, carry, m = self.synthesis_step(state, carry, t_vars, i)
            history.append(m)
        state, carry, m = self.end(state, carry, t_vars)
        history.append(m)
        for j in range(self.spec.student_steps):
            state, m = self.student_step(state, carry, t_vars, j)
            history.append(m)
        return self.finish(state), _mean_metrics(history)

    def scanned(self, state: DistillState, t_vars):
        """The whole round as one program, each loop a ``lax.scan``."""
        state, carry = self.begin(state, t_vars)

        def synth_body(sc, i):
            s, c, m = self.synthesis_step(*sc, t_vars, i)
            return (s, c), m

        (state, carry), m_syn = jax.lax.scan(synth_body, (state, carry), jnp.arange(self.synth.steps))
        state, carry, m_end = self.end(state, carry, t_vars)

        def student_body(s, j):
            return self.student_step(s, carry, t_vars, j)

        state, m_stu = jax.lax.scan(student_body, state, jnp.arange(self.spec.student_steps))
        metrics = {**jax.tree.map(lambda v: jnp.mean(v, axis=0), m_syn), **m_end,
                   **jax.tree.map(lambda v: jnp.mean(v, axis=0), m_stu)}
        return self.finish(state), metrics

    # -- the student update (shared by every synthesiser) ---------------------------------------
    def _student_update(self, state: DistillState, batch, t_vars, key_j, j):
        spec = self.spec
        s, proj, mem = state.student, state.projector, state.memory
        x_novel = batch[0]
        if spec.memory is not None:
            assert mem is not None
            batch = self._with_replay(mem, batch, t_vars, jax.random.fold_in(key_j, 1))
        s, proj, metrics = self._learn(s, proj, batch, t_vars, self._progress(state, j, spec.student_steps))
        if spec.memory is not None and mem is not None:
            if isinstance(j, int):
                if j < spec.memory.update_steps:
                    mem, m = self._memory_update(mem, x_novel, t_vars, jax.random.fold_in(key_j, 2))
                    metrics = {**metrics, **m}
            else:
                raise ValueError("PRE-DFKD's memory needs the unrolled round (config.synthesis.loop='unroll').")
        return state.replace(student=s, projector=proj, memory=mem), metrics

    def _memory(self) -> tuple[MemorySpec, nn.Module, optax.GradientTransformation]:
        """PRE-DFKD's memory: its spec, the VAE and its optimiser (a run with ``spec.memory`` has all three)."""
        ms, vae, tx_m = self.spec.memory, self.vae, self.tx_m
        assert ms is not None and vae is not None and tx_m is not None
        return ms, vae, tx_m

    def _learn(self, s: ModelState, proj: ModelState | None, batch, t_vars, prog):
        x, t_logits, t_feature = batch
        s_needs = self.s_needs
        t_blocks = t_features = None
        if t_logits is None or "t_blocks" in s_needs or ("t_feature" in s_needs and t_feature is None) \
                or "t_features" in s_needs:
            tv = self.ensemble.forward(t_vars, x)
            if t_logits is None:
                t_logits = jax.lax.stop_gradient(tv.logits)
            t_feature, t_blocks = jax.lax.stop_gradient((tv.feature, tv.blocks))
            if "t_features" in s_needs:
                t_features = jax.lax.stop_gradient(tv.per_feature)
        use_proj = proj is not None and "key" in s_needs

        def loss_fn(params, p_params):
            (s_logits, s_aux), s_stats = forward(self.student, {**s.variables(), "params": params}, x, train=True)
            view = objectives.View(x=x, t_logits=t_logits, t_feature=t_feature, t_blocks=t_blocks,
                                   t_features=t_features,
                                   s_logits=s_logits, s_feature=s_aux["feature"], s_blocks=s_aux.get("blocks"),
                                   progress=prog)
            if "key" in s_needs:
                view = view.replace(s_projected=s_aux["feature"] if p_params is None else
                                    self.projector.apply({"params": p_params}, s_aux["feature"]))
            loss, parts, extra = student_objective(self.spec, view)
            return loss, (parts, s_stats, extra)

        p_params = proj.params if proj is not None and use_proj else None
        (loss, (parts, s_stats, extra)), (grads, p_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1),
                                                                              has_aux=True)(s.params, p_params)
        s = apply_update(s, self.tx_s, grads, s_stats)
        if proj is not None and use_proj:
            proj = apply_update(proj, self.tx_s, p_grads, proj.batch_stats)
        return s, proj, {"student/loss": loss, **{f"student/{n}": jnp.mean(v) for n, v in parts.items()}, **extra}

    def _teacher_logits_fn(self, t_vars):
        return lambda images: self.ensemble.logits(t_vars, images)

    def _with_replay(self, mem: ModelState, batch, t_vars, key):
        """The student's batch with ``memory.batch_size`` samples replayed from the memory appended
        (PRE-DFKD's ``distill_knowledge``: decoder in ``replay_mode``)."""
        (ms, vae, _), h = self._memory(), self.spec.hparams
        t_fn = self._teacher_logits_fn(t_vars)
        x_mem = self.shard(memory_lib.replay(vae, mem.variables(), key, ms.batch_size, ms.nz, t_fn, ms.z_lr,
                                             h.balance_log_base or None, ms.balance_weight, ms.one_hot_weight,
                                             train=ms.replay_mode == "train"))
        t_mem = jax.lax.stop_gradient(t_fn(x_mem))
        t_logits = batch[1] if batch[1] is not None else jax.lax.stop_gradient(t_fn(batch[0]))
        return jnp.concatenate([batch[0], x_mem]), jnp.concatenate([t_logits, t_mem]), None

    def _memory_update(self, mem: ModelState, x_novel, t_vars, key):
        """One Adam step of the VAE on half the novel batch plus its own replay in train mode
        (PRE-DFKD's ``train_memory_generator``, run after the student's step)."""
        (ms, vae, tx_m), h = self._memory(), self.spec.hparams
        k_fit, k_vae = jax.random.split(key)
        t_fn = self._teacher_logits_fn(t_vars)
        x_old = self.shard(memory_lib.replay(vae, mem.variables(), k_fit, ms.batch_size, ms.nz, t_fn, ms.z_lr,
                                             h.balance_log_base or None, ms.balance_weight, ms.one_hot_weight,
                                             train=True))
        x_fit = jnp.concatenate([x_novel[: self.spec.batch_size // 2], x_old])

        def loss_fn(params):
            return memory_lib.vae_loss(vae, {**mem.variables(), "params": params}, x_fit, k_vae, t_fn,
                                       ms.kl_weight)

        (loss, (stats, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(mem.params)
        mem = apply_update(mem, tx_m, grads, stats)
        return mem, {"memory/loss": loss, **{f"memory/{n}": v for n, v in parts.items()}}
