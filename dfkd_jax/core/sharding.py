"""Data parallelism: one mesh axis ``'data'`` over every device of every host.

States are replicated; batches are sharded on their leading axis. Under ``jax.jit``
every batch statistic (BatchNorm, batch means of loss terms) is then computed over
the global batch, so 1 device and N devices give the same numbers (up to float
reduction order). Host arrays become global arrays through
``jax.make_array_from_callback``, which also works when several processes each
hold the same host copy (multi-host runs).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dfkd_jax.errors import ConfigError


def initialize_distributed() -> None:
    """``jax.distributed.initialize`` for a multi-process run (``config.distributed=True``).

    ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``, when set, give the
    coordinator and this process's place (JAX itself reads only the first); without them JAX
    detects the cluster (TPU pods, SLURM, Open MPI, Kubernetes). Call before any other JAX use.
    """
    env = {k: os.environ.get(k) for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")}
    kwargs: dict[str, Any] = {}
    if env["JAX_COORDINATOR_ADDRESS"] and env["JAX_NUM_PROCESSES"] and env["JAX_PROCESS_ID"] is not None:
        kwargs = dict(coordinator_address=env["JAX_COORDINATOR_ADDRESS"], num_processes=int(env["JAX_NUM_PROCESSES"]),
                      process_id=int(env["JAX_PROCESS_ID"]))
    jax.distributed.initialize(**kwargs)


def barrier(name: str, timeout_s: int = 3600) -> None:
    """Wait until every process reaches ``name`` (a no-op with one process). ``name`` must be unique per run."""
    if jax.process_count() > 1:
        ocp.multihost.sync_global_processes(name, timeout=timeout_s)


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
        raise ConfigError(f"config.{what}={batch_size} is not divisible by the {n} devices of the mesh; "
                         f"use a multiple of {n}.")


def to_global(array, sharding: NamedSharding) -> jax.Array:
    """A host array (the same on every process) as a global array with ``sharding``."""
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def replicate_tree(tree, mesh: Mesh):
    sharding = replicated(mesh)
    return jax.tree.map(lambda a: to_global(np.asarray(jax.device_get(a)), sharding), tree)
