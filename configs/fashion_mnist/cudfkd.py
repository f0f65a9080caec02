"""CuDFKD on Fashion-MNIST, LeNet-5 -> LeNet-5-half, at the project's CPU settings (lenet_pair.py).

CuDFKD's curriculum for a run of 420 rounds (10.5 of its 40-round epochs): the masked
adversarial KL_3 x 9 ramps in between 25% and 75% of the run; the student's KD at tau 20
is weighted per sample by the self-paced v with lambda growing from 2.0 by alpha = 1e-4
per student update. The bn term is dropped (the LeNet-5 teacher has no BatchNorm); the
generator is the shared DAFL one (ngf 8) rather than CuDFKD's Sigmoid DCGAN, as for
every method in this folder.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lenet_pair import apply  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import cudfkd  # noqa: E402

ROUNDS = 420


def get_config():
    c = apply(cudfkd.configure(base_config(), epochs=ROUNDS / cudfkd.EPOCH_ROUNDS), rounds=ROUNDS)
    c.generator.nz = 100
    c.train.batch_size = 256
    c.hparams.spl_growth = 1e-4 * ROUNDS * c.student.steps
    return c
