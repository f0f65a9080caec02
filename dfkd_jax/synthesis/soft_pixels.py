"""Pixel inversion toward sampled soft targets: ZSKD's data impressions and soft-targeted synthesis.

The batch itself is the parameter, as in ``pixels.py`` (ADI); what differs is the target, a
probability vector per sample drawn at the start of each round by ``targets`` (``targets.py``:
ZSKD's Dirichlet over class similarities, or Wang's normal over a modelled layer pushed
through the rest of the teacher), and the handling of the pixels, which follows ZSKD's released
code (vcl-iisc/ZSKD at 54c855f, ``di_generation/cifar_10_impressions_alexnet_Dirch.py``):

- l. 53: the batch is drawn U[0, 1] *in pixel space*, the space of the network's input there
  (``config.synthesis.pixel_init='uniform'``; ``'normal'``: N(0, 1) in the normalised space,
  as ADI);
- l. 57: no augmentation: the rotation and scale placeholders (l. 47-48, l. 121-122) are fed
  but never used (``noise_image_cropped = noise_image``);
- l. 81-85: Adam (lr 1e-3, TF's betas 0.9 / 0.999) on the pixels, one optimiser;
- l. 55, l. 124: after every step the whole batch is min-max rescaled to [0, 1] (one minimum
  and one maximum over the batch tensor). Reading: TF1 runs the rescale and the Adam update in
  one ``sess.run`` without an order between them; we rescale after each update, the last one
  included (the code skips it on the last iteration), so the pool receives valid pixels;
- l. 126-128: the last iterate is kept (no lowest-loss selection);
- the objective is ``config.generator.terms`` (``objectives``): ``soft_ce`` for ZSKD
  (``noise_cost``, l. 75), ``soft_kl + lambda_a conv1_activation`` for soft-targeted synthesis.

Deviation (not switchable): the released code initialises the batch once per *class* and its Adam
once per *run*; the 20 batches of a class continue from the previous batch's pixels and moments
with new Dirichlet targets. Here every round starts from fresh noise and a fresh Adam, as the
paper describes ("initialised as random noise").
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from dfkd_jax import objectives
from dfkd_jax import pool as pool_lib
from dfkd_jax.core.optim import optimizer_step
from dfkd_jax.models import anatomy
from dfkd_jax.synthesis import targets as targets_lib
from dfkd_jax.synthesis.base import BuildContext, draw_from_pool, latest_from_pool
from dfkd_jax.synthesis.inversion import InversionSpec, adam_like, metrics_of


@dataclasses.dataclass(frozen=True)
class SoftPixelsSpec:
    """The inversion spec and the soft targets (``config.synthesis.targets`` and its options)."""

    inversion: InversionSpec
    targets: str = "dirichlet"  # 'dirichlet' (ZSKD) | 'mvn' (Wang)
    dirichlet_betas: tuple[float, ...] = (1.0, 0.1)
    mvn_layer: str = "penultimate"
    mvn_sigma: float = 1.5
    target_tau: float = 20.0
    pixel_init: str = "uniform"

    @classmethod
    def from_config(cls, config, ctx: BuildContext) -> "SoftPixelsSpec":
        s = config.synthesis
        return cls(inversion=InversionSpec.from_config(config, ctx), targets=str(s.targets),
                   dirichlet_betas=tuple(float(b) for b in s.dirichlet_betas), mvn_layer=str(s.mvn_layer),
                   mvn_sigma=float(s.mvn_sigma), target_tau=float(config.hparams.target_tau),
                   pixel_init=str(s.pixel_init))


def target_sampler(spec: SoftPixelsSpec, teacher) -> Callable:
    """The soft-target sampler of ``spec.targets`` from the first teacher's weights
    (with several teachers the targets come from teacher 0's head; the loss is against the ensemble)."""
    chain = anatomy.dense_chain(teacher.model, teacher.variables, teacher.meta.input_shape)
    if spec.targets == "dirichlet":
        return targets_lib.zskd_sampler(chain, spec.dirichlet_betas)
    return targets_lib.normal_sampler(chain, spec.mvn_layer, spec.mvn_sigma, spec.target_tau)


def minmax_rescale(p):
    """The whole batch mapped to [0, 1] by one minimum and one maximum (ZSKD's ``noise_image_clip``)."""
    lo, hi = jnp.min(p), jnp.max(p)
    return (p - lo) / jnp.maximum(hi - lo, 1e-12)


@dataclasses.dataclass(eq=False)
class SoftTargetPixels:
    spec: InversionSpec
    student: Any
    ensemble: Any
    shard: Any
    targets: Callable  # (key, round, batch_size) -> (B, K) soft targets
    pixel_init: str = "uniform"
    augment: str = "zskd"  # the student's draw from the pool
    student_batch_size: int = 0
    fixed_carry = True

    @property
    def steps(self) -> int:
        return self.spec.steps

    @property
    def nz(self) -> int:
        return self.spec.nz

    @property
    def tx(self):
        return adam_like(self.spec)

    def init(self, key, aux_key):
        return None

    def begin(self, state, key, round_):
        spec = self.spec
        kx, ky = jax.random.split(key)
        shape = (spec.batch_size, *spec.image_shape)
        if self.pixel_init == "uniform":
            p = jax.random.uniform(kx, shape, jnp.float32)
        else:
            p = self.ensemble.to_pixels(jax.random.normal(kx, shape, jnp.float32))
        p = self.shard(p)
        carry = {"p": p, "opt": self.tx.init(p), "targets": self.targets(ky, round_, spec.batch_size)}
        return state, carry

    def objective(self, ctx, p, targets, progress):
        """``(total, parts)`` of the weighted generator terms on the pixels ``p``."""
        spec = self.spec
        x = self.ensemble.from_pixels(p)
        conv1 = None
        if "conv1" in spec.needs:  # the first teacher's first convolution (the term is defined for one network)
            (logits, aux), conv1 = anatomy.apply_with_first_conv(self.ensemble.models[0], ctx.t_vars[0], x)
        if conv1 is None or len(self.ensemble) > 1:
            tv = self.ensemble.forward(ctx.t_vars, x)
            logits, aux = tv.logits, {"feature": tv.feature}
        view = objectives.View(x=x, x_clean=x, targets=targets, t_logits=logits, t_feature=aux["feature"],
                               t_conv1=conv1, progress=progress)
        return objectives.combine(dict(spec.terms), objectives.GENERATOR_TERMS, view, spec.hparams,
                                  rounds=spec.rounds)

    def step(self, state, carry, pool, ctx, key, progress):
        (total, parts), grad = jax.value_and_grad(
            lambda p: self.objective(ctx, p, carry["targets"], progress), has_aux=True)(carry["p"])
        p, opt = optimizer_step(self.tx, grad, carry["opt"], carry["p"])
        p = self.shard(minmax_rescale(p))
        return state, {**carry, "p": p, "opt": opt}, pool, metrics_of(total, parts, total)

    def end(self, state, carry, pool, ctx, key):
        p = carry["p"]
        logits = self.ensemble.logits(ctx.t_vars, self.ensemble.from_pixels(p)) if pool.t_logits is not None else None
        return state, carry, pool_lib.push(pool, p, logits), {}

    def student_batch(self, state, carry, pool, ctx, key):
        return draw_from_pool(pool, key, self.student_batch_size, self.augment, self.ensemble, self.shard)

    def sample(self, state, pool, z):
        return latest_from_pool(pool, self.ensemble, z.shape[0])


from_config = SoftPixelsSpec.from_config


def build(spec: SoftPixelsSpec, ctx: BuildContext) -> SoftTargetPixels:
    inv = spec.inversion
    return SoftTargetPixels(inv, student=ctx.student, ensemble=ctx.ensemble, shard=ctx.shard,
                            targets=target_sampler(spec, ctx.teachers[0]), pixel_init=spec.pixel_init,
                            augment=inv.augment, student_batch_size=inv.student_batch_size)
