"""The online generator: one persistent generator updated in every round (DFAD, DAFL, ZSKT, DFQ,
CuDFKD, AdaDFKD, PRE-DFKD).

Each synthesis step draws z, makes x = G(z) (train-mode BatchNorm), and minimises the weighted
generator terms (``config.generator.terms``, ``dfkd_jax.objectives``), with gradients reaching G
through the teachers (and the student for adversarial terms). The student's batch
(``config.student.batch``):

- ``'fresh'``: a new G(z') per student step, the generator frozen (DFAD);
- ``'reuse'``: the images of the round's last generator step, made before that step (DAFL: both
  networks learn from one batch per iteration);
- ``'regenerate'``: the last generator step's z through the *updated* generator (ZSKT's loader:
  the same z serves one generator step and then the student steps; the teachers' logits on the
  images are computed once);
- ``'pool'``: every generator step pushes its batch into the on-device pool and the student draws
  from it (many cheap student steps per expensive generator step without fitting one batch).

BatchNorm modes (per method, from its reference code):
- ``student_mode`` (``config.generator.student_mode``): the student's mode inside the generator's
  step. ``'train'`` normalises with the batch's statistics (DFAD, ZSKT, PRE-DFKD keep the student
  in train mode); ``'eval'`` with its running averages (the CMI-derived DFQ, CuDFKD and AdaDFKD
  call ``student.eval()`` in ``synthesize``). Either way the student's running averages are not
  moved by generator steps (only its own steps move them; PyTorch's train-mode forward would
  also move them, a side effect the student's next update mostly overwrites).
- ``generator_mode`` (``config.student.generator_mode``): the generator's mode when it makes the
  student's batches (``'fresh'``, ``'regenerate'``) and the sample grids. ``'train'``: batch
  statistics; ``'eval'``: the running averages its own updates maintain (the CMI-derived code's
  ``sample()`` calls ``generator.eval()``).

AdaDFKD's key queue (``dfkd_jax.pool.KeyQueue``) is part of this synthesiser's state: each
generator step pushes the projected student keys of its batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp

from dfkd_jax import objectives, terms
from dfkd_jax import pool as pool_lib
from dfkd_jax.core import optim
from dfkd_jax.core.state import ModelState, apply_update
from dfkd_jax.models.generators import initialize
from dfkd_jax.synthesis.base import (BuildContext, GeneratorSpec, SynthesiserBase, draw_from_pool, forward,
                                     make_generator, to_input_space)


class OnlineState(flax.struct.PyTreeNode):
    generator: ModelState
    queue: Any = None  # dfkd_jax.pool.KeyQueue (AdaDFKD), else None


@dataclasses.dataclass(frozen=True)
class OnlineSpec:
    steps: int
    student_batch: str  # 'fresh' | 'reuse' | 'regenerate' | 'pool'
    batch_size: int
    nz: int
    terms: tuple[tuple[str, float], ...]
    hparams: objectives.HParams
    rounds: int = 1
    ramps: tuple[tuple[str, tuple[float, ...]], ...] = ()
    output_space: str = "pixels"  # the generator's (synthesis.base.to_input_space): pixels | tanh | standardized
    student_mode: str = "train"
    generator_mode: str = "train"
    queue_size: int = 0  # > 0: AdaDFKD's key queue of this many rows
    queue_dim: int = 0
    student_has_steps: bool = True
    generator: GeneratorSpec | None = None  # None: the module's own init scheme (tests build the module)
    optimizer: optim.OptimizerSpec = optim.OptimizerSpec()  # the generator's (config.generator)

    @classmethod
    def from_config(cls, config, ctx: BuildContext) -> "OnlineSpec":
        """The online generator's spec: ``config.generator`` (network, steps, terms, ramps, optimiser), the
        student's batch mode and the generator's BatchNorm modes, AdaDFKD's queue (``hparams.r2m_queue_size``,
        sized to the teachers' feature width when a term reads it)."""
        needs = objectives.needs(dict(config.generator.terms), objectives.GENERATOR_TERMS)
        g = GeneratorSpec.from_config(config)
        return cls(
            steps=int(config.generator.steps), student_batch=str(config.student.batch),
            batch_size=int(config.train.batch_size), nz=g.nz,
            terms=tuple((k, float(v)) for k, v in config.generator.terms.items()),
            hparams=ctx.hparams, rounds=int(config.train.rounds),
            ramps=tuple((k, tuple(map(float, v))) for k, v in config.generator.ramps.items()),
            output_space=make_generator(g, ctx).output_space, student_mode=str(config.generator.student_mode),
            generator_mode=str(config.student.generator_mode),
            queue_size=int(config.hparams.r2m_queue_size) if "queue" in needs else 0,
            queue_dim=ctx.feature_dims[0], student_has_steps=int(config.student.steps) > 0, generator=g,
            optimizer=optim.OptimizerSpec.from_section(config.generator))


