"""CuDFKD on CIFAR-10/100 at the published hyperparameters (R34 -> R18, CIFAR-10).

250 epochs x 40 rounds of 1 generator + 10 student updates, batch 512, entropy at tau 20,
student L1 with the self-paced v (lambda_0 2.0, alpha 1e-4 per student update on CIFAR-10,
2e-5 on CIFAR-100), grad_adv 0.5 per epoch between 25% and 75% of the run; student SGD 0.1
momentum 0.9 wd 1e-4 cosine; generator (DCGAN_Generator_CIFAR10 = LargeGenerator, N(0, 0.02)
init, Sigmoid) Adam 1e-3 betas (0.9, 0.99), nz 512.
Usage: --config configs/cifar/cudfkd.py:cifar10,r34_r18
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pairs import apply_pair  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import cudfkd  # noqa: E402


def get_config(arg="cifar10,r34_r18"):
    c = apply_pair(cudfkd.configure(base_config(), epochs=250), arg)
    c.hparams.spl_alpha = 1e-4 if c.data.dataset == "cifar10" else 2e-5  # datafree_kd.py l. 774-777
    c.generator.ngf = 64
    c.train.log_every = 50
    c.train.eval_every = 400
    c.train.checkpoint_every = 2000
    c.train.sample_every = 4000
    return c
