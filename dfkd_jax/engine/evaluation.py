"""Evaluation and sampling: a student against its teachers on a labelled set, and the images a run makes.

    ev = Evaluator.of("lenet5_half", teachers)            # any checkpoint's student, or distiller.evaluator
    result = ev.evaluate(student_state, test_images, test_labels)

``evaluate`` takes a student's ``ModelState`` (or a ``DistillState``, whose student it reads):
accuracy, the teachers' accuracy, Agree@1 and probability loyalty; for segmentation teachers
(per-pixel logits ``(B, H, W, K)``) mIoU and pixel accuracy from confusion matrices summed on the
device, and per-pixel agreement. ``headline`` names the metric a run ranks its evaluations by.
``sample`` asks the run's synthesiser for images (the generator's, or the pool's latest);
``predict`` and ``pixel_logits`` label images with the teachers (and the student).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from dfkd_jax import metrics as metrics_lib
from dfkd_jax.core import sharding
from dfkd_jax.core.state import ModelState
from dfkd_jax.data.pipeline import eval_batches
from dfkd_jax.data.specs import SPECS
from dfkd_jax.engine.state import DistillState
from dfkd_jax.ensemble import Ensemble
from dfkd_jax.models import build_model
from dfkd_jax.synthesis.base import Synthesiser
from dfkd_jax.teacher import Teacher

# the metric best/last/mean are taken over, and the teacher's, per task
HEADLINE = {"classification": ("accuracy", "teacher_accuracy"), "segmentation": ("miou", "teacher_miou")}


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


@dataclasses.dataclass(eq=False)
class Evaluator:
    """A student module and its teachers on a mesh; jitted evaluation, prediction and sampling."""

    student: nn.Module
    teachers: tuple
    mesh: Mesh
    ensemble: Ensemble | None = None  # default: Ensemble.of(teachers)
    eval_batch_size: int = 1000
    synth: Synthesiser | None = None  # for ``sample``: the run's synthesiser
    teacher_variables: tuple | None = None  # default: the teachers' variables, replicated on the mesh

    def __post_init__(self):
        if self.ensemble is None:
            self.ensemble = Ensemble.of(self.teachers)
        if self.teacher_variables is None:
            self.teacher_variables = tuple(sharding.replicate_tree(t.variables, self.mesh) for t in self.teachers)
        repl = sharding.replicated(self.mesh)
        self._eval = jax.jit(self._eval_batch)
        self._teacher_eval = jax.jit(self._teacher_batch)
        self._predict = jax.jit(self._predict_fn, out_shardings=repl)
        self._pixel_logits = jax.jit(self._pixel_logits_fn, out_shardings=repl)
        self._sample = jax.jit(self._sample_fn, out_shardings=repl)

    @classmethod
    def of(cls, student_arch: str, teachers: Teacher | Sequence[Teacher], mesh: Mesh | None = None,
           dtype: Any = jnp.float32, **kwargs) -> "Evaluator":
        """An evaluator of any student of architecture ``student_arch`` (a checkpoint's) against ``teachers``."""
        teachers = (teachers,) if isinstance(teachers, Teacher) else tuple(teachers)
        student = build_model(student_arch, teachers[0].meta.num_classes, dtype=dtype)
        return cls(student, teachers, sharding.make_mesh() if mesh is None else mesh, **kwargs)

    @property
    def _ens(self) -> Ensemble:
        assert self.ensemble is not None
        return self.ensemble

    @property
    def task(self) -> str:
        """``'classification'`` or ``'segmentation'``: the teachers' (``Ensemble.task``)."""
        return self._ens.task

    @property
    def headline(self) -> tuple[str, str]:
        """(student metric, teacher metric) that evaluations are ranked by: accuracy or mIoU."""
        return HEADLINE[self.task]

    @property
    def ignore_label(self) -> int:
        """The label of pixels no segmentation metric counts (the teacher's dataset's; 255 by default)."""
        spec = SPECS.get(self.teachers[0].meta.dataset)
        return spec.ignore_label if spec is not None else 255

    # -- evaluation -----------------------------------------------------------------------------
    def _teacher_batch(self, t_vars, x, y, mask):
        t_logits = self._ens.logits(t_vars, x)
        if self.task == "segmentation":  # the argmax map is all the student's metrics need
            k, ignore = self.teachers[0].meta.num_classes, self.ignore_label
            return (jnp.argmax(t_logits, -1).astype(jnp.int32),
                    metrics_lib.confusion_matrix(t_logits, y, mask, k, ignore))
        return t_logits.astype(jnp.float32), metrics_lib.correct(t_logits, y, mask)

    def _eval_batch(self, s_vars, x, y, mask, t_out):
        s_logits, _ = self.student.apply(s_vars, x, train=False)
        if self.task == "segmentation":
            k, ignore = self.teachers[0].meta.num_classes, self.ignore_label
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

    def eval_set(self, images: np.ndarray, labels: np.ndarray, batch_size: int | None = None) -> EvalSet:
        """The test set on the devices, batched, with the teachers' (ensemble) outputs and scores computed
        once (the teachers never change, so ``evaluate`` does not re-run them): logits and accuracy for
        classification, argmax maps, mIoU and pixel accuracy for segmentation."""
        batch_size = batch_size or self.eval_batch_size
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

    def evaluate(self, state: ModelState | DistillState, images: EvalSet | np.ndarray,
                 labels: np.ndarray | None = None, batch_size: int | None = None) -> dict[str, float]:
        """Student accuracy, teacher accuracy, Agree@1 and probability loyalty (segmentation: student and
        teacher mIoU and pixel accuracy, per-pixel agreement), on an ``EvalSet`` or on preprocessed
        ``images`` and their ``labels``. ``state``: the student's, or a run's state."""
        if isinstance(images, EvalSet):
            es = images
        else:
            assert labels is not None, "evaluate(state, images, labels): the labels of the images"
            es = self.eval_set(images, labels, batch_size)
        student = state.student if isinstance(state, DistillState) else state
        totals = None
        s_vars = student.variables()
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

    # -- labels and samples ---------------------------------------------------------------------
    def _predict_fn(self, s: ModelState, t_vars, x):
        t_logits = self._ens.logits(t_vars, x)
        s_logits, _ = self.student.apply(s.variables(), x, train=False)
        return jnp.argmax(t_logits, -1), jnp.argmax(s_logits, -1)

    def _pixel_logits_fn(self, t_vars, p):
        return self._ens.logits(t_vars, self._ens.from_pixels(p)).astype(jnp.float32)

    def _sample_fn(self, synth_state, pool, z):
        assert self.synth is not None
        return self.synth.sample(synth_state, pool, z)

    def pixel_logits(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        """The teachers' (ensemble) logits, a host float32 array, on pixel-space ``images`` (uint8 ``round(255 p)``
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

    def predict(self, state: ModelState | DistillState, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The teachers' (ensemble) and the student's argmax predictions (host arrays) on preprocessed
        ``images``, whose count is a multiple of the device count (``sample`` gives such batches):
        per-pixel maps for segmentation."""
        student = state.student if isinstance(state, DistillState) else state
        x = sharding.to_global(np.asarray(images, np.float32), sharding.batch_sharding(self.mesh))
        t, s = jax.device_get(self._predict(student, self.teacher_variables, x))
        return np.asarray(t), np.asarray(s)

    def sample(self, state: DistillState, n: int = 64, seed: int = 1234) -> np.ndarray:
        """``n`` synthetic images in the networks' input space (host array): the generator's, or the
        pool's latest."""
        if self.synth is None:
            raise ValueError("Evaluator.sample needs the run's synthesiser (Distiller.evaluator has it).")
        n = max(n - n % self.mesh.devices.size, self.mesh.devices.size)
        if state.pool is not None:
            n = min(n, int(state.pool.size))
        z = jax.random.normal(jax.random.PRNGKey(seed), (n, self.synth.nz), jnp.float32)
        z = sharding.to_global(np.asarray(z), sharding.batch_sharding(self.mesh))
        return np.asarray(jax.device_get(self._sample(state.synth, state.pool, z)))
