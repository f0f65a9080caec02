"""Variational auto-encoder used as PRE-DFKD's generative memory (NHWC images).

Binici et al., AAAI 2022, keep past pseudo samples in a VAE instead of a buffer
of images: the VAE is trained on the novel generator's samples (and its own
replays) and decoded from optimised latents to replay them (``dfkd_jax.memory``).

* Encoder: two 3x3 stride-2 convolutions (padding 1), each followed by
  BatchNorm and LeakyReLU(0.2): ``s -> s/2 -> s/4`` with ``ngf`` then
  ``2*ngf`` channels; the map is flattened (NHWC order) and two linear heads
  give ``mu`` and ``logvar`` (size ``nz``). The convolutions have no bias (the
  BatchNorm after them makes it redundant).
* Decoder: exactly ``DAFLGenerator`` (linear -> map -> BN -> 2 x (upsample,
  conv, BN, LeakyReLU) -> conv -> tanh -> BN without affine parameters), so
  its output lives in the same standardised space as the DAFL generator's and
  the teacher consumes it directly. ``bn_eps`` is passed on to it (PRE-DFKD's
  ``MemoryGenerator`` uses ``BatchNorm2d(c, 0.8)`` like its novel generator).

PRE-DFKD's released encoder is shaped differently (two stride-1 convolutions with
bilinear downsampling, an input L2-normalised along the image height, a 2048-wide
flattened map); this encoder is the plain strided one above. The difference is in the
memory's capacity, not in any loss.

Images are ``(B, img_size, img_size, channels)`` with ``img_size`` divisible by 4.
Train-mode BatchNorm uses the statistics of the (global) batch, as everywhere.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dfkd_jax.models.generators import DAFLGenerator
from dfkd_jax.models.layers import batch_norm, conv, dense


class VAEEncoder(nn.Module):
    """``x -> (mu, logvar)``, both ``(B, nz)`` float32."""

    nz: int = 100
    ngf: int = 64
    channels: int = 1
    img_size: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        s = self.img_size // 4
        c = 2 * self.ngf
        h = x.astype(self.dtype)
        h = conv(self.ngf, 3, self.channels, stride=2, padding=1, use_bias=False, name="conv0",
                 dtype=self.dtype)(h)
        h = nn.leaky_relu(batch_norm(train, name="bn0", dtype=self.dtype)(h), 0.2)
        h = conv(c, 3, self.ngf, stride=2, padding=1, use_bias=False, name="conv1", dtype=self.dtype)(h)
        h = nn.leaky_relu(batch_norm(train, name="bn1", dtype=self.dtype)(h), 0.2)
        h = h.reshape(h.shape[0], -1)
        mu = dense(self.nz, c * s * s, name="mu", dtype=self.dtype)(h)
        logvar = dense(self.nz, c * s * s, name="logvar", dtype=self.dtype)(h)
        return mu.astype(jnp.float32), logvar.astype(jnp.float32)


class VAE(nn.Module):
    """Encoder + DAFL-shaped decoder; see the module docstring.

    ``__call__(x, key, train)`` -> ``(x_rec, mu, logvar)`` with the
    reparameterisation ``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``
    drawn from ``key``. ``encode(x, train)`` -> ``(mu, logvar)``;
    ``decode(z, train)`` -> images. Use ``apply(..., method='decode')`` (or
    ``'encode'``) for the halves; ``init`` through ``__call__`` creates both.
    Parameters: ``params/encoder/...`` and ``params/decoder/...`` (the decoder's
    tree is a ``DAFLGenerator``'s).
    """

    nz: int = 100
    ngf: int = 64
    channels: int = 1
    img_size: int = 32
    dtype: Any = jnp.float32
    bn_eps: float = 1e-5  # of the decoder's BatchNorms after convolutions

    def setup(self):
        kw = dict(nz=self.nz, ngf=self.ngf, channels=self.channels, img_size=self.img_size, dtype=self.dtype)
        self.encoder = VAEEncoder(**kw)
        self.decoder = DAFLGenerator(**kw, bn_eps=self.bn_eps)

    def encode(self, x, train: bool = True):
        """``(mu, logvar)`` of q(z | x), each ``(B, nz)``."""
        return self.encoder(x, train)

    def decode(self, z, train: bool = True):
        """Images ``(B, img_size, img_size, channels)`` in the standardised space."""
        return self.decoder(z, train)

    def __call__(self, x, key, train: bool = True):
        mu, logvar = self.encode(x, train)
        eps = jax.random.normal(key, mu.shape, jnp.float32)
        z = mu + jnp.exp(0.5 * logvar) * eps
        return self.decode(z, train), mu, logvar
