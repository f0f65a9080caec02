"""Student settings that several methods share (each method's docstring names its source)."""

from __future__ import annotations


def sgd(config, lr: float, weight_decay: float, schedule: str, milestones: tuple[float, ...] | None = None):
    """The student's SGD: momentum 0.9, ``lr``, PyTorch-style ``weight_decay``, and its ``schedule``
    (``milestones`` for the step schedule) over the run."""
    config.student.optimizer = "sgd"
    config.student.lr = lr
    config.student.momentum = 0.9
    config.student.weight_decay = weight_decay
    config.student.schedule = schedule
    if milestones is not None:
        config.student.milestones = milestones
    return config


def inversion_student(config, lr: float = 0.1):
    """The inversion family's student (the CMI / Fast-Datafree code's ``datafree_kd.py``): KD at tau 20 from
    the augmented pool, SGD momentum 0.9, wd 1e-4, cosine to 2e-4, 400 steps per synthesised batch,
    batch 256, 200 rounds (epochs); the pool holds 50,000 8-bit images (the reference's PNG files)."""
    config.student.terms = {"kd": 1.0}
    config.student.tau = 20.0
    config.student.steps = 400
    sgd(config, lr, 1e-4, "cosine")
    config.student.lr_min = 2e-4
    config.student.augment = "crop_flip"
    config.student.pool_size = 50_000
    config.student.pool_dtype = "uint8"  # the reference's 8-bit PNG files
    config.train.batch_size = 256
    config.train.rounds = 200
    return config
