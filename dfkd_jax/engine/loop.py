"""The outer loop (Python): rounds, evaluation, logging, samples, checkpoints, results.

It knows nothing about methods and receives its teacher (``dfkd_jax.obtain`` loads or trains
it). Metrics stay on the device and are pulled every ``log_every`` rounds (and before every
checkpoint, so that a checkpoint is only written for a state whose losses were all finite).
Killed at any point, rerunning the same command continues from the last checkpoint: the
state, the RNG and the evaluation history are all in it. A workdir remembers its config
(``config.json``): continuing it with a config that differs in a key that changes the run is
refused, with the list of keys, unless ``allow_config_change``; a change so allowed is recorded in
``config_history.json`` (the round from which each config ran, and the keys that changed).

Nothing lost, nothing counted twice: the run claims its workdir first (``engine.workdir``: a folder that is
new, empty or already a run's, and one run at a time); a corrupt newest checkpoint is moved aside and the
run resumes from the newest one that restores (``Checkpoints.restore_latest``); ``metrics.jsonl`` keeps
only the records up to the restored round, so each round appears once however often the run was resumed;
Ctrl-C stops with ``RunInterrupted`` ("interrupted at round N"), the checkpoints consistent.

Multi-process runs: every process runs every jitted computation (rounds, evaluation,
samples, checkpoints); process 0 alone claims the workdir and writes the files other than checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from dfkd_jax import data
from dfkd_jax.config import validate
from dfkd_jax.data.pipeline import preprocess
from dfkd_jax.core import sharding
from dfkd_jax.engine import outputs, workdir as workdir_lib
from dfkd_jax.engine.checkpoint import Checkpoints
from dfkd_jax.engine.distiller import Distiller
from dfkd_jax.errors import ConfigChangedError, ConfigError, UserError
from dfkd_jax.metrics import summarise
from dfkd_jax.progress import progress
from dfkd_jax.teacher import Teacher

# Fault injection for the resume tests: SIGKILL this process right after the
# checkpoint of this round has been written.
KILL_ENV = "DFKD_JAX_KILL_AT_ROUND"

# Keys that change where files are read or how often things are logged, never the numbers of the run.
RESUME_SAFE_KEYS = frozenset({
    "train.progress", "train.keep_checkpoints", "train.log_every", "train.sample_every", "train.checkpoint_every",
    "data.data_dir", "data.source_dir", "data.eval_batch_size", "teacher.train_if_missing", "distributed",
})


class NonFiniteLossError(UserError, FloatingPointError):
    pass


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during the rounds; its message names the round and how to resume."""


HISTORY_FILE = "config_history.json"


class _DeferredInterrupt:
    """While the rounds run, the first Ctrl-C (SIGINT) only sets ``requested``: the loop finishes the round,
    checkpoints it (one process) and stops with ``RunInterrupted``; a second Ctrl-C interrupts at once. A
    KeyboardInterrupt raised inside JAX, orbax or tensorstore could be swallowed or leave a save half done."""

    def __init__(self, log: Callable[[str], None]):
        self.requested, self.log, self.previous = False, log, None
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C keeps its usual meaning
            pass

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.log("Ctrl-C: stopping after this round, with a checkpoint (Ctrl-C again to stop at once) ...")

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(old: dict, new: dict, ignore=RESUME_SAFE_KEYS) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for every key (dotted, terms included) whose value differs."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in ignore:
            continue
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            diffs.append((key, None if va is missing else va, None if vb is missing else vb))
    return diffs


def check_config(workdir: str, config, allow_change: bool = False, log: Callable[[str], None] = print
                 ) -> list[tuple[str, Any, Any]]:
    """Refuse to continue (or to report) a run in ``workdir`` whose ``config.json`` differs from ``config``;
    with ``allow_change``, return the differences (``config_differences``) instead."""
    path = os.path.join(workdir, "config.json")
    started = os.path.isfile(os.path.join(workdir, "results.json")) or any(
        name.isdigit() for name in (os.listdir(os.path.join(workdir, "checkpoints"))
                                    if os.path.isdir(os.path.join(workdir, "checkpoints")) else []))
    if not (started and os.path.isfile(path)):
        return []
    try:
        with open(path) as f:
            old = json.load(f)
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}): the workdir's record of its config is damaged. "
                          "Restore it, or continue the run with --allow_config_change after deleting it.") from None
    diffs = config_differences(old, json.loads(config.to_json_best_effort()))
    if not diffs:
        return []
    listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs)
    if allow_change:
        log(f"Continuing the run in {workdir} with a changed config ({listed}); recorded in {HISTORY_FILE}.")
        return diffs
    raise ConfigChangedError(
        f"The run in {workdir} was made with a different config; {len(diffs)} key(s) differ: {listed}. "
        "Rerun with the config it was started with (its config.json), use a new --workdir, or pass "
        "--allow_config_change to continue with the new values (schedules that depend on train.rounds change "
        f"with it; {HISTORY_FILE} records the round each config took effect).")


