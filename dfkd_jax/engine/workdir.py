"""A run's claim on its workdir: only folders that are new, empty or already a run, and one run at a time.

``claim(workdir)`` is what ``train_and_evaluate`` calls before it writes anything:

* A folder that exists and holds files but none of a run's (``RUN_MARKERS``) is refused: a run never writes
  into a folder it did not create (``--workdir ~`` or a dataset folder by mistake).
* The lock: ``<workdir>/dfkd_jax.lock`` holds the PID, host and start time of the run using the folder, and
  that process holds an exclusive ``flock`` on it for as long as it runs. The kernel releases the ``flock``
  when the process dies (SIGKILL included), so a second run on the same host knows for certain whether the
  first still runs: a live holder is refused with its PID; a stale file (its process gone) is taken over,
  with a message. A run on another host of a shared filesystem whose lock names a different host is
  refused too (its PID cannot be checked from here), naming the file to delete if that run is gone.
  Released cleanly, the file stays (emptied): it marks the folder as a run's.

In a multi-process run only process 0 claims the folder (the others write checkpoint shards only, at the
collective checkpoint calls); a second multi-process run on the same folder stops at its process 0.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from typing import Callable

from dfkd_jax.errors import UserError

LOCK_FILE = "dfkd_jax.lock"
# Names that only a run writes into its workdir (engine/loop.py, engine/outputs.py).
RUN_MARKERS = frozenset({LOCK_FILE, "config.json", "results.json", "metrics.jsonl", "checkpoints"})


class WorkdirError(UserError, OSError):
    """A workdir that cannot be used: another run holds it, it is not a run's folder, or it is not writable."""


def check_is_run_folder(workdir: str) -> None:
    """Refuse a ``workdir`` that exists and holds files, none of them a run's."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir {workdir} is a file, not a folder. Choose a new folder for the run.")
    if not os.path.isdir(workdir):
        return
    names = sorted(os.listdir(workdir))
    if names and not RUN_MARKERS & set(names):
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise WorkdirError(f"--workdir {workdir} already holds files that are not a dfkd_jax run ({shown}). "
                           "Choose a new or empty folder: a run writes its checkpoints and results there.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class WorkdirLock:
    """The exclusive claim of one process on a workdir (see the module docstring); ``release`` when done."""

    def __init__(self, workdir: str, log: Callable[[str], None] = print):
        self.path = os.path.join(workdir, LOCK_FILE)
        try:
            self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise WorkdirError(f"Cannot write into --workdir {workdir} ({e.strerror}). Choose a folder you can "
                               "write to.") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._read()
            os.close(self.fd)
            who = (f"PID {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
                   if holder else "a process that has not written its PID yet")
            raise WorkdirError(f"Another run is using --workdir {workdir} ({who}). Wait for it to finish, "
                               "stop it, or choose another --workdir.") from None
        holder, host = self._read(), socket.gethostname()
        if holder.get("pid") and holder.get("host") != host:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            raise WorkdirError(
                f"--workdir {workdir} is locked by PID {holder['pid']} on host {holder['host']} (started "
                f"{holder.get('started')}), which cannot be checked from {host}. If that run has stopped, delete "
                f"{self.path} and rerun.")
        if holder.get("pid"):
            log(f"Taking over the lock of {workdir} left by PID {holder['pid']} (started {holder.get('started')}), "
                "which is no longer running.")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps({"pid": os.getpid(), "host": host, "started": datetime.datetime.now(
            datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}).encode(), 0)
        os.fsync(self.fd)

    def _read(self) -> dict:
        assert self.fd is not None, "read while the lock is held"
        try:
            text = os.pread(self.fd, 4096, 0).decode(errors="replace").strip()
            return json.loads(text) if text else {}
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def claim(workdir: str, log: Callable[[str], None] = print) -> WorkdirLock:
    """Check that ``workdir`` may hold this run, create it, and lock it (``WorkdirLock``)."""
    check_is_run_folder(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"Cannot create --workdir {workdir} ({e.strerror}). Choose a folder you can "
                           "write to.") from None
    return WorkdirLock(workdir, log)
