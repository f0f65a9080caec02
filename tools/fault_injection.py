"""Fault injection: kill, corrupt and double-start a small run many times; check it ends as an uninterrupted run.

    python tools/fault_injection.py --cases 16 --seed 0 --workdir /tmp/faults

A tiny DFAD run on a small Fashion-MNIST written in the real IDX format (8 rounds, a checkpoint every round,
an evaluation every 2) is first run straight through: the reference. Then each case, in a fresh workdir:

* ``kill``: the run is started and SIGKILLed after a random delay, 1-3 times (a quarter in the first seconds,
  the others during the rounds, where a checkpoint is written every round: a kill that leaves an orbax
  temporary folder behind is counted as one during a checkpoint write), then rerun to the end;
* ``corrupt``: the run is killed right after its last checkpoint (before ``results.json``), random bytes are
  written over the data files of that checkpoint, and the rerun must set it aside and resume from the one
  before;
* ``concurrent``: two runs are started at once on the same workdir; one must stop at once naming the other.

Every case must end with the reference's final state (every array, to 1e-6) and with ``metrics.jsonl``
holding exactly the reference's records: ``records lost`` counts reference records missing or changed,
``records duplicated`` the extra ones. The figures are printed and written to ``<workdir>/report.json``
(docs/reliability.md quotes them). ``tests/test_faults.py`` imports the helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from absl import logging as absl_logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = 8


def metrics_rounds(workdir) -> list[tuple[int, str]]:
    """``(round, kind)`` of every record of ``<workdir>/metrics.jsonl``, in file order."""
    return [(r["round"], r["kind"]) for r in _records(workdir)]


def _records(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f.read().splitlines()]


def corrupt_step(step_dir, seed: int = 0) -> int:
    """Random bytes over every data file of a checkpoint step's state (its OCDBT ``d/`` folders); returns how many."""
    rng = np.random.default_rng(seed)
    n = 0
    for root, _, files in os.walk(os.path.join(step_dir, "state")):
        if os.path.basename(root) != "d":
            continue
        for name in files:
            path = os.path.join(root, name)
            with open(path, "wb") as f:
                f.write(rng.integers(0, 256, max(os.path.getsize(path), 16), dtype=np.uint8).tobytes())
            n += 1
    return n


