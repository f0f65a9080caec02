"""DFQ on CIFAR-10/100 at the CMI benchmark's re-run settings (Choi et al. 2020).

Generator: CMI's LargeGenerator (Sigmoid, nz 256), adversarial KL + bn + one_hot + 20 balance,
Adam 1e-3 betas (0.5, 0.999); student: KL, SGD 0.1 momentum 0.9 wd 1e-4, cosine, 10 student
updates per generator update on fresh batches (generator in eval mode), batch 256; 200 epochs
of 400 student iterations = 8,000 rounds.
Usage: --config configs/cifar/dfq.py:cifar10,r34_r18
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pairs import apply_pair  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import dfq  # noqa: E402


def get_config(arg="cifar10,r34_r18"):
    c = apply_pair(dfq.configure(base_config()), arg)
    c.generator.nz = 256
    c.generator.ngf = 64
    c.train.batch_size = 256
    c.train.rounds = 8_000
    c.train.log_every = 50
    c.train.eval_every = 400
    c.train.checkpoint_every = 2000
    c.train.sample_every = 4000
    return c
