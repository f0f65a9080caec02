"""Convolutions that are fast on XLA:CPU: matrix-product formulations where XLA's are slow.

XLA:CPU computes the gradient of a convolution with respect to its *weights* 10-20x more
slowly than the convolution itself (2.6 GFLOP/s against 52 for a 3x3, 128 -> 64 channel
convolution at 32x32, batch 256, on two cores: the backward-filter convolution has the
output's spatial size as its "kernel", a shape XLA's CPU convolutions handle badly), and
convolutions with one input channel, or few output channels, run at a few GFLOP/s in both
directions. Every training step of every network pays for them. ``conv_general_dilated``
here is ``lax.conv_general_dilated`` with a ``jax.custom_vjp`` whose three computations each
use, on CPU, the faster of XLA's convolution and a formulation as matrix products over the
kernel taps. With the input padded, tap ``(i, j)`` of a convolution with stride ``s`` and
dilation ``d`` reads the strided slice ``X_ij = x_pad[:, i d::s, j d::s, :]``
(``OH x OW`` positions, flattened to ``(M, C_in)``, ``M = N OH OW``), and:

- forward ``Y = sum_ij X_ij W_ij``: XLA's convolution, except for an input of one channel
  (grayscale images: LeNet's first convolution), at any size: the sum of ``w_ij`` times the
  tap's slice, computed as one ``(N, OH, OW)`` plane per output channel and transposed to NHWC
  (``thin_input_forward``). The same sum in NHWC works on vectors of ``C_out`` lanes and made
  ZSKT's and AdaDFKD's rounds 13-20% slower than XLA's; as planes it is several times faster
  than XLA's (LeNet-5's alone, batch 100, one core: 0.5 ms as one broadcast sum, 4.3 ms stacked
  per channel under differentiation, against 7.0 ms; docs/performance.md);
- weight gradient ``dW_ij = X_ij^T dY``: one product per tap (``'shift_x'``: ``kh kw``
  slices of the input are copied), or, when the output has fewer channels than the input,
  ``dY`` placed at each tap's input positions and stacked, ``D`` of
  ``(N Hp Wp, kh kw C_out)``, then one product ``X_pad^T D`` (``'shift_dy'``): the
  strategy that copies fewer bytes; with fewer than 4 output channels (a generator's image
  layer) the product is taken per image and summed (XLA:CPU's single long product there is
  slower than its own convolution, 0.3-0.8 s against 0.09 s per image-and-sum). With ``g`` groups the products are batched over groups
  (a depthwise convolution is a per-channel multiply-and-sum);
- input gradient ``dX_pad = sum_ij shift_ij(dY W_ij^T)``: for one input channel the taps'
  shifted, weighted sums of ``dY``'s planes (``thin_input_gradient``); otherwise one product
  ``dY W^T`` of ``(M, kh kw C_in)`` then the taps' shifted sums (col2im), when that product is small
  (``kh kw C_in <= COL2IM_MAX_WIDTH`` or ``M kh kw C_in <= COL2IM_MAX_ELEMENTS``); XLA's
  transposed convolution otherwise.

An input dilation (a transposed convolution written as a convolution, ``lhs_dilation > 1``)
is applied to the input explicitly for the weight gradient; the forward and input gradient
then stay XLA's. Convolutions whose FLOPs are below ``MIN_MATMUL_FLOPS`` keep XLA's three (one input channel excepted):
there the two take about as long and XLA's compile faster (tests and tiny models compile
many of them). The thresholds come from measurements on two cores (docs/performance.md,
``tools/benchmark.py --suite cpu-speed``).

Results equal XLA's up to float summation order (``tests/test_fast_conv.py``). Where XLA's
convolutions are not slow (GPU, TPU) they are kept: mode ``'auto'`` (the default) chooses
per platform when the function is lowered (``lax.platform_dependent``); ``'matmul'`` uses
the formulations above on every platform and every size (tests), ``'xla'`` never. The mode
is read when a function is traced: set it first (``set_implementation``, the environment
variable ``DFKD_JAX_CONV``, or ``config.conv_impl`` of a run).

Memory: XLA:CPU schedules all tap copies of a weight gradient before its products, so a
training step's buffers grow by up to ``kh kw`` copies of its largest convolution input
(DFAD's GeneratorA at ngf 64, batch 256: 0.85 -> 1.90 GiB for a round).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

IMPLEMENTATIONS = ("auto", "matmul", "xla")
ENV_VAR = "DFKD_JAX_CONV"

# below this many FLOPs a convolution keeps XLA's computations on CPU too (as fast, compile faster)
MIN_MATMUL_FLOPS = 20e6
# matrix-product weight gradient when both channel counts (per group) reach this; below, the tap
# slices are too thin to copy fast and XLA's own (routed through YNNPACK on CPU) is faster
WEIGHT_GRADIENT_MIN_CHANNELS = 8
# col2im input gradient when the product dY W^T is this narrow, or this small in all
COL2IM_MAX_WIDTH = 100
COL2IM_MAX_ELEMENTS = 2**20

# the layout every model of the project uses (Flax's default for 2D convolutions)
_NHWC = ("NHWC", "HWIO", "NHWC")


def _checked(mode: str, source: str) -> str:
    if mode not in IMPLEMENTATIONS:
        raise ValueError(f"Unknown convolution implementation {mode!r} ({source}). "
                         f"Valid: {', '.join(IMPLEMENTATIONS)}.")
    return mode


_mode = _checked(os.environ.get(ENV_VAR, "auto"), ENV_VAR)


def set_implementation(mode: str) -> None:
    """How convolutions traced from now on compute (see the module docstring)."""
    global _mode
    _mode = _checked(mode, "set_implementation")


def implementation() -> str:
    return _mode


@contextlib.contextmanager
def using(mode: str):
    """``set_implementation`` for a ``with`` block (restores the previous mode)."""
    previous = _mode
    set_implementation(mode)
    try:
        yield
    finally:
        set_implementation(previous)


def _is_nhwc(dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
    return tuple(dimension_numbers) == _NHWC


def _pairs(padding) -> tuple[tuple[int, int], ...] | None:
    """Explicit ``((lo, hi), (lo, hi))`` padding, or None for string paddings."""
    if isinstance(padding, str):
        return None
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def _tuple2(v) -> tuple[int, int]:
    if v is None:
        return (1, 1)
    if isinstance(v, int):
        return (v, v)
    return tuple(int(a) for a in v)


def _output_hw(x_shape, w_shape, strides, pads, lhs_dilation, rhs_dilation) -> tuple[int, int]:
    out = []
    for size, k, s, (lo, hi), ld, d in zip(x_shape[1:3], w_shape[:2], strides, pads, lhs_dilation, rhs_dilation):
        out.append(max(((size - 1) * ld + 1 + lo + hi - (k - 1) * d - 1) // s + 1, 0))
    return out[0], out[1]


def conv_flops(x_shape, w_shape, strides, pads, lhs_dilation=(1, 1), rhs_dilation=(1, 1)) -> int:
    """FLOPs of the convolution (and of each of its two gradients), from static shapes."""
    oh, ow = _output_hw(x_shape, w_shape, strides, pads, lhs_dilation, rhs_dilation)
    kh, kw, cig, co = w_shape
    return 2 * x_shape[0] * oh * ow * kh * kw * cig * co


def _tap_slices(xp, oh, ow, kernel_hw, strides, rhs_dilation):
    """The ``kh kw`` strided slices ``(N, OH, OW, C)`` of the padded input that the kernel taps read."""
    (kh, kw), (sh, sw), (dh, dw) = kernel_hw, strides, rhs_dilation
    n, _, wp, c = xp.shape
    for i in range(kh):
        # kernel row i's input rows once, then one slice per column: cheaper copies than 2D slices
        rows = lax.slice(xp, (0, i * dh, 0, 0), (n, i * dh + (oh - 1) * sh + 1, wp, c), (1, sh, 1, 1))
        for j in range(kw):
            yield lax.slice(rows, (0, 0, j * dw, 0), (n, oh, j * dw + (ow - 1) * sw + 1, c), (1, 1, sw, 1))


def _pad_input(x, padding):
    return jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))


def matmul_forward(x, w, strides, padding, rhs_dilation=(1, 1)):
    """``conv(x, w)`` (NHWC, HWIO, no groups) as the sum over taps of ``X_ij W_ij``, float32 accumulation."""
    kh, kw, ci, co = w.shape
    oh, ow = _output_hw(x.shape, w.shape, strides, padding, (1, 1), rhs_dilation)
    m = x.shape[0] * oh * ow
    taps = _tap_slices(_pad_input(x, padding), oh, ow, (kh, kw), strides, rhs_dilation)
    w_taps = w.reshape(kh * kw, ci, co)
    y = sum(lax.dot(t.reshape(m, ci), w_taps[k], preferred_element_type=jnp.float32) for k, t in enumerate(taps))
    return y.reshape(x.shape[0], oh, ow, co).astype(x.dtype)


def matmul_input_gradient(dy, w, x_shape, strides, padding, rhs_dilation=(1, 1)):
    """``dL/dx`` of ``conv(x, w)`` (no groups, no input dilation) by col2im.

    ``Z = dY W^T`` gives, for every output position and tap, what that tap sends back to
    the input position it read; each tap's slice of ``Z`` is placed at those positions of
    the padded input (``lax.pad`` with the stride as interior padding) and the taps are
    summed, then the padding is cropped.
    """
    kh, kw, ci, co = w.shape
    (sh, sw), (dh, dw) = strides, rhs_dilation
    n, oh, ow, _ = dy.shape
    hp, wp = x_shape[1] + sum(padding[0]), x_shape[2] + sum(padding[1])
    z = lax.dot_general(dy.reshape(-1, co), w.reshape(kh * kw * ci, co), (((1,), (1,)), ((), ())),
                        preferred_element_type=jnp.float32).reshape(n, oh, ow, kh * kw, ci)
    zero = jnp.zeros((), z.dtype)
    dx = None
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            placed = lax.pad(z[:, :, :, i * kw + j, :], zero,
                             ((0, 0, 0), (top, hp - top - (oh - 1) * sh - 1, sh - 1),
                              (left, wp - left - (ow - 1) * sw - 1, sw - 1), (0, 0, 0)))
            dx = placed if dx is None else dx + placed
    (pt, _), (pl, _) = padding
    return dx[:, pt:pt + x_shape[1], pl:pl + x_shape[2], :].astype(dy.dtype)


def thin_input_forward(x, w, strides, padding, rhs_dilation=(1, 1), stacked: bool = False):
    """``conv(x, w)`` for one input channel (NHWC, HWIO ``(kh, kw, 1, C_out)``), in planar layout.

    Each output channel is the sum over taps of ``w[i, j, 0, c]`` times the strided slice of the
    padded ``(N, Hp, Wp)`` image that the tap reads, computed as ``(C_out, N, OH, OW)`` planes and
    transposed to NHWC once. With the channel innermost (NHWC) the same sum runs on vectors of
    ``C_out`` lanes; as planes it runs on image rows (LeNet-5's first convolution alone, batch 100,
    one core: 0.5 ms, 4.3 ms stacked, against XLA's 7.0 ms; docs/performance.md). Float32 accumulation.

    ``stacked=False`` sums broadcast ``(C_out, ...)`` products in one elementwise expression, which
    XLA:CPU fuses into its consumers: the fastest forward where nothing differentiates through it.
    Under differentiation XLA also fuses that sum into the backward pass's loops that read the
    output (the ReLU and max-pool masks), recomputing the 25 taps there: ``stacked=True`` builds
    the planes channel by channel and stacks them, a concatenate that XLA:CPU computes once.
    """
    kh, kw, _, co = w.shape
    oh, ow = _output_hw(x.shape, w.shape, strides, padding, (1, 1), rhs_dilation)
    xp = _pad_input(x, padding)[..., 0].astype(jnp.float32)
    wt = w.astype(jnp.float32).reshape(kh * kw, co)
    (sh, sw), (dh, dw) = strides, rhs_dilation
    n = x.shape[0]
    taps = [lax.slice(xp, (0, i * dh, j * dw), (n, i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1),
                      (1, sh, sw)) for i in range(kh) for j in range(kw)]
    if stacked:
        planes = jnp.stack([sum(wt[t, c] * tap for t, tap in enumerate(taps)) for c in range(co)])
    else:
        planes = sum(wt[t][:, None, None, None] * tap[None] for t, tap in enumerate(taps))
    return jnp.transpose(planes, (1, 2, 3, 0)).astype(x.dtype)


def thin_input_gradient(dy, w, x_shape, strides, padding, rhs_dilation=(1, 1)):
    """``dL/dx`` of ``conv(x, w)`` for one input channel, in planar layout (``thin_input_forward``).

    ``dy`` is transposed once to ``(C_out, N, OH, OW)`` planes and padded once (the stride as
    interior padding) so that every tap's contribution to the padded input is one slice of it;
    ``w[i, j, 0, c]`` times those slices are summed channel by channel (one fused loop on CPU),
    then the padding is cropped: col2im without the ``(N, OH, OW, kh kw)`` product, whose taps
    NHWC slicing reads one lane at a time.
    """
    kh, kw, _, co = w.shape
    (sh, sw), (dh, dw) = strides, rhs_dilation
    n, oh, ow, _ = dy.shape
    hp, wp = x_shape[1] + sum(padding[0]), x_shape[2] + sum(padding[1])
    eh, ew = (kh - 1) * dh, (kw - 1) * dw
    planes = jnp.transpose(dy.astype(jnp.float32), (3, 0, 1, 2))
    # tap (i, j) sends output (y, x) to padded input (y sh + i dh, x sw + j dw): row r of the
    # padded input reads row r + eh - i dh of ``spread``
    spread = lax.pad(planes, jnp.zeros((), jnp.float32),
                     ((0, 0, 0), (0, 0, 0), (eh, hp - (oh - 1) * sh - 1, sh - 1), (ew, wp - (ow - 1) * sw - 1, sw - 1)))
    wt = w.astype(jnp.float32).reshape(kh * kw, co)
    dx = 0.0
    for c in range(co):
        dx = dx + sum(wt[i * kw + j, c] * lax.slice(spread, (c, 0, eh - i * dh, ew - j * dw),
                                                    (c + 1, n, eh - i * dh + hp, ew - j * dw + wp))[0]
                      for i in range(kh) for j in range(kw))
    (pt, _), (pl, _) = padding
    return dx[:, pt:pt + x_shape[1], pl:pl + x_shape[2], None].astype(dy.dtype)


def _shifted_cotangents(dy, xp_hw, kernel_hw, strides, rhs_dilation):
    """``dy`` placed where each tap's outputs read the padded input: ``(N, Hp, Wp, kh kw, C_out)``.

    Tap ``(i, j)`` of output ``(oh, ow)`` reads input ``(oh s + i d, ow s + j d)``, so
    ``sum_p x_pad[p] (x) D[p, tap]`` over all padded positions ``p`` is that tap's gradient.
    """
    (kh, kw), (sh, sw), (dh, dw) = kernel_hw, strides, rhs_dilation
    hp, wp = xp_hw
    n, oh, ow, co = dy.shape
    zero = jnp.zeros((), dy.dtype)
    cols = []
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            cols.append(lax.pad(dy, zero, ((0, 0, 0), (top, hp - top - (oh - 1) * sh - 1, sh - 1),
                                           (left, wp - left - (ow - 1) * sw - 1, sw - 1), (0, 0, 0))))
    return jnp.stack(cols, axis=3)


def _grouped_product(a, d, groups: int):
    """``a^T d`` per group: ``a`` (M, g * ca), ``d`` (M, g * cb) -> (ca, g * cb), float32."""
    m = a.shape[0]
    ca, cb = a.shape[1] // groups, d.shape[1] // groups
    if groups == 1:
        # XLA:CPU's transposed-lhs product is fastest with the wider operand second
        if ca > cb:
            return lax.dot_general(d, a, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32).T
        return lax.dot_general(a, d, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    if ca == 1 and cb == 1:  # depthwise: a multiply-and-sum per channel
        return jnp.sum(a.astype(jnp.float32) * d.astype(jnp.float32), axis=0)[None]
    out = lax.dot_general(a.reshape(m, groups, ca), d.reshape(m, groups, cb), (((0,), (0,)), ((1,), (1,))),
                          preferred_element_type=jnp.float32)  # (g, ca, cb)
    return out.transpose(1, 0, 2).reshape(ca, groups * cb)


def matmul_weight_gradient(x, dy, kernel_shape: Sequence[int], strides: Sequence[int],
                           padding: Sequence[tuple[int, int]], lhs_dilation: Sequence[int] = (1, 1),
                           rhs_dilation: Sequence[int] = (1, 1), groups: int = 1, dtype=None,
                           strategy: str = "auto"):
    """``dL/dW`` of ``conv(x, W)`` (NHWC, HWIO) given ``dy = dL/dy``, as matrix products over the taps.

    ``kernel_shape`` is ``(kh, kw, C_in / groups, C_out)``; ``padding`` explicit, non-negative.
    ``strategy``: ``'shift_x'``, ``'shift_dy'`` (module docstring; with stride ``s`` the
    shifted cotangents are ``s^2`` times sparser, and so is the product's work) or ``'auto'``:
    the one that copies fewer bytes. Products accumulate in float32; the result has ``dtype``
    (default: ``x``'s).
    """
    kh, kw, cig, co = kernel_shape
    dtype = dtype or x.dtype
    if tuple(lhs_dilation) != (1, 1):
        zero = jnp.zeros((), x.dtype)
        x = lax.pad(x, zero, ((0, 0, 0), (0, 0, lhs_dilation[0] - 1), (0, 0, lhs_dilation[1] - 1), (0, 0, 0)))
    xp = _pad_input(x, padding)
    n, hp, wp, ci = xp.shape
    _, oh, ow, _ = dy.shape
    if strategy == "auto":
        shift_x_bytes = n * oh * ow * ci
        shift_dy_bytes = n * hp * wp * co * strides[0] * strides[1]
        strategy = "shift_dy" if shift_dy_bytes < shift_x_bytes else "shift_x"
    if strategy == "shift_dy":
        taps, cog = kh * kw, co // groups
        d = _shifted_cotangents(dy, (hp, wp), (kh, kw), strides, rhs_dilation)  # (N, Hp, Wp, T, C_out)
        m = n * hp * wp
        if groups == 1 and co < WEIGHT_GRADIENT_MIN_CHANNELS:
            # few output channels (a generator's image layer): XLA:CPU's one long product is slow;
            # per image, then summed over the batch, it is 2-3x faster
            out = lax.dot_general(xp.reshape(n, hp * wp, ci), d.reshape(n, hp * wp, taps * co),
                                  (((1,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32).sum(0)
            return out.reshape(ci, kh, kw, co).transpose(1, 2, 0, 3).astype(dtype)
        d = d.reshape(m, taps, groups, cog).transpose(0, 2, 1, 3).reshape(m, groups * taps * cog)
        out = _grouped_product(xp.reshape(m, ci), d, groups)  # (cig, g * T * cog)
        out = out.reshape(cig, groups, kh, kw, cog).transpose(2, 3, 0, 1, 4)
        return out.reshape(kh, kw, cig, co).astype(dtype)
    m = n * oh * ow
    d = dy.reshape(m, co)
    out = [_grouped_product(t.reshape(m, ci), d, groups)
           for t in _tap_slices(xp, oh, ow, (kh, kw), strides, rhs_dilation)]
    return jnp.stack(out).reshape(kh, kw, cig, co).astype(dtype)


def _xla_conv(x, w, strides, padding, lhs_dilation, rhs_dilation, groups, precision):
    return lax.conv_general_dilated(x, w, strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                                    dimension_numbers=_NHWC, feature_group_count=groups, precision=precision)


def _thin_input(w_shape, lhs_dilation, groups) -> bool:
    """One input channel: XLA's forward convolution is slow, the tap products are not."""
    return groups == 1 and w_shape[2] == 1 and tuple(lhs_dilation) == (1, 1)


def _col2im_applies(x_shape, w_shape, strides, padding, lhs_dilation, rhs_dilation, groups) -> bool:
    kh, kw, ci, _ = w_shape
    if groups != 1 or tuple(lhs_dilation) != (1, 1):
        return False
    oh, ow = _output_hw(x_shape, w_shape, strides, padding, lhs_dilation, rhs_dilation)
    width = kh * kw * ci
    return width <= COL2IM_MAX_WIDTH or x_shape[0] * oh * ow * width <= COL2IM_MAX_ELEMENTS


def _on_cpu(mode: str, cpu_fn, native_fn, *args):
    """``cpu_fn`` in mode 'matmul'; in 'auto' ``cpu_fn`` on CPU and ``native_fn`` elsewhere."""
    if mode == "matmul":
        return cpu_fn(*args)
    return lax.platform_dependent(*args, cpu=cpu_fn, default=native_fn)


def _forward(x, w, strides, padding, lhs_dilation, rhs_dilation, groups, precision, mode, stacked):
    native = functools.partial(_xla_conv, strides=strides, padding=padding, lhs_dilation=lhs_dilation,
                               rhs_dilation=rhs_dilation, groups=groups, precision=precision)
    if not _thin_input(w.shape, lhs_dilation, groups):
        return native(x, w)
    return _on_cpu(mode, lambda x_, w_: thin_input_forward(x_, w_, strides, padding, rhs_dilation, stacked),
                   native, x, w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6, 7, 8))
def _conv(x, w, strides, padding, lhs_dilation, rhs_dilation, groups, precision, mode):
    """The convolution where nothing differentiates it (a teacher labelling a batch)."""
    return _forward(x, w, strides, padding, lhs_dilation, rhs_dilation, groups, precision, mode, stacked=False)


def _conv_fwd(x, w, strides, padding, lhs_dilation, rhs_dilation, groups, precision, mode):
    y = _forward(x, w, strides, padding, lhs_dilation, rhs_dilation, groups, precision, mode, stacked=True)
    return y, (x, w)


def _conv_bwd(strides, padding, lhs_dilation, rhs_dilation, groups, precision, mode, res, dy):
    x, w = res

    def xla_input_gradient(w_, dy_):
        _, vjp = jax.vjp(lambda x_: _xla_conv(x_, w_, strides, padding, lhs_dilation, rhs_dilation, groups,
                                              precision), x)
        return vjp(dy_)[0]

    def native(x_, w_, dy_):
        _, vjp = jax.vjp(lambda a, b: _xla_conv(a, b, strides, padding, lhs_dilation, rhs_dilation, groups,
                                                precision), x_, w_)
        return vjp(dy_)

    def cpu(x_, w_, dy_):
        if _thin_input(w_.shape, lhs_dilation, groups):
            dx = thin_input_gradient(dy_, w_, x_.shape, strides, padding, rhs_dilation)
        elif _col2im_applies(x.shape, w.shape, strides, padding, lhs_dilation, rhs_dilation, groups):
            dx = matmul_input_gradient(dy_, w_, x_.shape, strides, padding, rhs_dilation)
        else:
            dx = xla_input_gradient(w_, dy_)
        narrow_output = groups == 1 and w_.shape[2] >= WEIGHT_GRADIENT_MIN_CHANNELS and w_.shape[3] < 4
        if (mode == "matmul" or narrow_output
                or min(w_.shape[2], w_.shape[3] // groups) >= WEIGHT_GRADIENT_MIN_CHANNELS):
            dw = matmul_weight_gradient(x_, dy_, w_.shape, strides, padding, lhs_dilation, rhs_dilation, groups,
                                        w_.dtype)
        else:
            _, vjp_w = jax.vjp(lambda b: _xla_conv(x_, b, strides, padding, lhs_dilation, rhs_dilation, groups,
                                                   precision), w_)
            (dw,) = vjp_w(dy_)
        return dx, dw

    return _on_cpu(mode, cpu, native, x, w, dy)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
    """Drop-in for ``lax.conv_general_dilated`` (as ``flax.linen.Conv(conv_general_dilated=...)``).

    NHWC/HWIO convolutions with explicit, non-negative padding get the computations of the
    module docstring; any other call, every call in mode ``'xla'`` and, in mode ``'auto'``,
    convolutions below ``MIN_MATMUL_FLOPS`` are ``lax.conv_general_dilated`` unchanged.
    """
    pads = _pairs(padding)
    strides, lhs_dil, rhs_dil = _tuple2(window_strides), _tuple2(lhs_dilation), _tuple2(rhs_dilation)
    supported = (_mode != "xla" and _is_nhwc(dimension_numbers) and pads is not None and len(pads) == 2
                 and all(lo >= 0 and hi >= 0 for lo, hi in pads) and batch_group_count == 1
                 and preferred_element_type is None)
    if supported and _mode == "auto":
        supported = (_thin_input(rhs.shape, lhs_dil, int(feature_group_count))
                     or conv_flops(lhs.shape, rhs.shape, strides, pads, lhs_dil, rhs_dil) >= MIN_MATMUL_FLOPS)
    if not supported:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count,
                                        batch_group_count=batch_group_count, precision=precision,
                                        preferred_element_type=preferred_element_type)
    return _conv(lhs, rhs, strides, pads, lhs_dil, rhs_dil, int(feature_group_count), precision, _mode)
