"""PyTorch -> Flax conversion against the project's own PyTorch reference modules.

For every architecture: random weights and non-trivial BN running statistics, saved as a bare
state_dict, a ``{'state_dict': ...}`` wrapper and with ``module.`` prefixes; each file is read
back, detected and converted. The first conversion is checked numerically (eval-mode logits,
relative error <= 1e-4, and the BN statistics carried over); the other two must give exactly
the same variables. Generators are compared in train mode (batch statistics).
"""

from __future__ import annotations

import importlib.util
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

from dfkd_jax.convert import (CheckpointMismatchError, convert_checkpoint, convert_state_dict,  # noqa: E402
                              convert_with_info, detect_architecture, flax_name_to_torch, generator_config,
                              load_torch_state_dict, normalize_state_dict)
from dfkd_jax.models import build_generator, build_model  # noqa: E402
from dfkd_jax.teacher import load_teacher  # noqa: E402

torch.set_num_threads(2)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL = 1e-4
PARAMS_10 = {"lenet5": 61_706, "lenet5_half": 15_738, "lenet5_half_zskd": 35_820, "lenet5_bn": 61_848, "lenet5_half_bn": 15_809, "resnet18": 11_173_962,
             "resnet34": 21_282_122, "wrn16_1": 175_066, "wrn16_2": 691_674, "wrn40_1": 563_930,
             "wrn40_2": 2_243_546, "vgg8": 3_918_858, "vgg11": 9_231_114}
FORMATS = ("bare", "wrapped", "module")
# (arch, key scheme of the reference module): every architecture of tests/torch_reference.py, LeNets in both
# schemes (the rest of the zoo and the segmentation models: tests/test_convert_zoo.py).
CASES = [(a, "dfad" if a.startswith("lenet") and not a.endswith("_bn") else "canonical") for a in sorted(PARAMS_10)]
CASES += [(a, "cmi") for a in sorted(PARAMS_10) if a.startswith("lenet") and not a.endswith("_bn")]
REL_ERRORS: dict[str, float] = {}


def _save(sd: dict, fmt: str, path: str, arch: str) -> str:
    if fmt == "bare":
        obj = sd
    elif fmt == "wrapped":
        obj = {"state_dict": sd, "epoch": 1, "arch": arch, "best_acc1": torch.tensor(93.5)}
    else:
        obj = {f"module.{k}": v for k, v in sd.items()}
    torch.save(obj, path)
    return path


def _nhwc(x: "torch.Tensor") -> jnp.ndarray:
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def _rel_err(a, ref) -> float:
    return float(np.abs(np.asarray(a) - ref).max() / np.abs(ref).max())


def _bn_prefixes(sd) -> list[str]:
    return sorted(k[: -len(".running_mean")] for k in sd if k.endswith(".running_mean"))


def _flax_bn_path(prefix: str, variables) -> dict:
    """batch_stats entry of the torch module ``prefix`` found by mapping Flax names back."""
    found = {}

    def visit(tree, path):
        if "mean" in tree and "var" in tree and not isinstance(tree["mean"], dict):
            found[".".join(flax_name_to_torch(p) for p in path)] = tree
            return
        for k, v in tree.items():
            visit(v, path + [k])

    visit(variables["batch_stats"], [])
    return found[prefix]


def _assert_same_tree(a, b):
    la, ta = jax.tree_util.tree_flatten_with_path(a)
    lb, tb = jax.tree_util.tree_flatten_with_path(b)
    assert ta == tb
    for (pa, xa), (_, xb) in zip(la, lb):
        np.testing.assert_array_equal(xa, xb, err_msg=str(pa))


