"""Small shared pieces for the engine and CLI tests."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dfkd_jax import methods
from dfkd_jax.config import base_config
from dfkd_jax.models import build_model
from dfkd_jax.teacher import Teacher, TeacherMeta


def random_teacher(seed: int = 0) -> Teacher:
    """An untrained LeNet-5 (the engine's numbers do not depend on the teacher being good)."""
    model = build_model("lenet5", 10)
    variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 32, 32, 1)), train=False)
    meta = TeacherMeta("lenet5", "fashion_mnist", 10, (32, 32, 1), (0.2860,), (0.3530,))
    return Teacher(model, jax.device_get(variables), meta)


def tiny_config(method: str = "dfad", rounds: int = 6):
    c = methods.configure(base_config(), method)
    c.generator.nz = 16
    c.generator.ngf = 8
    c.student.steps = min(int(c.student.steps), 2)
    c.train.batch_size = 8
    c.train.rounds = rounds
    c.train.progress = False
    return c


class TinyBNNet(nn.Module):
    """A LeNet-shaped teacher with BatchNorm (block outputs 14x14, 5x5, 1x1 like LeNet-5's),
    so the bn term and the attention term have something to read, at test cost."""

    num_classes: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        def block(h, c, pool, name):
            h = nn.Conv(c, (5, 5), padding="VALID", name=f"{name}_conv", dtype=self.dtype)(h)
            h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"{name}_bn",
                                     dtype=self.dtype)(h))
            return nn.max_pool(h, (2, 2), (2, 2)) if pool else h

        a1 = block(x, 6, True, "b1")
        a2 = block(a1, 8, True, "b2")
        a3 = block(a2, 24, False, "b3")
        feature = a3.reshape(a3.shape[0], -1)
        return nn.Dense(self.num_classes, name="fc", dtype=self.dtype)(feature).astype(jnp.float32), \
            {"feature": feature, "blocks": (a1, a2, a3)}


def bn_teacher(seed: int = 0) -> Teacher:
    """An untrained ``TinyBNNet`` with non-trivial running statistics."""
    model = TinyBNNet()
    variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 32, 32, 1)), train=False)
    x = jax.random.normal(jax.random.PRNGKey(seed + 1), (16, 32, 32, 1)) * 1.5 + 0.3
    _, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": upd["batch_stats"]}
    meta = TeacherMeta("tiny_bn", "fashion_mnist", 10, (32, 32, 1), (0.2860,), (0.3530,))
    return Teacher(model, jax.device_get(variables), meta)


def synthesis_config(method, **changes):
    """``tiny_config`` for a synthesiser's round at toy size (3 synthesis steps, 2 student steps, a pool of
    32, batches of 8, unrolled loops); ``changes`` as ``{"section.field": value}``."""
    c = tiny_config(method, rounds=3)
    c.generator.steps = 3
    c.student.steps = 2
    c.student.pool_size = 32
    c.synthesis.batch_size = 8
    c.synthesis.loop = "unroll"
    for k, v in changes.items():
        section, field = k.split(".")
        c[section][field] = v
    return c


def run_rounds(config, teachers, rounds=2):
    """A one-device Distiller of ``config`` run for ``rounds`` rounds: (distiller, state, last metrics)."""
    from dfkd_jax.engine.distiller import Distiller
    from dfkd_jax.core.sharding import make_mesh
    d = Distiller.from_config(config, teachers, make_mesh(jax.devices()[:1]))
    state = d.init(0)
    for _ in range(rounds):
        state, metrics = d.round(state)
    return d, state, jax.device_get(metrics)
