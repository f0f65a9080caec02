"""Checkpoints of the whole distillation state (orbax ``CheckpointManager``).

A checkpoint holds the ``DistillState`` (generator, student, optimiser states, RNG,
round) and a JSON record of the evaluation history and elapsed time, so a resumed
run reports the same best/mean accuracy as an uninterrupted one. The teacher is
never checkpointed: it is an input of the run. Saving is asynchronous; ``wait``
before the process exits.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpoints:
    def __init__(self, directory: str, keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, record: dict[str, Any]) -> None:
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         record=ocp.args.JsonSave(record)), force=True)

    def restore(self, step: int, abstract_state) -> tuple[Any, dict[str, Any]]:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), record=ocp.args.JsonRestore()))
        return restored.state, dict(restored.record)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
