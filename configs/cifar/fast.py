"""FAST on CIFAR-10/100 at the authors' published settings (dfkd_jax/methods/fast.py cites the scripts).
Usage: --config configs/cifar/fast.py:cifar10,w40_2_w16_1
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pairs import apply_pair  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import fast  # noqa: E402


def get_config(arg="cifar10,w40_2_w16_1"):
    c = apply_pair(fast.configure(base_config()), arg)
    adv = {"r34_r18": 1.33, "vgg11_r18": 1.0}.get(arg.partition(",")[2], 1.1)
    oh = {"r34_r18": 0.5, "vgg11_r18": 0.5}.get(arg.partition(",")[2], 0.4)
    c.generator.terms["adv_kd_masked"], c.generator.terms["one_hot"] = adv, oh
    c.train.log_every = 1
    c.train.eval_every = 5
    c.train.checkpoint_every = 5
    c.train.sample_every = 20
    return c
