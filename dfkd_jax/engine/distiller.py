"""``Distiller``: the functional API. It holds the static pieces of a run (networks,
optimisers, synthesiser, mesh), built once from specs, and exposes pure, jitted functions over
``DistillState``::

    d = Distiller.from_config(config, teachers)     # one Teacher or a sequence of them
    state = d.init(seed=0)
    for _ in range(100):
        state, metrics = d.round(state)      # jitted, state donated
    result = d.evaluator.evaluate(state, test_images, test_labels)

``from_config`` reads the config once into a ``DistillSpec`` (the round's ``RoundSpec``, the
synthesiser's kind and spec, the pool, the memory, the student's optimiser); nothing after that
reads the config. Nothing here knows which method runs: a method is its synthesiser
(``dfkd_jax.synthesis``), term weights and step counts (``dfkd_jax.objectives``,
``dfkd_jax.engine.round``). Evaluation, prediction and sampling are ``dfkd_jax.engine.evaluation``'s
(``Distiller.evaluator``).

The task follows from the teachers (``Ensemble.task``): segmentation teachers (per-pixel
logits ``(B, H, W, K)``, e.g. DeepLabV3) make ``task == 'segmentation'``. The round and the
online synthesiser are the same (per-pixel student terms are averaged per sample by
``objectives.per_sample``, the pool stores per-pixel logits).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from dfkd_jax import objectives
from dfkd_jax import pool as pool_lib
from dfkd_jax import synthesis
from dfkd_jax.core import optim, sharding
from dfkd_jax.core.state import ModelState
from dfkd_jax.engine.evaluation import Evaluator
from dfkd_jax.engine.round import LOOPS, MemorySpec, Round, RoundSpec
from dfkd_jax.engine.state import DistillState
from dfkd_jax.ensemble import Ensemble, feature_width
from dfkd_jax.errors import ConfigError
from dfkd_jax.models import build_model, fast_conv, is_segmentation
from dfkd_jax.models.generators import initialize
from dfkd_jax.models.vae import VAE
from dfkd_jax.synthesis.base import BuildContext, Synthesiser
from dfkd_jax.teacher import Teacher

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_segmentation_config(config) -> None:
    """Refuse, with what to set instead, the parts of a config that segmentation teachers do not support:
    only the online synthesiser (DFAD's setting) makes their samples (the inversion synthesisers optimise
    class targets of classifiers), the terms must be defined per pixel
    (``objectives.PER_PIXEL_*_TERMS``), and transfer sets and PRE-DFKD's memory store or replay
    classification logits."""
    if str(config.synthesis.kind) != "online":
        raise ConfigError(f"Segmentation teachers: config.synthesis.kind must be 'online' (DFAD's segmentation "
                          f"setting, methods.dfad.configure_segmentation), not {config.synthesis.kind!r}: the "
                          "inversion synthesisers optimise class targets of classifiers.")
    for role, allowed in (("generator", objectives.PER_PIXEL_GENERATOR_TERMS),
                          ("student", objectives.PER_PIXEL_STUDENT_TERMS)):
        bad = sorted(k for k, v in config[role].terms.items() if v and k not in allowed)
        if bad:
            raise ConfigError(f"Segmentation teachers: config.{role}.terms {', '.join(bad)} are not defined on "
                              f"per-pixel logits. Set them to 0; per-pixel terms: {', '.join(sorted(allowed))}.")
    if config.synthesis.transfer_set or config.synthesis.export:
        raise ConfigError("Segmentation teachers: transfer sets (config.synthesis.transfer_set / export) hold "
                          "classification logits; leave both empty.")
    if config.memory.enabled:
        raise ConfigError("Segmentation teachers: PRE-DFKD's memory replays classification samples; set "
                          "config.memory.enabled=False.")


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """The on-device pool (``dfkd_jax.pool``): rows, storage dtype, whether it keeps the teachers' logits."""

    size: int
    dtype: str = "float32"
    with_logits: bool = False


