"""Checkpoints of the whole distillation state (orbax ``CheckpointManager``).

A checkpoint holds the ``DistillState`` (synthesiser state, student, optimiser states, RNG,
round) and a JSON record of the evaluation history and elapsed time, so a resumed
run reports the same best/mean accuracy as an uninterrupted one. The teacher is
never checkpointed: it is an input of the run. Saving is asynchronous; ``wait``
before the process exits.

A checkpoint whose state has another structure than the one this version keeps (one written
before ``DistillState`` gained its ``synth`` field, say) is refused with an
``IncompatibleCheckpointError`` that says what to do, not restored into a wrong state.

A checkpoint whose structure fits but whose files cannot be read (a disk error, a copy cut short,
bytes overwritten) is *corrupt*: ``restore_latest`` moves it aside to ``<workdir>/corrupt_checkpoints/
step_N`` (kept for inspection, never deleted), says so, and falls back to the newest step that restores.
The structure is judged from the step's metadata (its top-level fields and the shapes of its arrays), so
a state of another run or version is never mistaken for corruption and moved away.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from etils import epath

from dfkd_jax.errors import IncompatibleCheckpointError, UserError


class CorruptCheckpointError(UserError, ValueError):
    """A checkpoint whose structure fits the state but whose files cannot be read."""


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

    def _stored_tree(self, step: int):
        """The state's tree stored at ``step`` (from its metadata: ``ArrayMetadata`` leaves)."""
        return ocp.StandardCheckpointHandler().metadata(epath.Path(self.directory) / str(step) / "state").tree

    def _incompatible(self, step: int, detail: str) -> IncompatibleCheckpointError:
        return IncompatibleCheckpointError(
            f"The checkpoint of round {step} in {self.directory} does not fit the state this version of dfkd_jax "
            f"keeps ({detail}). It was written by another version of dfkd_jax (before the synthesis redesign the "
            "state had 'generator' and 'queue' fields where it now has 'synth'), or by a run with another "
            "config. Start the run again in a new --workdir, or continue this one with the dfkd_jax version and "
            "config that wrote it; the results and metrics already in the workdir stay readable.")

    def restore(self, step: int, abstract_state) -> tuple[Any, dict[str, Any]]:
        """``(state, record)`` of ``step``; an ``IncompatibleCheckpointError`` if the stored state's
        structure is not ``abstract_state``'s, a ``CorruptCheckpointError`` if it is but cannot be read."""
        damage = unreadable(os.path.join(self.directory, str(step), "state"))
        if damage:
            raise CorruptCheckpointError(damage)
        try:
            tree = self._stored_tree(step)
        except Exception as e:  # noqa: BLE001 - the metadata itself is unreadable
            raise CorruptCheckpointError(f"its metadata cannot be read: {_first_line(e)}") from e
        stored, expected = _fields_with_leaves(tree), _fields_with_leaves(abstract_state)
        if stored is not None and expected is not None and stored != expected:
            raise self._incompatible(step, f"it holds {', '.join(sorted(stored))}; this version expects "
                                           f"{', '.join(sorted(expected))}")
        if _shapes(tree) != _shapes(abstract_state):
            raise self._incompatible(step, "its arrays have other shapes than this run's state")
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), record=ocp.args.JsonRestore()))
            record = dict(restored.record)
            if not {"history", "elapsed"} <= set(record):
                raise ValueError(f"its record holds {sorted(record)}, not the history and elapsed time")
        except Exception as e:  # noqa: BLE001 - the structure fits (checked above): the files are damaged
            raise CorruptCheckpointError(_first_line(e)) from e
        return restored.state, record

    def set_aside(self, step: int) -> str:
        """Move the folder of ``step`` to ``<workdir>/corrupt_checkpoints/step_N`` (a fresh name if taken)."""
        target_dir = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints")
        os.makedirs(target_dir, exist_ok=True)
        target, n = os.path.join(target_dir, f"step_{step}"), 1
        while os.path.exists(target):
            n += 1
            target = os.path.join(target_dir, f"step_{step}.{n}")
        shutil.move(os.path.join(self.directory, str(step)), target)
        self.manager.reload()
        return target

    def restore_latest(self, abstract_state, log: Callable[[str], None] = print, move_aside: bool = True):
        """``(step, state, record)`` of the newest step that restores, or None when there is none. Each corrupt
        step newer than it is moved aside (``set_aside``, only where ``move_aside``: process 0) and named."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state, record = self.restore(step, abstract_state)
            except CorruptCheckpointError as e:
                where = self.set_aside(step) if move_aside else "corrupt_checkpoints/"
                log(f"The checkpoint of round {step} cannot be read ({e}); moved it to {where} and trying the "
                    "one before.")
                continue
            return step, state, record
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _shapes(tree) -> list[tuple[int, ...]]:
    """The sorted shapes of a tree's arrays (ShapeDtypeStructs, orbax ``ArrayMetadata`` or arrays)."""
    return sorted(tuple(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree) if hasattr(leaf, "shape"))


def unreadable(path: str) -> str | None:
    """Why the orbax (OCDBT) checkpoint at ``path`` cannot be read, or None: every stored value is read back
    through tensorstore, synchronously. It finds missing, truncated and overwritten files before orbax is asked
    to restore them (orbax's asynchronous restore, failing, leaves 'Event loop is closed' tracebacks behind)."""
    import tensorstore as ts
    if not os.path.isdir(path):
        return f"{path} is missing"
    if not os.path.isfile(os.path.join(path, "manifest.ocdbt")):
        return None  # not an OCDBT checkpoint: left to orbax
    try:
        store = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{path}"}).result()
        for key in store.list().result():
            store.read(key).result()
    except Exception as e:  # noqa: BLE001 - tensorstore reports damage as ValueError, and other errors
        return _first_line(e)
    return None
