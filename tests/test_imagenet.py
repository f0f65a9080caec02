"""ImageNet-scale teachers: torchvision's ResNet-18/34/50 and MobileNetV2 state_dicts, the `imagenet` spec
and its evaluation reader.

The default suite converts the project's PyTorch re-writes (tests/torch_reference_zoo.py, torchvision's
key layout) at small inputs; torchvision's own classes, loaded from its wheel under a run-time stub
(tools/torchvision_stub.py, $DFKD_JAX_TORCHVISION), are checked when the wheel is there and skipped
cleanly otherwise. The 224x224 checks are slow.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import torch_reference as R  # noqa: E402
import torch_reference_zoo as Z  # noqa: E402
import torchvision_stub  # noqa: E402

from dfkd_jax.convert import convert_with_info, detect_architecture, load_torch_state_dict  # noqa: E402
from dfkd_jax.data import get_spec, load_split, preprocess  # noqa: E402
from dfkd_jax.data.imagenet import find_split_folder, read_imagenet, wnids  # noqa: E402
from dfkd_jax.models import build_model  # noqa: E402
from tests.image_fixtures import WNIDS, write_image_folder  # noqa: E402

torch.set_num_threads(2)
RTOL = 1e-4
# torchvision constructor name -> dfkd_jax architecture
TORCHVISION = {"resnet18": "resnet18_imagenet", "resnet34": "resnet34_imagenet", "resnet50": "resnet50_imagenet",
               "mobilenet_v2": "mobilenetv2"}
needs_torchvision = pytest.mark.skipif(torchvision_stub.wheel_path() is None,
                                       reason=f"set ${torchvision_stub.ENV} to torchvision's wheel (or its unpacked folder)")


def _convert_and_compare(module, arch, tmp_path, size, batch=1, wrapped=False):
    """Saves ``module``'s state_dict, detects and converts it, and returns the relative logit error."""
    module = R.randomize_(module, seed=len(arch)).eval()
    sd = module.state_dict()
    path = str(tmp_path / f"{arch}.pth")
    torch.save({"state_dict": sd, "epoch": 90} if wrapped else sd, path)
    loaded = load_torch_state_dict(path)
    assert detect_architecture(loaded) == arch
    variables, info = convert_with_info(loaded, arch)
    num_classes = info.free_dims["K"]
    assert sum(np.size(v) for v in jax.tree.leaves(variables["params"])) == sum(p.numel() for p in module.parameters())
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = module(x).numpy()
    logits, _ = build_model(arch, num_classes).apply(variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)),
                                                     train=False)
    return float(np.abs(np.asarray(logits) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("arch", ["resnet18_imagenet", pytest.param("resnet34_imagenet", marks=pytest.mark.slow),
                                  pytest.param("resnet50_imagenet", marks=pytest.mark.slow)])
def test_imagenet_resnet_layout_small_input(arch, tmp_path):
    """torchvision's key layout (the project's re-write) at 10 classes on 64x64 inputs."""
    assert _convert_and_compare(Z.build(arch, 10), arch, tmp_path, size=64, batch=2, wrapped=True) <= RTOL


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18_imagenet", "resnet50_imagenet"])
def test_imagenet_resnet_layout_224(arch, tmp_path):
    assert _convert_and_compare(Z.build(arch, 1000), arch, tmp_path, size=224) <= RTOL


@needs_torchvision
@pytest.mark.parametrize("name", ["resnet18", pytest.param("resnet34", marks=pytest.mark.slow),
                                  pytest.param("resnet50", marks=pytest.mark.slow),
                                  pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_torchvision_classes_convert(name, tmp_path):
    """torchvision's own model classes (1,000 classes, the files people download): 112x112 by default,
    224x224 for the slow ones."""
    module = torchvision_stub.torchvision_model(torchvision_stub.wheel_path(), name)
    size = 112 if name == "resnet18" else 224
    assert _convert_and_compare(module, TORCHVISION[name], tmp_path, size=size) <= RTOL


def test_imagenet_spec_and_wnids():
    spec = get_spec("imagenet")
    assert (spec.num_classes, spec.image_shape, spec.mean, spec.std) == (
        1000, (224, 224, 3), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert len(wnids()) == 1000 and wnids()[:3] == ("n01440764", "n01443537", "n01484850")


def test_imagenet_reader_standard_labels(tmp_path):
    # two of the three fixture classes and a 'val/' parent: labels are the standard indices, not 0, 1
    write_image_folder(tmp_path / "ILSVRC2012" / "val", classes=WNIDS[:1] + WNIDS[2:], per_class=2,
                       size=(300, 375))
    assert find_split_folder(tmp_path, "test") == tmp_path / "ILSVRC2012" / "val"
    images, labels = load_split("imagenet", "test", source_dir=str(tmp_path))
    assert images.shape == (4, 224, 224, 3) and images.dtype == np.uint8
    assert labels.tolist() == [1, 1, 2, 2]  # n01443537 is class 1, n01484850 class 2
    same, _ = read_imagenet(tmp_path / "ILSVRC2012" / "val")
    np.testing.assert_array_equal(same, images)


def test_imagenet_missing_folder_is_a_user_error(tmp_path):
    from dfkd_jax.errors import UserError

    with pytest.raises(UserError, match="source_dir"):
        load_split("imagenet", "test")
    (tmp_path / "cats").mkdir()
    with pytest.raises(UserError, match="No ImageNet test images"):
        load_split("imagenet", "test", source_dir=str(tmp_path))


@pytest.mark.slow
def test_converted_resnet50_labels_fixture_images_like_pytorch(tmp_path):
    """ResNet-50 (torchvision's class when its wheel is there, else the re-write) on the fixture images
    read as ImageNet's evaluation reads them: the same top-1 labels as PyTorch on the same tensors."""
    write_image_folder(tmp_path / "val", per_class=2, size=(300, 375))
    images, _ = read_imagenet(tmp_path / "val")
    x = np.asarray(preprocess(images, get_spec("imagenet")))  # NHWC, normalised
    if torchvision_stub.wheel_path():
        module = torchvision_stub.torchvision_model(torchvision_stub.wheel_path(), "resnet50")
    else:
        module = Z.build("resnet50_imagenet", 1000)
    module = R.randomize_(module, seed=5).eval()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    # A random deep net's pooled features are dominated by their mean, so its top-1 is one class for every
    # image: project that mean out of the head's weights, so the labels depend on the images.
    seen = []
    hook = module.fc.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        module(xt)
        hook.remove()
        f = seen[0].mean(0)
        w = module.fc.weight
        w -= torch.outer(w @ f, f) / f.dot(f)
        module.fc.bias.zero_()
        ref = module(xt).numpy()
    assert len(set(ref.argmax(-1).tolist())) > 1
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    variables, _ = convert_with_info(sd, "resnet50_imagenet")
    logits, _ = build_model("resnet50_imagenet", 1000).apply(variables, jnp.asarray(x), train=False)
    assert float(np.abs(np.asarray(logits) - ref).max() / np.abs(ref).max()) <= RTOL
    np.testing.assert_array_equal(np.asarray(logits).argmax(-1), ref.argmax(-1))