@dataclasses.dataclass(frozen=True)
class DistillSpec:
    """Everything a ``Distiller`` is built from, read once from the config (``DistillSpec.from_config``)."""

    round: RoundSpec
    student_arch: str
    student_optimizer: optim.OptimizerSpec
    synthesis_kind: str  # a registered kind (dfkd_jax.synthesis), or 'transfer_set'
    synthesis: Any  # that kind's spec
    pool: PoolSpec | None = None  # None: the run keeps no pool
    compute_dtype: str = "float32"
    conv_impl: str = "auto"
    eval_batch_size: int = 1000
    transfer_set: str = ""  # fill the pool from this stored transfer set (dfkd_jax.transfer)
    augment: str = "none"  # the student's draw from the pool (config.student.augment)

    @staticmethod
    def round_from_config(config, hparams: objectives.HParams) -> RoundSpec:
        loop = str(config.synthesis.loop)
        if loop not in LOOPS:
            raise ConfigError(f"config.synthesis.loop must be one of {', '.join(LOOPS)}, not {loop!r}.")
        return RoundSpec(
            student_steps=int(config.student.steps), batch_size=int(config.train.batch_size),
            student_terms=tuple((k, float(v)) for k, v in config.student.terms.items()),
            hparams=hparams, rounds=int(config.train.rounds),
            student_ramps=tuple((k, tuple(map(float, v))) for k, v in config.student.ramps.items()),
            self_paced=((float(config.hparams.spl_lambda0), float(config.hparams.spl_alpha))
                        if config.student.self_paced else None),
            memory=(MemorySpec(nz=int(config.memory.nz), batch_size=int(config.memory.batch_size),
                               update_steps=int(config.memory.update_steps), kl_weight=float(config.memory.kl_weight),
                               z_lr=float(config.memory.z_lr), replay_mode=str(config.memory.replay_mode),
                               balance_weight=float(config.generator.terms.get("balance", 0.0)),
                               one_hot_weight=float(config.generator.terms.get("one_hot", 0.0)),
                               ngf=int(config.memory.ngf or config.generator.ngf), lr=float(config.memory.lr),
                               bn_eps=float(config.generator.bn_eps), init=str(config.generator.init))
                    if config.memory.enabled else None),
            warmup=int(config.synthesis.warmup), loop=loop, synthesis_conv_impl=str(config.synthesis.conv_impl))

    @classmethod
    def from_config(cls, config, ctx: BuildContext) -> "DistillSpec":
        """The run's spec; ``ctx`` (the teachers, the student's module, the mesh) sizes the synthesiser's."""
        kind, synth_spec = synthesis.spec_from_config(config, ctx)
        transfer_set = str(config.synthesis.transfer_set)
        uses_pool = kind != "online" or config.student.batch == "pool"
        pool = None
        if uses_pool:
            pool = PoolSpec(size=int(config.student.pool_size), dtype=str(config.student.pool_dtype),
                            with_logits=bool(config.student.pool_logits) or str(config.synthesis.kind) == "online"
                            or (bool(transfer_set) and config.student.augment == "none"))
        return cls(round=cls.round_from_config(config, ctx.hparams), student_arch=str(config.student.arch),
                   student_optimizer=optim.OptimizerSpec.from_section(config.student), synthesis_kind=kind,
                   synthesis=synth_spec, pool=pool, compute_dtype=str(config.compute_dtype),
                   conv_impl=str(config.conv_impl), eval_batch_size=int(config.data.eval_batch_size),
                   transfer_set=transfer_set, augment=str(config.student.augment))


def _accumulating(step):
    """``step(state, carry, t_vars, i) -> (*out, metrics)`` as ``f(state, carry, t_vars, (i, sums)) -> (*out,
    (i + 1, sums + metrics))``: the loop's index and metric sums live on the device."""
    def f(state, carry, t_vars, acc):
        i, sums = acc
        *out, metrics = step(state, carry, t_vars, i)
        return (*out, (i + 1, {k: sums[k] + v for k, v in metrics.items()}))

    return f


