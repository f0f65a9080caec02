"""Several teachers as one: the engine always holds a sequence of teachers (one is the common case).

The synthetic images are shared. They are handed over in the *run's input space*, the
normalisation of the first teacher (``meta.mean``/``meta.std``), which is also the
student's; a teacher whose checkpoint records other constants sees the same pixels
normalised with its own (``x -> (x * std_0 + mean_0 - mean_i) / std_i``; skipped when the
constants agree, so one teacher, or copies of one, compute exactly what one teacher does).

What the terms read (``TeacherView``):
- ``logits``: the ensemble view, the mean of the teachers' logits (MTCKI's reading,
  dfkd_jax/methods/mtcki.py: the adversarial and KD terms are against the ensemble); segmentation teachers
  (``task == 'segmentation'``, per-pixel logits ``(B, H, W, K)``) are averaged pixel by pixel;
- ``per_logits``: every teacher's own logits;
- ``feature``: the teachers' pooled features concatenated along the feature axis (per-teacher
  features side by side; the width is the sum of the widths);
- ``bn``: per teacher, its list of BatchNorm input statistics; the ``bn`` term is the *mean
  over teachers* of each teacher's sum over its layers (so M copies of one teacher give that
  teacher's value; MTCKI's "summed over teachers" is this times M, i.e. a weight);
- ``blocks``: the first teacher's block-group outputs (ZSKT's attention is defined for one
  teacher; ``Ensemble.check_terms`` refuses it with several);
- ``bn_means``: per teacher, the per-sample spatial means of every BatchNorm input (CMI's
  instance embedding), concatenated over layers then over teachers;
- ``per_feature``, ``per_bn_means``: the same per teacher, before the concatenation (MTCKI: the
  student's contrast with each teacher, the embedding averaged over teachers).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp

from dfkd_jax.bn_capture import apply_with_bn_stats
from dfkd_jax.errors import ConfigError
from dfkd_jax.models import SEGMENTATION


def feature_width(models, input_shape) -> int:
    """Width of the pooled feature (``aux['feature']``) of a classifier, or of several side by side."""
    total = 0
    for model in (models if isinstance(models, (tuple, list)) else (models,)):
        x = jnp.zeros((2, *input_shape))
        variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
        (_, aux) = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
        total += int(aux["feature"].shape[-1])
    return total


class TeacherView(flax.struct.PyTreeNode):
    logits: jax.Array
    per_logits: tuple
    feature: Any = None
    bn: Any = None  # tuple over teachers of [(batch_mean, batch_var, running_mean, running_var)]
    blocks: Any = None
    bn_means: Any = None  # (B, sum of BN input widths over layers and teachers)
    per_feature: tuple = ()  # every teacher's pooled feature
    per_bn_means: tuple = ()  # every teacher's BN-input means, concatenated over its layers


def task_of(arch: str) -> str:
    """``'segmentation'`` for architectures with per-pixel logits, else ``'classification'`` (also for
    names outside the registry: teachers built in code)."""
    return "segmentation" if str(arch).partition("@")[0] in SEGMENTATION else "classification"


def check_compatible(teachers: Sequence) -> None:
    """Teachers must agree on the task, classes and image shape (they see the same images, one student
    learns)."""
    first = teachers[0].meta
    for i, t in enumerate(teachers[1:], start=1):
        m = t.meta
        if task_of(m.arch) != task_of(first.arch):
            raise ConfigError(f"Teacher {i} ({m.arch}) is a {task_of(m.arch)} model but teacher 0 ({first.arch}) is "
                              f"a {task_of(first.arch)} model; the teachers of one run do one task.")
        if m.num_classes != first.num_classes or tuple(m.input_shape) != tuple(first.input_shape):
            raise ConfigError(
                f"Teacher {i} ({m.arch}: {m.num_classes} classes, input {tuple(m.input_shape)}) does not agree with "
                f"teacher 0 ({first.arch}: {first.num_classes} classes, input {tuple(first.input_shape)}). Teachers "
                "of one run must share the classes and the image shape; choose checkpoints of the same dataset.")


@dataclasses.dataclass(frozen=True, eq=False)
class Ensemble:
    """The teachers' modules and normalisations (static); their variables are a tuple argument."""

    models: tuple
    norms: tuple  # ((mean, std), ...) per teacher
    num_classes: int
    task: str = "classification"  # or 'segmentation': per-pixel logits (B, H, W, K)

    @classmethod
    def of(cls, teachers: Sequence) -> "Ensemble":
        teachers = tuple(teachers)
        if not teachers:
            raise ConfigError("No teacher given: set config.teacher.checkpoint (or .checkpoints).")
        check_compatible(teachers)
        return cls(tuple(t.model for t in teachers), tuple((tuple(t.meta.mean), tuple(t.meta.std)) for t in teachers),
                   teachers[0].meta.num_classes, task_of(teachers[0].meta.arch))

    def __len__(self):
        return len(self.models)

    @property
    def input_norm(self):
        """(mean, std) of the run's input space (teacher 0's)."""
        return self.norms[0]

    def to_pixels(self, x):
        mean, std = (jnp.asarray(v, x.dtype) for v in self.input_norm)
        return x * std + mean

    def from_pixels(self, p):
        mean, std = (jnp.asarray(v, p.dtype) for v in self.input_norm)
        return (p - mean) / std

    def _input(self, i: int, x):
        if self.norms[i] == self.norms[0]:
            return x
        mean, std = (jnp.asarray(v, x.dtype) for v in self.norms[i])
        return (self.to_pixels(x) - mean) / std

    def check_terms(self, needs: frozenset) -> None:
        if len(self) > 1 and ({"t_blocks"} & needs):
            raise ConfigError("ZSKT's attention term reads one teacher's block outputs; it is not defined for several "
                              "teachers. Use one teacher or set the attention weight to 0.")

    def forward(self, t_vars: tuple, x, with_bn: bool = False, with_means: bool = False) -> TeacherView:
        """Eval-mode forward of every teacher on ``x`` (the run's input space)."""
        logits, features, bns, means, blocks = [], [], [], [], None
        for i, (model, variables) in enumerate(zip(self.models, t_vars)):
            xi = self._input(i, x)
            if with_bn or with_means:
                (lg, aux), stats = apply_with_bn_stats(model, variables, xi, train=False, per_sample_means=with_means)
                bns.append([s[:4] for s in stats])
                if with_means:  # a teacher without BatchNorm adds no columns
                    means.append(jnp.concatenate([s[4] for s in stats], axis=-1) if stats
                                 else jnp.zeros((xi.shape[0], 0), jnp.float32))
            else:
                lg, aux = model.apply(variables, xi, train=False)
            logits.append(lg)
            features.append(aux["feature"])
            if i == 0:
                blocks = aux.get("blocks")
        if len(logits) == 1:
            mean_logits, feature = logits[0], features[0]
        else:
            mean_logits = jnp.mean(jnp.stack([jnp.asarray(v, jnp.float32) for v in logits]), axis=0)
            feature = jnp.concatenate(features, axis=-1)
        return TeacherView(logits=mean_logits, per_logits=tuple(logits), feature=feature,
                           bn=tuple(bns) if (with_bn or with_means) else None, blocks=blocks,
                           bn_means=(jnp.concatenate(means, axis=-1) if means else None),
                           per_feature=tuple(features), per_bn_means=tuple(means))

    def logits(self, t_vars: tuple, x):
        return self.forward(t_vars, x).logits
