"""AdaDFKD on CIFAR-10/100 at the published hyperparameters (R34 -> R18, CIFAR-10).

300 epochs x 40 rounds of 1 generator + 10 student updates, batch 768, tau 20, adversarial
9 KL_3 at weight 1 (unmasked), window k 0.9 sliding between 25% and 75% of the run, queue of
4,096 student keys, InfoNCE at 0.07, lambda_R2M 0.1, lambda_rel 0.1, lambda_0 2.2 (alpha 1e-4
on CIFAR-10, 2e-5 on CIFAR-100); student SGD 0.1 momentum 0.9 wd 1e-4 cosine; generator
(DCGAN_Generator_CIFAR10 = LargeGenerator, N(0, 0.02) init, Sigmoid) Adam 1e-3, nz 512.
Usage: --config configs/cifar/adadfkd.py:cifar10,r34_r18
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pairs import apply_pair  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import adadfkd  # noqa: E402


def get_config(arg="cifar10,r34_r18"):
    c = apply_pair(adadfkd.configure(base_config(), epochs=300), arg)
    c.hparams.spl_alpha = 1e-4 if c.data.dataset == "cifar10" else 2e-5  # datafree_kd.py l. 765-768
    c.generator.ngf = 64
    c.train.log_every = 50
    c.train.eval_every = 400
    c.train.checkpoint_every = 2000
    c.train.sample_every = 4000
    return c
