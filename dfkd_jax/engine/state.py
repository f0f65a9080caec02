"""Pytree states. Everything the jitted round reads or writes is one of these."""

from __future__ import annotations

from typing import Any

import flax
import jax


@flax.struct.dataclass
class ModelState:
    """A trainable network: parameters, BatchNorm running statistics, optimiser state."""

    params: Any
    batch_stats: Any
    opt_state: Any

    def variables(self) -> dict[str, Any]:
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}


@flax.struct.dataclass
class DistillState:
    """The whole distillation state: checkpointed, donated to the round, sharded (replicated).

    ``rng`` is a raw uint32 key; each round folds ``round`` into it on the device, so
    the random stream of round r is the same whether the run was resumed or not.
    The teacher's variables are not here: they are a constant argument of the round.
    ``pool`` (``student.batch='pool'``) holds past synthetic samples on the device;
    ``queue`` AdaDFKD's queue of past student keys; ``projector`` the learned linear map
    from the student's feature width to the teacher's (AdaDFKD, when the widths differ);
    ``memory`` PRE-DFKD's VAE. Fields a method does not use are None (no leaves).
    """

    round: jax.Array
    rng: jax.Array
    generator: ModelState
    student: ModelState
    pool: Any = None  # dfkd_jax.pool.Pool when the student learns from a pool of past samples
    queue: Any = None  # dfkd_jax.pool.KeyQueue
    projector: Any = None  # ModelState of the student-feature projection
    memory: Any = None  # ModelState of the generative memory (VAE)
