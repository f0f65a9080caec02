"""Adding a synthesiser, shown: a kind written and registered in this one file runs rounds through the Distiller.

The toy kind makes each round's samples by gradient descent on the pixels toward images the teachers
call class ``y`` (the ``one_hot`` term of ``objectives`` at the round's sampled targets), starting from a
constant grey image; it keeps the per-round carry (the pixels and their optimiser), pushes the last
iterate to the pool, and lets the student draw from the pool. Its options live in a config section of its
own, ``config.synthesis.toy``, read once into its spec. Nothing else in the package changes: the round,
the student update, the pool, the loops, the state and the evaluation are the engine's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dfkd_jax import objectives, synthesis
from dfkd_jax import pool as pool_lib
from dfkd_jax.config import validate
from dfkd_jax.core.optim import optimizer_step
from dfkd_jax.core.sharding import make_mesh
from dfkd_jax.engine.distiller import Distiller
from dfkd_jax.synthesis.base import (BuildContext, Synthesiser, SynthesiserBase, draw_from_pool, latest_from_pool,
                                     sample_targets)
from tests.helpers import random_teacher, tiny_config


# -- the new kind: its spec (from its config section), its synthesiser, its build ---------------------------
@dataclasses.dataclass(frozen=True)
class ToySpec:
    steps: int
    batch_size: int
    image_shape: tuple[int, int, int]
    num_classes: int
    lr: float
    grey: float
    student_batch_size: int

    @classmethod
    def from_config(cls, config, ctx: BuildContext) -> "ToySpec":
        toy = config.synthesis.toy
        return cls(steps=int(config.generator.steps), batch_size=int(toy.batch_size),
                   image_shape=tuple(ctx.meta.input_shape), num_classes=int(ctx.meta.num_classes),
                   lr=float(toy.lr), grey=float(toy.grey), student_batch_size=ctx.batch_size)


@dataclasses.dataclass(eq=False)
class ToySynthesiser(SynthesiserBase):
    spec: ToySpec
    ensemble: object
    shard: object
    fixed_carry = True

    @property
    def tx(self):
        return optax.sgd(self.spec.lr)

    def init(self, key, aux_key):
        return None  # nothing persists across rounds

    def begin(self, state, key, round_):
        p = self.shard(jnp.full((self.spec.batch_size, *self.spec.image_shape), self.spec.grey, jnp.float32))
        targets = sample_targets(key, self.spec.batch_size, self.spec.num_classes, sort=False)
        return state, {"p": p, "opt": self.tx.init(p), "targets": targets}

    def step(self, state, carry, pool, ctx, key, progress):
        def loss_fn(p):
            x = self.ensemble.from_pixels(p)
            view = objectives.View(x=x, targets=carry["targets"], t_logits=self.ensemble.logits(ctx.t_vars, x))
            total, _ = objectives.combine({"one_hot": 1.0}, objectives.GENERATOR_TERMS, view, objectives.HParams())
            return total

        loss, grad = jax.value_and_grad(loss_fn)(carry["p"])
        p, opt = optimizer_step(self.tx, grad, carry["opt"], carry["p"])
        return state, {**carry, "p": self.shard(jnp.clip(p, 0.0, 1.0)), "opt": opt}, pool, {"synthesis/toy": loss}

    def end(self, state, carry, pool, ctx, key):
        return state, carry, pool_lib.push(pool, carry["p"], None), {}

    def student_batch(self, state, carry, pool, ctx, key):
        return draw_from_pool(pool, key, self.spec.student_batch_size, "none", self.ensemble, self.shard)

    def sample(self, state, pool, z):
        return latest_from_pool(pool, self.ensemble, z.shape[0])


def build(spec: ToySpec, ctx: BuildContext) -> Synthesiser:
    return ToySynthesiser(spec, ensemble=ctx.ensemble, shard=ctx.shard)


class ToyKind:
    from_config = staticmethod(ToySpec.from_config)
    build = staticmethod(build)


# -- the test -----------------------------------------------------------------------------------------------
@pytest.fixture
def toy_registered():
    synthesis.register("toy", ToyKind())
    yield
    del synthesis.REGISTRY["toy"]


def _toy_config(loop: str):
    c = tiny_config("dfad", rounds=3)
    c.method = "dfad"
    c.synthesis.kind = "toy"
    c.synthesis.loop = loop
    c.synthesis.toy = ml_collections.ConfigDict({"batch_size": 8, "lr": 0.5, "grey": 0.5})
    c.generator.steps = 3
    c.student.steps = 2
    c.student.terms = {"kd": 1.0}
    c.student.pool_size = 32
    return c


def test_a_synthesiser_registered_in_one_file_runs_rounds_through_the_distiller(toy_registered):
    """Two rounds of the toy kind as one Python loop of jitted steps (its carry is a fixed pytree): the pool
    fills with its images, the student learns from them, the sample grid shows them."""
    config = _toy_config("python")
    validate(config)  # the registered kind is a valid config.synthesis.kind
    d = Distiller.from_config(config, random_teacher(), make_mesh(jax.devices()[:1]))
    assert isinstance(d.synth, ToySynthesiser) and d.synth.steps == 3
    state = d.init(0)
    student0 = jax.device_get(state.student.params)
    for _ in range(2):
        state, metrics = d.round(state)
    metrics = jax.device_get(metrics)
    assert int(state.round) == 2 and int(state.pool.count) == 16  # two rounds of 8 samples in the pool
    assert np.isfinite(metrics["student/loss"]) and np.isfinite(metrics["synthesis/toy"])
    pixels = np.asarray(pool_lib.decode(state.pool.x[:16]))
    assert not np.allclose(pixels, 0.5)  # the toy's steps moved the grey images
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), student0, jax.device_get(state.student.params))
    assert any(jax.tree.leaves(moved))  # the student learnt from the pool
    np.testing.assert_allclose(d.evaluator.sample(state, 8), np.asarray(d.ensemble.from_pixels(pixels[8:16])),
                               rtol=1e-6, atol=1e-6)


def test_an_unknown_kind_names_the_registered_ones():
    from dfkd_jax.errors import ConfigError
    c = tiny_config("dfad")
    c.synthesis.kind = "toy"
    with pytest.raises(ConfigError, match="online, pixels, generator, meta, soft_pixels"):
        validate(c)
