"""Registered architectures and generators: parameter counts (docs/models.md), output structure.

Everything here is shape-level (``jax.eval_shape``): no convolution is computed.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfkd_jax.models import ARCHITECTURES, GENERATORS, SEGMENTATION, build_generator, build_model, parse_arch

# Parameter counts at 10 classes (docs/models.md, from the reference zoos).
PARAMS_10 = {
    "lenet5": 61_706,
    "lenet5_half": 15_738,
    "lenet5_half_zskd": 35_820,
    "lenet5_bn": 61_848,
    "lenet5_half_bn": 15_809,
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    "wrn16_1": 175_066,
    "wrn16_2": 691_674,
    "wrn40_1": 563_930,
    "wrn40_2": 2_243_546,
    "vgg8": 3_918_858,
    "vgg11": 9_231_114,
    # the rest of the CMI/Fast registry (counts of the reference modules, tests/torch_reference_zoo.py)
    "resnet8": 78_042,
    "resnet14": 175_258,
    "resnet44": 661_338,
    "vgg16": 14_728_266,
    "vgg19": 20_040_522,
    "resnet20": 272_474,
    "resnet32": 466_906,
    "resnet56": 855_770,
    "resnet110": 1_730_714,
    "resnet8x4": 1_210_410,
    "resnet32x4": 7_410_730,
    "vgg13": 9_416_010,
    "mobilenetv2": 2_236_682,
    "shufflenetv2": 1_263_278,
    "resnet50": 23_520_842,
    # torchvision's ImageNet ResNets: 11,689,512 / 21,797,672 / 25,557,032 at 1,000 classes (torchvision's figures)
    "resnet18_imagenet": 11_181_642,
    "resnet34_imagenet": 21_289_802,
    "resnet50_imagenet": 23_528_522,
}
HEAD_WIDTH = {"lenet5": 84, "lenet5_half": 42, "lenet5_half_zskd": 84, "lenet5_bn": 84, "lenet5_half_bn": 42, "resnet18": 512, "resnet34": 512,
              "wrn16_1": 64, "wrn16_2": 128, "wrn40_1": 64, "wrn40_2": 128, "vgg8": 512, "vgg11": 512,
              "resnet8": 64, "resnet20": 64, "resnet32": 64, "resnet56": 64, "resnet110": 64, "resnet8x4": 256,
              "resnet32x4": 256, "vgg13": 512, "mobilenetv2": 1280, "shufflenetv2": 1024, "resnet50": 2048,
              "resnet14": 64, "resnet44": 64, "vgg16": 512, "vgg19": 512, "resnet18_imagenet": 512, "resnet34_imagenet": 512, "resnet50_imagenet": 2048}
# DeepLabV3 at 11 classes (torchvision's deeplabv3_resnet50 without the auxiliary head has 39,638,869 at 21
# classes: 10 x 257 more); at full width and at the 1/4 width the tests and CPU runs use.
SEG_PARAMS_11 = {
    "deeplabv3_resnet50": 39_636_299,
    "deeplabv3_mobilenetv2": 5_111_307,
    "deeplabv3_resnet50_cmi": 39_636_299,
    "deeplabv3_mobilenetv2_cmi": 5_111_307,
    "deeplabv3_resnet50@0.25": 2_490_203,
    "deeplabv3_mobilenetv2@0.25": 338_787,
    "deeplabv3_resnet50_cmi@0.25": 2_490_203,
    "deeplabv3_mobilenetv2_cmi@0.25": 338_787,
}
SEG_FEATURE = {"deeplabv3_resnet50": 2048, "deeplabv3_mobilenetv2": 320}
FEATURE_DIM = {**HEAD_WIDTH, "lenet5": 120, "lenet5_half": 60, "lenet5_half_zskd": 120, "lenet5_bn": 120, "lenet5_half_bn": 60}

# (generator, kwargs, params): CMI's count is in docs/models.md; the DAFL ones follow from its layer list
# (Linear nz->8192, BN 128, conv 128->128 +b, BN, conv 128->64 +b, BN, conv 64->nc +b, BN without affine).
GENERATOR_PARAMS = [
    ("cmi", dict(nz=256, ngf=64, channels=3, img_size=32), 2_328_899),
    ("dafl", dict(nz=100, ngf=64, channels=1, img_size=32), 1_049_985),
    ("dafl", dict(nz=256, ngf=64, channels=3, img_size=32), 2_329_091),
    ("dafl_sn", dict(nz=100, ngf=64, channels=1, img_size=32), 1_049_985),  # spectral norm adds no parameters
    # LargeGenerator: Linear 256->16384 (+b), BN 256, conv 256->128, BN, conv 128->64, BN, conv 64->3 (+b)
    ("large", dict(nz=256, ngf=64, channels=3, img_size=32), 4_581_955),
    # ZSKT: GeneratorA's layers at nc 3 plus the last BatchNorm's scale and bias (3 + 3)
    ("zskt", dict(nz=100, ngf=64, channels=3, img_size=32), 1_051_145),
    ("dfad_b", dict(nz=256, ngf=64, channels=3, img_size=128), 11_243_203),  # DFAD's segmentation generator
    ("dfad_b_resize", dict(nz=256, ngf=64, channels=3, img_size=128), 10_010_307),  # 3x3 instead of 4x4 kernels
]

BLOCK_SHAPES = {
    "resnet18": [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512)],
    "resnet34": [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512)],
    "wrn16_1": [(32, 32, 16), (16, 16, 32), (8, 8, 64)],
    "wrn16_2": [(32, 32, 32), (16, 16, 64), (8, 8, 128)],
    "wrn40_1": [(32, 32, 16), (16, 16, 32), (8, 8, 64)],
    "wrn40_2": [(32, 32, 32), (16, 16, 64), (8, 8, 128)],
    "vgg8": [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512), (4, 4, 512)],
    "vgg11": [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512), (4, 4, 512)],
    "lenet5": [(14, 14, 6), (5, 5, 16), (1, 1, 120)],
    "lenet5_bn": [(14, 14, 6), (5, 5, 16), (1, 1, 120)],
    "lenet5_half_bn": [(14, 14, 3), (5, 5, 8), (1, 1, 60)],
}


def _channels(arch: str) -> int:
    return 1 if arch.startswith("lenet") else 3


def _shapes(arch, num_classes=10, batch=2, size=32, train=False, dtype=jnp.float32):
    model = build_model(arch, num_classes, dtype=dtype)
    x = jax.ShapeDtypeStruct((batch, size, size, _channels(arch)), jnp.float32)
    variables = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), x)
    if train:
        out = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), variables, x)[0]
    else:
        out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return variables, out


def _count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def test_every_registered_architecture_has_a_count():
    assert set(PARAMS_10) == set(ARCHITECTURES) - SEGMENTATION
    assert {parse_arch(a)[0] for a in SEG_PARAMS_11} == SEGMENTATION


def _seg_shapes(arch, size=64, num_classes=11, batch=2, channels=3, train=False):
    model = build_model(arch, num_classes)
    x = jax.ShapeDtypeStruct((batch, *size, channels) if isinstance(size, tuple) else (batch, size, size, channels),
                             jnp.float32)
    variables = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), x)
    if train:
        return variables, jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]),
                                         variables, x)[0]
    return variables, jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)


@pytest.mark.parametrize("arch", sorted(SEG_PARAMS_11))
def test_segmentation_parameter_counts(arch):
    variables, (logits, aux) = _seg_shapes(arch)
    assert _count(variables["params"]) == SEG_PARAMS_11[arch]
    assert logits.shape == (2, 64, 64, 11) and logits.dtype == jnp.float32
    base, m = parse_arch(arch)
    width = SEG_FEATURE[base.removesuffix("_cmi")]
    assert aux["feature"].shape == (2, int(width * (m or 1.0)))
    # output stride 8: the last backbone stage is 8x smaller than the input
    assert aux["blocks"][-1].shape[1:3] == (8, 8)


@pytest.mark.parametrize("arch,size,train", [("deeplabv3_resnet50@0.125", 48, False),
                                             ("deeplabv3_resnet50@0.125", (40, 56), True),
                                             ("deeplabv3_mobilenetv2@0.25", (40, 56), False),
                                             ("deeplabv3_mobilenetv2_cmi@0.25", 72, False),
                                             ("deeplabv3_mobilenetv2_cmi@0.25", (40, 56), True)])
def test_segmentation_logits_follow_the_input_size(arch, size, train):
    """Logits are upsampled to the input's height and width, square or not (output stride 8 inside)."""
    hw = size if isinstance(size, tuple) else (size, size)
    _, (logits, aux) = _seg_shapes(arch, size, num_classes=5, channels=1, train=train)
    assert logits.shape == (2, *hw, 5)
    assert aux["blocks"][-1].shape[1:3] == (hw[0] // 8, hw[1] // 8)


def test_width_multiplier_names():
    assert parse_arch("deeplabv3_resnet50@0.25") == ("deeplabv3_resnet50", 0.25)
    assert parse_arch("resnet18") == ("resnet18", None)
    for bad, msg in (("resnet18@0.5", "takes no width multiplier"), ("deeplabv3_resnet50@x", "Bad width"),
                     ("deeplabv3_resnet51", "Unknown architecture")):
        with pytest.raises(ValueError, match=msg):
            parse_arch(bad)


@pytest.mark.parametrize("arch", sorted(PARAMS_10))
def test_parameter_count_and_outputs(arch):
    variables, (logits, aux) = _shapes(arch)
    assert _count(variables["params"]) == PARAMS_10[arch]
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert set(aux) >= {"feature", "blocks"}
    assert aux["feature"].shape == (2, FEATURE_DIM[arch])
    assert isinstance(aux["blocks"], tuple) and len(aux["blocks"]) >= 3
    if arch in BLOCK_SHAPES:
        assert [b.shape[1:] for b in aux["blocks"]] == BLOCK_SHAPES[arch]
    for b in aux["blocks"]:
        assert b.ndim == 4 and b.shape[0] == 2


@pytest.mark.parametrize("arch", ["resnet18", "wrn40_2", "vgg8", "lenet5"])
def test_hundred_classes_changes_only_the_head(arch):
    v10, _ = _shapes(arch, 10)
    v100, (logits, _) = _shapes(arch, 100)
    assert logits.shape == (2, 100)
    assert _count(v100["params"]) - _count(v10["params"]) == 90 * (HEAD_WIDTH[arch] + 1)


@pytest.mark.parametrize("arch", ["resnet18", "wrn16_1", "vgg11"])
def test_train_mode_and_bfloat16(arch):
    _, (logits, aux) = _shapes(arch, train=True)
    assert logits.shape == (2, 10)
    _, (logits, aux) = _shapes(arch, dtype=jnp.bfloat16)
    assert logits.dtype == jnp.float32
    assert aux["blocks"][0].dtype == jnp.bfloat16
    variables, _ = _shapes(arch, dtype=jnp.bfloat16)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))


