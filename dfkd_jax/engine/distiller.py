"""``Distiller``: the functional API. It holds the static pieces of a run (networks,
optimisers, synthesiser, mesh) and exposes pure, jitted functions over ``DistillState``::

    d = Distiller.from_config(config, teachers)     # one Teacher or a sequence of them
    state = d.init(seed=0)
    for _ in range(100):
        state, metrics = d.round(state)      # jitted, state donated
    result = d.evaluate(state, test_images, test_labels)

Nothing here knows which method runs: a method is its config's synthesiser
(``config.synthesis.kind``, ``dfkd_jax.synthesis``), term weights and step counts
(``dfkd_jax.objectives``, ``dfkd_jax.engine.round``).

The task follows from the teachers (``Ensemble.task``): segmentation teachers (per-pixel
logits ``(B, H, W, K)``, e.g. DeepLabV3) make ``task == 'segmentation'``. The round and the
online synthesiser are the same (per-pixel student terms are averaged per sample by
``objectives.per_sample``, the pool stores per-pixel logits); ``evaluate`` reports mIoU and
pixel accuracy from confusion matrices summed on the device, and ``headline`` names the
metric the loop ranks evaluations by.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

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
from dfkd_jax.engine.round import LOOPS, MemorySpec, Round, RoundSpec
from dfkd_jax.engine.state import DistillState, ModelState
from dfkd_jax.ensemble import Ensemble
from dfkd_jax.errors import ConfigError
from dfkd_jax.models import build_model, fast_conv, is_segmentation
from dfkd_jax.models.generators import initialize
from dfkd_jax.models.vae import VAE
from dfkd_jax.synthesis import build_synthesiser
from dfkd_jax.teacher import Teacher

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# the metric best/last/mean are taken over, and the teacher's, per task
HEADLINE = {"classification": ("accuracy", "teacher_accuracy"), "segmentation": ("miou", "teacher_miou")}


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


@dataclasses.dataclass
class EvalSet:
    """A test set on the devices: ``(x, y, mask, teacher_output)`` batches (the teachers' ensemble
    logits, or their argmax maps for segmentation) and the teachers' scores (``teacher``:
    ``teacher_accuracy``, or ``teacher_miou`` and ``teacher_pixel_accuracy``; ``teacher_accuracy``
    is the pixel accuracy then)."""

    batches: list
    count: int
    teacher_accuracy: float
    teacher: dict = dataclasses.field(default_factory=dict)


def _feature_width(models, input_shape) -> int:
    """Width of the pooled feature (``aux['feature']``) of a classifier, or of several side by side."""
    total = 0
    for model in (models if isinstance(models, (tuple, list)) else (models,)):
        x = jnp.zeros((2, *input_shape))
        variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
        (_, aux) = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
        total += int(aux["feature"].shape[-1])
    return total


def _accumulating(step):
    """``step(state, carry, t_vars, i) -> (*out, metrics)`` as ``f(state, carry, t_vars, (i, sums)) -> (*out,
    (i + 1, sums + metrics))``: the loop's index and metric sums live on the device."""
    def f(state, carry, t_vars, acc):
        i, sums = acc
        *out, metrics = step(state, carry, t_vars, i)
        return (*out, (i + 1, {k: sums[k] + v for k, v in metrics.items()}))

    return f