def record_config(workdir: str, config, from_round: int, diffs: list[tuple[str, Any, Any]]) -> list[dict]:
    """Write ``config.json`` and append to ``config_history.json`` the config the run goes on with from
    ``from_round`` (with the keys that changed); returns the history. A fresh run starts the history."""
    path = os.path.join(workdir, HISTORY_FILE)
    history: list[dict] = []
    if os.path.isfile(path):
        with open(path) as f:
            history = json.load(f)
    now = json.loads(config.to_json_best_effort())
    if from_round == 0:
        history = [{"from_round": 0, "changed": {}, "config": now}]
    elif diffs:
        if not history and os.path.isfile(os.path.join(workdir, "config.json")):  # a workdir from before the history
            with open(os.path.join(workdir, "config.json")) as f:
                history = [{"from_round": 0, "changed": {}, "config": json.load(f)}]
        history = [h for h in history if h["from_round"] < from_round]
        history.append({"from_round": from_round, "changed": {k: [a, b] for k, a, b in diffs}, "config": now})
    _write_atomically(path, json.dumps(history, indent=2, sort_keys=True))
    _write_atomically(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2, sort_keys=True))
    return history


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _main_process_first(name: str, fn: Callable[[], Any]) -> Any:
    """``fn()`` on process 0, then on the others (it may build a cache that they then read)."""
    if jax.process_index() == 0:
        out = fn()
        sharding.barrier(name)
        return out
    sharding.barrier(name)
    return fn()


# Without evaluation data: the student's agreement with the teacher on this many synthetic samples, drawn with a
# seed no round uses (``Distiller.sample``): fresh latents through the generator, held out from training; for the
# inversion methods the pool's newest samples, which the student may have drawn in the last round.
SYNTHETIC_EVAL = 512
SYNTHETIC_SEED = 20_011
SYNTHETIC_SCORE = "agree"


def score_student(distiller: Distiller, state, test_set) -> dict[str, float]:
    """``distiller.evaluator.evaluate`` on the real test set; without one (``test_set`` None), Agree@1 and probability
    loyalty against the teacher on ``SYNTHETIC_EVAL`` synthetic samples labelled by the teacher."""
    evaluator = distiller.evaluator
    if test_set is not None:
        return evaluator.evaluate(state, test_set)
    images = evaluator.sample(state, SYNTHETIC_EVAL, seed=SYNTHETIC_SEED)
    t_labels, _ = evaluator.predict(state, images)
    ev = evaluator.evaluate(state, images, np.asarray(t_labels, np.int32))
    return {"agree": ev["agree"], "loyalty": ev["loyalty"], "synthetic_samples": int(len(images))}


def save_samples(distiller: Distiller, state, path: str, save: bool = True, n: int = 256, class_names=()) -> None:
    """``n`` synthetic samples as a grid with a labelled row per class the teachers predict (up to 8 images
    each); for segmentation, 16 of them each beside the teacher's and the student's predicted masks. Every
    process calls it (jitted computations over the whole mesh); only where ``save`` is the file written."""
    meta = distiller.teacher.meta
    if distiller.task == "segmentation":
        images = distiller.evaluator.sample(state, 16)
        t_masks, s_masks = distiller.evaluator.predict(state, images)
        if save:
            outputs.save_segmentation_grid(path, images, t_masks, s_masks, meta.mean, meta.std, meta.num_classes)
        return
    images = distiller.evaluator.sample(state, n)
    labels, _ = distiller.evaluator.predict(state, images)
    if save:
        outputs.save_class_grid(path, images, labels, meta.num_classes, meta.mean, meta.std, class_names)


def _check_finite(records: list[dict[str, Any]], first_round: int, ckpt_dir: str, last_good: int | None,
                  what: str = "loss"):
    for i, rec in enumerate(records):
        bad = [k for k, v in rec.items() if not np.isfinite(v)]
        if bad:
            where = (f"the last good checkpoint is round {last_good} in {ckpt_dir}" if last_good
                     else "no checkpoint was written yet")
            raise NonFiniteLossError(
                f"Non-finite {what} at round {first_round + i}: {', '.join(f'{k}={rec[k]}' for k in bad)}. "
                f"Stopped; {where}. Lower the learning rate of the network whose term diverged (or the term's "
                "weight) and rerun the same command with the new value and --allow_config_change: the run "
                f"resumes from the last good checkpoint, and {HISTORY_FILE} records the change.")


