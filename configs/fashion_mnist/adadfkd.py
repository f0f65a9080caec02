"""AdaDFKD on Fashion-MNIST, LeNet-5 -> LeNet-5-half, at the project's CPU settings (lenet_pair.py).

CuDFKD's generator loss (masked adversarial KL_3 x 9 ramped in between 25% and 75% of the
run, grad_adv 0.05 per 40-round epoch) plus 0.1 x R2M over a queue of 8,192 past student
keys, the band of width 0.9 sliding from easy to hard negatives between 25% and 75%; the
student's KD at tau 20 plus 0.1 x the relation InfoNCE, weighted by the self-paced v.
LeNet-5-half's 60-wide features are projected to the teacher's 120 by a learned linear
map. The bn term is dropped (the LeNet-5 teacher has no BatchNorm).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lenet_pair import apply  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import adadfkd, cudfkd  # noqa: E402

ROUNDS = 420


def get_config():
    c = apply(adadfkd.configure(base_config(), epochs=ROUNDS / cudfkd.EPOCH_ROUNDS), rounds=ROUNDS)
    c.generator.nz = 100
    c.train.batch_size = 256
    c.hparams.r2m_queue_size = 8192
    c.hparams.spl_growth = 1e-4 * ROUNDS * c.student.steps
    return c
