"""Checkpoints of the whole distillation state (orbax ``CheckpointManager``).

A checkpoint holds the ``DistillState`` (synthesiser state, student, optimiser states, RNG,
round) and a JSON record of the evaluation history and elapsed time, so a resumed
run reports the same best/mean accuracy as an uninterrupted one. The teacher is
never checkpointed: it is an input of the run. Saving is asynchronous; ``wait``
before the process exits.

A checkpoint whose state has another structure than the one this version keeps (one written
before ``DistillState`` gained its ``synth`` field, say) is refused with an
``IncompatibleCheckpointError`` that says what to do, not restored into a wrong state.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from dfkd_jax.errors import IncompatibleCheckpointError


def _fields_with_leaves(tree) -> set[str] | None:
    """The top-level names of a state (a dataclass or a dict) that hold arrays; None for other trees."""
    if dataclasses.is_dataclass(tree):
        items = {f.name: getattr(tree, f.name) for f in dataclasses.fields(tree)}
    elif isinstance(tree, dict):
        items = tree
    else:
        return None
    return {str(k) for k, v in items.items() if jax.tree_util.tree_leaves(v)}


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

    def _stored_fields(self, step: int) -> set[str] | None:
        """The top-level fields of the state stored at ``step`` (from its metadata; None if unreadable)."""
        try:
            meta = ocp.StandardCheckpointHandler().metadata(epath.Path(self.directory) / str(step) / "state")
            return _fields_with_leaves(meta.tree)
        except Exception:  # noqa: BLE001 - a best-effort diagnosis; the restore below reports what it finds
            return None

    def _incompatible(self, step: int, detail: str) -> IncompatibleCheckpointError:
        return IncompatibleCheckpointError(
            f"The checkpoint of round {step} in {self.directory} does not fit the state this version of dfkd_jax "
            f"keeps ({detail}). It was written by another version of dfkd_jax (before the synthesis redesign the "
            "state had 'generator' and 'queue' fields where it now has 'synth'). Start the run again in a new "
            "--workdir, or continue this one with the dfkd_jax version that wrote it; the results and metrics "
            "already in the workdir stay readable.")

    def restore(self, step: int, abstract_state) -> tuple[Any, dict[str, Any]]:
        """``(state, record)`` of ``step``; an ``IncompatibleCheckpointError`` if the stored state's
        structure is not ``abstract_state``'s."""
        stored, expected = self._stored_fields(step), _fields_with_leaves(abstract_state)
        if stored is not None and expected is not None and stored != expected:
            raise self._incompatible(step, f"it holds {', '.join(sorted(stored))}; this version expects "
                                           f"{', '.join(sorted(expected))}")
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), record=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as e:  # orbax: the stored tree does not match the target's
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise self._incompatible(step, f"orbax: {first}") from e
        return restored.state, dict(restored.record)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
