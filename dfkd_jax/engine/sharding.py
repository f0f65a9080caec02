"""Data parallelism: one mesh axis ``'data'`` over every device of every host.

States are replicated; batches are sharded on their leading axis. Under ``jax.jit``
every batch statistic (BatchNorm, batch means of loss terms) is then computed over
the global batch, so 1 device and N devices give the same numbers (up to float
reduction order). Host arrays become global arrays through
``jax.make_array_from_callback``, which also works when several processes each
hold the same host copy (multi-host runs).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices).reshape(-1), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"config.{what}={batch_size} is not divisible by the {n} devices of the mesh; "
                         f"use a multiple of {n}.")


def to_global(array, sharding: NamedSharding) -> jax.Array:
    """A host array (the same on every process) as a global array with ``sharding``."""
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def replicate_tree(tree, mesh: Mesh):
    sharding = replicated(mesh)
    return jax.tree.map(lambda a: to_global(np.asarray(jax.device_get(a)), sharding), tree)
