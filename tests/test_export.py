"""Flax -> PyTorch export (dfkd_jax.convert.export) against the project's PyTorch reference modules.

For every architecture the converter reads (tests/torch_reference.py and tests/torch_reference_zoo.py;
LeNets in the DFAD and the CMI/Fast key schemes): random weights and BatchNorm statistics in the PyTorch
module; its state_dict converted to Flax and exported back must be the original, key for key and bit for
bit (``num_batches_tracked`` included); the exported tensors loaded with ``strict=True`` into a fresh
PyTorch module must give the Flax logits (eval mode) to 1e-5 relative. The generators the converter
knows are exported in train mode. Then the files: a teacher folder and a run's real orbax checkpoint
written in each zoo's wrapper, read back by the converter, and the command-line tool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as R  # noqa: E402
import torch_reference_zoo as Z  # noqa: E402

from dfkd_jax.convert import (ZOOS, convert_state_dict, export_checkpoint, load_torch_state_dict,  # noqa: E402
                              variables_to_state_dict)
from dfkd_jax.convert.export import ExportError  # noqa: E402
from dfkd_jax.models import build_generator, build_model  # noqa: E402
from dfkd_jax.teacher import CheckpointMismatchError, TeacherMeta, save_teacher  # noqa: E402

torch.set_num_threads(2)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL = 1e-5
TRACKED = 7  # randomize_ sets every BatchNorm's num_batches_tracked to 7

LENETS = ["lenet5", "lenet5_half", "lenet5_half_zskd"]
# (arch, zoo whose key scheme the reference module has)
CASES = ([(a, "dfad") for a in LENETS] + [(a, "cmi") for a in LENETS]
         + [(a, "cmi") for a in ("lenet5_bn", "lenet5_half_bn", "resnet18", "resnet34", "wrn16_1", "wrn16_2",
                                 "wrn40_1", "wrn40_2", "vgg8", "vgg11")]
         + [(a, "fast") for a in ("resnet8", "resnet20", "vgg13", "mobilenetv2", "shufflenetv2")])
SLOW = [(a, "fast") for a in ("resnet32", "resnet56", "resnet110", "resnet8x4", "resnet32x4", "resnet50")]


def _reference(arch: str, zoo: str):
    if arch.startswith("lenet") or arch in ("resnet18", "resnet34") or arch.startswith(("wrn", "vgg8", "vgg11")):
        module = R.build(arch, scheme="cmi" if zoo == "cmi" else "dfad")
    elif arch == "vgg13":
        module = R.BlockVGG([[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]], 10)
    else:
        module = Z.build(arch, 10)
    return R.randomize_(module, seed=len(arch)).eval()


def _assert_same_state_dict(exported: dict, original: dict) -> None:
    assert sorted(exported) == sorted(original)
    for key, value in original.items():
        got = exported[key]
        assert got.dtype == value.numpy().dtype, key
        np.testing.assert_array_equal(got, value.numpy(), err_msg=key)


def _round_trip(arch: str, zoo: str) -> None:
    module = _reference(arch, zoo)
    original = module.state_dict()
    variables = convert_state_dict(original, arch)
    exported = variables_to_state_dict(variables, arch, zoo=zoo, batches_tracked=TRACKED)
    _assert_same_state_dict(exported, original)

    fresh = _reference(arch, zoo)
    R.randomize_(fresh, seed=len(arch) + 1)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
    c = 1 if arch.startswith("lenet") else 3
    x = np.random.default_rng(0).standard_normal((2, 32, 32, c)).astype(np.float32)
    with torch.no_grad():
        ref = fresh.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    model = build_model(arch, 10)
    logits, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(x))
    err = float(np.abs(np.asarray(logits) - ref).max() / np.abs(ref).max())
    assert err <= RTOL, f"{arch}: relative logit error {err:.2e}"


@pytest.mark.parametrize("arch,zoo", CASES, ids=[f"{a}-{z}" for a, z in CASES])
def test_convert_then_export_is_the_original(arch, zoo):
    _round_trip(arch, zoo)


@pytest.mark.slow
@pytest.mark.parametrize("arch,zoo", SLOW, ids=[f"{a}-{z}" for a, z in SLOW])
def test_convert_then_export_is_the_original_deeper(arch, zoo):
    _round_trip(arch, zoo)


GENERATORS = [("dafl", dict(nz=16, ngf=4, channels=1, img_size=32)),
              ("cmi", dict(nz=16, ngf=4, channels=3, img_size=32))]


@pytest.mark.parametrize("name,cfg", GENERATORS, ids=[n for n, _ in GENERATORS])
def test_generators_export_in_train_mode(name, cfg):
    module = (R.DAFLGeneratorTorch(cfg["nz"], cfg["ngf"], cfg["channels"], cfg["img_size"]) if name == "dafl"
              else R.CMIGeneratorTorch(cfg["nz"], cfg["ngf"], cfg["img_size"], cfg["channels"]))
    original = R.randomize_(module, seed=3).state_dict()
    variables = convert_state_dict(original, name)
    exported = variables_to_state_dict(variables, name, batches_tracked=TRACKED)
    _assert_same_state_dict(exported, original)
    z = np.random.default_rng(1).standard_normal((4, cfg["nz"])).astype(np.float32)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
    with torch.no_grad():
        ref = module.train()(torch.from_numpy(z)).numpy().transpose(0, 2, 3, 1)
    out, _ = build_generator(name, **cfg).apply(variables, jnp.asarray(z), train=True, mutable=["batch_stats"])
    assert float(np.abs(np.asarray(out) - ref).max() / np.abs(ref).max()) <= RTOL


def test_module_prefix_and_wrong_architecture():
    variables = convert_state_dict(R.randomize_(R.build("lenet5_bn")).state_dict(), "lenet5_bn")
    sd = variables_to_state_dict(variables, "lenet5_bn", zoo="fast", module_prefix=True)
    assert all(k.startswith("module.") for k in sd) and "module.conv1.weight" in sd
    with pytest.raises(CheckpointMismatchError, match="lenet5_half_bn"):
        variables_to_state_dict(variables, "lenet5_half_bn")
    with pytest.raises(ExportError, match="Valid zoos"):
        variables_to_state_dict(variables, "lenet5_bn", zoo="nope")


def _lenet_teacher(tmp_path):
    module = R.randomize_(R.build("lenet5_bn"), seed=4).eval()
    variables = convert_state_dict(module.state_dict(), "lenet5_bn")
    meta = TeacherMeta(arch="lenet5_bn", dataset="fashion_mnist", num_classes=10, input_shape=(32, 32, 1),
                       mean=(0.286,), std=(0.353,))
    return module, variables, save_teacher(str(tmp_path / "teacher"), variables, meta)


@pytest.mark.parametrize("zoo", sorted(ZOOS))
def test_teacher_folder_in_every_zoo_wrapper(zoo, tmp_path):
    module, variables, folder = _lenet_teacher(tmp_path)
    res = export_checkpoint(folder, str(tmp_path / "t.pth"), zoo=zoo, extra={"epoch": 4, "arch": "lenet5_bn"})
    assert (res.kind, res.arch, res.num_params) == ("teacher", "lenet5_bn", 61_848)
    obj = torch.load(res.path, weights_only=True)
    if ZOOS[zoo].wrapper == "state_dict":
        assert obj["epoch"] == 4
        obj = obj["state_dict"]
    fresh = R.build("lenet5_bn")
    fresh.load_state_dict(obj, strict=True)  # what the zoo's own script does
    back = convert_state_dict(load_torch_state_dict(res.path), "lenet5_bn")
    jax.tree.map(np.testing.assert_array_equal, back, variables)


def test_run_checkpoint_student(tmp_path):
    """A run's workdir: the student of the newest orbax checkpoint the engine wrote (config.json names its arch)."""
    from dfkd_jax.engine.checkpoint import Checkpoints
    from dfkd_jax.engine.state import DistillState, ModelState

    work = tmp_path / "run"
    os.makedirs(work)
    (work / "config.json").write_text(json.dumps({"student": {"arch": "lenet5_half"}}))
    module = R.randomize_(R.build("lenet5_half"), seed=5).eval()
    variables = convert_state_dict(module.state_dict(), "lenet5_half")
    ckpts = Checkpoints(str(work / "checkpoints"))
    for step, scale in ((10, 0.0), (20, 1.0)):
        params = jax.tree.map(lambda a: jnp.asarray(a) * scale, variables["params"])
        state = DistillState(round=jnp.int32(step), rng=jnp.zeros(2, jnp.uint32), synth=None,
                             student=ModelState(params, {}, {"mu": jax.tree.map(jnp.zeros_like, params)}))
        ckpts.save(step, state, {"history": [], "elapsed": 1.0})
    ckpts.close()
    out = str(tmp_path / "student.pt")
    res = export_checkpoint(str(work), out, zoo="dfad")
    assert (res.kind, res.round, res.arch) == ("student", 20, "lenet5_half")
    fresh = R.build("lenet5_half")
    fresh.load_state_dict(torch.load(out, weights_only=True), strict=True)
    for k, v in module.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[k].numpy(), v.numpy())
    earlier = export_checkpoint(str(work), out, zoo="dfad", step=10)
    assert earlier.round == 10 and not torch.load(out, weights_only=True)["conv1.weight"].any()
    with pytest.raises(ExportError, match="round 30"):
        export_checkpoint(str(work), out, step=30)


def test_command_line_tool(tmp_path):
    _, _, folder = _lenet_teacher(tmp_path)
    tool = os.path.join(REPO, "tools", "export_torch_checkpoint.py")
    out = str(tmp_path / "t.pth")
    proc = subprocess.run([sys.executable, tool, folder, "--zoo", "cmi", "--out", out], capture_output=True,
                          text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "teacher: lenet5_bn, 61,848 parameters" in proc.stdout
    assert "conv1.weight" in torch.load(out, weights_only=True)["state_dict"]
    proc = subprocess.run([sys.executable, tool, str(tmp_path), "--out", out], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