def test_vgg_pools_after_block3_only_for_64px():
    _, (_, aux32) = _shapes("vgg11", size=32)
    _, (_, aux64) = _shapes("vgg11", size=64)
    assert [b.shape[1] for b in aux32["blocks"]] == [32, 16, 8, 4, 4]
    assert [b.shape[1] for b in aux64["blocks"]] == [64, 32, 16, 8, 4]


@pytest.mark.parametrize("arch", ["resnet18", "wrn16_2", "vgg8"])
def test_every_batchnorm_is_a_flax_batchnorm(arch):
    """The engine captures BN inputs by intercepting nn.BatchNorm.__call__: every BN must be one."""
    model = build_model(arch, 10)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), x)
    seen = []

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            seen.append("/".join(context.module.path))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    n_bn = len(jax.tree.leaves(variables["batch_stats"])) // 2
    assert len(seen) == len(set(seen)) == n_bn


@pytest.mark.parametrize("name,kwargs,params", GENERATOR_PARAMS)
def test_generator_parameter_counts(name, kwargs, params):
    gen = build_generator(name, **kwargs)
    z = jax.ShapeDtypeStruct((2, kwargs["nz"]), jnp.float32)
    variables = jax.eval_shape(lambda v: gen.init(jax.random.key(0), v, train=True), z)
    assert _count(variables["params"]) == params
    out, _ = jax.eval_shape(lambda v, z: gen.apply(v, z, train=True, mutable=["batch_stats"]), variables, z)
    assert out.shape == (2, kwargs["img_size"], kwargs["img_size"], kwargs["channels"])


