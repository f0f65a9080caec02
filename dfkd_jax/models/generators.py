"""Generators of the online-generator and inversion families (NHWC outputs).

``DAFLGenerator`` is DFAD's ``GeneratorA`` (and, with ``bn_eps=0.8``, DAFL's own
``Generator``); ``DAFLGeneratorSN`` is the same network with spectral normalisation on
its convolutions (PRE-DFKD's novel-sample generator); ``ZSKTGenerator`` is ZSKT's
(no Tanh, an affine BatchNorm last); ``CMIGenerator`` is the CMI/Fast ``Generator`` and
``LargeGenerator`` CMI's ``LargeGenerator`` (DFQ's generator in the CMI benchmark; with
the ``'normal'`` init it is also CuDFKD's and AdaDFKD's ``DCGAN_Generator_CIFAR10`` at
depth 2, which has the same layers). All start from ``Linear(nz -> w*ngf*(s/4)^2)``
viewed as an NCHW map (the view order is reproduced so converted weights agree), then
two nearest x2 upsamplings with 3x3 convolutions.

Two fields mirror the reference code bases' choices, both off (PyTorch defaults) unless
a method sets them (``config.generator.bn_eps``, ``config.generator.init``):

* ``bn_eps``: epsilon of the BatchNorms that follow a convolution. DAFL's and
  PRE-DFKD's ``nn.BatchNorm2d(128, 0.8)`` passes 0.8 as the *eps* argument.
* ``init_scheme`` (applied by ``initialize``): ``'torch'`` keeps PyTorch's default init;
  ``'uniform'`` draws every conv and linear weight from U(-0.08, 0.08) with zero biases
  (PRE-DFKD); ``'normal'`` draws them from N(0, 0.02) with zero biases and BatchNorm
  scales from N(1, 0.02) (the ``reset_model`` of CuDFKD and AdaDFKD).

BatchNorm in train mode normalises with the statistics of the (global) batch and moves
the running averages; in eval mode (``train=False``) it uses the running averages, which
is how the CMI-derived code bases sample the student's batches (``generator_mode`` in ``dfkd_jax.synthesis.online``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dfkd_jax.models.layers import batch_norm, conv, conv_transpose, dense, torch_view_to_nhwc, upsample2x

INIT_SCHEMES = ("torch", "uniform", "normal")


def _bn(train: bool, name: str, eps: float = 1e-5, affine: bool = True, dtype: Any = jnp.float32):
    """``layers.batch_norm`` with epsilon ``eps`` (PyTorch's ``BatchNorm2d(c, eps)``)."""
    layer = batch_norm(train, affine=affine, dtype=dtype)
    return layer.clone(parent=layer.parent, name=name, epsilon=float(eps))


class DAFLGenerator(nn.Module):
    """DAFL (Chen et al., ICCV 2019) / DFAD (Fang et al., 2019) ``GeneratorA``.

    Output: ``Tanh`` followed by a BatchNorm without affine parameters, i.e. each
    channel standardised over the batch. The teacher consumes it directly, with no
    further normalisation (its statistics already match a normalised input).
    PyTorch keys: ``l1.0``, ``conv_blocks0.0``, ``conv_blocks1.{0,1}``,
    ``conv_blocks2.{0,1,3,5}``.
    """

    nz: int = 100
    ngf: int = 64
    channels: int = 1
    img_size: int = 32
    dtype: Any = jnp.float32
    bn_eps: float = 1e-5  # of conv_blocks1_1 and conv_blocks2_1 (DAFL: 0.8)
    init_scheme: str = "torch"  # see ``initialize``
    # 'standardized': already in the networks' input space (no normaliser applied)
    output_space = "standardized"
    # class-level switches (not constructor fields): DAFLGeneratorSN and ZSKTGenerator set them
    spectral_norm = False
    output_tanh = True  # Tanh before the last BatchNorm
    output_affine = False  # the last BatchNorm has a scale and a bias

    @nn.nowrap
    def _conv(self, h, features: int, in_features: int, name: str, train: bool):
        """3x3 conv (padding 1), wrapped in ``nn.SpectralNorm`` when ``spectral_norm``.

        The wrapped conv keeps its own name, so the ``params`` tree is the same as
        without spectral norm; the power-iteration state (``u``, ``sigma``) sits in
        ``batch_stats`` under ``<name>_sn`` and is updated when ``train``.
        """
        layer = conv(features, 3, in_features, padding=1, name=name, dtype=self.dtype)
        if not self.spectral_norm:
            return layer(h)
        return nn.SpectralNorm(layer, n_steps=1, name=f"{name}_sn")(h, update_stats=train)

    @nn.compact
    def __call__(self, z, train: bool = True):
        s = self.img_size // 4
        c = 2 * self.ngf
        h = dense(c * s * s, self.nz, name="l1_0", dtype=self.dtype)(z.astype(self.dtype))
        h = torch_view_to_nhwc(h, c, s)
        h = batch_norm(train, name="conv_blocks0_0", dtype=self.dtype)(h)
        h = upsample2x(h)
        h = self._conv(h, c, c, "conv_blocks1_0", train)
        h = nn.leaky_relu(_bn(train, "conv_blocks1_1", self.bn_eps, dtype=self.dtype)(h), 0.2)
        h = upsample2x(h)
        h = self._conv(h, self.ngf, c, "conv_blocks2_0", train)
        h = nn.leaky_relu(_bn(train, "conv_blocks2_1", self.bn_eps, dtype=self.dtype)(h), 0.2)
        h = self._conv(h, self.channels, self.ngf, "conv_blocks2_3", train)
        if self.output_tanh:
            h = jnp.tanh(h)
        h = batch_norm(train, name="conv_blocks2_5", affine=self.output_affine, dtype=self.dtype)(h)
        return h.astype(jnp.float32)


class DAFLGeneratorSN(DAFLGenerator):
    """PRE-DFKD's novel-sample generator (Binici et al., AAAI 2022): ``DAFLGenerator``
    with spectral normalisation (Miyato et al., ICLR 2018) on its three convolutions.

    Each conv kernel, viewed as a ``(k*k*in, out)`` matrix, is divided by its
    largest singular value, estimated by one power iteration per call from the
    vector ``u`` kept in ``batch_stats`` (``<conv name>_sn``). With
    ``train=True`` and ``mutable=['batch_stats']`` (how the engine calls
    generators) ``u`` and ``sigma`` are updated, so the estimate converges over
    the steps, as in ``torch.nn.utils.spectral_norm`` in training mode. The
    linear layer and the BatchNorms are not normalised. Same fields, same
    ``params`` tree and parameter count as ``DAFLGenerator``; ``batch_stats``
    additionally holds ``u`` (``(1, out)``) and ``sigma`` per conv.

    Flax quirk: ``init`` stores each conv kernel already divided by the first
    power-iteration estimate (from the random initial ``u``), and ``sigma``
    as 1. Only the kernels' scale differs from ``DAFLGenerator``'s init with
    the same key; the forward pass is invariant to that scale.
    """

    spectral_norm = True


class ZSKTGenerator(DAFLGenerator):
    """ZSKT's generator (Micaelli & Storkey, NeurIPS 2019; ``models/generator.py`` of the
    released code): ``DAFLGenerator``'s layers without the Tanh, ending in a BatchNorm
    *with* scale and bias (``nn.BatchNorm2d(3, affine=True)``). Its output is a
    standardised image like GeneratorA's. Same ``params`` tree as ``DAFLGenerator`` plus
    the last BatchNorm's ``scale`` and ``bias``.
    """

    output_tanh = False
    output_affine = True


class CMIGenerator(nn.Module):
    """CMI (Fang et al., IJCAI 2021) / Fast (Fang et al., AAAI 2022) ``Generator``.

    Output in [0, 1] (Sigmoid); the synthesiser normalises it with the teacher's
    constants. PyTorch keys: ``l1.0``, ``conv_blocks.{0,2,3,6,7,9}``.
    2,328,899 parameters at nz=256, ngf=64, 32x32x3.
    """

    nz: int = 256
    ngf: int = 64
    channels: int = 3
    img_size: int = 32
    dtype: Any = jnp.float32
    bn_eps: float = 1e-5  # of conv_blocks_3 and conv_blocks_7
    init_scheme: str = "torch"  # see ``initialize``
    # 'pixels': images in [0, 1]; the engine normalises them with the teacher's mean/std
    output_space = "pixels"
    width = 2  # the first stage has width * ngf channels

    @nn.compact
    def __call__(self, z, train: bool = True):
        s = self.img_size // 4
        c0, c = self.width * self.ngf, 2 * self.ngf
        h = dense(c0 * s * s, self.nz, name="l1_0", dtype=self.dtype)(z.astype(self.dtype))
        h = torch_view_to_nhwc(h, c0, s)
        h = batch_norm(train, name="conv_blocks_0", dtype=self.dtype)(h)
        h = upsample2x(h)
        h = conv(c, 3, c0, padding=1, use_bias=False, name="conv_blocks_2", dtype=self.dtype)(h)
        h = nn.leaky_relu(_bn(train, "conv_blocks_3", self.bn_eps, dtype=self.dtype)(h), 0.2)
        h = upsample2x(h)
        h = conv(self.ngf, 3, c, padding=1, use_bias=False, name="conv_blocks_6", dtype=self.dtype)(h)
        h = nn.leaky_relu(_bn(train, "conv_blocks_7", self.bn_eps, dtype=self.dtype)(h), 0.2)
        h = conv(self.channels, 3, self.ngf, padding=1, name="conv_blocks_9", dtype=self.dtype)(h)
        return nn.sigmoid(h).astype(jnp.float32)


class LargeGenerator(CMIGenerator):
    """CMI's ``LargeGenerator`` (``datafree/models/generator.py``), DFQ's generator in the
    CMI benchmark (``datafree_kd.py``: ``LargeGenerator(nz=256, ngf=64)``): ``CMIGenerator``
    with a first stage of 4*ngf channels, ``Linear(nz -> 4*ngf*(s/4)^2)``, BN, x2, conv
    4*ngf -> 2*ngf, BN, LeakyReLU, x2, conv 2*ngf -> ngf, BN, LeakyReLU, conv -> nc, Sigmoid.

    CuDFKD's and AdaDFKD's ``DCGAN_Generator_CIFAR10`` at ``d=2`` (their CIFAR scripts) is
    the same stack of layers under other key names (``project.1``, ``main.*``); those
    code bases re-initialise it with N(0, 0.02) (``init='normal'``).
    """

    width = 4


def _reinit_leaf(scheme: str, key, path: tuple[str, ...], value):
    leaf = path[-1]
    if leaf == "kernel":
        if scheme == "uniform":
            return jax.random.uniform(key, value.shape, value.dtype, -0.08, 0.08)
        return 0.02 * jax.random.normal(key, value.shape, value.dtype)
    if leaf == "bias":
        return jnp.zeros_like(value)
    if leaf == "scale" and scheme == "normal":
        return 1.0 + 0.02 * jax.random.normal(key, value.shape, value.dtype)
    return value


def reinitialize(params, key, scheme: str):
    """``params`` with every conv/linear weight (``kernel``) and bias re-drawn by ``scheme``
    (module docstring); BatchNorm scales too for ``'normal'``. ``'torch'`` returns them as they are."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"Unknown generator init {scheme!r}. Valid names: {', '.join(INIT_SCHEMES)}.")
    if scheme == "torch":
        return params
    flat = jax.tree_util.tree_flatten_with_path(params)
    leaves = [_reinit_leaf(scheme, jax.random.fold_in(key, i), tuple(str(getattr(k, "key", k)) for k in path), v)
              for i, (path, v) in enumerate(flat[0])]
    return jax.tree_util.tree_unflatten(flat[1], leaves)


def initialize(module: nn.Module, key, *args, init: str | None = None, **kwargs) -> dict:
    """``module.init(key, *args, **kwargs)`` with the params re-drawn by the init scheme ``init``
    (default: the module's own ``init_scheme`` field). The engine initialises generators and the VAE
    memory through this, so the reference code bases' init schemes need no change to the layers."""
    variables = module.init(key, *args, **kwargs)
    scheme = init if init is not None else getattr(module, "init_scheme", "torch")
    params = reinitialize(variables["params"], jax.random.fold_in(key, 0x1417), scheme)
    return {**variables, "params": params}


class GeneratorB(nn.Module):
    """DFAD's segmentation generator ``GeneratorB`` (Fang et al. 2019; a DCGAN generator).

    ``project.1`` Linear(nz -> 8 ngf (H/16)(W/16)) viewed as an NCHW map, ``main.0`` BN,
    then four x2 upsamplings 8ngf -> 4ngf -> 2ngf -> ngf -> ngf, each a transposed conv
    4x4 stride 2 padding 1 without bias (``main.1/4/7/10``), BN (``main.2/5/8/11``) and
    LeakyReLU(0.2); ``main.13`` Conv3x3 ngf -> channels (bias), Tanh. The output lies in
    [-1, 1]; the engine reads it as pixels ``(y + 1) / 2`` and normalises them with the
    teacher's constants (the identity for DFAD's mean 0.5, std 0.5). ``img_size`` is an
    int or ``(H, W)``, each divisible by 16. DFAD's GeneratorB draws N(0, 0.02) weights, zero
    biases and N(1, 0.02) BN scales: ``init_scheme='normal'`` (``config.generator.init``; the
    DFAD segmentation setting sets it), PyTorch's default init otherwise.

    ``upsample='resize'`` swaps each transposed conv for nearest x2 upsampling and a 3x3
    conv (padding 1, no bias) under the same name: the same map sizes and widths, 3x3
    instead of 4x4 kernels (so DFAD checkpoints convert to the ``'transpose'`` form only).
    ``dfkd_jax.models.GENERATORS`` registers both (``dfad_b``, ``dfad_b_resize``);
    docs/models.md has their speeds.
    """

    nz: int = 256
    ngf: int = 64
    channels: int = 3
    img_size: Any = 128
    upsample: str = "transpose"  # 'transpose' | 'resize'
    bn_eps: float = 1e-5
    init_scheme: str = "torch"  # see ``initialize``; DFAD's own GeneratorB init is ``'normal'``
    dtype: Any = jnp.float32
    output_space = "tanh"
    rectangular = True  # img_size may be (H, W)

    @nn.compact
    def __call__(self, z, train: bool = True):
        h, w = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
        if h % 16 or w % 16:
            raise ValueError(f"GeneratorB needs image sides divisible by 16, got {h}x{w}.")
        c = 8 * self.ngf
        x = dense(c * (h // 16) * (w // 16), self.nz, name="project_1", dtype=self.dtype)(z.astype(self.dtype))
        x = x.reshape(x.shape[0], c, h // 16, w // 16).transpose(0, 2, 3, 1)
        x = _bn(train, "main_0", self.bn_eps, dtype=self.dtype)(x)
        widths = (4 * self.ngf, 2 * self.ngf, self.ngf, self.ngf)
        for i, out in enumerate(widths):
            name = f"main_{1 + 3 * i}"
            if self.upsample == "transpose":
                x = conv_transpose(out, 4, c, stride=2, padding=1, use_bias=False, name=name, dtype=self.dtype)(x)
            elif self.upsample == "resize":
                x = conv(out, 3, c, padding=1, use_bias=False, name=name, dtype=self.dtype)(upsample2x(x))
            else:
                raise ValueError(f"GeneratorB upsample must be 'transpose' or 'resize', not {self.upsample!r}.")
            x = nn.leaky_relu(_bn(train, f"main_{2 + 3 * i}", self.bn_eps, dtype=self.dtype)(x), 0.2)
            c = out
        x = conv(self.channels, 3, c, padding=1, name="main_13", dtype=self.dtype)(x)
        return jnp.tanh(x).astype(jnp.float32)
