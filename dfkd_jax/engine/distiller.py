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

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from dfkd_jax import metrics as metrics_lib
from dfkd_jax import objectives
from dfkd_jax import pool as pool_lib
from dfkd_jax.data.pipeline import eval_batches
from dfkd_jax.engine import optim, sharding
from dfkd_jax.engine.round import RoundSpec, generate, make_round
from dfkd_jax.engine.state import DistillState, ModelState
from dfkd_jax.models import build_generator, build_model
from dfkd_jax.teacher import Teacher

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


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

    @classmethod
    def from_config(cls, config, teacher: Teacher, mesh: Mesh | None = None) -> "Distiller":
        mesh = sharding.make_mesh() if mesh is None else mesh
        sharding.check_batch_size(config.train.batch_size, mesh)
        dtype = DTYPES[config.compute_dtype]
        meta = teacher.meta
        h, w, c = meta.input_shape
        if h != w:
            raise ValueError(f"Square inputs only; the teacher takes {meta.input_shape}.")
        generator = build_generator(config.generator.arch, nz=config.generator.nz, ngf=config.generator.ngf,
                                    channels=c, img_size=h, dtype=dtype)
        student = build_model(config.student.arch, meta.num_classes, dtype=dtype)
        rounds = config.train.rounds
        tx_g = optim.make_optimizer(config.generator, rounds * config.generator.steps)
        tx_s = optim.make_optimizer(config.student, rounds * config.student.steps)
        spec = RoundSpec(
            generator_steps=int(config.generator.steps), student_steps=int(config.student.steps),
            student_batch=config.student.batch, batch_size=int(config.train.batch_size),
            nz=int(config.generator.nz),
            generator_terms=tuple((k, float(v)) for k, v in config.generator.terms.items()),
            student_terms=tuple((k, float(v)) for k, v in config.student.terms.items()),
            hparams=objectives.HParams.from_config(config),
            normalize=(meta.mean, meta.std) if generator.output_space == "pixels" else None)
        d = cls(config, teacher, mesh, generator, student, tx_g, tx_s, spec)
        d._build()
        return d

    # -- construction -------------------------------------------------------------------------
    def _build(self):
        repl = sharding.replicated(self.mesh)
        self.teacher_variables = sharding.replicate_tree(self.teacher.variables, self.mesh)
        round_fn = make_round(self.spec, self.generator, self.student, self.teacher.model, self.tx_g, self.tx_s,
                              sharding.batch_sharding(self.mesh))
        self._round = jax.jit(round_fn, donate_argnums=(0,))
        self._round_raw = round_fn
        self._eval = jax.jit(self._eval_batch)
        self._sample = jax.jit(self._sample_fn, out_shardings=repl)
        self._repl = repl

    def _init_model(self, model, key, x, tx) -> ModelState:
        variables = model.init(key, x, train=False)
        params = variables["params"]
        return ModelState(params=params, batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))

    def init(self, seed: int = 0) -> DistillState:
        """A fresh state (replicated over the mesh), deterministic in ``seed``."""
        h, w, c = self.teacher.meta.input_shape
        key = jax.random.PRNGKey(seed)
        k_g, k_s, k_run = jax.random.split(key, 3)

        def init_fn():
            g = self._init_model(self.generator, k_g, jnp.zeros((2, self.spec.nz), jnp.float32), self.tx_g)
            s = self._init_model(self.student, k_s, jnp.zeros((2, h, w, c), jnp.float32), self.tx_s)
            pool = None
            if self.spec.student_batch == "pool":
                pool = pool_lib.init_pool(int(self.config.student.pool_size), (h, w, c), self.teacher.meta.num_classes)
            return DistillState(round=jnp.zeros((), jnp.int32), rng=k_run, generator=g, student=s, pool=pool)

        return jax.jit(init_fn, out_shardings=self._repl)()

    def abstract_state(self) -> DistillState:
        """Shapes, dtypes and shardings of a state, for restoring a checkpoint."""
        shapes = jax.eval_shape(lambda: self.init(0))
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self._repl), shapes)

    # -- the round ------------------------------------------------------------------------------
    def round(self, state: DistillState) -> tuple[DistillState, dict]:
        """One jitted round; ``state`` is donated and must not be used afterwards."""
        return self._round(state, self.teacher_variables)

    # -- evaluation -----------------------------------------------------------------------------
    def _eval_batch(self, s_vars, t_vars, x, y, mask):
        s_logits, _ = self.student.apply(s_vars, x, train=False)
        t_logits, _ = self.teacher.model.apply(t_vars, x, train=False)
        return {
            "correct": metrics_lib.correct(s_logits, y, mask),
            "teacher_correct": metrics_lib.correct(t_logits, y, mask),
            "agree": metrics_lib.agreement(s_logits, t_logits, mask),
            "loyalty": metrics_lib.loyalty(s_logits, t_logits, mask),
            "count": jnp.sum(mask),
        }

    def evaluate(self, state: DistillState, images: np.ndarray, labels: np.ndarray,
                 batch_size: int | None = None) -> dict[str, float]:
        """Student accuracy, teacher accuracy, Agree@1 and probability loyalty on preprocessed images."""
        batch_size = batch_size or int(self.config.data.eval_batch_size)
        batch_size = max(self.mesh.devices.size, batch_size - batch_size % self.mesh.devices.size)
        totals = None
        s_vars = state.student.variables()
        for x, y, mask in eval_batches(images, labels, batch_size, sharding=sharding.batch_sharding(self.mesh)):
            out = self._eval(s_vars, self.teacher_variables, x, y, mask)
            totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
        totals = jax.device_get(totals)
        n = float(totals["count"])
        return {"accuracy": float(totals["correct"]) / n, "teacher_accuracy": float(totals["teacher_correct"]) / n,
                "agree": float(totals["agree"]) / n, "loyalty": float(totals["loyalty"]) / n}

    # -- samples --------------------------------------------------------------------------------
    def _sample_fn(self, g: ModelState, z):
        return generate(self.generator, self.spec, g.variables(), z)[0]

    def sample(self, state: DistillState, n: int = 64, seed: int = 1234) -> np.ndarray:
        """``n`` synthetic images in the networks' input space (host array)."""
        n = max(n - n % self.mesh.devices.size, self.mesh.devices.size)
        z = jax.random.normal(jax.random.PRNGKey(seed), (n, self.spec.nz), jnp.float32)
        z = sharding.to_global(np.asarray(z), sharding.batch_sharding(self.mesh))
        return np.asarray(jax.device_get(self._sample(state.generator, z)))
