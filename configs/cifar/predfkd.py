"""PRE-DFKD on CIFAR-10/100 at the published hyperparameters (Binici et al. 2022).

400 epochs x 36 rounds of 1 novel-generator update + 10 student updates (the VAE memory
updated during the first 4), novel batch 1024, memory batch 128; novel generator with
spectral norm, nz 1000, Adam 0.02; VAE Adam 5e-4; student SGD 0.1 wd 5e-4 cosine, L1.
Usage: --config configs/cifar/predfkd.py:cifar10,r34_r18
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pairs import apply_pair  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import predfkd  # noqa: E402


def get_config(arg="cifar10,r34_r18"):
    c = apply_pair(predfkd.configure(base_config()), arg)
    c.generator.ngf = 64
    c.train.log_every = 50
    c.train.eval_every = 400
    c.train.checkpoint_every = 2000
    c.train.sample_every = 4000
    return c
