"""``Distiller``: the functional API. It holds the static pieces of a run (networks,
optimisers, mesh) and exposes pure, jitted functions over ``DistillState``::

    d = Distiller.from_config(config, teacher)
    state = d.init(seed=0)
    for _ in range(100):
        state, metrics = d.round(state)      # one jitted call, state donated
    result = d.evaluate(state, test_images, test_labels)

Nothing here knows which method runs: that is entirely the config's term weights
and step counts (see ``dfkd_jax.objectives`` and ``dfkd_jax.engine.round``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from dfkd_jax import metrics as metrics_lib
from dfkd_jax import objectives
from dfkd_jax import pool as pool_lib
from dfkd_jax.data.pipeline import eval_batches
from dfkd_jax.engine import optim, sharding
from dfkd_jax.engine.round import MemorySpec, RoundSpec, generate, make_round
from dfkd_jax.engine.state import DistillState, ModelState
from dfkd_jax.errors import ConfigError
from dfkd_jax.models import build_generator, build_model, fast_conv
from dfkd_jax.models.generators import initialize
from dfkd_jax.models.vae import VAE
from dfkd_jax.teacher import Teacher

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class EvalSet:
    """A test set on the devices: ``(x, y, mask, teacher_logits)`` batches and the teacher's accuracy."""

    batches: list
    count: int
    teacher_accuracy: float


def _feature_width(model, input_shape) -> int:
    """Width of a classifier's pooled feature (``aux['feature']``), from shapes only."""
    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x.shape), train=False))
    (_, aux) = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(x.shape), train=False), variables)
    return int(aux["feature"].shape[-1])


