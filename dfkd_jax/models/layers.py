"""Layer factories with PyTorch semantics, shared by every model.

Names follow the PyTorch modules they mirror so that checkpoint conversion is a
renaming (see ``dfkd_jax.convert``). Initialisation follows PyTorch's defaults
(conv/linear kernels U(+-1/sqrt(fan_in)) == variance_scaling(1/3, fan_in, uniform),
biases U(+-1/sqrt(fan_in))), so teachers trained from scratch here behave like
the reference ones. Padding is always explicit: ``'SAME'`` pads one side only
for stride-2 convolutions on even inputs, unlike PyTorch.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dfkd_jax.models import fast_conv

Dtype = Any

torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
    """PyTorch's default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv(features: int, kernel: int, in_features: int, *, stride: int = 1, padding: int = 0,
         dilation: int = 1, use_bias: bool = True, name: str | None = None,
         dtype: Dtype = jnp.float32, groups: int = 1) -> nn.Conv:
    """``nn.Conv`` equivalent to ``torch.nn.Conv2d(in, features, kernel, stride, padding)``.

    Its weight gradient is computed by ``dfkd_jax.models.fast_conv`` (matrix products per
    kernel tap on CPU, where XLA's own is ~20x slower than the forward pass; XLA's elsewhere).
    """
    fan_in = (in_features // groups) * kernel * kernel
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((padding, padding), (padding, padding)),
                   kernel_dilation=(dilation, dilation), feature_group_count=groups,
                   use_bias=use_bias, kernel_init=torch_kernel_init,
                   bias_init=torch_bias_init(fan_in), dtype=dtype, param_dtype=jnp.float32,
                   conv_general_dilated=fast_conv.conv_general_dilated, name=name)


def dense(features: int, in_features: int, *, use_bias: bool = True, name: str | None = None,
          dtype: Dtype = jnp.float32) -> nn.Dense:
    """``nn.Dense`` equivalent to ``torch.nn.Linear(in_features, features)``."""
    return nn.Dense(features, use_bias=use_bias, kernel_init=torch_kernel_init,
                    bias_init=torch_bias_init(in_features), dtype=dtype,
                    param_dtype=jnp.float32, name=name)


def batch_norm(train: bool, *, name: str | None = None, affine: bool = True,
               dtype: Dtype = jnp.float32) -> nn.BatchNorm:
    """``torch.nn.BatchNorm2d``/``1d``: eps 1e-5, PyTorch momentum 0.1 == Flax momentum 0.9.

    In train mode the statistics are those of the (global) batch; the running
    averages are updated in the ``batch_stats`` collection. Every model uses this
    factory, so the teacher's BN inputs can be captured by intercepting
    ``nn.BatchNorm.__call__`` (see ``dfkd_jax.bn_capture``).
    """
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        use_scale=affine, use_bias=affine, dtype=dtype,
                        param_dtype=jnp.float32, name=name)


def upsample2x(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2 upsampling of NHWC maps (``nn.Upsample(scale_factor=2)``)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def max_pool2x(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (2, 2), strides=(2, 2))


def torch_view_to_nhwc(x: jax.Array, channels: int, size: int) -> jax.Array:
    """PyTorch ``x.view(B, C, H, W)`` followed by NCHW -> NHWC."""
    return x.reshape(x.shape[0], channels, size, size).transpose(0, 2, 3, 1)


def conv_transpose(features: int, kernel: int, in_features: int, *, stride: int = 1, padding: int = 0,
                   use_bias: bool = True, name: str | None = None,
                   dtype: Dtype = jnp.float32) -> nn.ConvTranspose:
    """``nn.ConvTranspose`` equivalent to ``torch.nn.ConvTranspose2d(in, features, kernel, stride, padding)``.

    Output size ``(H - 1) * stride - 2 * padding + kernel``, as PyTorch. The kernel is
    ``(k, k, features, in)`` with ``transpose_kernel=True``, so a PyTorch weight
    ``[in, out, k, k]`` converts with the same transpose (2, 3, 1, 0) as a ``Conv2d``
    weight; the padding of the dilated input is ``k - 1 - padding`` on each side.
    PyTorch's default init reads its fan-in off the weight's second axis
    (``out * k * k``), and so does the Flax initialiser on this kernel shape.
    """
    pad = kernel - 1 - padding
    return nn.ConvTranspose(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                            use_bias=use_bias, transpose_kernel=True, kernel_init=torch_kernel_init,
                            bias_init=torch_bias_init(features * kernel * kernel), dtype=dtype,
                            param_dtype=jnp.float32, name=name)


def max_pool(x: jax.Array, kernel: int, stride: int, padding: int = 0) -> jax.Array:
    """``nn.MaxPool2d(kernel, stride, padding)`` on NHWC maps (padding counts as -inf, as PyTorch)."""
    return nn.max_pool(x, (kernel, kernel), strides=(stride, stride), padding=((padding, padding), (padding, padding)))


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """``F.interpolate(x, size, mode='bilinear', align_corners=False)`` for NHWC maps, when enlarging.

    ``jax.image.resize`` samples at half-pixel centres and renormalises the weights at
    the borders, which for upsampling is PyTorch's clamping of source coordinates; it
    anti-aliases when shrinking, where PyTorch does not, so only enlarging is allowed.
    """
    h, w = x.shape[1:3]
    if size[0] < h or size[1] < w:
        raise ValueError(f"resize_bilinear only enlarges ({h}x{w} -> {size[0]}x{size[1]}).")
    if (h, w) == tuple(size):
        return x
    return jax.image.resize(x, (x.shape[0], size[0], size[1], x.shape[3]), "bilinear").astype(x.dtype)