def train_and_evaluate(config, workdir: str, teacher: Teacher | Sequence[Teacher], log: Callable[[str], None] | None = None,
                       allow_config_change: bool = False, teacher_dir: str = "") -> dict[str, Any]:
    """Run (or resume) the distillation ``config`` from ``teacher`` in ``workdir``; return the results dict.

    ``teacher`` may be a sequence of teachers (an ensemble, ``dfkd_jax.ensemble``); ``teacher_dir`` is recorded in
    ``results.json`` (where the teachers came from). With ``config.synthesis.export`` the final pool is written
    as a transfer set (``dfkd_jax.transfer``)."""
    validate(config)
    is_main = jax.process_index() == 0
    log = log or (lambda msg: print(msg, flush=True) if is_main else None)
    workdir = os.path.abspath(workdir)
    if config.synthesis.export:
        from dfkd_jax import transfer
        transfer.check_export_folder(config.synthesis.export)  # before the run, not after it
    lock = _main_process_first("dfkd_jax_workdir_claimed", lambda: workdir_lib.claim(workdir, log) if is_main
                               else os.makedirs(workdir, exist_ok=True))
    try:
        return _run(config, workdir, teacher, log, allow_config_change, teacher_dir)
    finally:
        if lock is not None:
            lock.release()


def _run(config, workdir: str, teacher, log, allow_config_change: bool, teacher_dir: str) -> dict[str, Any]:
    teachers = (teacher,) if isinstance(teacher, Teacher) else tuple(teacher)
    teacher = teachers[0]
    is_main = jax.process_index() == 0
    config_changes = check_config(workdir, config, allow_config_change, log)

    spec = data.get_spec(config.data.dataset)
    if tuple(teacher.meta.input_shape) != tuple(spec.image_shape) or teacher.meta.num_classes != spec.num_classes:
        raise ConfigError(f"The teacher takes {teacher.meta.input_shape} inputs with {teacher.meta.num_classes} "
                          f"classes; dataset {config.data.dataset!r} has {spec.image_shape} and "
                          f"{spec.num_classes}. Choose the dataset the teacher was trained for.")
    results_file = os.path.join(workdir, "results.json")
    ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), config.train.keep_checkpoints)
    latest = ckpts.latest()
    if latest is not None and latest >= int(config.train.rounds) and os.path.isfile(results_file):
        ckpts.close()
        with open(results_file) as f:
            results = json.load(f)
        results["workdir"] = workdir  # where it is now (the folder may have been moved)
        log(f"The run in {workdir} is complete ({latest} rounds); its results:")
        log(outputs.summary_text(results))
        return results

    log(f"Loading the {config.data.dataset} test split ...")
    norm_spec = dataclasses.replace(spec, mean=teacher.meta.mean, std=teacher.meta.std)
    try:
        test_x, test_y = _main_process_first("dfkd_jax_test_split", lambda: data.load_split(
            config.data.dataset, "test", data_dir=config.data.data_dir or None,
            source_dir=config.data.source_dir or None))
    except data.DatasetNotFoundError as e:
        if spec.is_segmentation:
            raise
        test_x = test_y = None  # data-free: the student is scored against the teacher on synthetic samples
        log(f"No {config.data.dataset} test split on this machine ({str(e).split('. ')[0]}). Distilling without "
            f"evaluation data: the student is scored by its agreement with the teacher on {SYNTHETIC_EVAL} "
            "synthetic samples; no accuracy is measured. Score it later on labelled images (one folder per class): "
            f"python -m dfkd_jax.evaluate {workdir} --images DIR")
    distiller = Distiller.from_config(config, teachers)
    if distiller.task != spec.task:
        raise ConfigError(f"The teacher {teacher.meta.arch} is a {distiller.task} model but dataset "
                          f"{config.data.dataset!r} is a {spec.task} dataset.")
    if test_x is not None:
        # segmentation label maps stay uint8 on the host (the confusion matrix casts them on the device)
        test_x, test_y = preprocess(test_x, norm_spec), test_y if spec.is_segmentation else test_y.astype(np.int32)
        score, teacher_score = distiller.evaluator.headline
        test_set = distiller.evaluator.eval_set(test_x, test_y)
    else:
        score, teacher_score, test_set = SYNTHETIC_SCORE, None, None
    restored = ckpts.restore_latest(distiller.abstract_state(), log, move_aside=is_main) if latest is not None else None
    if restored is not None:
        start, state, record = restored
        history, elapsed = record["history"], record["elapsed"]
        log(f"Resuming from the checkpoint of round {start} in {ckpts.directory}.")
    else:
        if latest is not None:
            log(f"No checkpoint in {ckpts.directory} could be restored: starting again from round 0.")
        state, history, elapsed, start = distiller.init(config.seed), [], 0.0, 0
    writer = outputs.MetricsWriter(os.path.join(workdir, "metrics.jsonl"), enabled=is_main)
    config_history = []
    if is_main:
        writer.keep_until(start)  # rounds after the restored one run again: their records go
        config_history = record_config(workdir, config, start, config_changes)
    board = outputs.TensorBoardWriter(os.path.join(workdir, "tensorboard"), enabled=is_main, log=log)
    rounds = int(config.train.rounds)
    tcfg = config.train
    kill_at = int(os.environ.get(KILL_ENV, "-1"))
    if config.synthesis.transfer_set:
        images_per_round = 0  # nothing synthesised
    elif config.synthesis.kind == "online":
        images_per_round = config.train.batch_size * (
            config.generator.steps + (config.student.steps if config.student.batch == "fresh" else 0))
    else:  # one batch per round: the lowest-loss iterate
        images_per_round = int(config.synthesis.batch_size or config.train.batch_size)

    pending: list[tuple[int, dict]] = []
    last_good = start or None
    compile_s = 0.0
    t_steady = None  # when the first round (compile included) had finished
    aside_s = 0.0  # time spent on evaluation, samples and checkpoints after that

    def emit(record):
        writer.write(record)
        board.write(record)

    def flush():
        if not pending:
            return
        host = jax.device_get([m for _, m in pending])
        records = [{k: float(v) for k, v in m.items()} for m in host]
        _check_finite(records, pending[0][0], ckpts.directory, last_good)
        mean = {k: float(np.mean([r[k] for r in records])) for k in records[0]}
        emit({"round": pending[-1][0], "kind": "train", **mean})
        pending.clear()

    def aside(fn):
        """Run ``fn`` after the rounds so far have finished, and keep its time out of images/s."""
        nonlocal aside_s
        jax.block_until_ready(state)
        t0 = time.time()
        fn()
        if t_steady is not None:
            aside_s += time.time() - t0

    def evaluate(done):
        flush()  # never evaluate (nor record) a state whose losses were not all finite
        ev = score_student(distiller, state, test_set)
        _check_finite([{k: v for k, v in ev.items() if isinstance(v, float)}], done, ckpts.directory, last_good,
                      what="evaluation")
        ev["wall_time_s"] = round(elapsed + time.time() - t_start, 2)
        history.append({"round": done, **ev})
        emit({"round": done, "kind": "eval", **ev})
        bar.set_postfix({score: f"{100 * ev[score]:.2f}%", "best": f"{100 * max(h[score] for h in history):.2f}%"})

    def sample(done):
        save_samples(distiller, state, os.path.join(workdir, "samples", f"round_{done:06d}.png"), save=is_main,
                     class_names=spec.class_names)

    def checkpoint(done):
        ckpts.save(done, state, {"history": history, "elapsed": elapsed + time.time() - t_start})

    t_start = time.time()
    stop = _DeferredInterrupt(log)  # Ctrl-C: finish the round, checkpoint it, stop
    if start < rounds:
        log(f"Compiling the round ({config.method}; the first round waits for it, a rerun reads it from the "
            "compilation cache) ...")
    bar = progress(total=rounds, initial=start, desc=f"{config.method} rounds",
                   enabled=bool(tcfg.progress and is_main))
    done = start
    in_flight = None  # the last round's metrics: the bar moves when a round has finished, one round behind
    try:
        for r in range(start, rounds):
            t0 = time.time()
            state, m = distiller.round(state)
            if in_flight is not None:
                jax.block_until_ready(in_flight)
                bar.update(1)
            in_flight = m
            done = r + 1
            pending.append((done, m))
            if r == start:
                jax.block_until_ready(m)
                compile_s = time.time() - t0
                t_steady = time.time()
                bar.update(1)
                in_flight = None
            if done % tcfg.log_every == 0 or done == rounds:
                flush()
            if done % tcfg.eval_every == 0 or done == rounds:
                aside(lambda: evaluate(done))
            if done % tcfg.sample_every == 0 or done == rounds:
                aside(lambda: sample(done))
            if done % tcfg.checkpoint_every == 0 or done == rounds or (stop.requested and jax.process_count() == 1):
                flush()
                aside(lambda: checkpoint(done))
                last_good = done
                if done == kill_at:
                    ckpts.wait()
                    os.kill(os.getpid(), signal.SIGKILL)
            if stop.requested:
                raise KeyboardInterrupt
        if in_flight is not None:
            jax.block_until_ready(in_flight)
            bar.update(1)
        bar.close()
        flush()
        jax.block_until_ready(state)
    except KeyboardInterrupt:
        bar.close()
        kept = f"the checkpoint of round {last_good} is kept" if last_good else "no checkpoint was written yet"
        raise RunInterrupted(f"interrupted at round {done} ({kept}); rerun the same command to resume.") from None
    finally:
        stop.restore()
        ckpts.close()  # finish in-flight saves, also when a NaN, an error or Ctrl-C stops the run
        board.close()
    wall = elapsed + time.time() - t_start
    steady_rounds = rounds - start - 1
    steady_time = (time.time() - t_steady - aside_s) if t_steady is not None else 0.0

    if not history:  # a finished run whose results.json was lost: evaluate its final state
        history.append({"round": int(state.round), **score_student(distiller, state, test_set)})
    accs = [h[score] for h in history]
    stats = summarise(accs)
    best_i = int(np.argmax(accs))
    if config.synthesis.transfer_set:
        speed_note = "no images synthesised (a transfer-set run)"
    elif steady_rounds <= 0:
        speed_note = "synthetic images/s not measured (this process ran fewer than 2 rounds)"
    else:
        speed_note = ""
    results = {
        "method": config.method, "dataset": config.data.dataset, "rounds": rounds,
        "batch_size": int(config.train.batch_size), "devices": jax.device_count(), "metric": score,
        "teacher": {"arch": ",".join(t.meta.arch for t in teachers), "checkpoint": teacher_dir, "count": len(teachers),
                    **({score: test_set.teacher[teacher_score]} if test_set is not None else {})},
        "student": {"arch": config.student.arch, "best": stats["best"], "last": stats["last"],
                    "mean": stats["mean"], "best_round": history[best_i]["round"]},
        "agree": history[-1]["agree"],
        **({"pixel_accuracy": history[-1]["pixel_accuracy"]} if score == "miou" else
           {"loyalty": history[-1]["loyalty"]}),
        "wall_time_s": wall, "compile_s": compile_s,
        "images_per_s": images_per_round * steady_rounds / steady_time if not speed_note and steady_time else 0.0,
        **({"images_per_s_note": speed_note} if speed_note else {}),
        "history": history, "workdir": workdir,
    }
    if len(config_history) > 1:
        results["config_changes"] = [{"from_round": h["from_round"], "changed": h["changed"]}
                                     for h in config_history[1:]]
    if test_set is None:
        results["accuracy_measured"] = False
        results["synthetic_eval_samples"] = SYNTHETIC_EVAL
    if score == "miou" and test_set is not None:
        results["teacher"]["pixel_accuracy"] = test_set.teacher["teacher_pixel_accuracy"]
    if config.synthesis.export:
        from dfkd_jax import transfer
        if state.pool is None:
            raise ConfigError("config.synthesis.export: this run keeps no pool (an online method with "
                              "student.batch != pool). Use student.batch=pool or an inversion method.")
        images, logits = transfer.pool_arrays(state.pool)
        if logits is None:  # label the set with the teachers (every process: a computation over the mesh)
            logits = distiller.evaluator.pixel_logits(images)
        if is_main:
            path = transfer.export(config.synthesis.export, images, logits, teacher.meta.num_classes, {
                "method": config.method, "teachers": [{"arch": t.meta.arch, "dataset": t.meta.dataset,
                                                       "mean": t.meta.mean, "std": t.meta.std} for t in teachers],
                "teacher_dir": teacher_dir, "rounds": rounds, "config": json.loads(config.to_json_best_effort())},
                class_names=spec.class_names)
            results["transfer_set"] = path
            log(f"Transfer set written to {config.synthesis.export} (classes.png: a grid per class).")
    if is_main:
        _write_atomically(results_file, json.dumps(results, indent=2))
        outputs.save_accuracy_plot(os.path.join(workdir, "accuracy.png"), history,
                                   f"{config.method}: {config.teacher.arch} -> {config.student.arch} "
                                   f"on {config.data.dataset}")
        log(outputs.summary_text(results))
    return results