@pytest.mark.parametrize("arch,scheme", CASES, ids=[a if s == "canonical" else f"{a}-{s}" for a, s in CASES])
def test_convert_every_format(arch, scheme, tmp_path):
    module = R.randomize_(R.build(arch, scheme=scheme), seed=len(arch)).eval()
    sd = module.state_dict()
    assert sum(p.numel() for p in module.parameters()) == PARAMS_10[arch]
    x = torch.randn(2, 1 if arch.startswith("lenet") else 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = module(x).numpy()

    first = None
    for fmt in FORMATS:
        loaded = load_torch_state_dict(_save(sd, fmt, str(tmp_path / f"{fmt}.pth"), arch))
        assert detect_architecture(loaded) == arch
        variables, info = convert_with_info(loaded, arch)
        assert info.free_dims == {"K": 10, "C": x.shape[1]}
        if first is not None:
            _assert_same_tree(variables, first)
            continue
        first = variables
        assert info.scheme == scheme
        assert sum(np.size(v) for v in jax.tree.leaves(variables["params"])) == PARAMS_10[arch]
        model = build_model(arch, 10)
        logits, aux = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, _nhwc(x))
        err = _rel_err(logits, ref)
        REL_ERRORS[f"{arch}-{scheme}"] = err
        assert err <= RTOL, f"{arch}: relative logit error {err:.2e}"
        assert aux["feature"].shape[0] == 2
        # BatchNorm running statistics carried over, and non-trivial in the reference.
        for prefix in _bn_prefixes(sd):
            stats = _flax_bn_path(prefix, variables)
            mean, var = sd[prefix + ".running_mean"].numpy(), sd[prefix + ".running_var"].numpy()
            assert np.abs(mean).max() > 0 and np.abs(var - 1).max() > 0.1
            np.testing.assert_array_equal(stats["mean"], mean)
            np.testing.assert_array_equal(stats["var"], var)
        if arch.startswith("lenet"):
            assert ("batch_stats" in variables) == arch.endswith("_bn")


def test_key_counts_of_the_zoo_layouts():
    assert len(R.build("resnet34").state_dict()) == 218
    assert len(R.build("wrn40_2").state_dict()) == 227
    sd = R.build("vgg11").state_dict()
    assert {"block0.0.weight", "block0.0.bias", "block0.1.running_mean", "block2.3.weight",
            "block2.4.running_var", "classifier.weight"} <= set(sd)


GENERATOR_CASES = [
    ("dafl", dict(nz=100, ngf=64, channels=1, img_size=32)),
    ("dafl", dict(nz=256, ngf=32, channels=3, img_size=32)),
    ("cmi", dict(nz=256, ngf=64, channels=3, img_size=32)),
    ("large", dict(nz=64, ngf=16, channels=3, img_size=32)),  # CMI's LargeGenerator (DFQ)
]


def _torch_generator(name, cfg):
    if name == "dafl":
        return R.DAFLGeneratorTorch(cfg["nz"], cfg["ngf"], cfg["channels"], cfg["img_size"])
    return R.CMIGeneratorTorch(cfg["nz"], cfg["ngf"], cfg["img_size"], cfg["channels"],
                               width=4 if name == "large" else 2)


