"""AdaDFKD on Fashion-MNIST, LeNet-5 -> LeNet-5-half, at the project's CPU settings (lenet_pair.py).

AdaDFKD's generator loss (one_hot + 20 balance at tau 20 + the unmasked adversarial KL_3 x 9
at weight 1, the authors' current script) plus 0.1 x R2M over a queue of 8,192 past student
keys, the band of width 0.9 sliding from easy to hard negatives between 25% and 75% of the
run; the student's KD at tau 20 plus 0.1 x the relation InfoNCE, weighted by the self-paced
v (lambda from 2.2, alpha 1e-4 per student update, following --config.train.rounds).
LeNet-5-half's 60-wide features are projected to the teacher's 120 by a learned linear
map. The bn term is dropped (the LeNet-5 teacher has no BatchNorm).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lenet_pair import apply  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import adadfkd  # noqa: E402


def get_config():
    c = apply(adadfkd.configure(base_config()), rounds=420)
    c.hparams.r2m_queue_size = 8192
    return c
