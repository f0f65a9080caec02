"""On-device FIFO buffers that live in the state: the pool of synthetic samples and the R2M key queue.

Synthesisers push their (stop-gradient) images, in pixel space, and the teacher's logits on them
where wanted; student updates draw uniformly from what the pool holds (``dfkd_jax.augment`` then
augments the drawn batch on the device). The pool is part of
``DistillState``, so it is donated with it, checkpointed with it, and never leaves the
device (reference inversion code round-trips every batch through PNG files instead).
It is replicated over the mesh: a draw gathers from the full pool on every device and
the drawn batch is then sharded like any other, which keeps 1-device and N-device runs
identical.
"""

from __future__ import annotations

import math

import flax
import jax
import jax.numpy as jnp


STORAGE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "uint8": jnp.uint8}


class Pool(flax.struct.PyTreeNode):
    """A ring buffer of images in *pixel space* ([0, 1]) and, optionally, the teacher's logits on them.

    Storage dtype float32, bfloat16 or uint8 (``round(255 p)``, clipped: the 8-bit PNG files of the
    reference code, without the files). ``sample`` returns float32 pixels."""

    x: jax.Array  # (P, H, W, C) pixels in the storage dtype
    # (P, K) teacher logits on them ((P, H, W, K) for segmentation), or None (logits recomputed when drawn)
    t_logits: jax.Array | None
    ptr: jax.Array  # next slot to write
    count: jax.Array  # filled slots (<= P)

    @property
    def size(self) -> int:
        return self.x.shape[0]


def _logit_shape(logit_shape) -> tuple[int, ...]:
    return (int(logit_shape),) if isinstance(logit_shape, int) else tuple(int(d) for d in logit_shape)


def init_pool(size: int, image_shape, logit_shape, dtype: str = "float32", with_logits: bool = True) -> Pool:
    """An empty pool of ``size`` images (stored in ``dtype``) and, ``with_logits``, the teacher's logits on
    them; ``logit_shape`` is the class count ``K`` (classification) or one sample's logit shape, e.g.
    ``(H, W, K)`` (segmentation: per-pixel logits)."""
    return Pool(x=jnp.zeros((size, *image_shape), STORAGE_DTYPES[dtype]),
                t_logits=jnp.zeros((size, *_logit_shape(logit_shape)), jnp.float32) if with_logits else None,
                ptr=jnp.zeros((), jnp.int32), count=jnp.zeros((), jnp.int32))


def encode(pixels: jax.Array, dtype) -> jax.Array:
    if dtype == jnp.uint8:
        return jnp.round(jnp.clip(pixels, 0.0, 1.0) * 255.0).astype(jnp.uint8)
    return pixels.astype(dtype)


def decode(stored: jax.Array) -> jax.Array:
    if stored.dtype == jnp.uint8:
        return stored.astype(jnp.float32) / 255.0
    return stored.astype(jnp.float32)


def push(pool: Pool, pixels: jax.Array, t_logits: jax.Array | None = None) -> Pool:
    """Write a batch at the head, overwriting the oldest samples once the pool is full (of a batch
    larger than the pool, its last ``size`` samples)."""
    pixels = pixels[-pool.size:]
    b = pixels.shape[0]
    idx = (pool.ptr + jnp.arange(b, dtype=jnp.int32)) % pool.size
    logits = pool.t_logits
    if logits is not None:
        assert t_logits is not None, "a pool that keeps logits is pushed logits"
        logits = logits.at[idx].set(t_logits[-pool.size:].astype(jnp.float32))
    return Pool(x=pool.x.at[idx].set(encode(pixels, pool.x.dtype)), t_logits=logits,
                ptr=(pool.ptr + b) % pool.size, count=jnp.minimum(pool.count + b, pool.size))


