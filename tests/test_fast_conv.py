"""The CPU convolution formulations (dfkd_jax.models.fast_conv) against XLA's own.

Every configuration of convolution the zoo and the generators use (kernel size, stride,
padding, dilation, groups, input dilation), forward, input gradient and weight gradient,
float32 on random inputs (relative error <= 1e-5) and bfloat16 on integer-valued inputs (every
summation order is exact there, so the results must be bitwise equal), on one device and with
the batch sharded over 4; then whole models, and which formulation 'auto' picks.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from dfkd_jax.models import build_generator, build_model, fast_conv

NHWC = ("NHWC", "HWIO", "NHWC")

# (name, (N, H, W, C_in, C_out, kernel, stride, padding, dilation, groups, input dilation))
CONFIGS = [
    ("lenet conv1: 5x5 valid, one input channel", (4, 12, 12, 1, 6, 5, 1, 0, 1, 1, 1)),
    ("lenet conv2/3: 5x5 valid", (4, 9, 9, 6, 16, 5, 1, 0, 1, 1, 1)),
    ("3x3 same (ResNet, WRN, VGG, generators)", (4, 8, 8, 16, 8, 3, 1, 1, 1, 1, 1)),
    ("3x3 stride 2 (first block of a stage, VAE encoder)", (4, 9, 9, 8, 16, 3, 2, 1, 1, 1, 1)),
    ("1x1 stride 2 shortcut", (4, 8, 8, 8, 16, 1, 2, 0, 1, 1, 1)),
    ("generator output layer: many -> one channel", (4, 8, 8, 16, 1, 3, 1, 1, 1, 1, 1)),
    ("7x7 stride 2 stem", (2, 13, 13, 3, 8, 7, 2, 3, 1, 1, 1)),
    ("3x3 dilation 2 (dilated ResNet, ASPP)", (2, 10, 10, 8, 8, 3, 1, 2, 2, 1, 1)),
    ("3x3 dilation 12 > input (ASPP on a small map)", (2, 5, 5, 8, 8, 3, 1, 12, 12, 1, 1)),
    ("depthwise 3x3 (MobileNetV2, ShuffleNetV2)", (2, 8, 8, 8, 8, 3, 1, 1, 1, 8, 1)),
    ("depthwise 3x3 stride 2", (2, 9, 9, 8, 8, 3, 2, 1, 1, 8, 1)),
    ("grouped 3x3 stride 2", (2, 8, 8, 8, 16, 3, 2, 1, 1, 4, 1)),
    ("transposed 4x4 stride 2 as an input-dilated convolution", (2, 5, 5, 8, 4, 4, 1, 2, 1, 1, 2)),
    ("one input channel, stride 2 and dilation 2", (2, 11, 11, 1, 4, 3, 2, 2, 2, 1, 1)),
]


def _inputs(cfg, dtype, seed=0):
    n, h, w, ci, co, k, _, _, _, g, _ = cfg
    kx, kw = jax.random.split(jax.random.PRNGKey(seed))
    if dtype == jnp.bfloat16:  # small integers: products and sums are exact in float32 accumulation
        x = jax.random.randint(kx, (n, h, w, ci), -3, 4).astype(dtype)
        wt = jax.random.randint(kw, (k, k, ci // g, co), -3, 4).astype(dtype)
    else:
        x = jax.random.normal(kx, (n, h, w, ci), dtype)
        wt = jax.random.normal(kw, (k, k, ci // g, co), dtype)
    return x, wt


def _conv_fns(cfg):
    _, _, _, _, _, _, s, p, d, g, ld = cfg
    kwargs = dict(window_strides=(s, s), padding=((p, p), (p, p)), lhs_dilation=(ld, ld), rhs_dilation=(d, d),
                  dimension_numbers=NHWC, feature_group_count=g)
    return (lambda x, w: fast_conv.conv_general_dilated(x, w, **kwargs),
            lambda x, w: lax.conv_general_dilated(x, w, **kwargs))


def _value_and_grads(conv, x, w, dy_seed=2):
    y, vjp = jax.vjp(conv, x, w)
    dy = jax.random.normal(jax.random.PRNGKey(dy_seed), y.shape, jnp.float32)
    if y.dtype == jnp.bfloat16:
        dy = jnp.round(dy * 2)
    return (y, *vjp(dy.astype(y.dtype)))


def _relerr(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# bf16 in the default suite on four configurations (the others under -m slow: the default suite's budget)
BF16_DEFAULT = ("3x3 same", "depthwise 3x3 (", "generator output layer", "transposed 4x4")


def _cases():
    for name, cfg in CONFIGS:
        ident = name.split(":")[0].replace(" ", "_")
        yield pytest.param(name, cfg, jnp.float32, id=f"f32-{ident}")
        marks = () if name.startswith(BF16_DEFAULT) else (pytest.mark.slow,)
        yield pytest.param(name, cfg, jnp.bfloat16, id=f"bf16-{ident}", marks=marks)


@pytest.mark.parametrize("name,cfg,dtype", list(_cases()))
def test_forward_and_gradients_equal_xla(name, cfg, dtype):
    x, w = _inputs(cfg, dtype)
    ours, xla = _conv_fns(cfg)
    with fast_conv.using("matmul"):  # the CPU formulations on every size
        got = jax.jit(lambda x, w: _value_and_grads(ours, x, w))(x, w)
    want = jax.jit(lambda x, w: _value_and_grads(xla, x, w))(x, w)
    for part, a, b in zip(("output", "input gradient", "weight gradient"), got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, part
        if dtype == jnp.bfloat16:
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32), err_msg=part)
        else:
            assert _relerr(a, b) <= 1e-5, (name, part, _relerr(a, b))


@pytest.mark.parametrize("strategy", ["shift_x", "shift_dy"])
def test_both_weight_gradient_strategies_equal_xla(strategy):
    for name, cfg in CONFIGS:
        x, w = _inputs(cfg, jnp.float32)
        _, xla = _conv_fns(cfg)
        y, vjp = jax.vjp(xla, x, w)
        dy = jax.random.normal(jax.random.PRNGKey(2), y.shape)
        want = vjp(dy)[1]
        _, _, _, _, _, _, s, p, d, g, ld = cfg
        got = jax.jit(lambda x, dy: fast_conv.matmul_weight_gradient(
            x, dy, w.shape, (s, s), ((p, p), (p, p)), (ld, ld), (d, d), g, strategy=strategy))(x, dy)
        assert _relerr(got, want) <= 1e-5, (name, strategy)


def test_sharded_batch_over_four_devices_equals_one_device():
    devices = np.array(jax.devices()[:4])
    assert devices.size == 4
    mesh = jax.sharding.Mesh(devices, ("data",))
    cfg = (8, 8, 8, 16, 8, 3, 1, 1, 1, 1, 1)
    x, w = _inputs(cfg, jnp.float32)
    ours, xla = _conv_fns(cfg)
    want = jax.jit(lambda x, w: _value_and_grads(xla, x, w))(x, w)
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    wr = jax.device_put(w, NamedSharding(mesh, P()))
    with fast_conv.using("matmul"):
        got = jax.jit(lambda x, w: _value_and_grads(ours, x, w))(xs, wr)
    assert got[1].sharding.spec == P("data")  # the input gradient stays sharded like the batch
    for a, b in zip(got, want):
        assert _relerr(a, b) <= 1e-5


def _param_grads(model, variables, x, mutable=False):
    def loss(params):
        v = {**variables, "params": params}
        out = model.apply(v, x, mutable=["batch_stats"])[0] if mutable else model.apply(v, x)
        out = out[0] if isinstance(out, tuple) else out
        return jnp.sum(jnp.sin(out))
    return jax.jit(jax.grad(loss))(variables["params"])


@pytest.mark.parametrize("arch", ["lenet5", "dafl_generator",  # the others: 9-16 s each, under -m slow
                                  *(pytest.param(a, marks=pytest.mark.slow)
                                    for a in ("wrn16_1", "resnet18", "dfad_b_generator"))])
def test_model_gradients_equal_xla(arch):
    if arch == "dafl_generator":
        model = build_generator("dafl", nz=8, ngf=8, channels=1, img_size=8)
        x = jax.random.normal(jax.random.PRNGKey(0), (4, 8))
    elif arch == "dfad_b_generator":  # transposed convolutions (layers.ConvTranspose2d) through fast_conv
        model = build_generator("dfad_b", nz=8, ngf=4, channels=1, img_size=16)
        x = jax.random.normal(jax.random.PRNGKey(0), (4, 8))
    else:
        model = build_model(arch, 10)
        c = 1 if arch == "lenet5" else 3
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 32 if arch == "lenet5" else 8, 32 if arch == "lenet5" else 8, c))
    variables = model.init(jax.random.PRNGKey(1), x)
    mutable = "batch_stats" in variables
    with fast_conv.using("xla"):
        want = _param_grads(model, variables, x, mutable)
    with fast_conv.using("matmul"):
        got = _param_grads(model, variables, x, mutable)
    # relative to the model's largest gradient: biases right before a BatchNorm have a gradient of
    # exactly zero in theory, and only rounding noise in either computation
    scale = max(float(np.max(np.abs(np.asarray(b)))) for b in jax.tree.leaves(want))
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        err = float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) / scale
        assert err <= 1e-5, (arch, jax.tree_util.keystr(path), err)


def _hlo_counts(fn, *args) -> tuple[int, int]:
    text = jax.jit(fn).lower(*args).compile().as_text()
    return len(re.findall(r"\bconvolution\(", text)), len(re.findall(r"\bdot\(", text))


def test_auto_picks_by_size_and_platform():
    big = (32, 16, 16, 16, 16, 3, 1, 1, 1, 1, 1)  # 2 * 32 * 256 * 9 * 256 = 37.7 MFLOP: above MIN_MATMUL_FLOPS
    x, w = _inputs(big, jnp.float32)
    small = x[:1, :4, :4]
    ours, _ = _conv_fns(big)
    assert fast_conv.conv_flops(x.shape, w.shape, (1, 1), ((1, 1), (1, 1))) >= fast_conv.MIN_MATMUL_FLOPS
    assert jax.default_backend() == "cpu"

    def weight_gradient():  # a new function per mode: jit caches traces by function
        return lambda x, w: jax.grad(lambda w_: jnp.sum(ours(x, w_)))(w)

    with fast_conv.using("auto"):
        # on CPU the weight gradient is 9 products and no backward-filter convolution
        assert _hlo_counts(weight_gradient(), x, w) == (0, 9)
        assert _hlo_counts(weight_gradient(), small, w) == (1, 0)  # below the threshold: XLA's own
    with fast_conv.using("xla"):
        assert _hlo_counts(weight_gradient(), x, w) == (1, 0)


def test_auto_takes_the_planar_sums_for_one_input_channel_at_any_size():
    """A one-channel convolution far below MIN_MATMUL_FLOPS (LeNet's first, batch 2): in 'auto' on CPU its forward
    and input gradient contain no convolution, and equal XLA's."""
    cfg = (2, 12, 12, 1, 6, 5, 1, 0, 1, 1, 1)
    x, w = _inputs(cfg, jnp.float32)
    assert fast_conv.conv_flops(x.shape, w.shape, (1, 1), ((0, 0), (0, 0))) < fast_conv.MIN_MATMUL_FLOPS
    ours, xla = _conv_fns(cfg)
    input_gradient = lambda conv: lambda x, w: jax.grad(lambda x_: jnp.sum(conv(x_, w) ** 2))(x)  # noqa: E731
    with fast_conv.using("auto"):
        assert _hlo_counts(ours, x, w)[0] == 0
        assert _hlo_counts(input_gradient(ours), x, w)[0] == 0
        got = jax.jit(ours)(x, w), jax.jit(input_gradient(ours))(x, w)
    want = jax.jit(xla)(x, w), jax.jit(input_gradient(xla))(x, w)
    for a, b in zip(got, want):
        assert _relerr(a, b) <= 1e-5


@pytest.mark.parametrize("batch,stride,padding", [(3, 1, 0), (2, 2, 2)])
def test_one_channel_forward_both_forms_equal_xla(batch, stride, padding):
    """The undifferentiated forward (one broadcast sum) and the differentiated one (planes stacked per
    channel) of a one-input-channel convolution: both equal XLA's."""
    cfg = (batch, 13, 13, 1, 6, 5, stride, padding, 1, 1, 1)
    x, w = _inputs(cfg, jnp.float32)
    ours, xla = _conv_fns(cfg)
    want = jax.jit(xla)(x, w)
    pads = ((padding, padding), (padding, padding))
    for stacked in (False, True):
        got = jax.jit(lambda x, w: fast_conv.thin_input_forward(x, w, (stride, stride), pads, stacked=stacked))(x, w)
        assert _relerr(got, want) <= 1e-5, stacked
    with fast_conv.using("matmul"):
        assert _relerr(jax.jit(ours)(x, w), want) <= 1e-5


def test_modes_are_checked():
    from dfkd_jax import config as config_lib, methods

    with pytest.raises(ValueError, match="auto, matmul, xla"):
        fast_conv.set_implementation("fast")
    assert fast_conv.implementation() == "auto"
    cfg = methods.configure(config_lib.base_config(), "dfad")
    cfg.conv_impl = "fast"
    with pytest.raises(ValueError, match="config.conv_impl must be one of auto, matmul, xla"):
        config_lib.validate(cfg)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 9, 7, 2)], ids=["even", "odd"])
def test_max_pool_gradient_equals_xla(shape):
    """models.layers.max_pool2x's fused gradient against XLA's, on random inputs and after a ReLU (ties of zeros)."""
    from flax import linen as nn

    from dfkd_jax.models.layers import max_pool2x

    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    out_shape = (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
    dy = jax.random.normal(jax.random.PRNGKey(1), out_shape)
    for pre in (lambda a: a, nn.relu):
        with fast_conv.using("auto"):
            ours = jax.vjp(lambda a: max_pool2x(pre(a)), x)
        xla = jax.vjp(lambda a: nn.max_pool(pre(a), (2, 2), strides=(2, 2)), x)
        np.testing.assert_array_equal(ours[0], xla[0])
        np.testing.assert_array_equal(ours[1](dy)[0], xla[1](dy)[0])
