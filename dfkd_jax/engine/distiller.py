"""``Distiller``: the functional API. It holds the static pieces of a run (networks,
optimisers, mesh) and exposes pure, jitted functions over ``DistillState``::

    d = Distiller.from_config(config, teacher)
    state = d.init(seed=0)
    for _ in range(100):
        state, metrics = d.round(state)      # one jitted call, state donated
    result = d.evaluate(state, test_images, test_labels)

Nothing here knows which method runs: that is entirely the config's term weights
and step counts (see ``dfkd_jax.objectives`` and ``dfkd_jax.engine.round``).

The task follows from the teacher: a segmentation teacher (per-pixel logits, e.g.
DeepLabV3) makes ``task == 'segmentation'``: the round is the same (per-pixel terms
are averaged per sample by ``objectives.per_sample``, the pool holds per-pixel
logits), ``evaluate`` reports mIoU and pixel accuracy from confusion matrices summed
on the device, and ``headline`` names the metric the loop ranks evaluations by.
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
from dfkd_jax.data.specs import SPECS
from dfkd_jax.engine import optim, sharding
from dfkd_jax.engine.round import MemorySpec, RoundSpec, generate, make_round
from dfkd_jax.engine.state import DistillState, ModelState
from dfkd_jax.errors import ConfigError
from dfkd_jax.models import build_generator, build_model, fast_conv, is_segmentation
from dfkd_jax.models.generators import initialize
from dfkd_jax.models.vae import VAE
from dfkd_jax.teacher import Teacher

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# the metric best/last/mean are taken over, and the teacher's, per task
HEADLINE = {"classification": ("accuracy", "teacher_accuracy"), "segmentation": ("miou", "teacher_miou")}


def generator_normalization(output_space: str, mean, std):
    """The (mean, std) that maps a generator's output into the teacher's input space, or None.

    'standardized' outputs are used as they are; 'pixels' in [0, 1] are normalised with the
    teacher's constants; 'tanh' outputs y in [-1, 1] are the pixels (y + 1) / 2, so
    ``((y + 1) / 2 - mean) / std = (y - (2 mean - 1)) / (2 std)``.
    """
    if output_space == "pixels":
        return tuple(mean), tuple(std)
    if output_space == "tanh":
        return tuple(2.0 * m - 1.0 for m in mean), tuple(2.0 * s for s in std)
    return None


@dataclasses.dataclass
class EvalSet:
    """A test set on the devices: ``(x, y, mask, teacher_output)`` batches (the teacher's logits, or
    its argmax maps for segmentation) and the teacher's scores (``teacher``: ``teacher_accuracy``, or
    ``teacher_miou`` and ``teacher_pixel_accuracy``; ``teacher_accuracy`` is its pixel accuracy then)."""

    batches: list
    count: int
    teacher_accuracy: float
    teacher: dict = dataclasses.field(default_factory=dict)


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
    task: str = "classification"  # 'segmentation' for per-pixel teachers

    @property
    def headline(self) -> tuple[str, str]:
        """(student metric, teacher metric) that evaluations are ranked by: accuracy or mIoU."""
        return HEADLINE[self.task]

    @classmethod
    def from_config(cls, config, teacher: Teacher, mesh: Mesh | None = None) -> "Distiller":
        mesh = sharding.make_mesh() if mesh is None else mesh
        sharding.check_batch_size(config.train.batch_size, mesh)
        dtype = DTYPES[config.compute_dtype]
        meta = teacher.meta
        h, w, c = meta.input_shape
        generator = build_generator(config.generator.arch, nz=config.generator.nz, ngf=config.generator.ngf,
                                    channels=c, img_size=h if h == w else (h, w), dtype=dtype,
                                    bn_eps=float(config.generator.bn_eps), init_scheme=str(config.generator.init))
        if h != w and not getattr(generator, "rectangular", False):
            raise ConfigError(f"The {config.generator.arch} generator makes square images; the teacher takes "
                              f"{meta.input_shape}. Use a generator that makes H x W images (dfad_b, dfad_b_resize).")
        task = "segmentation" if is_segmentation(meta.arch) else "classification"
        if is_segmentation(config.student.arch) != (task == "segmentation"):
            raise ConfigError(f"The teacher {meta.arch} is a {task} model but the student {config.student.arch} is "
                              "not: choose a student of the same kind (config.student.arch).")
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
            normalize=generator_normalization(generator.output_space, meta.mean, meta.std),
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
                feature_dims=(t_dim, s_dim), needs=needs, vae=vae, tx_m=tx_m, task=task)
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
        self._predict = jax.jit(self._predict_fn, out_shardings=repl)
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
                k = self.teacher.meta.num_classes
                pool = pool_lib.init_pool(int(self.config.student.pool_size), (h, w, c),
                                          (h, w, k) if self.task == "segmentation" else k)
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
        if self.task == "segmentation":  # the argmax map is all the student's metrics need
            k, ignore = self.teacher.meta.num_classes, self.ignore_label
            return (jnp.argmax(t_logits, -1).astype(jnp.int32),
                    metrics_lib.confusion_matrix(t_logits, y, mask, k, ignore))
        return t_logits.astype(jnp.float32), metrics_lib.correct(t_logits, y, mask)

    def _eval_batch(self, s_vars, x, y, mask, t_out):
        s_logits, _ = self.student.apply(s_vars, x, train=False)
        if self.task == "segmentation":
            k, ignore = self.teacher.meta.num_classes, self.ignore_label
            return {
                "confusion": metrics_lib.confusion_matrix(s_logits, y, mask, k, ignore),
                "agree": metrics_lib.pixel_agreement(s_logits, t_out, mask),
                "count": jnp.sum(mask),
            }
        t_logits = t_out
        return {
            "correct": metrics_lib.correct(s_logits, y, mask),
            "agree": metrics_lib.agreement(s_logits, t_logits, mask),
            "loyalty": metrics_lib.loyalty(s_logits, t_logits, mask),
            "count": jnp.sum(mask),
        }

    @property
    def ignore_label(self) -> int:
        """The label of pixels no segmentation metric counts (the teacher's dataset's; 255 by default)."""
        spec = SPECS.get(self.teacher.meta.dataset)
        return spec.ignore_label if spec is not None else 255

    def eval_set(self, images: np.ndarray, labels: np.ndarray, batch_size: int | None = None) -> EvalSet:
        """The test set on the devices, batched, with the teacher's outputs and scores computed once
        (the teacher never changes, so ``evaluate`` does not re-run it): its logits and accuracy for
        classification, its argmax maps, mIoU and pixel accuracy for segmentation."""
        batch_size = batch_size or int(self.config.data.eval_batch_size)
        batch_size = max(self.mesh.devices.size, batch_size - batch_size % self.mesh.devices.size)
        batches, teacher_total = [], None
        for x, y, mask in eval_batches(images, labels, batch_size, sharding=sharding.batch_sharding(self.mesh)):
            t_out, stat = self._teacher_eval(self.teacher_variables, x, y, mask)
            batches.append((x, y, mask, t_out))
            teacher_total = stat if teacher_total is None else teacher_total + stat
        teacher_total = np.asarray(jax.device_get(teacher_total))
        if self.task == "segmentation":
            t = metrics_lib.segmentation_scores(teacher_total)
            teacher = {"teacher_miou": t["miou"], "teacher_pixel_accuracy": t["pixel_accuracy"]}
            return EvalSet(batches=batches, count=int(len(labels)), teacher_accuracy=t["pixel_accuracy"],
                           teacher=teacher)
        accuracy = float(teacher_total) / len(labels)
        return EvalSet(batches=batches, count=int(len(labels)), teacher_accuracy=accuracy,
                       teacher={"teacher_accuracy": accuracy})

    def evaluate(self, state: DistillState, images, labels: np.ndarray | None = None,
                 batch_size: int | None = None) -> dict[str, float]:
        """Student accuracy, teacher accuracy, Agree@1 and probability loyalty, on an ``EvalSet`` or on
        preprocessed ``images`` and their ``labels``."""
        es = images if isinstance(images, EvalSet) else self.eval_set(images, labels, batch_size)
        totals = None
        s_vars = state.student.variables()
        for x, y, mask, t_out in es.batches:
            out = self._eval(s_vars, x, y, mask, t_out)
            totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
        totals = jax.device_get(totals)
        n = float(totals["count"])
        if self.task == "segmentation":
            s = metrics_lib.segmentation_scores(totals["confusion"])
            return {"miou": s["miou"], "pixel_accuracy": s["pixel_accuracy"], **es.teacher,
                    "agree": float(totals["agree"]) / n}
        return {"accuracy": float(totals["correct"]) / n, "teacher_accuracy": es.teacher_accuracy,
                "agree": float(totals["agree"]) / n, "loyalty": float(totals["loyalty"]) / n}

    # -- samples --------------------------------------------------------------------------------
    def _sample_fn(self, g: ModelState, z):
        return generate(self.generator, self.spec, g.variables(), z, train=self.spec.generator_mode == "train")[0]

    def _predict_fn(self, s: ModelState, t_vars, x):
        t_logits, _ = self.teacher.model.apply(t_vars, x, train=False)
        s_logits, _ = self.student.apply(s.variables(), x, train=False)
        return jnp.argmax(t_logits, -1), jnp.argmax(s_logits, -1)

    def predict(self, state: DistillState, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Teacher and student argmax predictions (host arrays) on preprocessed ``images``, whose count
        is a multiple of the device count (``sample`` gives such batches): per-pixel maps for segmentation."""
        x = sharding.to_global(np.asarray(images, np.float32), sharding.batch_sharding(self.mesh))
        t, s = jax.device_get(self._predict(state.student, self.teacher_variables, x))
        return np.asarray(t), np.asarray(s)

    def sample(self, state: DistillState, n: int = 64, seed: int = 1234) -> np.ndarray:
        """``n`` synthetic images in the networks' input space (host array)."""
        n = max(n - n % self.mesh.devices.size, self.mesh.devices.size)
        z = jax.random.normal(jax.random.PRNGKey(seed), (n, self.spec.nz), jnp.float32)
        z = sharding.to_global(np.asarray(z), sharding.batch_sharding(self.mesh))
        return np.asarray(jax.device_get(self._sample(state.generator, z)))