@pytest.mark.parametrize("name,cfg", GENERATOR_CASES, ids=[f"{n}-nz{c['nz']}-ngf{c['ngf']}" for n, c in GENERATOR_CASES])
def test_convert_generator_train_mode(name, cfg, tmp_path):
    module = R.randomize_(_torch_generator(name, cfg), seed=5).train()
    sd = {k: v.clone() for k, v in module.state_dict().items()}
    z = torch.randn(4, cfg["nz"], generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = module(z).numpy().transpose(0, 2, 3, 1)
    first = None
    for fmt in FORMATS:
        loaded = load_torch_state_dict(_save(sd, fmt, str(tmp_path / f"{fmt}.pth"), name))
        assert detect_architecture(loaded) == name
        assert generator_config(loaded, name) == cfg
        variables = convert_state_dict(loaded, name)
        if first is not None:
            _assert_same_tree(variables, first)
            continue
        first = variables
        gen = build_generator(name, **cfg)
        out, _ = gen.apply(variables, jnp.asarray(z.numpy()), train=True, mutable=["batch_stats"])
        err = _rel_err(out, ref)
        REL_ERRORS[f"generator-{name}-ngf{cfg['ngf']}"] = err
        assert err <= RTOL
        assert sum(p.numel() for p in module.parameters()) == sum(np.size(v) for v in jax.tree.leaves(variables["params"]))
        for prefix in _bn_prefixes(sd):
            stats = _flax_bn_path(prefix, variables)
            np.testing.assert_array_equal(stats["mean"], sd[prefix + ".running_mean"].numpy())
            np.testing.assert_array_equal(stats["var"], sd[prefix + ".running_var"].numpy())


# ------------------------------------------------------------------------------------ errors


@pytest.fixture(scope="module")
def resnet18_sd():
    return {k: v.numpy() for k, v in R.randomize_(R.build("resnet18")).state_dict().items()}


def test_normalize_strips_module_and_counters(resnet18_sd):
    sd = {"module." + k: v for k, v in resnet18_sd.items()}
    out = normalize_state_dict(sd)
    assert not any(k.startswith("module.") or k.endswith("num_batches_tracked") for k in out)
    assert len(out) == len(resnet18_sd) - len(_bn_prefixes(resnet18_sd))


def test_wrong_architecture_names_the_fitting_one(resnet18_sd):
    with pytest.raises(CheckpointMismatchError) as e:
        convert_state_dict(resnet18_sd, "resnet34")
    msg = str(e.value)
    assert "missing PyTorch keys" in msg and "layer1.2.conv1.weight" in msg
    assert "would fit: resnet18 (10 classes)" in msg
    with pytest.raises(CheckpointMismatchError) as e:
        convert_state_dict(resnet18_sd, "wrn40_2")
    assert "unexpected PyTorch keys" in str(e.value) and "resnet18" in str(e.value)


def test_truncated_state_dict(resnet18_sd):
    sd = dict(resnet18_sd)
    for k in ("linear.weight", "layer4.1.bn2.running_var"):
        del sd[k]
    with pytest.raises(CheckpointMismatchError) as e:
        convert_state_dict(sd, "resnet18")
    msg = str(e.value)
    assert "missing PyTorch keys (2)" in msg and "linear.weight" in msg and "layer4.1.bn2.running_var" in msg
    assert "none registered" in msg and "closest: resnet18" in msg
    with pytest.raises(CheckpointMismatchError, match="Closest candidates"):
        detect_architecture(sd)


def test_misshaped_and_unexpected_keys(resnet18_sd):
    sd = dict(resnet18_sd)
    sd["layer1.0.conv1.weight"] = sd["layer1.0.conv1.weight"][:, :32]
    sd["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointMismatchError) as e:
        convert_state_dict(sd, "resnet18")
    msg = str(e.value)
    assert "mis-shaped PyTorch keys (1): layer1.0.conv1.weight: checkpoint (64, 32, 3, 3) vs model (64, 64, 3, 3)" in msg
    assert "unexpected PyTorch keys (1): extra.weight" in msg


def test_wrong_num_classes(resnet18_sd):
    with pytest.raises(CheckpointMismatchError) as e:
        convert_state_dict(resnet18_sd, "resnet18", num_classes=100)
    msg = str(e.value)
    assert "linear.weight: checkpoint (10, 512) vs model (100, 512)" in msg
    assert "head has 10 classes, not the 100 asked for" in msg
    assert convert_state_dict(resnet18_sd, "resnet18", num_classes=10)["params"]["linear"]["kernel"].shape == (512, 10)


def test_unknown_architecture(resnet18_sd):
    with pytest.raises(ValueError, match="Unknown architecture 'resnet51'"):
        convert_state_dict(resnet18_sd, "resnet51")


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_torch_state_dict(str(text))
    tensor_only = tmp_path / "tensor.pt"
    torch.save([torch.zeros(3)], tensor_only)
    with pytest.raises(ValueError, match="not a model checkpoint"):
        load_torch_state_dict(str(tensor_only))
    with pytest.raises(FileNotFoundError):
        load_torch_state_dict(str(tmp_path / "missing.pth"))


def test_pickled_objects_need_trust(tmp_path):
    import argparse

    path = tmp_path / "with_args.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        load_torch_state_dict(str(path))
    assert set(load_torch_state_dict(str(path), trust_pickle=True)) == {"fc.weight"}


def test_convert_checkpoint_records_normalization(tmp_path):
    """DFAD's CIFAR-100 teacher was trained with the CIFAR-10 constants."""
    module = R.randomize_(R.build("wrn16_1", num_classes=100)).eval()
    src = _save(module.state_dict(), "wrapped", str(tmp_path / "cifar100_wrn16_1.pth"), "wrn16_1")
    res = convert_checkpoint(src, str(tmp_path / "teacher"), dataset="cifar100", normalization="cifar10")
    assert (res.arch, res.num_classes, res.detected, res.num_params) == ("wrn16_1", 100, True, 180_916)
    meta = load_teacher(res.out_dir).meta
    assert meta.normalization == "cifar10" and meta.dataset == "cifar100"
    assert meta.mean == (0.4914, 0.4822, 0.4465) and meta.std == (0.2023, 0.1994, 0.2010)
    assert meta.input_shape == (32, 32, 3) and meta.extra["checkpoint_epoch"] == 1
    with pytest.raises(CheckpointMismatchError, match="has 100 classes but dataset 'cifar10' has 10"):
        convert_checkpoint(src, str(tmp_path / "t2"), dataset="cifar10")
    with pytest.raises(CheckpointMismatchError, match="3-channel inputs but dataset 'mnist' gives 1"):
        convert_checkpoint(src, str(tmp_path / "t3"), dataset="mnist", num_classes=100)


def test_command_line_tool_end_to_end(tmp_path):
    module = R.randomize_(R.build("lenet5_half", scheme="cmi"), seed=11).eval()
    src = _save(module.state_dict(), "module", str(tmp_path / "mnist-lenet5_half.pt"), "lenet5_half")
    out = tmp_path / "teacher"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert_torch_checkpoint.py"), src,
                           "--dataset", "mnist", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "lenet5_half" in proc.stdout and "15,738" in proc.stdout and str(out) in proc.stdout
    teacher = load_teacher(str(out))
    assert teacher.meta.arch == "lenet5_half" and teacher.meta.input_shape == (32, 32, 1)
    assert teacher.meta.mean == (0.1307,) and teacher.meta.extra["key_scheme"] == "cmi"
    assert json.load(open(out / "teacher.json"))["num_classes"] == 10
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = module(x).numpy()
    logits, _ = teacher.model.apply(teacher.variables, _nhwc(x), train=False)
    assert _rel_err(logits, ref) <= RTOL


def test_command_line_tool_reports_errors(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("convert_tool", os.path.join(REPO, "tools", "convert_torch_checkpoint.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src = _save(R.build("lenet5_half").state_dict(), "bare", str(tmp_path / "lenet5_half.pt"), "lenet5_half")
    assert tool.main([src, "--arch", "lenet5", "--dataset", "mnist", "--out", str(tmp_path / "bad")]) == 1
    assert "would fit: lenet5_half (10 classes, dfad key scheme)" in capsys.readouterr().err
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert tool.main([str(notes), "--dataset", "mnist", "--out", str(tmp_path / "bad")]) == 1
    assert "not a PyTorch checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.fixture(scope="module", autouse=True)
def report_relative_errors():
    """After the module (visible with -s): the relative logit error of every conversion above (each
    test asserts its own against RTOL; this only prints them)."""
    yield
    if REL_ERRORS:
        print("\nrelative logit errors: " + ", ".join(f"{k} {v:.1e}" for k, v in sorted(REL_ERRORS.items())))


@pytest.mark.parametrize("variant", ["dafl_eps", "zskt"])
def test_generator_variants_match_pytorch(variant):
    """DAFL's generator with BatchNorm2d(c, 0.8) (bn_eps=0.8) and ZSKT's (no Tanh, affine last BatchNorm)
    against the PyTorch modules in train mode, the shared layers converted through GeneratorA's layout."""
    cfg = dict(nz=32, ngf=16, channels=3, img_size=32)
    zskt = variant == "zskt"
    module = R.randomize_(R.DAFLGeneratorTorch(32, 16, 3, 32, eps=0.8 if not zskt else 1e-5, zskt=zskt),
                          seed=9).train()
    sd = {k: v.detach().clone() for k, v in module.state_dict().items()}
    z = torch.randn(6, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = module(z).numpy().transpose(0, 2, 3, 1)
    shared = {k: v for k, v in sd.items() if not (zskt and k in ("conv_blocks2.5.weight", "conv_blocks2.5.bias"))}
    variables = convert_state_dict(shared, "dafl")
    if zskt:
        variables["params"]["conv_blocks2_5"] = {"scale": jnp.asarray(sd["conv_blocks2.5.weight"].numpy()),
                                                 "bias": jnp.asarray(sd["conv_blocks2.5.bias"].numpy())}
        gen = build_generator("zskt", **cfg)
    else:
        gen = build_generator("dafl", **cfg, bn_eps=0.8)
    out, _ = gen.apply(variables, jnp.asarray(z.numpy()), train=True, mutable=["batch_stats"])
    assert _rel_err(out, ref) <= RTOL
    if not zskt:  # with PyTorch's default eps instead, the outputs differ: the 0.8 is really used
        plain, _ = build_generator("dafl", **cfg).apply(variables, jnp.asarray(z.numpy()), train=True,
                                                         mutable=["batch_stats"])
        assert _rel_err(plain, ref) > 1e-2


def test_dcgan_cifar10_generator_is_large_under_its_keys():
    """CuDFKD's/AdaDFKD's DCGAN_Generator_CIFAR10 at d=2 (ljrprocc datafree/models/generator.py): CMI's
    LargeGenerator's layers as ``project.1`` and ``main.{0,2,3,6,7,9}``: detected as ``large``, converted."""
    module = R.randomize_(R.CMIGeneratorTorch(nz=40, ngf=16, img_size=32, nc=3, width=4), seed=6).eval()
    sd = {k.replace("l1.0.", "project.1.").replace("conv_blocks.", "main."): v.numpy()
          for k, v in module.state_dict().items()}
    assert detect_architecture(sd) == "large"
    cfg = generator_config(sd, "large")
    assert cfg == dict(nz=40, ngf=16, channels=3, img_size=32)
    z = torch.randn(4, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = module(z).numpy().transpose(0, 2, 3, 1)
    out = build_generator("large", **cfg).apply(convert_state_dict(sd, "large"), jnp.asarray(z.numpy()), train=False)
    assert _rel_err(out, ref) <= RTOL


def test_zskt_generator_in_its_own_key_layout():
    """ZSKT's generator is one ``nn.Sequential`` ``layers`` (polo5/ZeroShotKnowledgeTransfer models/generator.py:
    Linear 0, BN 2, Conv 4, BN 5, Conv 8, BN 9, Conv 11, affine BN 12): detected as ``zskt``, its dimensions
    read under that layout, and converted."""
    module = R.randomize_(R.DAFLGeneratorTorch(48, 16, 3, 32, zskt=True), seed=4).eval()
    to_zskt = {"l1.0": "layers.0", "conv_blocks0.0": "layers.2", "conv_blocks1.0": "layers.4",
               "conv_blocks1.1": "layers.5", "conv_blocks2.0": "layers.8", "conv_blocks2.1": "layers.9",
               "conv_blocks2.3": "layers.11", "conv_blocks2.5": "layers.12"}
    sd = {f"{to_zskt[k.rpartition('.')[0]]}.{k.rpartition('.')[2]}": v.numpy() for k, v in module.state_dict().items()}
    assert detect_architecture(sd) == "zskt"
    cfg = generator_config(sd, "zskt")
    assert cfg == dict(nz=48, ngf=16, channels=3, img_size=32)
    z = torch.randn(4, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = module(z).numpy().transpose(0, 2, 3, 1)
    out = build_generator("zskt", **cfg).apply(convert_state_dict(sd, "zskt"), jnp.asarray(z.numpy()), train=False)
    assert _rel_err(out, ref) <= RTOL


@pytest.mark.parametrize("variant", ["dafl_sn", "vae_decoder"])
def test_predfkd_generators_with_eps_08_match_pytorch(variant):
    """PRE-DFKD's two generators (kuluhan/PRE-DFKD networks/generator.py) with BatchNorm2d(c, 0.8)
    (generator.bn_eps=0.8, methods/predfkd.py), in train mode against PyTorch: the novel ``Generator``
    (l. 5-50: spectral_norm on its three convolutions, one power iteration per call from the same u)
    as ``dafl_sn``, and the ``MemoryGenerator`` (l. 52-96) as the VAE's decoder. With eps 1e-5 instead
    the outputs differ: the 0.8 reaches both."""
    from dfkd_jax.models.vae import VAE
    nz, ngf, nc, size = 32, 16, 3, 32
    module = R.randomize_(R.DAFLGeneratorTorch(nz, ngf, nc, size, eps=0.8), seed=11).train()
    sd = {k: v.detach().clone() for k, v in module.state_dict().items()}
    variables = convert_state_dict(sd, "dafl")
    z = torch.randn(6, nz, generator=torch.Generator().manual_seed(3))
    zj = jnp.asarray(z.numpy())
    if variant == "dafl_sn":
        convs = {"conv_blocks1_0": module.conv_blocks1[0], "conv_blocks2_0": module.conv_blocks2[0],
                 "conv_blocks2_3": module.conv_blocks2[3]}
        g = torch.Generator().manual_seed(5)
        stats = dict(variables["batch_stats"])
        for name, conv in convs.items():
            torch.nn.utils.spectral_norm(conv)
            with torch.no_grad():
                conv.weight_u.copy_(torch.nn.functional.normalize(torch.randn(conv.weight_u.shape, generator=g), dim=0))
            stats[f"{name}_sn"] = {f"{name}/kernel/u": jnp.asarray(conv.weight_u.numpy())[None],
                                   f"{name}/kernel/sigma": jnp.ones(())}
        variables = {"params": variables["params"], "batch_stats": stats}

        def run(eps):
            gen = build_generator("dafl_sn", nz=nz, ngf=ngf, channels=nc, img_size=size, bn_eps=eps)
            return gen.apply(variables, zj, train=True, mutable=["batch_stats"])[0]
    else:
        def run(eps):
            vae = VAE(nz=nz, ngf=ngf, channels=nc, img_size=size, bn_eps=eps)
            wrap = {col: {"decoder": tree} for col, tree in variables.items()}
            return vae.apply(wrap, zj, train=True, method="decode", mutable=["batch_stats"])[0]
    with torch.no_grad():
        ref = module(z).numpy().transpose(0, 2, 3, 1)
    assert _rel_err(run(0.8), ref) <= RTOL
    assert _rel_err(run(1e-5), ref) > 1e-2