@dataclasses.dataclass
class Distiller:
    config: Any
    teacher: Teacher
    mesh: Mesh
    generator: Any
    student: Any
    tx_g: Any
    tx_s: Any
    spec: RoundSpec
    projector: Any = None  # learned linear map student features -> teacher width (AdaDFKD), or None
    feature_dims: tuple[int, int] = (0, 0)  # (teacher, student) pooled-feature widths
    needs: frozenset = frozenset()
    vae: Any = None  # PRE-DFKD's memory and its optimiser
    tx_m: Any = None

    @classmethod
    def from_config(cls, config, teacher: Teacher, mesh: Mesh | None = None) -> "Distiller":
        mesh = sharding.make_mesh() if mesh is None else mesh
        sharding.check_batch_size(config.train.batch_size, mesh)
        dtype = DTYPES[config.compute_dtype]
        meta = teacher.meta
        h, w, c = meta.input_shape
        if h != w:
            raise ConfigError(f"Square inputs only; the teacher takes {meta.input_shape}.")
        generator = build_generator(config.generator.arch, nz=config.generator.nz, ngf=config.generator.ngf,
                                    channels=c, img_size=h, dtype=dtype, bn_eps=float(config.generator.bn_eps),
                                    init_scheme=str(config.generator.init))
        student = build_model(config.student.arch, meta.num_classes, dtype=dtype)
        rounds = int(config.train.rounds)
        tx_g = optim.make_optimizer(config.generator, rounds * config.generator.steps)
        tx_s = optim.make_optimizer(config.student, rounds * config.student.steps)
        spec = RoundSpec(
            generator_steps=int(config.generator.steps), student_steps=int(config.student.steps),
            student_batch=config.student.batch, batch_size=int(config.train.batch_size),
            nz=int(config.generator.nz),
            generator_terms=tuple((k, float(v)) for k, v in config.generator.terms.items()),
            student_terms=tuple((k, float(v)) for k, v in config.student.terms.items()),
            hparams=objectives.HParams.from_config(config),
            normalize=(meta.mean, meta.std) if generator.output_space == "pixels" else None,
            rounds=rounds,
            generator_ramps=tuple((k, tuple(map(float, v))) for k, v in config.generator.ramps.items()),
            student_ramps=tuple((k, tuple(map(float, v))) for k, v in config.student.ramps.items()),
            self_paced=((float(config.hparams.spl_lambda0), float(config.hparams.spl_alpha))
                        if config.student.self_paced else None),
            memory=(MemorySpec(nz=int(config.memory.nz), batch_size=int(config.memory.batch_size),
                               update_steps=int(config.memory.update_steps), kl_weight=float(config.memory.kl_weight),
                               z_lr=float(config.memory.z_lr), replay_mode=str(config.memory.replay_mode),
                               balance_weight=float(config.generator.terms.get("balance", 0.0)),
                               one_hot_weight=float(config.generator.terms.get("one_hot", 0.0)))
                    if config.memory.enabled else None),
            student_mode=str(config.generator.student_mode), generator_mode=str(config.student.generator_mode))
        vae = tx_m = None
        if spec.memory is not None:
            sharding.check_batch_size(spec.memory.batch_size, mesh, "memory.batch_size")
            vae = VAE(nz=spec.memory.nz, ngf=int(config.memory.ngf or config.generator.ngf), channels=c, img_size=h,
                      dtype=dtype, bn_eps=float(config.generator.bn_eps))
            tx_m = optax.adam(float(config.memory.lr))
        needs = (objectives.needs(dict(spec.generator_terms), objectives.GENERATOR_TERMS)
                 | objectives.needs(dict(spec.student_terms), objectives.STUDENT_TERMS))
        if "bn" in needs and "batch_stats" not in teacher.variables:
            raise ConfigError(f"The bn term needs a teacher with BatchNorm layers; {meta.arch} has none. "
                             "Set --config.generator.terms.bn=0.")
        t_dim, s_dim = (_feature_width(m, meta.input_shape) for m in (teacher.model, student))
        projector = None
        if "key" in needs and t_dim != s_dim:
            projector = nn.Dense(t_dim, use_bias=False, name="projector")
        d = cls(config, teacher, mesh, generator, student, tx_g, tx_s, spec, projector=projector,
                feature_dims=(t_dim, s_dim), needs=needs, vae=vae, tx_m=tx_m)
        d._build()
        return d

    # -- construction -------------------------------------------------------------------------
    def _build(self):
        repl = sharding.replicated(self.mesh)
        self.teacher_variables = sharding.replicate_tree(self.teacher.variables, self.mesh)
        round_fn = make_round(self.spec, self.generator, self.student, self.teacher.model, self.tx_g, self.tx_s,
                              sharding.batch_sharding(self.mesh), projector=self.projector, vae=self.vae,
                              tx_m=self.tx_m)
        self._round = jax.jit(round_fn, donate_argnums=(0,))
        self._round_raw = round_fn
        self._eval = jax.jit(self._eval_batch)
        self._teacher_eval = jax.jit(self._teacher_batch)
        self._sample = jax.jit(self._sample_fn, out_shardings=repl)
        self._repl = repl

    def _init_model(self, model, key, x, tx, *args) -> ModelState:
        """A model's ``ModelState``; generators and the memory through ``generators.initialize`` (their
        reference init schemes, ``config.generator.init``)."""
        kwargs = {} if isinstance(model, nn.Dense) else {"train": False}
        if model is self.generator or model is self.vae:
            variables = initialize(model, key, x, *args, init=str(self.config.generator.init), **kwargs)
        else:
            variables = model.init(key, x, *args, **kwargs)
        params = variables["params"]
        return ModelState(params=params, batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))

    def init(self, seed: int = 0) -> DistillState:
        """A fresh state (replicated over the mesh), deterministic in ``seed``."""
        h, w, c = self.teacher.meta.input_shape
        key = jax.random.PRNGKey(seed)
        k_g, k_s, k_run = jax.random.split(key, 3)
        k_q, k_p, k_m = jax.random.split(jax.random.fold_in(key, 7), 3)
        t_dim, s_dim = self.feature_dims

        def init_fn():
            g = self._init_model(self.generator, k_g, jnp.zeros((2, self.spec.nz), jnp.float32), self.tx_g)
            s = self._init_model(self.student, k_s, jnp.zeros((2, h, w, c), jnp.float32), self.tx_s)
            pool = None
            if self.spec.student_batch == "pool":
                pool = pool_lib.init_pool(int(self.config.student.pool_size), (h, w, c), self.teacher.meta.num_classes)
            queue = projector = None
            if "queue" in self.needs:
                queue = pool_lib.init_queue(k_q, int(self.config.hparams.r2m_queue_size), t_dim)
            if self.projector is not None:
                projector = self._init_model(self.projector, k_p, jnp.zeros((2, s_dim), jnp.float32), self.tx_s)
            memory = None
            if self.vae is not None:
                memory = self._init_model(self.vae, k_m, jnp.zeros((2, h, w, c), jnp.float32), self.tx_m, k_m)
            return DistillState(round=jnp.zeros((), jnp.int32), rng=k_run, generator=g, student=s, pool=pool,
                                queue=queue, projector=projector, memory=memory)

        return jax.jit(init_fn, out_shardings=self._repl)()

    def abstract_state(self) -> DistillState:
        """Shapes, dtypes and shardings of a state, for restoring a checkpoint."""
        shapes = jax.eval_shape(lambda: self.init(0))
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self._repl), shapes)

    # -- the round ------------------------------------------------------------------------------
    def round(self, state: DistillState) -> tuple[DistillState, dict]:
        """One jitted round; ``state`` is donated and must not be used afterwards.

        Traced (once) with ``config.conv_impl``'s convolutions (``dfkd_jax.models.fast_conv``)."""
        with fast_conv.using(self.config.conv_impl):
            return self._round(state, self.teacher_variables)

    # -- evaluation -----------------------------------------------------------------------------
    def _teacher_batch(self, t_vars, x, y, mask):
        t_logits, _ = self.teacher.model.apply(t_vars, x, train=False)
        return t_logits.astype(jnp.float32), metrics_lib.correct(t_logits, y, mask)

    def _eval_batch(self, s_vars, x, y, mask, t_logits):
        s_logits, _ = self.student.apply(s_vars, x, train=False)
        return {
            "correct": metrics_lib.correct(s_logits, y, mask),
            "agree": metrics_lib.agreement(s_logits, t_logits, mask),
            "loyalty": metrics_lib.loyalty(s_logits, t_logits, mask),
            "count": jnp.sum(mask),
        }

    def eval_set(self, images: np.ndarray, labels: np.ndarray, batch_size: int | None = None) -> EvalSet:
        """The test set on the devices, batched, with the teacher's logits and accuracy computed once
        (the teacher never changes, so ``evaluate`` does not re-run it)."""
        batch_size = batch_size or int(self.config.data.eval_batch_size)
        batch_size = max(self.mesh.devices.size, batch_size - batch_size % self.mesh.devices.size)
        batches, teacher_correct = [], 0.0
        for x, y, mask in eval_batches(images, labels, batch_size, sharding=sharding.batch_sharding(self.mesh)):
            t_logits, correct = self._teacher_eval(self.teacher_variables, x, y, mask)
            batches.append((x, y, mask, t_logits))
            teacher_correct += float(jax.device_get(correct))
        return EvalSet(batches=batches, count=int(len(labels)), teacher_accuracy=teacher_correct / len(labels))

    def evaluate(self, state: DistillState, images, labels: np.ndarray | None = None,
                 batch_size: int | None = None) -> dict[str, float]:
        """Student accuracy, teacher accuracy, Agree@1 and probability loyalty, on an ``EvalSet`` or on
        preprocessed ``images`` and their ``labels``."""
        es = images if isinstance(images, EvalSet) else self.eval_set(images, labels, batch_size)
        totals = None
        s_vars = state.student.variables()
        for x, y, mask, t_logits in es.batches:
            out = self._eval(s_vars, x, y, mask, t_logits)
            totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
        totals = jax.device_get(totals)
        n = float(totals["count"])
        return {"accuracy": float(totals["correct"]) / n, "teacher_accuracy": es.teacher_accuracy,
                "agree": float(totals["agree"]) / n, "loyalty": float(totals["loyalty"]) / n}

    # -- samples --------------------------------------------------------------------------------
    def _sample_fn(self, g: ModelState, z):
        return generate(self.generator, self.spec, g.variables(), z, train=self.spec.generator_mode == "train")[0]

    def sample(self, state: DistillState, n: int = 64, seed: int = 1234) -> np.ndarray:
        """``n`` synthetic images in the networks' input space (host array)."""
        n = max(n - n % self.mesh.devices.size, self.mesh.devices.size)
        z = jax.random.normal(jax.random.PRNGKey(seed), (n, self.spec.nz), jnp.float32)
        z = sharding.to_global(np.asarray(z), sharding.batch_sharding(self.mesh))
        return np.asarray(jax.device_get(self._sample(state.generator, z)))
