"""The outer loop (Python): rounds, evaluation, logging, samples, checkpoints, results.

It knows nothing about methods. Metrics stay on the device and are pulled every
``log_every`` rounds (and before every checkpoint, so that a checkpoint is only
written for a state whose losses were all finite). Killed at any point, rerunning
the same command continues from the last checkpoint: the state, the RNG and the
evaluation history are all in it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from dfkd_jax.progress import progress

from dfkd_jax import data
from dfkd_jax.config import default_cache_dir, validate
from dfkd_jax.data.pipeline import preprocess
from dfkd_jax.engine import outputs
from dfkd_jax.engine.checkpoint import Checkpoints
from dfkd_jax.engine.distiller import Distiller
from dfkd_jax.metrics import summarise
from dfkd_jax.teacher import Teacher, is_teacher_dir, load_teacher, save_teacher

# Fault injection for the resume test: SIGKILL this process right after the
# checkpoint of this round has been written.
KILL_ENV = "DFKD_JAX_KILL_AT_ROUND"


class NonFiniteLossError(FloatingPointError):
    pass


def teacher_path(config) -> str:
    if config.teacher.checkpoint:
        return os.path.abspath(os.path.expanduser(config.teacher.checkpoint))
    name = f"{config.data.dataset}_{config.teacher.arch}"
    if config.teacher.label_noise:
        name += f"_noise{config.teacher.label_noise:g}"
    if config.teacher.train_examples:
        name += f"_n{config.teacher.train_examples}"
    return os.path.join(default_cache_dir(), "teachers", name)


def obtain_teacher(config, log: Callable[[str], None] = print) -> Teacher:
    """Load the configured teacher; train and cache it first if it is missing and allowed."""
    path = teacher_path(config)
    if not is_teacher_dir(path):
        if not config.teacher.train_if_missing:
            raise FileNotFoundError(
                f"No teacher checkpoint at {path}. Point --config.teacher.checkpoint at one (convert a PyTorch "
                "checkpoint with tools/convert_torch_checkpoint.py, or train one with tools/train_teacher.py), "
                "or set --config.teacher.train_if_missing=True to train it now.")
        from dfkd_jax.supervised import train_teacher
        log(f"No teacher at {path}: training {config.teacher.arch} on {config.data.dataset} "
            f"({config.teacher.epochs} epochs).")
        variables, meta = train_teacher(
            config.teacher.arch, config.data.dataset, epochs=config.teacher.epochs,
            batch_size=config.teacher.batch_size, lr=config.teacher.lr, label_noise=config.teacher.label_noise,
            train_examples=config.teacher.train_examples, seed=config.seed, data_dir=config.data.data_dir, source_dir=config.data.source_dir,
            show_progress=config.train.progress, log=log)
        if jax.process_index() == 0:
            save_teacher(path, variables, meta)
        score = (f"test mIoU {100 * meta.extra['test_miou']:.2f}%" if "test_miou" in meta.extra
                 else f"test accuracy {100 * meta.test_accuracy:.2f}%")
        log(f"Teacher saved to {path} ({score}).")
    # the teacher computes in config.compute_dtype too (its variables stay float32)
    teacher = load_teacher(path, dtype=jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32)
    if teacher.meta.arch != config.teacher.arch:
        raise ValueError(f"The teacher at {path} is a {teacher.meta.arch!r}, but config.teacher.arch is "
                         f"{config.teacher.arch!r}. Set --config.teacher.arch={teacher.meta.arch} or point "
                         "--config.teacher.checkpoint elsewhere.")
    return teacher


def save_samples(distiller: Distiller, state, path: str, n: int = 64) -> None:
    """A grid of synthetic samples; for segmentation, 16 of them each beside the teacher's and the
    student's predicted masks."""
    meta = distiller.teacher.meta
    if distiller.task == "segmentation":
        images = distiller.sample(state, 16)
        t_masks, s_masks = distiller.predict(state, images)
        outputs.save_segmentation_grid(path, images, t_masks, s_masks, meta.mean, meta.std, meta.num_classes)
    else:
        outputs.save_grid(path, distiller.sample(state, n), meta.mean, meta.std)


def _check_finite(records: list[dict[str, Any]], first_round: int, ckpt_dir: str, last_good: int | None):
    for i, rec in enumerate(records):
        bad = [k for k, v in rec.items() if not np.isfinite(v)]
        if bad:
            where = (f"the last good checkpoint is round {last_good} in {ckpt_dir}" if last_good
                     else "no checkpoint was written yet")
            raise NonFiniteLossError(
                f"Non-finite loss at round {first_round + i}: {', '.join(f'{k}={rec[k]}' for k in bad)}. "
                f"Stopped; {where}. Lower the learning rate of the network whose term diverged (or the term's "
                "weight) and rerun: the run resumes from the last good checkpoint.")


