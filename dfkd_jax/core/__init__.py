"""The core layer: what engine, synthesis, teacher training and the tools share, below all of them.

- ``state.py``: ``ModelState`` (parameters, BatchNorm statistics, optimiser state), its
  construction (``init_model_state``) and its one update (``apply_update``);
- ``optim.py``: optimisers and schedules from a config section, and the optimiser step
  (``optimizer_step``: ``tx.update`` then ``optax.apply_updates``) every update goes through;
- ``sharding.py``: the mesh (one axis, ``'data'``), replicated and batch shardings, host arrays
  as global arrays, multi-process start-up and barriers.

Nothing here imports from the rest of the package except ``dfkd_jax.errors`` and
``dfkd_jax.models.generators`` (the generators' reference init schemes).
"""
