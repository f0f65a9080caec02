"""DAFL on CIFAR-10/100 at the published hyperparameters (Chen et al. 2019).

Batch 1024, nz 1000, generator Adam lr 0.02 (BatchNorm eps 0.8); student SGD lr 0.1,
momentum 0.9, wd 5e-4, x0.1 at 40% and 80% (epochs 800 and 1600 of 2000); generator terms
one_hot 0.05, activation 0.01, balance 5 (log10) on CIFAR-10 and one_hot 0.5, activation
0.1, balance 20 on CIFAR-100 (the README's commands). 2000 epochs of 120 iterations
(DAFL-train.py l. 168) = 240,000 rounds of one generator and one student update on the
same batch.
Usage: --config configs/cifar/dafl.py:cifar10,r34_r18
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pairs import apply_pair  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import dafl  # noqa: E402


def get_config(arg="cifar10,r34_r18"):
    c = apply_pair(dafl.configure(base_config()), arg)
    c.generator.nz = 1000
    c.generator.ngf = 64
    c.generator.lr = 0.02
    if c.data.dataset == "cifar100":
        c.generator.terms = {"one_hot": 0.5, "activation": 0.1, "balance": 20.0}
    else:
        c.generator.terms = {"one_hot": 0.05, "activation": 0.01, "balance": 5.0}
    c.student.optimizer = "sgd"
    c.student.lr = 0.1
    c.student.momentum = 0.9
    c.student.weight_decay = 5e-4
    c.student.schedule = "step"
    c.student.milestones = (0.4, 0.8)
    c.train.batch_size = 1024
    c.train.rounds = 2000 * 120
    c.train.eval_every = 1000
    c.train.log_every = 100
    c.train.checkpoint_every = 2000
    c.train.sample_every = 10_000
    return c
