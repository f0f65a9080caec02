"""DFAD on CIFAR-10/100 at the published hyperparameters (Fang et al. 2019).

Batch 256, GeneratorA nz 256 (ngf 64), 500 "epochs" of 50 rounds = 25,000 rounds of
1 generator + 5 student updates; student SGD lr 0.1, momentum 0.9, wd 5e-4, x0.1 at
epochs 100 and 200 (20% and 40%); generator Adam lr 1e-3, same decay.
Usage: --config configs/cifar/dfad.py:cifar10,r34_r18
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pairs import apply_pair  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import dfad  # noqa: E402


def get_config(arg="cifar10,r34_r18"):
    c = apply_pair(dfad.configure(base_config()), arg)
    c.generator.nz = 256
    c.generator.ngf = 64
    c.train.batch_size = 256
    c.train.rounds = 25_000
    c.train.eval_every = 250
    c.train.log_every = 50
    c.train.checkpoint_every = 1000
    c.train.sample_every = 2500
    return c
