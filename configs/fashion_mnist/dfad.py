"""DFAD on Fashion-MNIST, LeNet-5 -> LeNet-5-half (DAFL variant), tuned for 2 CPU cores.

The objectives are DFAD's (generator -L1(s, t), student L1(s, t)) with its MNIST
settings (student SGD lr 0.01, momentum 0.9, wd 1e-4, x0.1 at 20% and 40%; generator
Adam lr 1e-3). Changed, and why (docs/fashion_mnist.md has the runs):
- a small generator (ngf 8): the generator's convolutions dominate a round on XLA:CPU;
- the student learns from the on-device pool of the last 8,192 synthetic samples, 10
  updates per generator update instead of 5 on fresh batches (fresh batches: 33% after
  100 rounds; pool: 54%). It still plateaus near 54%: the adversarial generator keeps
  chasing the student's weak spots rather than covering the classes. DAFL is the
  default for this reason (configs/fashion_mnist/default.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lenet_pair import apply  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import dfad  # noqa: E402


def get_config():
    c = apply(dfad.configure(base_config()), rounds=600)
    c.student.lr = 0.01
    c.student.weight_decay = 1e-4
    c.student.pool_size = 8192
    c.student.steps = 10
    c.train.eval_every = 50
    c.train.checkpoint_every = 100
    c.train.sample_every = 100
    return c
