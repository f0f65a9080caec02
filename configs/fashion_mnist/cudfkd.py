"""CuDFKD on Fashion-MNIST, LeNet-5 -> LeNet-5-half, at the project's CPU settings (lenet_pair.py).

CuDFKD's curriculum as the method defines it per run length (dfkd_jax/methods/cudfkd.py):
the masked adversarial KL_3 x 9 ramps in between 25% and 75% of the run, growing by
grad_adv = 0.5 per 40 rounds (at 420 rounds it ends at 0.5 x 0.5 x 420 / 40 = 2.625); the
student's L1 is weighted per sample by the self-paced v with lambda growing from 2.0 by
alpha = 1e-4 per student update. Both follow --config.train.rounds. The bn term is dropped
(the LeNet-5 teacher has no BatchNorm); the generator is the shared one (ngf 8) rather than
CuDFKD's Sigmoid DCGAN, as for every method in this folder.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lenet_pair import apply  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import cudfkd  # noqa: E402


def get_config():
    return apply(cudfkd.configure(base_config()), rounds=420)
