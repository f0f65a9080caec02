"""Obtaining a run's teacher: load the configured checkpoint, or train and cache it first.

``obtain_teacher(config)`` is what the command line calls before the distillation loop
(``dfkd_jax.engine.loop.train_and_evaluate`` receives the teacher and never trains one).
In a multi-process run, process 0 trains and saves a missing teacher while the others wait
at a barrier; then every process loads the same folder.

Only the project's cache is written to: ``teacher.train_if_missing`` trains a missing teacher into the
cache's folder for its recipe (``teacher.checkpoint`` left empty, or naming that very folder). A
``teacher.checkpoint`` elsewhere names a teacher the user has: when it is missing (a typo) or incomplete
(a ``teacher.json`` lost), the run stops and says so, and nothing is written there.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp

from dfkd_jax.config import default_cache_dir
from dfkd_jax.core import sharding
from dfkd_jax.errors import ConfigError, TeacherNotFoundError
from dfkd_jax.teacher import Teacher, describe_folder, is_teacher_dir, load_teacher, save_teacher


def teacher_path(config) -> str:
    """The teacher folder of ``config``: ``teacher.checkpoint``, or the cache's folder for its recipe
    (dataset, architecture, epochs, label noise, training subset; ``_check_recipe`` checks the rest)."""
    if config.teacher.checkpoint:
        return os.path.abspath(os.path.expanduser(config.teacher.checkpoint))
    return cache_path(config)


def cache_path(config) -> str:
    """The cache's folder for ``config``'s teacher recipe (whatever ``teacher.checkpoint`` says)."""
    name = f"{config.data.dataset}_{config.teacher.arch}_e{config.teacher.epochs}"
    if config.teacher.label_noise:
        name += f"_noise{config.teacher.label_noise:g}"
    if config.teacher.train_examples:
        name += f"_n{config.teacher.train_examples}"
    return os.path.join(default_cache_dir(), "teachers", name)


def _train_and_save(config, path: str, log: Callable[[str], None]) -> None:
    if path != cache_path(config):  # the user's own folder: never trained into
        state = (f"{path} is not a complete teacher folder ({describe_folder(path)})" if os.path.isdir(path)
                 and os.listdir(path) else f"No teacher at {path}")
        raise TeacherNotFoundError(
            f"{state} (config.teacher.checkpoint). Nothing was written there. Check the path; to make a teacher "
            "there, run `python tools/train_teacher.py --dataset NAME --arch NAME --out DIR` or "
            "`python tools/convert_torch_checkpoint.py`; or leave teacher.checkpoint empty to train one into the "
            f"cache ({cache_path(config)}).")
    if not config.teacher.train_if_missing:
        raise TeacherNotFoundError(
            f"No teacher checkpoint at {path}. Point --config.teacher.checkpoint at one (convert a PyTorch "
            "checkpoint with tools/convert_torch_checkpoint.py, or train one with tools/train_teacher.py), "
            "or set --config.teacher.train_if_missing=True to train it now.")
    from dfkd_jax.supervised import train_teacher
    log(f"No teacher at {path}: training {config.teacher.arch} on {config.data.dataset} "
        f"({config.teacher.epochs} epochs).")
    local = sharding.make_mesh(jax.local_devices())  # trained by this process alone
    variables, meta = train_teacher(
        config.teacher.arch, config.data.dataset, epochs=config.teacher.epochs,
        batch_size=config.teacher.batch_size, lr=config.teacher.lr, label_noise=config.teacher.label_noise,
        train_examples=config.teacher.train_examples, seed=config.seed, data_dir=config.data.data_dir,
        source_dir=config.data.source_dir, mesh=local, show_progress=config.train.progress, log=log)
    if os.path.isdir(path) and not is_teacher_dir(path):  # the cache's own leftover (a save cut short before)
        import shutil
        shutil.rmtree(path)
    save_teacher(path, variables, meta)
    score = (f"test mIoU {100 * meta.extra['test_miou']:.2f}%" if "test_miou" in meta.extra
             else f"test accuracy {100 * meta.test_accuracy:.2f}%")
    log(f"Teacher saved to {path} ({score}).")


def _check_recipe(path: str, meta, config) -> None:
    """A cached teacher must have been trained with the configured recipe: its folder name carries the
    epochs, label noise and subset; the learning rate and batch size are compared with its ``teacher.json``."""
    trained = {k: meta.extra.get(k) for k in ("lr", "batch_size")}
    wanted = {"lr": float(config.teacher.lr), "batch_size": int(config.teacher.batch_size)}
    differing = [f"teacher.{k}: cached {trained[k]}, configured {wanted[k]}"
                 for k in wanted if trained[k] is not None and trained[k] != wanted[k]]
    if differing:
        raise ConfigError(f"The cached teacher at {path} was trained with another recipe ({'; '.join(differing)}). "
                          "Delete that folder to train the configured one, point --config.teacher.checkpoint at it "
                          "to use it as it is, or set DFKD_JAX_CACHE to another cache.")


def obtain_teacher(config, log: Callable[[str], None] | None = None) -> Teacher:
    """Load the configured teacher; train and cache it first if it is missing and allowed.

    The teacher computes in ``config.compute_dtype`` (its variables stay float32).
    """
    log = log or (lambda msg: print(msg, flush=True) if jax.process_index() == 0 else None)
    path = teacher_path(config)
    if jax.process_index() == 0 and not is_teacher_dir(path):
        _train_and_save(config, path, log)
    log(f"Loading the teacher from {path} ...")
    sharding.barrier("dfkd_jax_teacher_ready")
    if not is_teacher_dir(path):  # another process could not see process 0's folder
        raise TeacherNotFoundError(f"No teacher at {path} on process {jax.process_index()}: the processes of a "
                                   "multi-host run need a shared filesystem, or --config.teacher.checkpoint "
                                   "pointing at a copy on every host.")
    teacher = load_teacher(path, dtype=jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32)
    if teacher.meta.arch != config.teacher.arch:
        raise ConfigError(f"The teacher at {path} is a {teacher.meta.arch!r}, but config.teacher.arch is "
                          f"{config.teacher.arch!r}. Set --config.teacher.arch={teacher.meta.arch} or point "
                          "--config.teacher.checkpoint elsewhere.")
    if not config.teacher.checkpoint:
        _check_recipe(path, teacher.meta, config)
    return teacher


def teacher_paths(config) -> list[str]:
    """Every teacher folder of ``config``: ``teacher.checkpoints`` (comma-separated), else the one teacher's."""
    listed = [p.strip() for p in str(config.teacher.checkpoints).split(",") if p.strip()]
    if not listed:
        return [teacher_path(config)]
    return [os.path.abspath(os.path.expanduser(p)) for p in listed]


def obtain_teachers(config, log: Callable[[str], None] | None = None) -> list[Teacher]:
    """The run's teachers: the configured one (``obtain_teacher``), or every folder of
    ``teacher.checkpoints`` (each read with its own architecture and normalisation; none trained here)."""
    paths = [p.strip() for p in str(config.teacher.checkpoints).split(",") if p.strip()]
    if not paths:
        return [obtain_teacher(config, log)]
    dtype = jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32
    teachers = [load_teacher(p, dtype=dtype) for p in teacher_paths(config)]
    from dfkd_jax.ensemble import check_compatible
    check_compatible(teachers)
    return teachers
