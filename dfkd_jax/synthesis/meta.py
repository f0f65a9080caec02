"""Meta generator: a generator kept across rounds and meta-updated after a few inner steps of a
clone of it (Fast, Fang et al., AAAI 2022, "Up to 100x Faster Data-free Knowledge Distillation").

Matched to zju-vipa/Fast-Datafree at 0dcecbc, ``datafree/synthesis/fast_meta.py``:

- l. 114-119: z ~ N(0, I) (nz 256) and targets ``randint(0, K)`` (not sorted); l. 121: the inner
  generator is a clone of the meta generator; l. 123-126: one Adam over (clone, z), lr ``lr_g``
  for the clone and ``lr_z`` for z, betas (0.5, 0.999), new every round;
- l. 95-99, 129-130: each inner step sees ``RandomCrop(pad 4)`` + flip of G(z), normalised;
- l. 137-150: ``bn * L_bn + oh * CE(t, y) + adv * L_adv`` with CMI's masked KL at T = 1, the
  adversarial term only from round ``warmup - 1`` on (``self.ep >= self.ep_start`` with ``ep``
  counting ``synthesize`` calls from 1; one call per 400-step epoch in the published scripts,
  so ``ep == round + 1``);
- BN-statistic momentum (``datafree/hooks.py`` l. 82-116, ``bn_mmt`` 0.9): from the second
  round on, the ``bn`` term compares the running statistics with
  ``(1 - m) * batch + m * mmt`` (mean and variance), ``mmt`` an EMA over rounds of the batch
  statistics of each round's last inner step (the first round sets it; l. 167-169);
- l. 160-163 (``is_maml=1``, the published setting): first-order MAML, the meta gradient is the
  sum over the inner steps of the clone's gradients (``fomaml_grad``), applied to the meta
  generator by its own Adam (lr ``lr_g * steps``, betas (0.5, 0.999), l. 87-90) once per round;
  ``meta='reptile'`` (``is_maml=0``, l. 171-175): the gradient is ``67 * (theta - theta')``;
- l. 152-155: the lowest-loss inner iterate's images go to the pool (pixels, before augmentation);
- l. 110-111 (``reset_l0``, published 1): at ``ep == 120 + warmup`` (round ``119 + warmup``) the
  first linear layer of the meta generator is re-drawn from N(0, 0.02) with zero bias;
- the meta generator's BatchNorm running averages never move (only clones run forward).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from dfkd_jax import augment
from dfkd_jax.core.optim import optimizer_step
from dfkd_jax.core.state import ModelState
from dfkd_jax.models.generators import initialize
from dfkd_jax.synthesis.base import BuildContext, forward, init_best, keep_best, sample_targets
from dfkd_jax.synthesis.inversion import (ADVERSARIAL, InversionBase, InversionSpec, adam_like, bn_shapes,
                                          common_fields, metrics_of, objective, pixel_generator)


class MetaState(flax.struct.PyTreeNode):
    generator: ModelState  # the meta generator and its meta optimiser's state
    mmt: Any  # per teacher, per BN layer: (mean, var) EMA over rounds
    has_mmt: jax.Array


def blend(stats, mmt, has_mmt, m: float):
    """Fast's BN-statistic momentum: each layer's batch (mean, var) replaced by ``(1 - m) * batch +
    m * mmt`` once ``mmt`` exists."""
    out = []
    for t_stats, t_mmt in zip(stats, mmt):
        layers = []
        for (mean, var, rm, rv), (mm, mv) in zip(t_stats, t_mmt):
            layers.append((jnp.where(has_mmt, (1 - m) * mean + m * mm, mean),
                           jnp.where(has_mmt, (1 - m) * var + m * mv, var), rm, rv))
        out.append(layers)
    return tuple(out)


def update_mmt(mmt, last, has_mmt, m: float):
    """``mmt <- last`` the first time, then ``m * mmt + (1 - m) * last`` (``update_mmt``)."""
    return jax.tree.map(lambda old, new: jnp.where(has_mmt, m * old + (1 - m) * new, new), mmt, last)


def reptile_grad(meta_params, fast_params, scale: float):
    """Reptile's meta gradient ``scale * (theta - theta')`` (``reptile_grad``, scale 67)."""
    return jax.tree.map(lambda p, q: scale * (p - q), meta_params, fast_params)


@dataclasses.dataclass(eq=False)
class MetaGenerator(InversionBase):
    generator: Any
    bn_shapes: Any  # per teacher, per BN layer: the channel count

    @property
    def tx_meta(self):
        return optax.adam(self.spec.lr * self.spec.steps, b1=self.spec.b1, b2=self.spec.b2)

    @property
    def tx_inner(self):
        return {"g": self.tx, "z": adam_like(self.spec, lr=self.spec.lr_z or self.spec.lr)}

    def _z0(self):
        return jnp.zeros((2, self.spec.nz), jnp.float32)

    def init(self, key, aux_key):
        g = ModelState.create(initialize(self.generator, key, self._z0(), train=False), self.tx_meta)
        mmt = tuple(tuple((jnp.zeros((c,), jnp.float32), jnp.zeros((c,), jnp.float32)) for c in layers)
                    for layers in self.bn_shapes)
        return MetaState(generator=g, mmt=mmt, has_mmt=jnp.zeros((), bool))

    def _reset_l0(self, params, key, round_):
        """Fast's ``reset_l0``: the first linear layer re-drawn at round ``reset_l0_round``."""
        if self.spec.reset_l0_round < 0:
            return params
        l1 = params["l1_0"]
        fresh = {"kernel": 0.02 * jax.random.normal(key, l1["kernel"].shape, l1["kernel"].dtype),
                 "bias": jnp.zeros_like(l1["bias"])}
        now = round_ == self.spec.reset_l0_round
        return {**params, "l1_0": jax.tree.map(lambda a, b: jnp.where(now, a, b), fresh, l1)}

    def begin(self, state: MetaState, key, round_):
        spec = self.spec
        kz, ky, kr = jax.random.split(key, 3)
        g = state.generator.replace(params=self._reset_l0(state.generator.params, kr, round_))
        state = state.replace(generator=g)
        z = self.shard(jax.random.normal(kz, (spec.batch_size, spec.nz), jnp.float32))
        params = {"g": g.params, "z": z}
        x_like = jnp.zeros((spec.batch_size, *spec.image_shape), jnp.float32)
        carry = {"params": params, "stats": g.batch_stats,
                 "opt": {k: tx.init(params[k]) for k, tx in self.tx_inner.items()},
                 "targets": sample_targets(ky, spec.batch_size, spec.num_classes, False),
                 "best": init_best(x_like), "meta_grad": jax.tree.map(jnp.zeros_like, g.params),
                 "last_bn": jax.tree.map(jnp.zeros_like, state.mmt)}
        return state, carry

    def step(self, state: MetaState, carry, pool, ctx, key, progress):
        spec, ens = self.spec, self.ensemble
        adv_on = (ctx.round >= spec.warmup - 1).astype(jnp.float32)
        factors = {name: adv_on for name in ADVERSARIAL}

        def loss_fn(params):
            x, stats = forward(self.generator, {"params": params["g"], "batch_stats": carry["stats"]}, params["z"],
                               train=True)
            x = self.shard(x)
            x_view = ens.from_pixels(augment.crop_flip(key, x))
            raw = {}

            def bn_blend(bn):
                raw["bn"] = tuple(tuple((mean, var) for mean, var, _, _ in layers) for layers in bn)
                return blend(bn, state.mmt, state.has_mmt, spec.bn_momentum) if spec.bn_momentum else bn

            total, parts, _ = objective(spec, ens, self.student, ctx, x_view, x_view, carry["targets"], progress,
                                        bn_blend=bn_blend, factors=factors)
            last_bn = jax.tree.map(jax.lax.stop_gradient, raw.get("bn", carry["last_bn"]))
            return total, (parts, stats, x, last_bn)

        (total, (parts, stats, x, last_bn)), grads = jax.value_and_grad(loss_fn, has_aux=True)(carry["params"])
        best = keep_best(carry["best"], total, x)
        meta_grad = jax.tree.map(jnp.add, carry["meta_grad"], grads["g"])
        new_params, opt = {}, {}
        for k, tx in self.tx_inner.items():
            new_params[k], opt[k] = optimizer_step(tx, grads[k], carry["opt"][k], carry["params"][k])
        carry = {**carry, "params": new_params, "stats": stats, "opt": opt, "best": best, "meta_grad": meta_grad,
                 "last_bn": last_bn}
        return state, carry, pool, metrics_of(total, parts, best.loss)

    def end(self, state: MetaState, carry, pool, ctx, key):
        spec = self.spec
        g = state.generator
        grad = carry["meta_grad"] if spec.meta == "fomaml" else \
            reptile_grad(g.params, carry["params"]["g"], spec.reptile_scale)
        params, opt = optimizer_step(self.tx_meta, grad, g.opt_state, g.params)
        g = g.replace(params=params, opt_state=opt)
        mmt, has = state.mmt, state.has_mmt
        if spec.bn_momentum and "bn" in spec.needs:
            mmt, has = update_mmt(mmt, carry["last_bn"], has, spec.bn_momentum), jnp.ones((), bool)
        pool = self.push_iterate(pool, ctx, carry["best"].x)
        return MetaState(generator=g, mmt=mmt, has_mmt=has), carry, pool, {}


from_config = InversionSpec.from_config


def build(spec: InversionSpec, ctx: BuildContext) -> MetaGenerator:
    return MetaGenerator(spec, **common_fields(ctx), generator=pixel_generator(spec, ctx, "meta"),
                         bn_shapes=bn_shapes(ctx))
