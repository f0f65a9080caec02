"""In-memory input pipeline: preprocessing and fixed-shape (optionally sharded) batches.

Pure numpy and jax. With several processes, every process must pass the same
arrays (and the same `rng` seed): `jax.device_put` of a host array with a
global sharding treats it as the global value and keeps each process's shards.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np

from dfkd_jax.data.specs import DatasetSpec


def fit_shape(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Zero-pads NHWC `images` (centred) to `shape`'s H x W and repeats 1 channel to C.

    Returns `images` itself when it already has that shape.
    """
    n, h, w, c = images.shape
    th, tw, tc = shape
    if (h, w, c) == (th, tw, tc):
        return images
    if h > th or w > tw or (th - h) % 2 or (tw - w) % 2 or c not in (1, tc):
        raise ValueError(f"cannot fit {images.shape[1:]} images to {shape}")
    top, left = (th - h) // 2, (tw - w) // 2
    out = np.zeros((n, th, tw, tc), images.dtype)
    out[:, top : top + h, left : left + w, :] = images  # broadcasts 1 channel to tc
    return out


def preprocess(images_uint8: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """uint8 NHWC images -> float32 model inputs of shape (N, *spec.image_shape).

    Scales to [0, 1], zero-pads to 32x32 (28x28 images get 2 px on each side),
    repeats a single channel when the spec wants 3, then applies
    (x - mean) / std per channel. Padding is 0 before normalisation, as
    torchvision's Pad -> ToTensor -> Normalize gives.
    """
    x = fit_shape(np.asarray(images_uint8), spec.image_shape).astype(np.float32)  # a copy
    x *= np.float32(1 / 255)
    x -= np.asarray(spec.mean, np.float32)
    x /= np.asarray(spec.std, np.float32)
    return x


def _batch_shards(sharding: jax.sharding.NamedSharding) -> int:
    """Number of pieces the batch axis is cut into by `sharding`."""
    spec = sharding.spec
    axes = spec[0] if len(spec) else None
    if axes is None:
        return 1
    axes = axes if isinstance(axes, tuple) else (axes,)
    return int(np.prod([sharding.mesh.shape[a] for a in axes]))


def _check_batch_size(batch_size: int, sharding) -> None:
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if sharding is not None:
        shards = _batch_shards(sharding)
        if batch_size % shards:
            raise ValueError(
                f"batch_size {batch_size} is not divisible by the {shards} devices the batch "
                f"axis is sharded over (mesh {dict(sharding.mesh.shape)}, spec {sharding.spec})"
            )


def _put(arrays: tuple[np.ndarray, ...], sharding) -> tuple:
    """Host arrays (the same on every process) -> global arrays; each device takes its slice."""
    if sharding is None:
        return arrays
    return tuple(jax.make_array_from_callback(a.shape, sharding, lambda idx, a=a: a[idx]) for a in arrays)


def eval_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    sharding: jax.sharding.NamedSharding | None = None,
) -> Iterator[tuple]:
    """Yields (x, y, mask) covering every example once, in order, all of fixed shape.

    The last batch is padded with zeros; `mask` (float32) is 1 on real examples
    and 0 on padding. `images` are already preprocessed. With `sharding`, each
    array is `jax.device_put` with it (batch axis sharded).
    """
    _check_batch_size(batch_size, sharding)
    n = len(images)
    for start in range(0, n, batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        k = len(x)
        mask = np.zeros((batch_size,), np.float32)
        mask[:k] = 1.0
        if k < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - k, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros((batch_size - k, *y.shape[1:]), y.dtype)])
        yield _put((x, y, mask), sharding)


def train_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    sharding: jax.sharding.NamedSharding | None = None,
) -> Iterator[tuple]:
    """Yields one epoch of shuffled (x, y) batches of exactly `batch_size` (the remainder is dropped).

    With `sharding`, each array is `jax.device_put` with it (batch axis sharded).
    """
    _check_batch_size(batch_size, sharding)
    order = rng.permutation(len(images))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        index = order[start : start + batch_size]
        yield _put((images[index], labels[index]), sharding)
