"""The teacher cache: one folder per training recipe, and a cached teacher of another recipe is refused."""

from __future__ import annotations

import os

import pytest

from dfkd_jax.config import base_config
from dfkd_jax.errors import ConfigError
from dfkd_jax.obtain import obtain_teacher, teacher_path
from dfkd_jax.teacher import save_teacher
from helpers import random_teacher


def cached_config(epochs=5, lr=2e-3, batch_size=128):
    c = base_config()
    c.data.dataset, c.teacher.arch = "fashion_mnist", "lenet5"
    c.teacher.epochs, c.teacher.lr, c.teacher.batch_size = epochs, lr, batch_size
    c.teacher.train_if_missing = False
    return c


def test_cache_folder_names_the_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("DFKD_JAX_CACHE", str(tmp_path))
    c = cached_config(epochs=5)
    assert teacher_path(c) == os.path.join(str(tmp_path), "teachers", "fashion_mnist_lenet5_e5")
    c.teacher.label_noise, c.teacher.train_examples = 0.4, 16384
    assert teacher_path(c).endswith("fashion_mnist_lenet5_e5_noise0.4_n16384")
    c.teacher.checkpoint = str(tmp_path / "mine")  # an explicit checkpoint is used as it is
    assert teacher_path(c) == str(tmp_path / "mine")


def test_cached_teacher_of_another_recipe_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DFKD_JAX_CACHE", str(tmp_path))
    c = cached_config(epochs=5, lr=2e-3, batch_size=128)
    teacher = random_teacher()
    teacher.meta.extra = {"epochs": 5, "lr": 2e-3, "batch_size": 128}
    save_teacher(teacher_path(c), teacher.variables, teacher.meta)
    assert obtain_teacher(c, log=lambda msg: None).meta.arch == "lenet5"  # the same recipe loads
    c.teacher.lr = 1e-3
    with pytest.raises(ConfigError, match=r"teacher\.lr: cached 0\.002, configured 0\.001"):
        obtain_teacher(c, log=lambda msg: None)
    c.teacher.checkpoint = teacher_path(cached_config())  # pointing at it explicitly uses it as it is
    assert obtain_teacher(c, log=lambda msg: None).meta.extra["lr"] == 2e-3