def train_and_evaluate(config, workdir: str, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the distillation ``config`` in ``workdir``; return the results dict."""
    validate(config)
    if config.distributed:
        jax.distributed.initialize()
    is_main = jax.process_index() == 0
    log = log or (lambda msg: print(msg, flush=True) if is_main else None)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))

    teacher = obtain_teacher(config, log)
    spec = data.get_spec(config.data.dataset)
    if tuple(teacher.meta.input_shape) != tuple(spec.image_shape) or teacher.meta.num_classes != spec.num_classes:
        raise ValueError(f"The teacher takes {teacher.meta.input_shape} inputs with {teacher.meta.num_classes} "
                         f"classes; dataset {config.data.dataset!r} has {spec.image_shape} and "
                         f"{spec.num_classes}. Choose the dataset the teacher was trained for.")
    norm_spec = dataclasses.replace(spec, mean=teacher.meta.mean, std=teacher.meta.std)
    test_x, test_y = data.load_split(config.data.dataset, "test", data_dir=config.data.data_dir or None,
                                     source_dir=config.data.source_dir or None)
    # segmentation label maps stay uint8 on the host (the confusion matrix casts them on the device)
    test_x, test_y = preprocess(test_x, norm_spec), test_y if spec.is_segmentation else test_y.astype(np.int32)

    distiller = Distiller.from_config(config, teacher)
    if distiller.task != spec.task:
        raise ValueError(f"The teacher {teacher.meta.arch} is a {distiller.task} model but dataset "
                         f"{config.data.dataset!r} is a {spec.task} dataset.")
    score, teacher_score = distiller.headline
    ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), config.train.keep_checkpoints)
    start = ckpts.latest()
    results_file = os.path.join(workdir, "results.json")
    if start is not None and start >= int(config.train.rounds) and os.path.isfile(results_file):
        ckpts.close()
        with open(results_file) as f:
            results = json.load(f)
        log(f"The run in {workdir} is complete ({start} rounds); its results:")
        log(outputs.summary_text(results))
        return results
    if start is not None:
        state, record = ckpts.restore(start, distiller.abstract_state())
        history, elapsed = record["history"], record["elapsed"]
        log(f"Resuming from the checkpoint of round {start} in {ckpts.directory}.")
    else:
        state, history, elapsed, start = distiller.init(config.seed), [], 0.0, 0
    writer = outputs.MetricsWriter(os.path.join(workdir, "metrics.jsonl"), enabled=is_main)
    rounds = int(config.train.rounds)
    tcfg = config.train
    kill_at = int(os.environ.get(KILL_ENV, "-1"))
    images_per_round = config.train.batch_size * (
        config.generator.steps + (config.student.steps if config.student.batch == "fresh" else 0))

    pending: list[tuple[int, dict]] = []
    last_good = start or None
    compile_s = 0.0
    steady_rounds, steady_time = 0, 0.0

    def flush():
        if not pending:
            return
        host = jax.device_get([m for _, m in pending])
        records = [{k: float(v) for k, v in m.items()} for m in host]
        _check_finite(records, pending[0][0], ckpts.directory, last_good)
        mean = {k: float(np.mean([r[k] for r in records])) for k in records[0]}
        writer.write({"round": pending[-1][0], "kind": "train", **mean})
        pending.clear()

    t_start = time.time()
    bar = progress(range(start, rounds), initial=start, total=rounds, desc=f"{config.method} rounds",
                   enabled=bool(tcfg.progress and is_main))
    try:
        for r in bar:
            t0 = time.time()
            state, m = distiller.round(state)
            done = r + 1
            pending.append((done, m))
            if r == start:
                jax.block_until_ready(m)
                compile_s = time.time() - t0
            if done % tcfg.log_every == 0 or done == rounds:
                flush()
            if done % tcfg.eval_every == 0 or done == rounds:
                ev = distiller.evaluate(state, test_x, test_y)
                ev["wall_time_s"] = round(elapsed + time.time() - t_start, 2)
                history.append({"round": done, **ev})
                writer.write({"round": done, "kind": "eval", **ev})
                bar.set_postfix({score: f"{100 * ev[score]:.2f}%",
                                 "best": f"{100 * max(h[score] for h in history):.2f}%"})
            if is_main and (done % tcfg.sample_every == 0 or done == rounds):
                save_samples(distiller, state, os.path.join(workdir, "samples", f"round_{done:06d}.png"))
            if done % tcfg.checkpoint_every == 0 or done == rounds:
                flush()
                ckpts.save(done, state, {"history": history, "elapsed": elapsed + time.time() - t_start})
                last_good = done
                if done == kill_at:
                    ckpts.wait()
                    os.kill(os.getpid(), signal.SIGKILL)
            if r > start:
                steady_rounds += 1
                steady_time += time.time() - t0
        bar.close()
        flush()
    finally:
        ckpts.close()  # finish in-flight saves, also when a NaN or an error stops the run
    wall = elapsed + time.time() - t_start

    if not history:  # resumed a finished run
        history.append({"round": rounds, **distiller.evaluate(state, test_x, test_y)})
    accs = [h[score] for h in history]
    stats = summarise(accs)
    best_i = int(np.argmax(accs))
    results = {
        "method": config.method, "dataset": config.data.dataset, "rounds": rounds,
        "batch_size": int(config.train.batch_size), "devices": jax.device_count(), "metric": score,
        "teacher": {"arch": config.teacher.arch, score: history[-1][teacher_score],
                    "checkpoint": teacher_path(config)},
        "student": {"arch": config.student.arch, "best": stats["best"], "last": stats["last"],
                    "mean": stats["mean"], "best_round": history[best_i]["round"]},
        "agree": history[-1]["agree"],
        **({"loyalty": history[-1]["loyalty"]} if score == "accuracy" else
           {"pixel_accuracy": history[-1]["pixel_accuracy"]}),
        "wall_time_s": wall, "compile_s": compile_s,
        "images_per_s": images_per_round * steady_rounds / steady_time if steady_time else 0.0,
        "history": history, "workdir": workdir,
    }
    if score == "miou":
        results["teacher"]["pixel_accuracy"] = history[-1]["teacher_pixel_accuracy"]
    if is_main:
        with open(results_file, "w") as f:
            json.dump(results, f, indent=2)
        log(outputs.summary_text(results))
    return results
