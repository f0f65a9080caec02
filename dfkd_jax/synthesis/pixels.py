"""Pixel inversion: the batch itself is the parameter (DeepInversion / ADI).

Matched to the reference implementation of ADI in the CMI code base (zju-vipa/CMI at 9e79fa9,
``datafree/synthesis/deepinversion.py``; Fast-Datafree's copy is the same up to whitespace):

- l. 74: the batch starts as N(0, 1) *in the normalised input space*; l. 76-77: targets
  ``randint(0, K)``, sorted;
- l. 80: Adam over the pixels, lr ``lr_g``, betas (0.5, 0.99) (``config.generator.b1/b2``),
  a new optimiser every round;
- l. 85: every step sees ``jitter_and_flip`` of the batch (``dfkd_jax.augment.jitter_flip``:
  one roll of up to 1/8 of the size and one flip coin for the whole batch);
- l. 87-96: ``bn * sum_l bn_l + oh * CE(t, y) + adv * (-JS_3(s, t)) + tv * tv(x) + l2 * ||x||``,
  the priors on the un-jittered batch (``objectives``: ``bn``, ``one_hot`` with the targets,
  ``adv_js_neg``, ``tv``, ``l2``);
- l. 98-100: the lowest-loss iterate is kept (``keep_best``: the batch the loss was computed on,
  before that step's update. The reference stores ``inputs.data``, which aliases the
  parameter's storage; Adam's in-place step then moves the stored tensor once more, until
  the clip below replaces the parameter's storage: the stored "best" is one Adam step past
  the best iterate, unclipped. We keep the iterate itself);
- l. 105: after each step the pixels are clipped to the valid range ``[-m/s, (1-m)/s]``
  per channel (``clip_images``);
- l. 108-110: the best batch, de-normalised to pixels, goes to the pool. The student is in
  eval mode during synthesis (l. 72).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dfkd_jax import augment
from dfkd_jax.core.optim import optimizer_step
from dfkd_jax.synthesis.base import BuildContext, init_best, keep_best, sample_targets
from dfkd_jax.synthesis.inversion import InversionBase, InversionSpec, common_fields, metrics_of, objective


@dataclasses.dataclass(eq=False)
class PixelInversion(InversionBase):
    def init(self, key, aux_key):
        return None

    def _bounds(self):
        mean, std = (jnp.asarray(v, jnp.float32) for v in self.ensemble.input_norm)
        return -mean / std, (1.0 - mean) / std

    def begin(self, state, key, round_):
        spec = self.spec
        kx, ky = jax.random.split(key)
        x = self.shard(jax.random.normal(kx, (spec.batch_size, *spec.image_shape), jnp.float32))
        carry = {"x": x, "opt": self.tx.init(x), "targets": sample_targets(ky, spec.batch_size, spec.num_classes, True),
                 "best": init_best(x)}
        return state, carry

    def step(self, state, carry, pool, ctx, key, progress):
        spec = self.spec

        def loss_fn(x):
            x_view = augment.jitter_flip(key, x)
            total, parts, _ = objective(spec, self.ensemble, self.student, ctx, x_view, x, carry["targets"], progress)
            return total, parts

        (total, parts), grad = jax.value_and_grad(loss_fn, has_aux=True)(carry["x"])
        best = keep_best(carry["best"], total, carry["x"])
        x, opt = optimizer_step(self.tx, grad, carry["opt"], carry["x"])
        lo, hi = self._bounds()
        x = self.shard(jnp.clip(x, lo, hi))
        return state, {**carry, "x": x, "opt": opt, "best": best}, pool, metrics_of(total, parts, best.loss)

    def end(self, state, carry, pool, ctx, key):
        best_x = carry["best"].x
        return state, carry, self.push_iterate(pool, ctx, self.ensemble.to_pixels(best_x), best_x), {}


from_config = InversionSpec.from_config


def build(spec: InversionSpec, ctx: BuildContext) -> PixelInversion:
    return PixelInversion(spec, **common_fields(ctx))