def sample(pool: Pool, key: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array | None]:
    """``batch_size`` samples drawn uniformly (with replacement) from the filled part: (float32 pixels,
    logits or None). The round pushes before it draws, so the pool is never empty there. Drawn from an
    empty pool, every value is NaN rather than the zeros of the unfilled rows, so that a loss on it stops
    the run through the NaN check (which names the term) instead of training on blank images; inside a
    jitted round no exception can be raised."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(pool.count, 1))
    filled = pool.count > 0
    x = jnp.where(filled, decode(pool.x[idx]), jnp.nan)
    logits = None if pool.t_logits is None else jnp.where(filled, pool.t_logits[idx], jnp.nan)
    return x, logits


def pool_bytes(size: int, image_shape, logit_shape, dtype: str, with_logits: bool) -> int:
    """Device (and checkpoint) bytes of a pool (``logit_shape`` as for ``init_pool``)."""
    per = math.prod(image_shape) * jnp.dtype(STORAGE_DTYPES[dtype]).itemsize
    if with_logits:
        per += 4 * math.prod(_logit_shape(logit_shape))
    return size * per


class FeatureBank(flax.struct.PyTreeNode):
    """CMI's memory bank of past instance embeddings (``contrastive.py`` l. 136-166), a pytree.

    Starts with N(0, 1) rows (as the reference's ``torch.randn``) that are never drawn before they
    are written: ``draw`` samples among the filled rows only."""

    rows: jax.Array  # (N, D)
    ptr: jax.Array
    count: jax.Array


def init_bank(key: jax.Array, size: int, dim: int) -> FeatureBank:
    return FeatureBank(rows=jax.random.normal(key, (size, dim), jnp.float32), ptr=jnp.zeros((), jnp.int32),
                       count=jnp.zeros((), jnp.int32))


def bank_push(bank: FeatureBank, feats: jax.Array) -> FeatureBank:
    n = bank.rows.shape[0]
    feats = feats[-n:]
    b = feats.shape[0]
    idx = (bank.ptr + jnp.arange(b, dtype=jnp.int32)) % n
    return FeatureBank(rows=bank.rows.at[idx].set(jax.lax.stop_gradient(feats).astype(jnp.float32)),
                       ptr=(bank.ptr + b) % n, count=jnp.minimum(bank.count + b, n))


def bank_draw(bank: FeatureBank, key: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``(rows (k, D), valid (k,))``: ``min(k, count)`` distinct filled rows drawn uniformly without
    replacement (the reference's ``random.sample``), then padding rows marked invalid.

    Each row gets a uniform score, unfilled rows -inf; the top k scores are a uniform draw
    without replacement among the filled rows."""
    n = bank.rows.shape[0]
    k = min(k, n)
    scores = jnp.where(jnp.arange(n) < bank.count, jax.random.uniform(key, (n,)), -jnp.inf)
    top, idx = jax.lax.top_k(scores, k)
    return bank.rows[idx], jnp.isfinite(top)


class KeyQueue(flax.struct.PyTreeNode):
    """AdaDFKD's FIFO queue of past student keys (MoCo-style), part of the state.

    Starts filled with random unit vectors (as MoCo's queue), so every slot is a
    valid negative from the first round; each generator update pushes its batch's
    keys over the oldest ones.
    """

    keys: jax.Array  # (N, D), rows L2-normalised
    ptr: jax.Array


def init_queue(key: jax.Array, size: int, dim: int) -> KeyQueue:
    k = jax.random.normal(key, (size, dim), jnp.float32)
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    return KeyQueue(keys=k, ptr=jnp.zeros((), jnp.int32))


def push_keys(queue: KeyQueue, keys: jax.Array) -> KeyQueue:
    """Write keys over the oldest ones (of a batch larger than the queue, its last N keys, so that no
    slot is written twice)."""
    keys = keys[-queue.keys.shape[0]:]
    b = keys.shape[0]
    idx = (queue.ptr + jnp.arange(b, dtype=jnp.int32)) % queue.keys.shape[0]
    return KeyQueue(keys=queue.keys.at[idx].set(keys.astype(jnp.float32)), ptr=(queue.ptr + b) % queue.keys.shape[0])
