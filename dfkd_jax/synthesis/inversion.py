"""What the inversion family shares: its static description and its objective.

An inversion synthesiser optimises something per round (the pixels, a generator and its
latents, a clone of a meta generator) against the frozen teachers, for ``steps`` steps, and
hands the lowest-loss iterate to the pool. The objective is the weighted generator terms of
``dfkd_jax.objectives`` (``config.generator.terms``) on an augmented view of the batch:
``bn`` (DeepInversion's feature-statistics prior, on the teachers' BN inputs), ``one_hot`` (CE
against the round's sampled targets), an adversarial term against the student (eval mode, as
the reference's ``self.student.eval()`` in ``synthesize``), ``tv`` and ``l2`` image priors on
the un-augmented batch. The student's parameters get no gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dfkd_jax import objectives
from dfkd_jax.bn_capture import apply_with_bn_stats
from dfkd_jax import pool as pool_lib
from dfkd_jax.core import sharding
from dfkd_jax.errors import ConfigError
from dfkd_jax.models.generators import INIT_SCHEMES
from dfkd_jax.synthesis.base import (BuildContext, GeneratorSpec, SynthesiserBase, draw_from_pool, forward,
                                     latest_from_pool, make_generator)


@dataclasses.dataclass(frozen=True)
class InversionSpec:
    steps: int  # synthesis steps per round (g_steps)
    batch_size: int  # synthesis batch
    terms: tuple[tuple[str, float], ...]
    hparams: objectives.HParams
    num_classes: int
    image_shape: tuple[int, int, int]
    rounds: int = 1
    lr: float = 0.1  # lr_g
    b1: float = 0.5
    b2: float = 0.999
    lr_z: float = 0.0  # the latents' learning rate (Fast); 0 = lr
    nz: int = 256
    student_mode: str = "eval"
    pool_logits: bool = False  # push the teachers' logits on the best iterate with it
    # CMI
    cr: float = 0.0
    cr_temperature: float = 0.2
    bank_size: int = 40960
    n_neg: int = 4096
    head_dim: int = 256
    embedding: str = "bn_means"  # the instance embedding per teacher: 'bn_means' (CMI) | 'feature'
    embedding_fusion: str = "concat"  # over several teachers: 'concat' | 'mean'
    reset: str = "normal"  # the generator's re-initialisation each round
    # Fast
    meta: str = "fomaml"  # 'fomaml' | 'reptile'
    reptile_scale: float = 67.0
    bn_momentum: float = 0.0
    warmup: int = 0  # rounds before the adversarial term (and the student) start
    reset_l0_round: int = -1  # round at which the first linear layer is re-drawn (Fast's reset_l0); -1 = never
    # the student's side: its draw from the pool (config.student.augment) and batch
    augment: str = "crop_flip"
    student_batch_size: int = 0
    generator: GeneratorSpec | None = None  # the generator (CMI, Fast); None for pixel inversion

    @property
    def needs(self) -> frozenset:
        return objectives.needs(dict(self.terms), objectives.GENERATOR_TERMS)

    @classmethod
    def from_config(cls, config, ctx: BuildContext) -> "InversionSpec":
        """The inversion family's spec from ``config.generator`` (steps, optimiser, terms), ``config.synthesis``
        and the student's pool draw, for the run's teachers (classes, image shape) and mesh."""
        s = config.synthesis
        if str(s.reset) not in (*INIT_SCHEMES, "keep"):
            raise ConfigError(f"Unknown --config.synthesis.reset={s.reset!r}: the generator is re-drawn every round "
                              f"by one of {', '.join(INIT_SCHEMES)}, or drawn once and kept across rounds with 'keep'.")
        meta = ctx.meta
        spec = cls(
            steps=int(config.generator.steps), batch_size=int(s.batch_size or config.train.batch_size),
            terms=tuple((k, float(v)) for k, v in config.generator.terms.items()),
            hparams=ctx.hparams, num_classes=int(meta.num_classes),
            image_shape=tuple(meta.input_shape), rounds=int(config.train.rounds), lr=float(config.generator.lr),
            b1=float(config.generator.b1), b2=float(config.generator.b2), lr_z=float(s.lr_z),
            nz=int(config.generator.nz), student_mode=str(config.generator.student_mode),
            pool_logits=bool(config.student.pool_logits), cr=float(s.cr), cr_temperature=float(s.cr_temperature),
            bank_size=int(s.bank_size), n_neg=int(s.n_neg), head_dim=int(s.head_dim), embedding=str(s.embedding),
            embedding_fusion=str(s.embedding_fusion), reset=str(s.reset), meta=str(s.meta),
            reptile_scale=float(s.reptile_scale), bn_momentum=float(s.bn_momentum), warmup=int(s.warmup),
            reset_l0_round=int(s.reset_l0_round), augment=str(config.student.augment),
            student_batch_size=int(config.train.batch_size), generator=GeneratorSpec.from_config(config))
        sharding.check_batch_size(spec.batch_size, ctx.mesh, "synthesis.batch_size")
        return spec


ADVERSARIAL = ("adv_l1", "adv_log_l1", "adv_kl", "adv_kd", "adv_js", "adv_js_neg", "adv_kd_masked")


def objective(spec: InversionSpec, ensemble, student, ctx, x_view, x_clean, targets, progress,
              with_means: bool = False, bn_blend=None, factors=None):
    """``(total, parts, teacher_view)`` of the weighted inversion terms.

    ``x_view``: the augmented batch the networks see (run's input space); ``x_clean``: the batch
    before augmentation (``tv``, ``l2``). ``bn_blend``: a function applied to the teachers' BN
    statistics before the ``bn`` term (Fast's momentum); ``factors``: traced multipliers of some
    terms' weights (Fast's warm-up of the adversarial term)."""
    needs = spec.needs
    tv = ensemble.forward(ctx.t_vars, x_view, with_bn="bn" in needs, with_means=with_means)
    t_bn = tv.bn if bn_blend is None or tv.bn is None else bn_blend(tv.bn)
    view = objectives.View(x=x_view, x_clean=x_clean, targets=targets, t_logits=tv.logits, t_feature=tv.feature,
                           t_bn=t_bn, progress=progress, t_per_logits=tv.per_logits)
    if "student" in needs:
        (s_logits, s_aux), _ = forward(student, jax.lax.stop_gradient(ctx.student.variables()), x_view,
                                       train=spec.student_mode == "train")
        view = view.replace(s_logits=s_logits, s_feature=s_aux["feature"])
    total, parts = objectives.combine(dict(spec.terms), objectives.GENERATOR_TERMS, view, spec.hparams,
                                      rounds=spec.rounds, factors=factors)
    return total, parts, tv


def adam_like(spec: InversionSpec, lr: float | None = None, b2: float | None = None):
    """Adam at ``lr`` (default the spec's ``lr_g``) with the spec's betas."""
    return optax.adam(spec.lr if lr is None else lr, b1=spec.b1, b2=spec.b2 if b2 is None else b2)


@dataclasses.dataclass(eq=False)
class InversionBase(SynthesiserBase):
    """What the inversion synthesisers share: their fields (an ``InversionSpec``, the student, the
    teachers' ensemble, the batch sharding constraint; subclasses add theirs after these); the round's
    lowest-loss iterate goes to the pool (``push_iterate``); the student draws ``spec.student_batch_size``
    samples from the pool, augmented by ``spec.augment`` (``base.draw_from_pool``); the sample grids show
    the images pushed last; the optimiser of what a round optimises is ``tx`` (Adam at ``lr_g``, betas
    ``(b1, b2)``, new every round)."""

    spec: InversionSpec
    student: Any
    ensemble: Any
    shard: Any
    fixed_carry = True

    @property
    def tx(self):
        return adam_like(self.spec)

    def push_iterate(self, pool, ctx, pixels, x=None):
        """``pool`` with ``pixels`` (pixel space) pushed, and the teachers' logits on them if the pool
        keeps logits; ``x``: the same images in the run's input space, if at hand (else from ``pixels``)."""
        logits = None
        if pool.t_logits is not None:
            logits = self.ensemble.logits(ctx.t_vars, self.ensemble.from_pixels(pixels) if x is None else x)
        return pool_lib.push(pool, pixels, logits)

    def student_batch(self, state, carry, pool, ctx, key):
        return draw_from_pool(pool, key, self.spec.student_batch_size, self.spec.augment, self.ensemble, self.shard)

    def sample(self, state, pool, z):
        return latest_from_pool(pool, self.ensemble, z.shape[0])


def common_fields(ctx: BuildContext) -> dict[str, Any]:
    """The fields every inversion synthesiser takes from the run: the student, the ensemble, the sharding."""
    return dict(student=ctx.student, ensemble=ctx.ensemble, shard=ctx.shard)


def metrics_of(total, parts, best_loss) -> dict[str, Any]:
    return {"synthesis/loss": total, "synthesis/best_loss": best_loss,
            **{f"synthesis/{n}": jnp.asarray(v, jnp.float32) for n, v in parts.items()}}


def bn_shapes(ctx: BuildContext) -> tuple:
    """Per teacher, per BN call: the channel count (from shapes only)."""
    shape = ctx.meta.input_shape
    out = []
    for t in ctx.teachers:
        _, stats = jax.eval_shape(lambda v: apply_with_bn_stats(t.model, v, jnp.zeros((2, *shape)), train=False),
                                  t.variables)
        out.append(tuple(int(s[0].shape[-1]) for s in stats))
    return tuple(out)


def pixel_generator(spec: InversionSpec, ctx: BuildContext, kind: str):
    """The generator of an inversion synthesiser that augments its images in pixel space (CMI, Fast)."""
    assert spec.generator is not None
    g = make_generator(spec.generator, ctx)
    if g.output_space != "pixels":
        raise ConfigError(f"The {kind} synthesiser augments the generator's images in pixel space; generator "
                          f"{spec.generator.arch!r} does not output pixels. Use generator.arch='cmi' or 'large'.")
    return g

