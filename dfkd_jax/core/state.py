"""``ModelState``: a trainable network's parameters, BatchNorm statistics and optimiser state,
how one is made from a network's variables, and how one is updated."""

from __future__ import annotations

from typing import Any

import flax
import optax

from dfkd_jax.core.optim import optimizer_step


class ModelState(flax.struct.PyTreeNode):
    """A trainable network: parameters, BatchNorm running statistics, optimiser state."""

    params: Any
    batch_stats: Any
    opt_state: Any

    @classmethod
    def create(cls, variables: dict, tx: optax.GradientTransformation) -> "ModelState":
        """The state of a network with ``variables`` (``{'params', ['batch_stats']}``) and a fresh ``tx``."""
        params = variables["params"]
        return cls(params=params, batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))

    def variables(self) -> dict[str, Any]:
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}


def apply_update(ms: ModelState, tx: optax.GradientTransformation, grads, batch_stats) -> ModelState:
    """``ms`` after one step of ``tx`` on ``grads``, with ``batch_stats`` as its new BatchNorm statistics."""
    params, opt_state = optimizer_step(tx, grads, ms.opt_state, ms.params)
    return ModelState(params=params, batch_stats=batch_stats, opt_state=opt_state)
