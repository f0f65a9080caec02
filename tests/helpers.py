"""Small shared pieces for the engine and CLI tests."""

from __future__ import annotations

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