@dataclasses.dataclass
class Distiller:
    config: Any
    teachers: tuple
    mesh: Mesh
    ensemble: Ensemble
    student: Any
    tx_s: Any
    spec: RoundSpec
    synth: Any  # the synthesiser (dfkd_jax.synthesis)
    projector: Any = None  # learned linear map student features -> teachers' width (AdaDFKD), or None
    feature_dims: tuple[int, int] = (0, 0)  # (teachers, student) pooled-feature widths
    needs: frozenset = frozenset()
    vae: Any = None  # PRE-DFKD's memory and its optimiser
    tx_m: Any = None

    @property
    def task(self) -> str:
        """``'classification'`` or ``'segmentation'``: the teachers' (``Ensemble.task``)."""
        return self.ensemble.task

    @property
    def headline(self) -> tuple[str, str]:
        """(student metric, teacher metric) that evaluations are ranked by: accuracy or mIoU."""
        return HEADLINE[self.task]

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
        teachers = (teachers,) if isinstance(teachers, Teacher) else tuple(teachers)
        ensemble = Ensemble.of(teachers)
        mesh = sharding.make_mesh() if mesh is None else mesh
        sharding.check_batch_size(config.train.batch_size, mesh)
        dtype = DTYPES[config.compute_dtype]
        meta = teachers[0].meta
        h, w, c = meta.input_shape
        if is_segmentation(config.student.arch) != (ensemble.task == "segmentation"):
            raise ConfigError(f"The teacher {meta.arch} is a {ensemble.task} model but the student "
                              f"{config.student.arch} is not: choose a student of the same kind (config.student.arch).")
        if ensemble.task == "segmentation":
            check_segmentation_config(config)
        student = build_model(config.student.arch, meta.num_classes, dtype=dtype)
        rounds = int(config.train.rounds)
        # no student updates during the warm-up rounds: its schedule spans the rounds after them
        tx_s = optim.make_optimizer(config.student, max(rounds - int(config.synthesis.warmup), 1) * config.student.steps)
        loop = str(config.synthesis.loop)
        if loop not in LOOPS:
            raise ConfigError(f"config.synthesis.loop must be one of {', '.join(LOOPS)}, not {loop!r}.")
        spec = RoundSpec(
            synthesis_steps=0 if config.synthesis.transfer_set else int(config.generator.steps),
            student_steps=int(config.student.steps), batch_size=int(config.train.batch_size),
            student_terms=tuple((k, float(v)) for k, v in config.student.terms.items()),
            hparams=objectives.HParams.from_config(config), rounds=rounds,
            student_ramps=tuple((k, tuple(map(float, v))) for k, v in config.student.ramps.items()),
            self_paced=((float(config.hparams.spl_lambda0), float(config.hparams.spl_alpha))
                        if config.student.self_paced else None),
            memory=(MemorySpec(nz=int(config.memory.nz), batch_size=int(config.memory.batch_size),
                               update_steps=int(config.memory.update_steps), kl_weight=float(config.memory.kl_weight),
                               z_lr=float(config.memory.z_lr), replay_mode=str(config.memory.replay_mode),
                               balance_weight=float(config.generator.terms.get("balance", 0.0)),
                               one_hot_weight=float(config.generator.terms.get("one_hot", 0.0)))
                    if config.memory.enabled else None),
            warmup=int(config.synthesis.warmup), loop=loop, synthesis_conv_impl=str(config.synthesis.conv_impl))
        vae = tx_m = None
        if spec.memory is not None:
            sharding.check_batch_size(spec.memory.batch_size, mesh, "memory.batch_size")
            if h != w:
                raise ConfigError(f"PRE-DFKD's memory makes square images; the teacher takes {meta.input_shape}.")
            vae = VAE(nz=spec.memory.nz, ngf=int(config.memory.ngf or config.generator.ngf), channels=c, img_size=h,
                      dtype=dtype, bn_eps=float(config.generator.bn_eps))
            tx_m = optax.adam(float(config.memory.lr))
        needs = (objectives.needs(dict(config.generator.terms), objectives.GENERATOR_TERMS)
                 | objectives.needs(dict(spec.student_terms), objectives.STUDENT_TERMS))
        ensemble.check_terms(needs)
        if "bn" in needs and not config.synthesis.transfer_set:
            if not any("batch_stats" in t.variables for t in teachers):  # else it runs over the BN teachers
                names = ", ".join(t.meta.arch for t in teachers)
                raise ConfigError(f"The bn term needs a teacher with BatchNorm layers; {names} "
                                  f"{'has' if len(teachers) == 1 else 'have'} none. "
                                  "Set --config.generator.terms.bn=0 or choose a BN teacher.")
        t_dim, s_dim = _feature_width(ensemble.models, meta.input_shape), _feature_width(student, meta.input_shape)
        projector = None
        # MTCKI's contrast with several teachers maps the student's feature to each teacher's width: one
        # linear map to their concatenation is those maps side by side
        if "key" in needs and (t_dim != s_dim or ("t_features" in needs and len(teachers) > 1)):
            projector = nn.Dense(t_dim, use_bias=False, name="projector")
        d = cls(config, teachers, mesh, ensemble, student, tx_s, spec, synth=None, projector=projector,
                feature_dims=(t_dim, s_dim), needs=needs, vae=vae, tx_m=tx_m)
        d.synth = build_synthesiser(config, d, dtype)
        if loop != "unroll" and not d.synth.fixed_carry:
            raise ConfigError(f"config.synthesis.loop={loop!r}: the {config.synthesis.kind} synthesiser runs unrolled "
                              "only (its carry is the last step's batch). Use loop='unroll'.")
        if loop != "unroll" and spec.memory is not None:
            raise ConfigError("PRE-DFKD's memory needs config.synthesis.loop='unroll'.")
        d._build()
        return d

    # -- construction -------------------------------------------------------------------------
    def shard(self, a):
        return jax.lax.with_sharding_constraint(a, sharding.batch_sharding(self.mesh))

    def _build(self):
        repl = sharding.replicated(self.mesh)
        self.teacher_variables = tuple(sharding.replicate_tree(t.variables, self.mesh) for t in self.teachers)
        self._round_obj = r = Round(self.spec, self.synth, self.student, self.ensemble, self.tx_s, self.shard,
                                    projector=self.projector, vae=self.vae, tx_m=self.tx_m)
        if self.spec.loop == "unroll":
            self._round = jax.jit(r.unrolled, donate_argnums=(0,))
        elif self.spec.loop == "scan":
            self._round = jax.jit(r.scanned, donate_argnums=(0,))
        else:
            self._begin = jax.jit(r.begin, donate_argnums=(0,))
            self._synth_step = jax.jit(_accumulating(r.synthesis_step), donate_argnums=(0, 1, 3))
            self._end = jax.jit(r.end, donate_argnums=(0, 1))
            self._student_step = jax.jit(_accumulating(r.student_step), donate_argnums=(0, 3))
            self._zero_sums = {}
            self._finish = jax.jit(r.finish, donate_argnums=(0,))
            self._round = self._python_round
        self._round_raw = r.unrolled
        self._eval = jax.jit(self._eval_batch)
        self._teacher_eval = jax.jit(self._teacher_batch)
        self._sample = jax.jit(self._sample_fn, out_shardings=repl)
        self._predict = jax.jit(self._predict_fn, out_shardings=repl)
        self._pixel_logits = jax.jit(self._pixel_logits_fn, out_shardings=repl)
        self._repl = repl

    def _python_round(self, state: DistillState, t_vars):
        """The round as a Python loop over one jitted step per loop (``loop='python'``). Each step takes and
        returns ``(index, metric sums)`` on the device: one dispatch per step, nothing read back to the host
        (on CPU the host shares the cores: a separate add per metric per step cost 10-20% of a LeNet step)."""
        n_syn, n_stu = self.spec.synthesis_steps, self.spec.student_steps
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
        return state, carry, self._fresh_sums("synthesis", self._round_obj.synthesis_step, state, carry, t_vars)

    def synthesis_steps(self, state: DistillState, carry, t_vars, acc, n: int):
        """``n`` synthesis steps, one dispatch each."""
        for _ in range(n):
            state, carry, acc = self._synth_step(state, carry, t_vars, acc)
        return state, carry, acc

    def begin_student(self, state: DistillState, carry, t_vars):
        """End the synthesis (the pool write): ``(state, carry, its metrics, acc)`` for ``student_steps``."""
        state, carry, m = self._end(state, carry, t_vars)
        return state, carry, m, self._fresh_sums("student", self._round_obj.student_step, state, carry, t_vars)

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

    def uses_pool(self) -> bool:
        return self.config.synthesis.kind != "online" or self.config.student.batch == "pool" \
            or bool(self.config.synthesis.transfer_set)

    def init(self, seed: int = 0) -> DistillState:
        """A fresh state (replicated over the mesh), deterministic in ``seed``."""
        h, w, c = self.teacher.meta.input_shape
        key = jax.random.PRNGKey(seed)
        k_g, k_s, k_run = jax.random.split(key, 3)
        k_q, k_p, k_m = jax.random.split(jax.random.fold_in(key, 7), 3)
        t_dim, s_dim = self.feature_dims
        cfg = self.config

        def init_fn():
            synth = self.synth.init(k_g, k_q)
            s = self._init_model(self.student, k_s, jnp.zeros((2, h, w, c), jnp.float32), self.tx_s)
            pool = None
            if self.uses_pool():
                k = self.teacher.meta.num_classes
                pool = pool_lib.init_pool(int(cfg.student.pool_size), (h, w, c),
                                          (h, w, k) if self.task == "segmentation" else k,
                                          str(cfg.student.pool_dtype),
                                          with_logits=bool(cfg.student.pool_logits) or cfg.synthesis.kind == "online"
                                          or (bool(cfg.synthesis.transfer_set) and cfg.student.augment == "none"))
            projector = None
            if self.projector is not None:
                projector = self._init_model(self.projector, k_p, jnp.zeros((2, s_dim), jnp.float32), self.tx_s)
            memory = None
            if self.vae is not None:
                memory = self._init_model(self.vae, k_m, jnp.zeros((2, h, w, c), jnp.float32), self.tx_m, k_m)
            return DistillState(round=jnp.zeros((), jnp.int32), rng=k_run, synth=synth, student=s, pool=pool,
                                projector=projector, memory=memory)

        state = jax.jit(init_fn, out_shardings=self._repl)()
        if cfg.synthesis.transfer_set:
            from dfkd_jax import transfer
            state = state.replace(pool=transfer.load_into_pool(cfg.synthesis.transfer_set, state.pool, self))
        return state

    def abstract_state(self) -> DistillState:
        """Shapes, dtypes and shardings of a state, for restoring a checkpoint."""
        shapes = jax.eval_shape(lambda: self.init(0)) if not self.config.synthesis.transfer_set else \
            jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), self.init(0))
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self._repl), shapes)

    # -- the round ------------------------------------------------------------------------------
    def round(self, state: DistillState) -> tuple[DistillState, dict]:
        """One round; ``state`` is donated and must not be used afterwards.

        Traced (once) with ``config.conv_impl``'s convolutions (``dfkd_jax.models.fast_conv``)."""
        with fast_conv.using(self.config.conv_impl):
            return self._round(state, self.teacher_variables)

    # -- evaluation -----------------------------------------------------------------------------
    def _teacher_batch(self, t_vars, x, y, mask):
        t_logits = self.ensemble.logits(t_vars, x)
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
        """The test set on the devices, batched, with the teachers' (ensemble) outputs and scores computed
        once (the teachers never change, so ``evaluate`` does not re-run them): logits and accuracy for
        classification, argmax maps, mIoU and pixel accuracy for segmentation."""
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
        """Student accuracy, teacher accuracy, Agree@1 and probability loyalty (segmentation: student and
        teacher mIoU and pixel accuracy, per-pixel agreement), on an ``EvalSet`` or on preprocessed
        ``images`` and their ``labels``."""
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
    def _sample_fn(self, synth_state, pool, z):
        return self.synth.sample(synth_state, pool, z)

    def _predict_fn(self, s: ModelState, t_vars, x):
        t_logits = self.ensemble.logits(t_vars, x)
        s_logits, _ = self.student.apply(s.variables(), x, train=False)
        return jnp.argmax(t_logits, -1), jnp.argmax(s_logits, -1)

    def _pixel_logits_fn(self, t_vars, p):
        return self.ensemble.logits(t_vars, self.ensemble.from_pixels(p)).astype(jnp.float32)

    def pixel_logits(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        """The teachers' (ensemble) logits, a host float32 array, on pixel-space ``images`` (uint8 ``floor(255 p)``
        as a pool stores them, or floats in [0, 1]), in batches of ``batch`` (the last one padded, so one
        compilation). Every process calls it (a computation over the whole mesh)."""
        n_dev = self.mesh.devices.size
        batch = max(batch - batch % n_dev, n_dev)
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        out = []
        for i in range(0, len(images), batch):  # float32 one batch at a time: a uint8 pool stays uint8 on the host
            chunk = np.asarray(images[i:i + batch], np.float32) / scale
            n = len(chunk)
            if n < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), np.float32)])
            x = sharding.to_global(chunk, sharding.batch_sharding(self.mesh))
            out.append(np.asarray(jax.device_get(self._pixel_logits(self.teacher_variables, x)))[:n])
        return np.concatenate(out)

    def predict(self, state: DistillState, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The teachers' (ensemble) and the student's argmax predictions (host arrays) on preprocessed
        ``images``, whose count is a multiple of the device count (``sample`` gives such batches):
        per-pixel maps for segmentation."""
        x = sharding.to_global(np.asarray(images, np.float32), sharding.batch_sharding(self.mesh))
        t, s = jax.device_get(self._predict(state.student, self.teacher_variables, x))
        return np.asarray(t), np.asarray(s)

    def sample(self, state: DistillState, n: int = 64, seed: int = 1234) -> np.ndarray:
        """``n`` synthetic images in the networks' input space (host array): the generator's, or the
        pool's latest."""
        n = max(n - n % self.mesh.devices.size, self.mesh.devices.size)
        if state.pool is not None:
            n = min(n, int(state.pool.size))
        nz = int(getattr(getattr(self.synth, "spec", None), "nz", 1))
        z = jax.random.normal(jax.random.PRNGKey(seed), (n, nz), jnp.float32)
        z = sharding.to_global(np.asarray(z), sharding.batch_sharding(self.mesh))
        return np.asarray(jax.device_get(self._sample(state.synth, state.pool, z)))