def test_generator_registry_is_covered():
    assert {g for g, _, _ in GENERATOR_PARAMS} == set(GENERATORS)


def test_docs_table_matches_the_counts():
    """docs/models.md states the same parameter counts as this file checks."""
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "models.md")
    rows, section = {}, ""
    for line in open(path):
        if line.startswith("## "):
            section = line
        if line.startswith("| `") and "measured errors" not in section:  # not the conversion report's table
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.setdefault(cells[0].strip("`"), []).append(cells[-1])
    for arch, n in {**PARAMS_10, **SEG_PARAMS_11}.items():
        assert rows[arch] == [f"{n:,}"], arch
    assert sorted(sum((rows[g] for g in GENERATORS), [])) == sorted(f"{n:,}" for _, _, n in GENERATOR_PARAMS)


@pytest.mark.parametrize("scheme", ["uniform", "normal"])
def test_generator_init_schemes(scheme):
    """PRE-DFKD's U(-0.08, 0.08) and CuDFKD/AdaDFKD's N(0, 0.02) re-initialisation: every conv/linear weight
    from that law, biases 0, BatchNorm scales N(1, 0.02) for 'normal' (1 otherwise)."""
    from dfkd_jax.models.generators import initialize
    gen = build_generator("large", nz=64, ngf=16, channels=3, img_size=32)
    params = initialize(gen, jax.random.PRNGKey(0), jnp.zeros((2, 64)), train=False, init=scheme)["params"]
    kernels = np.concatenate([np.ravel(params[n]["kernel"]) for n in ("l1_0", "conv_blocks_2", "conv_blocks_6")])
    if scheme == "uniform":
        assert np.abs(kernels).max() <= 0.08 and np.std(kernels) == pytest.approx(0.08 / np.sqrt(3), rel=0.02)
    else:
        assert np.std(kernels) == pytest.approx(0.02, rel=0.02) and abs(np.mean(kernels)) < 1e-3
    assert np.all(np.asarray(params["l1_0"]["bias"]) == 0) and np.all(np.asarray(params["conv_blocks_9"]["bias"]) == 0)
    scale = np.asarray(params["conv_blocks_3"]["scale"])
    assert (np.std(scale) > 0.005) == (scheme == "normal") and abs(np.mean(scale) - 1) < 0.01
