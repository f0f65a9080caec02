"""PyTorch -> Flax conversion of the rest of the CMI/Fast zoo, DeepLabV3 and DFAD's GeneratorB.

As tests/test_convert.py: random weights and BN statistics in the project's own PyTorch
reference modules (tests/torch_reference_zoo.py), saved as a bare state_dict, a
``{'state_dict': ...}`` wrapper and with ``module.`` prefixes; each file is read back,
its architecture detected from the keys, converted, and the first conversion compared
with PyTorch (eval-mode logits, relative error <= 1e-4); the other two must give the same
variables. Classifier families are each checked at full size in the default suite (the
other members of a family, the same code with other depths and widths, under -m slow);
the DeepLabV3 MobileNetV2s at 1/4 width on 64x64 inputs, the ResNet-50s at 1/8 width on
296x296 inputs, where every ASPP rate reaches inside the output-stride-8 map (CMI/Fast's,
whose backbone is DFAD's and whose head the MobileNetV2 test covers, under -m slow). Forward
passes are jitted (one compile costs a quarter of the op-by-op dispatch of a MobileNetV2).
"""

from __future__ import annotations

import os
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

from dfkd_jax.convert import (convert_state_dict, convert_with_info, detect_architecture, generator_config,  # noqa: E402
                              load_torch_state_dict, normalize_state_dict)
from dfkd_jax.models import build_generator, build_model  # noqa: E402

torch.set_num_threads(2)
RTOL = 1e-4
FORMATS = ("bare", "wrapped", "module")
FAST = ["resnet8", "vgg13", "mobilenetv2", "shufflenetv2"]
SLOW = ["resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4", "resnet32x4", "resnet50",
        "vgg16", "vgg19"]


def _reference(arch: str, num_classes: int):
    module = R.build(arch, num_classes) if arch in R.VGG_CFG else Z.build(arch, num_classes)
    return R.randomize_(module, seed=len(arch)).eval()


def _save(sd, fmt, path, arch):
    obj = {"bare": sd, "wrapped": {"state_dict": sd, "epoch": 3, "arch": arch},
           "module": {f"module.{k}": v for k, v in sd.items()}}[fmt]
    torch.save(obj, path)
    return path


def _nhwc(x):
    return jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def _rel_err(out, ref) -> float:
    out = np.asarray(out)
    if out.ndim == 4:
        out = out.transpose(0, 3, 1, 2)  # NHWC logits -> NCHW
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def _check(arch, tmp_path, num_classes=10, size=32, batch=2, formats=FORMATS):
    module = _reference(arch, num_classes)
    sd = module.state_dict()
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = module(x).numpy()
    first = None
    for fmt in formats:
        loaded = load_torch_state_dict(_save(sd, fmt, str(tmp_path / f"{fmt}.pth"), arch))
        assert detect_architecture(loaded) == arch
        variables, info = convert_with_info(loaded, arch)
        assert info.free_dims == {"K": num_classes, "C": 3}
        if first is not None:
            jax.tree.map(np.testing.assert_array_equal, variables, first)
            continue
        first = variables
        assert sum(np.size(v) for v in jax.tree.leaves(variables["params"])) == sum(
            p.numel() for p in module.parameters())
        model = build_model(arch, num_classes)
        logits, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, _nhwc(x))
        err = _rel_err(logits, ref)
        assert err <= RTOL, f"{arch}: relative logit error {err:.2e}"
        for key in (k for k in sd if k.endswith("running_var")):
            assert np.abs(sd[key].numpy() - 1).max() > 0.1  # non-trivial statistics were carried over
    return first


@pytest.mark.parametrize("arch", FAST)
def test_convert_classifier(arch, tmp_path):
    _check(arch, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch", SLOW)
def test_convert_classifier_deeper(arch, tmp_path):
    _check(arch, tmp_path)


@pytest.mark.parametrize("arch", ["deeplabv3_mobilenetv2@0.25", "deeplabv3_mobilenetv2_cmi@0.25"])
def test_convert_deeplabv3_mobilenetv2(arch, tmp_path):
    _check(arch, tmp_path, num_classes=11, size=64)


@pytest.mark.parametrize("arch", ["deeplabv3_resnet50@0.125",
                                  pytest.param("deeplabv3_resnet50_cmi@0.125", marks=pytest.mark.slow)])
def test_convert_deeplabv3_resnet50_every_aspp_rate(arch, tmp_path):
    """At 296x296 the output-stride-8 map is 37x37, so the rates 12, 24 and 32 or 36 all reach inside it
    (on 64x64 inputs the dilated ASPP branches see only their centre tap)."""
    _check(arch, tmp_path, num_classes=5, size=296, batch=1)


def test_full_width_deeplabv3_keys_are_detected():
    """The published layouts at full width: key counts and detection, without running them."""
    for arch in ("deeplabv3_resnet50", "deeplabv3_mobilenetv2", "deeplabv3_resnet50_cmi",
                 "deeplabv3_mobilenetv2_cmi"):
        sd = {k: v.numpy() for k, v in Z.build(arch, 11).state_dict().items()}
        assert detect_architecture(sd) == arch
    sd = Z.build("deeplabv3_mobilenetv2_cmi", 11).state_dict()
    assert "backbone.high_level_features.17.conv.3.running_var" in sd and "classifier.classifier.4.bias" in sd
    # CMI/Fast slice one Sequential (features[4:-1]), which keeps its indices: 4 ... 17, never 0
    assert "backbone.high_level_features.4.conv.0.0.weight" in sd
    assert not any(k.startswith("backbone.high_level_features.0.") for k in sd)
    assert len(normalize_state_dict(sd)) == 292  # the real class's key count at 13 classes too
    sd = Z.build("deeplabv3_mobilenetv2", 11).state_dict()
    assert "backbone.features.17.conv.7.running_var" in sd and "classifier.0.convs.4.2.weight" in sd


@pytest.mark.parametrize("ngf,img", [(4, 32), pytest.param(8, 64, marks=pytest.mark.slow)])
def test_convert_generator_b_train_mode(ngf, img, tmp_path):
    """DFAD's GeneratorB: transposed convs with PyTorch's kernel layout and padding, train-mode BN."""
    module = R.randomize_(Z.GeneratorB(nz=32, ngf=ngf, nc=3, img_size=img), seed=2).train()
    sd = {k: v.clone() for k, v in module.state_dict().items()}
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = module(z).numpy().transpose(0, 2, 3, 1)
    loaded = load_torch_state_dict(_save(sd, "wrapped", str(tmp_path / "g.pth"), "dfad_b"))
    assert detect_architecture(loaded) == "dfad_b"
    cfg = generator_config(loaded, "dfad_b")
    assert cfg == dict(nz=32, ngf=ngf, channels=3, img_size=img)
    variables = convert_state_dict(loaded, "dfad_b")
    out, _ = build_generator("dfad_b", **cfg).apply(variables, jnp.asarray(z.numpy()), train=True,
                                                    mutable=["batch_stats"])
    assert out.shape == ref.shape
    assert float(np.abs(np.asarray(out) - ref).max() / np.abs(ref).max()) <= RTOL