@dataclasses.dataclass(eq=False)
class OnlineGenerator(SynthesiserBase):
    spec: OnlineSpec
    generator: Any
    student: Any
    ensemble: Any
    tx: Any
    shard: Any
    projector: Any = None
    fixed_carry = False

    @property
    def needs(self) -> frozenset:
        return objectives.needs(dict(self.spec.terms), objectives.GENERATOR_TERMS)

    def init(self, key, aux_key) -> OnlineState:
        scheme = None if self.spec.generator is None else self.spec.generator.init
        g = ModelState.create(initialize(self.generator, key, jnp.zeros((2, self.spec.nz), jnp.float32), init=scheme,
                                         train=False), self.tx)
        queue = None
        if self.spec.queue_size:
            queue = pool_lib.init_queue(aux_key, self.spec.queue_size, self.spec.queue_dim)
        return OnlineState(generator=g, queue=queue)

    def generate(self, variables: dict, z, train: bool = True):
        """``(x, new_batch_stats)``: images in the networks' input space."""
        x, stats = forward(self.generator, variables, z, train=train)
        return to_input_space(self.ensemble, x, self.spec.output_space), stats

    def draw_z(self, key):
        return self.shard(jax.random.normal(key, (self.spec.batch_size, self.spec.nz), jnp.float32))

    def begin(self, state, key, round_):
        return state, {}

    def step(self, state: OnlineState, carry, pool, ctx, key, progress):
        spec, needs = self.spec, self.needs
        g = state.generator
        z = self.draw_z(key)

        def loss_fn(params):
            x, g_stats = self.generate({"params": params, "batch_stats": g.batch_stats}, z)
            x = self.shard(x)
            tv = self.ensemble.forward(ctx.t_vars, x, with_bn="bn" in needs)
            view = objectives.View(x=x, t_logits=tv.logits, t_feature=tv.feature, t_bn=tv.bn,
                                   t_per_logits=tv.per_logits,
                                   queue=None if state.queue is None else state.queue.keys, progress=progress)
            if "student" in needs:
                (s_logits, s_aux), _ = forward(self.student, ctx.student.variables(), x,
                                               train=spec.student_mode == "train")
                view = view.replace(s_logits=s_logits, s_feature=s_aux["feature"])
                if "key" in needs:
                    projected = s_aux["feature"] if ctx.projector is None else \
                        self.projector.apply({"params": ctx.projector}, s_aux["feature"])
                    view = view.replace(s_key=jax.lax.stop_gradient(terms.l2_normalize(projected)))
            total, parts = objectives.combine(dict(spec.terms), objectives.GENERATOR_TERMS, view, spec.hparams,
                                              dict(spec.ramps), spec.rounds)
            return total, (parts, g_stats, view)

        (total, (parts, g_stats, view)), grads = jax.value_and_grad(loss_fn, has_aux=True)(g.params)
        queue = state.queue
        if queue is not None:
            queue = pool_lib.push_keys(queue, view.s_key)
        state = OnlineState(generator=apply_update(g, self.tx, grads, g_stats), queue=queue)
        batch = (jax.lax.stop_gradient(view.x), jax.lax.stop_gradient(view.t_logits),
                 jax.lax.stop_gradient(view.t_feature))
        if spec.student_batch == "pool":
            pool = pool_lib.push(pool, self.ensemble.to_pixels(batch[0]), batch[1])
        metrics = {"generator/loss": total, **{f"generator/{n}": v for n, v in parts.items()}}
        return state, {"batch": batch, "z": z}, pool, metrics

    def fresh_batch(self, g: ModelState, t_vars, z):
        """The student's batch G(z) from the current generator (no gradient to it)."""
        x, _ = self.generate(g.variables(), z, train=self.spec.generator_mode == "train")
        x = jax.lax.stop_gradient(self.shard(x))
        tv = self.ensemble.forward(t_vars, x)
        return x, jax.lax.stop_gradient(tv.logits), jax.lax.stop_gradient(tv.feature)

    def end(self, state, carry, pool, ctx, key):
        if self.spec.student_batch == "regenerate" and self.spec.student_has_steps:
            # once: the generator does not change during the student steps
            carry = {**carry, "batch": self.fresh_batch(state.generator, ctx.t_vars, carry["z"])}
        return state, carry, pool, {}

    def student_batch(self, state, carry, pool, ctx, key):
        mode = self.spec.student_batch
        if mode in ("reuse", "regenerate"):
            return carry["batch"]
        if mode == "pool":
            return draw_from_pool(pool, key, self.spec.batch_size, "none", self.ensemble, self.shard)
        return self.fresh_batch(state.generator, ctx.t_vars, self.draw_z(key))

    def sample(self, state, pool, z):
        return self.generate(state.generator.variables(), z, train=self.spec.generator_mode == "train")[0]


from_config = OnlineSpec.from_config


def build(spec: OnlineSpec, ctx: BuildContext) -> OnlineGenerator:
    assert spec.generator is not None
    tx = optim.make_optimizer(spec.optimizer, ctx.rounds * spec.steps)
    return OnlineGenerator(spec, make_generator(spec.generator, ctx), student=ctx.student, ensemble=ctx.ensemble,
                           tx=tx, shard=ctx.shard, projector=ctx.projector)