def dead_pid() -> int:
    """The PID of a process that has just exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _final_state(workdir):
    import jax
    import orbax.checkpoint as ocp
    path = os.path.join(workdir, "checkpoints", str(ROUNDS), "state")
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.metadata(path).item_metadata.tree
        abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), tree)
        return jax.tree.leaves(ckptr.restore(path, abstract))


class Harness:
    def __init__(self, base: str):
        self.base = os.path.abspath(base)
        idx = os.path.join(self.base, "idx")
        if not os.path.isdir(idx):
            sys.path.insert(0, ROOT)
            from tests.data_fixtures import write_fake_idx_dataset
            write_fake_idx_dataset(idx, n_train=256, n_test=48)
        self.env = dict(os.environ, DFKD_JAX_DATA_DIR=os.path.join(self.base, "tfds"),
                        DFKD_JAX_CACHE=os.path.join(self.base, "cache"), DFKD_JAX_NO_DOWNLOAD="1",
                        JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        self.env.pop("DFKD_JAX_KILL_AT_ROUND", None)
        self.idx = idx

    def cmd(self, workdir: str) -> list[str]:
        return [sys.executable, "-m", "dfkd_jax.main", "--config", os.path.join(ROOT, "configs/fashion_mnist/dfad.py"),
                "--workdir", workdir, f"--config.data.source_dir={self.idx}", "--config.teacher.epochs=1",
                "--config.teacher.batch_size=64", "--config.generator.ngf=4", "--config.generator.nz=8",
                "--config.train.batch_size=16", f"--config.train.rounds={ROUNDS}", "--config.train.eval_every=2",
                "--config.train.log_every=1", "--config.train.checkpoint_every=1", "--config.train.sample_every=4",
                "--config.data.eval_batch_size=32", "--config.train.progress=False"]

    def start(self, workdir: str, **env) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(workdir), env=dict(self.env, **env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def finish(self, workdir: str, **env) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(workdir), env=dict(self.env, **env), capture_output=True, text=True,
                              timeout=900)


def _kill_case(h: Harness, workdir: str, rng: random.Random, run_s: float, tally: dict) -> list[str]:
    notes = []
    for _ in range(rng.randint(1, 3)):
        proc = h.start(workdir)
        if rng.random() < 0.25:  # during the start (teacher, data, restore)
            time.sleep(rng.uniform(0.3, 8.0))
        else:  # during the rounds: evaluations, samples, a checkpoint every round
            for line in proc.stdout:
                if line.startswith("Compiling the round"):
                    break
            time.sleep(rng.uniform(0.0, run_s))
        if proc.poll() is None:
            proc.kill()
            tally["kills"] += 1
            ckpts = os.path.join(workdir, "checkpoints")
            if os.path.isdir(ckpts) and any("tmp" in name for name in os.listdir(ckpts)):
                tally["kills_during_checkpoint_write"] += 1
        proc.communicate()
    proc = h.finish(workdir)
    if proc.returncode != 0:
        notes.append(f"rerun after kills failed: {proc.stderr.strip().splitlines()[-1:]}")
    return notes


def _corrupt_case(h: Harness, workdir: str, rng: random.Random, tally: dict) -> list[str]:
    h.finish(workdir, DFKD_JAX_KILL_AT_ROUND=str(ROUNDS))  # killed right after its last checkpoint
    corrupt_step(os.path.join(workdir, "checkpoints", str(ROUNDS)), seed=rng.randrange(1 << 30))
    tally["corruptions"] += 1
    proc = h.finish(workdir)
    moved = os.path.isdir(os.path.join(workdir, "corrupt_checkpoints", f"step_{ROUNDS}"))
    if proc.returncode == 0 and moved and f"The checkpoint of round {ROUNDS} cannot be read" in proc.stdout:
        tally["corruptions_survived"] += 1
        return []
    return [f"corrupt step not handled: rc {proc.returncode}, moved aside {moved}, "
            f"{proc.stderr.strip().splitlines()[-1:]}"]


def _concurrent_case(h: Harness, workdir: str, tally: dict) -> list[str]:
    procs = [h.start(workdir), h.start(workdir)]
    outs = [p.communicate(timeout=900) for p in procs]
    rcs = sorted(p.returncode for p in procs)
    tally["concurrent_starts"] += 1
    refused = [err for p, (_, err) in zip(procs, outs) if p.returncode == 1]
    if rcs == [0, 1] and "Another run is using --workdir" in refused[0]:
        tally["concurrent_refused"] += 1
        return []
    return [f"concurrent runs: exit codes {rcs}"]


def compare(reference: str, workdir: str) -> tuple[int, int, bool]:
    """(records lost or changed, records duplicated, final state equal) of ``workdir`` against ``reference``."""
    ref, got = _records(reference), _records(workdir) if os.path.isfile(os.path.join(workdir, "metrics.jsonl")) else []
    by_key: dict = {}
    for r in got:
        by_key.setdefault((r["round"], r["kind"]), []).append(r)
    lost = duplicated = 0
    for r in ref:
        found = by_key.get((r["round"], r["kind"]), [])
        same = [g for g in found if all(k == "wall_time_s" or np.isclose(g.get(k), v, rtol=1e-5, atol=1e-6)
                                        if isinstance(v, float) else g.get(k) == v for k, v in r.items())]
        lost += not same
        duplicated += max(len(found) - 1, 0)
    try:
        equal = all(np.allclose(a, b, rtol=1e-6, atol=1e-7) for a, b in zip(_final_state(reference),
                                                                            _final_state(workdir)))
    except Exception:  # noqa: BLE001 - no final checkpoint
        equal = False
    return lost, duplicated, equal


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="/tmp/dfkd_jax_faults")
    args = p.parse_args(argv)
    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax warns about metadata when reading a bare state
    h = Harness(args.workdir)
    reference = os.path.join(h.base, "reference")
    shutil.rmtree(reference, ignore_errors=True)
    t0 = time.time()
    proc = h.finish(reference)
    if proc.returncode != 0:
        sys.exit(f"the reference run failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(reference)
    h.finish(reference)  # again, with the teacher, the dataset and the compilation cached: its rounds' time
    with open(os.path.join(reference, "results.json")) as f:
        run_s = json.load(f)["wall_time_s"]  # the kills land in [0, run_s] after "Compiling the round"
    rng = random.Random(args.seed)
    tally = {k: 0 for k in ("cases", "kills", "kills_during_checkpoint_write", "corruptions", "corruptions_survived",
                            "concurrent_starts", "concurrent_refused", "records_lost", "records_duplicated",
                            "final_state_differs")}
    failures = []
    kinds = ["kill", "corrupt", "concurrent"]
    for i in range(args.cases):
        kind = kinds[i % 3] if i < 3 else rng.choice(kinds + ["kill"])  # half of the others are kills
        workdir = os.path.join(h.base, f"case_{i:02d}_{kind}")
        shutil.rmtree(workdir, ignore_errors=True)
        if kind == "kill":
            notes = _kill_case(h, workdir, rng, run_s, tally)
        elif kind == "corrupt":
            notes = _corrupt_case(h, workdir, rng, tally)
        else:
            notes = _concurrent_case(h, workdir, tally)
        lost, duplicated, equal = compare(reference, workdir)
        tally["cases"] += 1
        tally["records_lost"] += lost
        tally["records_duplicated"] += duplicated
        tally["final_state_differs"] += not equal
        if notes or lost or duplicated or not equal:
            failures.append({"case": i, "kind": kind, "notes": notes, "lost": lost, "duplicated": duplicated,
                             "final_state_equal": equal})
        print(f"case {i:2d} {kind:10s} lost {lost} duplicated {duplicated} final state "
              f"{'equal' if equal else 'DIFFERS'} {'; '.join(notes)}", flush=True)
    report = {**tally, "failures": failures, "seconds": round(time.time() - t0, 1), "seed": args.seed,
              "reference_run_s": round(run_s, 1)}
    with open(os.path.join(h.base, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "failures"}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
