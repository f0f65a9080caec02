"""ZSKD's student augmentation on the device: scaling, translation, rotation, flips and their pairs.

The released code (vcl-iisc/ZSKD at 54c855f, ``model_training/data_augmentation.py``
``create_more_samples_using_augmentation``, l. 21-79, the views l. 28-62) expands every student batch of ``n``
impressions into ``103 n`` images (for a dataset other than CIFAR-10; CIFAR-10 adds salt-and-pepper
and Gaussian noise) and has the teacher label all of them (l. 70-71, softmax at T = 20, l. 83):

| variants | what (l.) |
|---|---|
| 1 | the impressions themselves |
| 3 | central scale 0.90, 0.75, 0.60, resized back (``central_scale_images``, bilinear ``crop_and_resize``) |
| 4 | translation by 20% left / right / up / down, the uncovered strip filled with 1.0 (``translate_images``) |
| 10 | rotation by -90, -70, ..., 90 degrees, nearest neighbour, zeros outside (``rotate_images_with_finer_angles``) |
| 3 | flips left-right, up-down and the transpose (``flip_images``) |
| 12 | translation of each scaled image (l. 53) |
| 40 | rotation of each translated image (l. 57) |
| 30 | rotation of each scaled image (l. 61) |

``student.augment``: ``'zskd'`` (below), ``'zskd_all'`` (all 103 views of each image in one step, the
released trainer's batch, ``zskd_all``), and ``'zskd_fill0'`` / ``'zskd_all_fill0'``: the same with the
translated strip filled with 0 (black, Fashion-MNIST's background) instead of the released 1.0
(``TRANSLATE_FILL``, white, made for CIFAR-10).

With ``'zskd'`` each image of the student's pool draw gets one of the 103 variants, uniformly at random:
the expected loss over a batch is the loss of the released code's expanded batch (a mean over
the same 103 variants), at the cost of one image per impression. The teacher labels the
augmented image (the student step's ``t_out = teacher(images)``). Readings: the 20% translation
is a shift by ``H - ceil(0.8 H)`` pixels (the released glimpse of ``ceil(0.8 H)`` pixels placed at
the border); the central crop is resampled with half-pixel centres (``augment.resize_crops``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from dfkd_jax import augment

SCALES = (0.90, 0.75, 0.60)
ANGLES = tuple(-90.0 + 20.0 * i for i in range(10))  # -90 .. 90 in 10 steps
# translation directions: 0 left, 1 right, 2 up, 3 down; -1 none. flips: 1 left-right, 2 up-down, 3 transpose


def _variants() -> np.ndarray:
    """``(103, 4)`` rows ``(scale, direction, angle, flip)``, in the released code's order."""
    rows = [(1.0, -1, 0.0, 0)]
    rows += [(s, -1, 0.0, 0) for s in SCALES]
    rows += [(1.0, d, 0.0, 0) for d in range(4)]
    rows += [(1.0, -1, a, 0) for a in ANGLES]
    rows += [(1.0, -1, 0.0, f) for f in (1, 2, 3)]
    rows += [(s, d, 0.0, 0) for d in range(4) for s in SCALES]
    rows += [(1.0, d, a, 0) for a in ANGLES for d in range(4)]
    rows += [(s, -1, a, 0) for a in ANGLES for s in SCALES]
    return np.asarray(rows, np.float32)


VARIANTS = _variants()
TRANSLATE_FILL = 1.0  # data_augmentation.py l. 178: ``X_translated.fill(1.0)``, white, made for CIFAR-10


def _gather(x, ys, xs, fill):
    """``x[b, ys, xs]`` per sample (int maps ``(B, H, W)``), ``fill`` where the source is outside."""
    _, h, w, _ = x.shape
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    yc, xc = jnp.clip(ys, 0, h - 1), jnp.clip(xs, 0, w - 1)
    out = jax.vmap(lambda img, yy, xx: img[yy, xx])(x, yc, xc)
    return jnp.where(inside[..., None], out, jnp.asarray(fill, x.dtype))


def apply_variants(x, v, fill: float = TRANSLATE_FILL):
    """Each image ``x[b]`` (NHWC, pixels) transformed by its row ``v[b] = (scale, direction, angle, flip)``:
    central scale, then translation (the uncovered strip filled with ``fill``, the released 1.0 by
    default), then rotation (nearest, fill 0), then flip."""
    b, h, w, _ = x.shape
    scale, direction, angle, flip = v[:, 0], v[:, 1].astype(jnp.int32), v[:, 2], v[:, 3].astype(jnp.int32)
    x = augment.resize_crops(x, (1.0 - scale) * h / 2, (1.0 - scale) * w / 2, scale * h, scale * w)
    i = jnp.broadcast_to(jnp.arange(h)[None, :, None], (b, h, w))
    j = jnp.broadcast_to(jnp.arange(w)[None, None, :], (b, h, w))
    ny, nx = h - math.ceil(0.8 * h), w - math.ceil(0.8 * w)
    sy = jnp.where(direction == 2, ny, jnp.where(direction == 3, -ny, 0))[:, None, None]
    sx = jnp.where(direction == 0, nx, jnp.where(direction == 1, -nx, 0))[:, None, None]
    x = _gather(x, i + sy, j + sx, fill)
    # rotation about the centre: the output pixel reads the source rotated by -angle (nearest)
    rad = jnp.deg2rad(angle)[:, None, None]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    dy, dx = i - cy, j - cx
    ry = jnp.round(jnp.cos(rad) * dy - jnp.sin(rad) * dx + cy).astype(jnp.int32)
    rx = jnp.round(jnp.sin(rad) * dy + jnp.cos(rad) * dx + cx).astype(jnp.int32)
    f = flip[:, None, None]
    ys = jnp.where(f == 2, h - 1 - ry, jnp.where(f == 3, rx, ry))
    xs = jnp.where(f == 1, w - 1 - rx, jnp.where(f == 3, ry, rx))
    return _gather(x, ys, xs, 0.0)


def zskd(key, x, fill: float = TRANSLATE_FILL):
    """One of the 103 variants per image, uniformly (see the module docstring)."""
    table = jnp.asarray(VARIANTS)
    return apply_variants(x, table[jax.random.randint(key, (x.shape[0],), 0, table.shape[0])], fill)


def zskd_all(key, x, fill: float = TRANSLATE_FILL):
    """All 103 variants of every image, as the released trainer feeds them (``train.py`` l. 170-176):
    ``(103 B, H, W, C)``, image-major (the 103 views of ``x[0]`` first, in ``VARIANTS`` order).
    ``key`` is unused (the expansion is deterministic)."""
    del key
    b, n = x.shape[0], VARIANTS.shape[0]
    table = jnp.tile(jnp.asarray(VARIANTS), (b, 1))
    return apply_variants(jnp.repeat(x, n, axis=0), table, fill)


# the student augmentations of dfkd_jax.augment.AUGMENTATIONS: the released fill (1.0) and a black one (0.0)
def zskd_fill0(key, x):
    return zskd(key, x, 0.0)


def zskd_all_fill0(key, x):
    return zskd_all(key, x, 0.0)
