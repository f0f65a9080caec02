"""ZSKT on CIFAR-10/100 at the published hyperparameters (Micaelli & Storkey 2019).

Batch 128, nz 100; per round 1 generator update then 10 student updates on the same batch;
student Adam 2e-3, generator Adam 1e-3, cosine schedules, gradient clipping at 5; student
loss KL + 250 x attention over the three block groups. 80,000 rounds (the paper's 80k
generator iterations on CIFAR-10).
Usage: --config configs/cifar/zskt.py:cifar10,w40_2_w16_1
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pairs import apply_pair  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import zskt  # noqa: E402


def get_config(arg="cifar10,r34_r18"):
    c = apply_pair(zskt.configure(base_config()), arg)
    c.generator.ngf = 64
    c.train.rounds = 80_000
    c.train.log_every = 50
    c.train.eval_every = 400
    c.train.checkpoint_every = 2000
    c.train.sample_every = 4000
    return c
