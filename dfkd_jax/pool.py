"""On-device FIFO buffers that live in the state: the pool of synthetic samples and the R2M key queue.

Generator updates push their (stop-gradient) images and the teacher's logits on them;
student updates draw uniformly from what the pool holds. The pool is part of
``DistillState``, so it is donated with it, checkpointed with it, and never leaves the
device (reference inversion code round-trips every batch through PNG files instead).
It is replicated over the mesh: a draw gathers from the full pool on every device and
the drawn batch is then sharded like any other, which keeps 1-device and N-device runs
identical.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Pool:
    x: jax.Array  # (P, H, W, C) images in the networks' input space
    t_logits: jax.Array  # (P, K) teacher logits on them ((P, H, W, K) for segmentation)
    ptr: jax.Array  # next slot to write
    count: jax.Array  # filled slots (<= P)

    @property
    def size(self) -> int:
        return self.x.shape[0]


def init_pool(size: int, image_shape, logit_shape) -> Pool:
    """An empty pool of ``size`` images and their teacher logits; ``logit_shape`` is the class count
    ``K`` (classification) or the shape of one sample's logits, e.g. ``(H, W, K)`` (segmentation)."""
    logit_shape = (logit_shape,) if isinstance(logit_shape, int) else tuple(logit_shape)
    return Pool(x=jnp.zeros((size, *image_shape), jnp.float32), t_logits=jnp.zeros((size, *logit_shape), jnp.float32),
                ptr=jnp.zeros((), jnp.int32), count=jnp.zeros((), jnp.int32))


def push(pool: Pool, x: jax.Array, t_logits: jax.Array) -> Pool:
    """Write a batch at the head, overwriting the oldest samples once the pool is full (of a batch
    larger than the pool, its last ``size`` samples)."""
    x, t_logits = x[-pool.size:], t_logits[-pool.size:]
    b = x.shape[0]
    idx = (pool.ptr + jnp.arange(b, dtype=jnp.int32)) % pool.size
    return Pool(x=pool.x.at[idx].set(x.astype(pool.x.dtype)),
                t_logits=pool.t_logits.at[idx].set(t_logits.astype(jnp.float32)),
                ptr=(pool.ptr + b) % pool.size, count=jnp.minimum(pool.count + b, pool.size))


def sample(pool: Pool, key: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """``batch_size`` samples drawn uniformly (with replacement) from the filled part. The round pushes
    before it draws (``config.validate`` requires a generator update per round), so the pool is never
    empty here."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(pool.count, 1))
    return pool.x[idx], pool.t_logits[idx]


@flax.struct.dataclass
class KeyQueue:
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
