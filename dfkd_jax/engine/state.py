"""``DistillState``: everything the jitted round reads or writes."""

from __future__ import annotations

from typing import Any

import flax
import jax

from dfkd_jax.core.state import ModelState


class DistillState(flax.struct.PyTreeNode):
    """The whole distillation state: checkpointed, donated to the round, sharded (replicated).

    ``rng`` is a raw uint32 key; each round folds ``round`` into it on the device, so
    the random stream of round r is the same whether the run was resumed or not.
    The teachers' variables are not here: they are a constant argument of the round.
    ``synth`` is the synthesiser's persistent state (``dfkd_jax.synthesis``: the online generator
    and AdaDFKD's key queue, CMI's head and feature bank, Fast's meta generator...); ``pool`` the
    on-device ring buffer of synthetic samples (``dfkd_jax.pool``); ``projector`` the learned
    linear map from the student's feature width to the teachers' (AdaDFKD, when the widths differ);
    ``memory`` PRE-DFKD's VAE. Fields a run does not use are None (no leaves).
    """

    round: jax.Array
    rng: jax.Array
    synth: Any
    student: ModelState
    pool: Any = None  # dfkd_jax.pool.Pool
    projector: ModelState | None = None  # the student-feature projection
    memory: ModelState | None = None  # the generative memory (VAE)

    @property
    def generator(self):
        """The synthesiser's generator (online or meta), if it keeps one."""
        return getattr(self.synth, "generator", None)
