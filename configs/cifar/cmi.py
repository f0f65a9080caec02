"""CMI on CIFAR-10/100 at the authors' published settings (dfkd_jax/methods/cmi.py cites the scripts).
Usage: --config configs/cifar/cmi.py:cifar10,w40_2_w16_1
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pairs import apply_pair  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import cmi  # noqa: E402


def get_config(arg="cifar10,w40_2_w16_1"):
    c = apply_pair(cmi.configure(base_config()), arg)
    c.train.log_every = 1
    c.train.eval_every = 5
    c.train.checkpoint_every = 5
    c.train.sample_every = 20
    return c
