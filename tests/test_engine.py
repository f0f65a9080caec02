"""The engine on simulated CPU devices: sharding equivalence, traces, checkpoint round trip."""

import chex
import jax
import numpy as np
import pytest

from dfkd_jax.engine.checkpoint import Checkpoints
from dfkd_jax.engine.distiller import Distiller
from dfkd_jax.engine.sharding import make_mesh
from tests.helpers import random_teacher, tiny_config


@pytest.fixture(scope="module")
def teacher():
    return random_teacher()


@pytest.mark.parametrize("method", ["dfad", pytest.param("dafl", marks=pytest.mark.slow)])
def test_one_and_four_devices_agree(teacher, method):
    """Global-batch semantics: the same student after 3 rounds on 1 device and on 4.

    Both networks use SGD here. Adam divides each gradient by its own running RMS,
    so parameters whose exact gradient is zero (a conv bias right before a
    BatchNorm) move by +-lr on float reduction-order noise, which differs between
    1 and 4 devices; with SGD the runs agree to float precision.
    """
    assert jax.device_count() >= 4
    config = tiny_config(method)
    for section in (config.generator, config.student):
        section.optimizer, section.lr = "sgd", 0.01
    params = {}
    for n in (1, 4):
        d = Distiller.from_config(config, teacher, make_mesh(jax.devices()[:n]))
        state = d.init(0)
        for _ in range(3):
            state, metrics = d.round(state)
        assert len(state.student.params["conv1"]["kernel"].sharding.device_set) == n
        params[n] = jax.device_get(state.student.params)
        params[f"g{n}"] = jax.device_get(state.generator.params)
    chex.assert_trees_all_close(params[1], params[4], rtol=1e-4, atol=1e-6)
    chex.assert_trees_all_close(params["g1"], params["g4"], rtol=1e-4, atol=1e-6)
    # the rounds really trained something
    fresh = jax.device_get(Distiller.from_config(config, teacher, make_mesh(jax.devices()[:1])).init(0))
    assert not np.allclose(fresh.student.params["fc2"]["kernel"], params[1]["fc2"]["kernel"])


def test_round_traces_once_and_survives_restore(teacher, tmp_path):
    config = tiny_config("dfad")
    d = Distiller.from_config(config, teacher)
    counted = jax.jit(chex.assert_max_traces(d._round_raw, n=1), donate_argnums=(0,))
    state = d.init(0)
    for _ in range(3):
        state, metrics = counted(state, d.teacher_variables)
    assert int(state.round) == 3

    # the public round: one compiled executable, also for a state restored from disk
    state = d.init(0)
    state, _ = d.round(state)
    ckpts = Checkpoints(str(tmp_path / "ckpt"))
    ckpts.save(1, state, {"history": [], "elapsed": 0.0})
    ckpts.wait()
    restored, record = ckpts.restore(1, d.abstract_state())
    ckpts.close()
    chex.assert_trees_all_equal(jax.device_get(state), jax.device_get(restored))
    restored, _ = d.round(restored)
    assert d._round._cache_size() == 1
    assert record == {"history": [], "elapsed": 0.0}


def test_state_is_donated(teacher):
    d = Distiller.from_config(tiny_config("dfad"), teacher)
    state = d.init(0)
    leaf = state.student.params["fc2"]["kernel"]
    d.round(state)
    assert leaf.is_deleted()