@dataclasses.dataclass(eq=False)
class Distiller:
    spec: DistillSpec
    teachers: tuple
    mesh: Mesh
    ensemble: Ensemble
    student: nn.Module
    tx_s: optax.GradientTransformation
    synth: Synthesiser
    projector: nn.Module | None = None  # learned linear map student features -> teachers' width (AdaDFKD), or None
    feature_dims: tuple[int, int] = (0, 0)  # (teachers, student) pooled-feature widths
    needs: frozenset = frozenset()
    vae: nn.Module | None = None  # PRE-DFKD's memory and its optimiser
    tx_m: optax.GradientTransformation | None = None

    @property
    def task(self) -> str:
        """``'classification'`` or ``'segmentation'``: the teachers' (``Ensemble.task``)."""
        return self.ensemble.task

    @functools.cached_property
    def evaluator(self) -> Evaluator:
        """Evaluation, prediction and sampling for this run (``dfkd_jax.engine.evaluation``), built when first asked."""
        return Evaluator(self.student, self.teachers, self.mesh, ensemble=self.ensemble,
                         eval_batch_size=self.spec.eval_batch_size, synth=self.synth,
                         teacher_variables=self.teacher_variables)

    @property
    def teacher(self) -> Teacher:
        """The first teacher (its metadata is the run's: classes, input shape, normalisation)."""
        return self.teachers[0]

    @property
    def generator(self):
        return getattr(self.synth, "generator", None)

    @property
    def tx_g(self):
        """The online generator's optimiser."""
        return getattr(self.synth, "tx", None)

    @classmethod
    def from_config(cls, config, teachers: Teacher | Sequence[Teacher], mesh: Mesh | None = None) -> "Distiller":
        """The run of ``config`` with ``teachers``: the config is read here, into specs, and nowhere after."""
        teachers = (teachers,) if isinstance(teachers, Teacher) else tuple(teachers)
        ensemble = Ensemble.of(teachers)
        mesh = sharding.make_mesh() if mesh is None else mesh
        sharding.check_batch_size(config.train.batch_size, mesh)
        dtype = DTYPES[config.compute_dtype]
        meta = teachers[0].meta
        if is_segmentation(config.student.arch) != (ensemble.task == "segmentation"):
            raise ConfigError(f"The teacher {meta.arch} is a {ensemble.task} model but the student "
                              f"{config.student.arch} is not: choose a student of the same kind (config.student.arch).")
        if ensemble.task == "segmentation":
            check_segmentation_config(config)
        student = build_model(config.student.arch, meta.num_classes, dtype=dtype)
        needs = (objectives.needs(dict(config.generator.terms), objectives.GENERATOR_TERMS)
                 | objectives.needs(dict(config.student.terms), objectives.STUDENT_TERMS))
        ensemble.check_terms(needs)
        if "bn" in needs and not config.synthesis.transfer_set:
            if not any("batch_stats" in t.variables for t in teachers):  # else it runs over the BN teachers
                names = ", ".join(t.meta.arch for t in teachers)
                raise ConfigError(f"The bn term needs a teacher with BatchNorm layers; {names} "
                                  f"{'has' if len(teachers) == 1 else 'have'} none. "
                                  "Set --config.generator.terms.bn=0 or choose a BN teacher.")
        t_dim, s_dim = feature_width(ensemble.models, meta.input_shape), feature_width(student, meta.input_shape)
        projector = None
        # MTCKI's contrast with several teachers maps the student's feature to each teacher's width: one
        # linear map to their concatenation is those maps side by side
        if "key" in needs and (t_dim != s_dim or ("t_features" in needs and len(teachers) > 1)):
            projector = nn.Dense(t_dim, use_bias=False, name="projector")
        ctx = BuildContext(teachers=teachers, ensemble=ensemble, student=student, mesh=mesh,
                           shard=batch_constraint(mesh), dtype=dtype, batch_size=int(config.train.batch_size),
                           rounds=int(config.train.rounds), hparams=objectives.HParams.from_config(config),
                           projector=projector, feature_dims=(t_dim, s_dim))
        spec = DistillSpec.from_config(config, ctx)
        return cls.build(spec, ctx, needs)

    @classmethod
    def build(cls, spec: DistillSpec, ctx: BuildContext, needs: frozenset = frozenset()) -> "Distiller":
        """The run of ``spec`` for the teachers, student and mesh of ``ctx``."""
        rs = spec.round
        # no student updates during the warm-up rounds: its schedule spans the rounds after them
        tx_s = optim.make_optimizer(spec.student_optimizer, max(rs.rounds - rs.warmup, 1) * rs.student_steps)
        h, w, c = ctx.meta.input_shape
        vae = tx_m = None
        if rs.memory is not None:
            sharding.check_batch_size(rs.memory.batch_size, ctx.mesh, "memory.batch_size")
            if h != w:
                raise ConfigError(f"PRE-DFKD's memory makes square images; the teacher takes {ctx.meta.input_shape}.")
            vae = VAE(nz=rs.memory.nz, ngf=rs.memory.ngf, channels=c, img_size=h, dtype=ctx.dtype,
                      bn_eps=rs.memory.bn_eps)
            tx_m = optax.adam(rs.memory.lr)
        synth = synthesis.build(spec.synthesis_kind, spec.synthesis, ctx)
        if rs.loop != "unroll" and not synth.fixed_carry:
            raise ConfigError(f"config.synthesis.loop={rs.loop!r}: the {spec.synthesis_kind} synthesiser runs "
                              "unrolled only (its carry is the last step's batch). Use loop='unroll'.")
        if rs.loop != "unroll" and rs.memory is not None:
            raise ConfigError("PRE-DFKD's memory needs config.synthesis.loop='unroll'.")
        return cls(spec, ctx.teachers, ctx.mesh, ctx.ensemble, ctx.student, tx_s, synth, projector=ctx.projector,
                   feature_dims=ctx.feature_dims, needs=needs, vae=vae, tx_m=tx_m)

    # -- construction -------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.shard = batch_constraint(self.mesh)
        self.teacher_variables = tuple(sharding.replicate_tree(t.variables, self.mesh) for t in self.teachers)
        # the round's pieces (public: tests trace them, tools/time_loops.py times them)
        self.round_fn = r = Round(self.spec.round, self.synth, self.student, self.ensemble, self.tx_s, self.shard,
                                  projector=self.projector, vae=self.vae, tx_m=self.tx_m)
        loop = self.spec.round.loop
        self._round: Callable[..., tuple[DistillState, dict]]
        if loop == "unroll":
            self._round = jax.jit(r.unrolled, donate_argnums=(0,))
        elif loop == "scan":
            self._round = jax.jit(r.scanned, donate_argnums=(0,))
        else:
            self._begin = jax.jit(r.begin, donate_argnums=(0,))
            self._synth_step = jax.jit(_accumulating(r.synthesis_step), donate_argnums=(0, 1, 3))
            self._end = jax.jit(r.end, donate_argnums=(0, 1))
            self._student_step = jax.jit(_accumulating(r.student_step), donate_argnums=(0, 3))
            self._zero_sums: dict = {}
            self._finish = jax.jit(r.finish, donate_argnums=(0,))
            self._round = self._python_round
        self._repl = sharding.replicated(self.mesh)

    def _python_round(self, state: DistillState, t_vars):
        """The round as a Python loop over one jitted step per loop (``loop='python'``). Each step takes and
        returns ``(index, metric sums)`` on the device: one dispatch per step, nothing read back to the host
        (on CPU the host shares the cores: a separate add per metric per step cost 10-20% of a LeNet step)."""
        n_syn, n_stu = self.synth.steps, self.spec.round.student_steps
        state, carry, acc = self.begin_synthesis(state, t_vars)
        state, carry, acc = self.synthesis_steps(state, carry, t_vars, acc, n_syn)
        parts = [(acc[1], n_syn)]
        state, carry, m, acc = self.begin_student(state, carry, t_vars)
        parts.append((m, 1))
        state, acc = self.student_steps(state, carry, t_vars, acc, n_stu)
        parts.append((acc[1], n_stu))
        sums: dict = {}
        counts: dict = {}
        for m, n in parts:
            for k, v in (m.items() if n else ()):
                sums[k] = v if k not in sums else sums[k] + v
                counts[k] = counts.get(k, 0) + n
        return self._finish(state), {k: v / counts[k] for k, v in sums.items()}

    # The pieces of a ``loop='python'`` round, in order (also what tools/time_loops.py times). ``acc`` is
    # ``(step index, metric sums)`` on the device.
    def begin_synthesis(self, state: DistillState, t_vars):
        """Start a round: ``(state, carry, acc)`` ready for ``synthesis_steps``."""
        state, carry = self._begin(state, t_vars)
        return state, carry, self._fresh_sums("synthesis", self.round_fn.synthesis_step, state, carry, t_vars)

    def synthesis_steps(self, state: DistillState, carry, t_vars, acc, n: int):
        """``n`` synthesis steps, one dispatch each."""
        for _ in range(n):
            state, carry, acc = self._synth_step(state, carry, t_vars, acc)
        return state, carry, acc

    def begin_student(self, state: DistillState, carry, t_vars):
        """End the synthesis (the pool write): ``(state, carry, its metrics, acc)`` for ``student_steps``."""
        state, carry, m = self._end(state, carry, t_vars)
        return state, carry, m, self._fresh_sums("student", self.round_fn.student_step, state, carry, t_vars)

    def student_steps(self, state: DistillState, carry, t_vars, acc, n: int):
        """``n`` student steps, one dispatch each."""
        for _ in range(n):
            state, acc = self._student_step(state, carry, t_vars, acc)
        return state, acc

    def _fresh_sums(self, name, step, state, carry, t_vars):
        """``(0, zeros)`` shaped like the metrics of ``step`` (traced abstractly once per loop)."""
        if name not in self._zero_sums:
            index = jax.ShapeDtypeStruct((), jnp.int32)
            metrics = jax.eval_shape(step, state, carry, t_vars, index)[-1]
            self._zero_sums[name] = jax.tree.map(lambda a: (a.shape, a.dtype), metrics)
        zeros = {k: jnp.zeros(*sd) for k, sd in self._zero_sums[name].items()}
        return jnp.zeros((), jnp.int32), zeros

    # -- the state ------------------------------------------------------------------------------
    def init(self, seed: int = 0) -> DistillState:
        """A fresh state (replicated over the mesh), deterministic in ``seed``."""
        h, w, c = self.teacher.meta.input_shape
        key = jax.random.PRNGKey(seed)
        k_g, k_s, k_run = jax.random.split(key, 3)
        k_q, k_p, k_m = jax.random.split(jax.random.fold_in(key, 7), 3)
        s_dim = self.feature_dims[1]
        pool_spec, memory_spec = self.spec.pool, self.spec.round.memory
        x0 = jnp.zeros((2, h, w, c), jnp.float32)

        def init_fn():
            synth = self.synth.init(k_g, k_q)
            s = ModelState.create(self.student.init(k_s, x0, train=False), self.tx_s)
            pool = None
            if pool_spec is not None:
                k = self.teacher.meta.num_classes
                pool = pool_lib.init_pool(pool_spec.size, (h, w, c), (h, w, k) if self.task == "segmentation" else k,
                                          pool_spec.dtype, with_logits=pool_spec.with_logits)
            projector = None
            if self.projector is not None:
                projector = ModelState.create(self.projector.init(k_p, jnp.zeros((2, s_dim), jnp.float32)), self.tx_s)
            memory = None
            if self.vae is not None and memory_spec is not None and self.tx_m is not None:
                memory = ModelState.create(initialize(self.vae, k_m, x0, k_m, init=memory_spec.init, train=False),
                                           self.tx_m)
            return DistillState(round=jnp.zeros((), jnp.int32), rng=k_run, synth=synth, student=s, pool=pool,
                                projector=projector, memory=memory)

        state = jax.jit(init_fn, out_shardings=self._repl)()
        if self.spec.transfer_set:
            from dfkd_jax import transfer  # imports tensorflow_datasets: only for transfer-set runs
            state = state.replace(pool=transfer.load_into_pool(self.spec.transfer_set, state.pool, self))
        return state

    def abstract_state(self) -> DistillState:
        """Shapes, dtypes and shardings of a state, for restoring a checkpoint."""
        shapes = jax.eval_shape(lambda: self.init(0)) if not self.spec.transfer_set else \
            jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), self.init(0))
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self._repl), shapes)

    # -- the round ------------------------------------------------------------------------------
    def round(self, state: DistillState) -> tuple[DistillState, dict]:
        """One round; ``state`` is donated and must not be used afterwards.

        Traced (once) with ``spec.conv_impl``'s convolutions (``dfkd_jax.models.fast_conv``)."""
        with fast_conv.using(self.spec.conv_impl):
            return self._round(state, self.teacher_variables)


def batch_constraint(mesh: Mesh):
    """``a -> a`` constrained to the batch sharding of ``mesh`` (inside jit)."""
    batch = sharding.batch_sharding(mesh)
    return lambda a: jax.lax.with_sharding_constraint(a, batch)
