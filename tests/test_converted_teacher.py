"""A teacher converted from a PyTorch CIFAR-zoo checkpoint drives the engine: a few DFAD rounds."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from dfkd_jax import methods  # noqa: E402
from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.convert import convert_checkpoint  # noqa: E402
from dfkd_jax.engine.distiller import Distiller  # noqa: E402
from dfkd_jax.teacher import load_teacher  # noqa: E402
from tests import torch_reference  # noqa: E402


@pytest.mark.slow  # moved out of the default suite to keep it under 10 minutes on 2 cores
def test_converted_wrn_teacher_runs_dfad_rounds(tmp_path):
    net = torch_reference.randomize_(torch_reference.build("wrn16_1", num_classes=10), seed=3).eval()
    path = tmp_path / "cifar10_wrn16_1.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 200}, path)
    result = convert_checkpoint(str(path), str(tmp_path / "teacher"), dataset="cifar10")
    teacher = load_teacher(str(tmp_path / "teacher"))
    assert teacher.meta.arch == "wrn16_1" == result.arch
    assert teacher.meta.mean == pytest.approx((0.4914, 0.4822, 0.4465))

    config = methods.configure(base_config(), "dfad")
    config.data.dataset = "cifar10"
    config.teacher.arch = config.student.arch = "wrn16_1"
    config.generator.nz, config.generator.ngf = 16, 4
    config.student.steps = 2
    config.train.batch_size = 8
    config.train.rounds = 3
    d = Distiller.from_config(config, teacher)
    (engine_teacher,) = d.teacher_variables  # what the rounds read (one teacher)
    before_teacher = jax.device_get(engine_teacher)
    state = d.init(0)
    before = jax.device_get(state.student.params)
    for _ in range(2):
        state, metrics = d.round(state)
    metrics = jax.device_get(metrics)
    assert np.isfinite(metrics["student/l1"]) and metrics["student/l1"] > 0
    assert metrics["generator/adv_l1"] == pytest.approx(metrics["generator/loss"])
    assert metrics["generator/adv_l1"] < 0  # the generator minimises -L1
    after = jax.device_get(state.student.params)
    assert not np.allclose(before["fc"]["kernel"], after["fc"]["kernel"])
    # the engine's copy of the teacher is untouched by the rounds (not donated, not updated) and still
    # agrees with PyTorch on the synthetic images
    assert d.teacher_variables[0] is engine_teacher
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(engine_teacher))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(engine_teacher), before_teacher)
    x = d.evaluator.sample(state, 8)
    with torch.no_grad():
        ref = net(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    ours = np.asarray(teacher.model.apply(engine_teacher, x, train=False)[0])
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
