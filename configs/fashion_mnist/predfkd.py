"""PRE-DFKD on Fashion-MNIST, LeNet-5 -> LeNet-5-half, at the project's CPU settings (lenet_pair.py).

PRE-DFKD's objectives: the spectrally normalised novel generator (one_hot + 5 balance
(log10) + 0.1 activation + ADI's 1 - JS_3), the VAE memory replaying 128 samples to every
student update and trained during the first 4 of them, the student's L1 on novel +
replayed samples (SGD 0.1 cosine). The novel generator is the shared width (ngf 8,
nz 100) and the student draws its novel samples from the pool, as for every method here.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lenet_pair import apply  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import predfkd  # noqa: E402


def get_config():
    c = apply(predfkd.configure(base_config()))
    c.generator.arch = "dafl_sn"
    c.memory.nz = 100
    return c
