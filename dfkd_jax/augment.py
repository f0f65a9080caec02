"""Image augmentations on the device, inside the jitted steps (NHWC, pixel space [0, 1]).

Every function takes a key and a batch and is per sample unless said otherwise, as the
reference pipelines are (torchvision transforms per image in the DataLoader, kornia's
``augmentation`` modules with ``same_on_batch=False``):

- ``crop_flip``: ``RandomCrop(size, padding=4)`` (zero padding in pixel space, i.e. black, as
  torchvision pads the PIL image and kornia pads with 0) then ``RandomHorizontalFlip()``: the
  CIFAR training transform the inversion code applies to every pool image it hands the student
  (``datafree_kd.py``'s ``ori_dataset.transform``), and CMI's / Fast's global view
  (``contrastive.py`` l. 246-250, ``fast_meta.py`` l. 95-99);
- ``resized_crop_flip``: ``RandomResizedCrop(size, scale=(0.25, 1))`` (aspect ratio in
  [3/4, 4/3], log-uniform) then a flip: CMI's local view (``contrastive.py`` l. 252-256).
  Bilinear resampling of the crop back to the full size (pixel centres aligned); a crop whose
  sampled size exceeds the image is clipped to it (torchvision retries 10 times and then falls
  back to a centre crop; kornia clips);
- ``jitter_flip``: DeepInversion's ``jitter_and_flip`` (``deepinversion.py`` l. 11-23): one
  random roll of the *whole batch* by up to 1/8 of the size in each direction (both ends
  included), and one coin for flipping the whole batch.

Shapes are static and the crops are gathers, so nothing recompiles and nothing leaves the device.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def flip(key, x):
    """Each image mirrored left-right with probability 1/2."""
    coin = jax.random.bernoulli(key, 0.5, (x.shape[0],))
    return jnp.where(coin[:, None, None, None], x[:, :, ::-1, :], x)


def random_crop(key, x, padding: int = 4):
    """Each image zero-padded by ``padding`` on every side, then cropped back to its size at a
    uniformly drawn offset (``(2 padding + 1)^2`` positions)."""
    b, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    off = jax.random.randint(key, (b, 2), 0, 2 * padding + 1)

    def one(img, o):
        return jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1]))

    return jax.vmap(one)(padded, off)


def crop_flip(key, x, padding: int = 4):
    k1, k2 = jax.random.split(key)
    return flip(k2, random_crop(k1, x, padding))


def crop_boxes(key, b: int, h: int, w: int, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)):
    """``(top, left, height, width)`` per sample (floats, in pixels): area fraction uniform in
    ``scale``, aspect ratio log-uniform in ``ratio``, position uniform inside the image."""
    ka, kr, ky, kx = jax.random.split(key, 4)
    area = jax.random.uniform(ka, (b,), minval=scale[0], maxval=scale[1]) * (h * w)
    log_r = jax.random.uniform(kr, (b,), minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
    r = jnp.exp(log_r)
    cw = jnp.clip(jnp.round(jnp.sqrt(area * r)), 1, w)
    ch = jnp.clip(jnp.round(jnp.sqrt(area / r)), 1, h)
    top = jnp.floor(jax.random.uniform(ky, (b,)) * (h - ch + 1))
    left = jnp.floor(jax.random.uniform(kx, (b,)) * (w - cw + 1))
    return top, left, ch, cw


def resize_crops(x, top, left, ch, cw):
    """Bilinear resampling of the box ``(top, left, ch, cw)`` of each image to the full size.

    Output pixel ``i`` samples the box at ``top + (i + 0.5) * ch / H - 0.5`` (half-pixel
    centres), edge values repeated outside the image."""
    b, h, w, c = x.shape
    ys = top[:, None] + (jnp.arange(h)[None, :] + 0.5) * (ch[:, None] / h) - 0.5  # (B, H)
    xs = left[:, None] + (jnp.arange(w)[None, :] + 0.5) * (cw[:, None] / w) - 0.5  # (B, W)

    def axis_weights(coords, n):
        lo = jnp.floor(coords)
        frac = coords - lo
        lo_i = jnp.clip(lo.astype(jnp.int32), 0, n - 1)
        hi_i = jnp.clip(lo.astype(jnp.int32) + 1, 0, n - 1)
        # (B, out, n) interpolation matrix
        return (jax.nn.one_hot(lo_i, n) * (1 - frac)[..., None] + jax.nn.one_hot(hi_i, n) * frac[..., None])

    wy, wx = axis_weights(ys, h), axis_weights(xs, w)
    return jnp.einsum("bih,bhwc,bjw->bijc", wy, x, wx)


def resized_crop_flip(key, x, scale=(0.25, 1.0)):
    k1, k2 = jax.random.split(key)
    b, h, w, _ = x.shape
    return flip(k2, resize_crops(x, *crop_boxes(k1, b, h, w, scale)))


def jitter_flip(key, x, lim: float = 1.0 / 8.0):
    """The whole batch rolled by ``(dy, dx)``, each uniform in ``[-int(H lim), int(H lim)]``, then
    mirrored with probability 1/2 (one draw for the batch, as DeepInversion's ``jitter_and_flip``)."""
    _, h, w, _ = x.shape
    ly, lx = int(h * lim), int(w * lim)
    ky, kx, kf = jax.random.split(key, 3)
    dy = jax.random.randint(ky, (), -ly, ly + 1)
    dx = jax.random.randint(kx, (), -lx, lx + 1)
    x = jnp.roll(x, (dy, dx), axis=(1, 2))  # type: ignore[arg-type]  # traced shifts: jnp.roll takes them
    return jnp.where(jax.random.bernoulli(kf, 0.5), x[:, :, ::-1, :], x)
