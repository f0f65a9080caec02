"""DFAD on Fashion-MNIST-32x3 (Fashion-MNIST padded to 32x32, three channels): CIFAR-shaped
networks distilled on real data that these machines have (pairs in pairs_32x3.py).

DFAD's objectives (generator -L1(s, t), student L1(s, t); student SGD 0.1, momentum 0.9,
wd 5e-4; generator Adam 1e-3; x0.1 at 20% and 40%). On the CPU pair the student takes 5
updates per round from the pool, for 120 rounds. ``:resnet34,resnet18`` is the GPU run of
docs/performance.md: 5 fresh batches per round as published, 5,000 rounds.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pairs_32x3 import apply_pair  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import dfad  # noqa: E402


def get_config(arg="wrn16_2,wrn16_1"):
    c = apply_pair(dfad.configure(base_config()), arg)
    if arg == "wrn16_2,wrn16_1":
        c.student.steps = 5
        c.train.rounds = 120
    return c
