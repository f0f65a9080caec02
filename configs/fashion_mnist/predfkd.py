"""PRE-DFKD on Fashion-MNIST, LeNet-5 -> LeNet-5-half, at the project's CPU settings (lenet_pair.py).

PRE-DFKD's objectives: the spectrally normalised novel generator (one_hot + 5 balance
(log10) + 0.1 activation + ADI's 1 - JS_3 / K through the student only), with PRE-DFKD's own
generator details (BatchNorm eps 0.8, U(+-0.08) init), the VAE memory replaying 128 samples
to every student update and trained after the first 4 of them, the student's L1 on novel +
replayed samples. The novel generator is the shared width (ngf 8, nz 100, and memory nz 100)
and the student draws its novel samples from the pool, as for every method here. The student's SGD runs at
lr 0.01 with wd 1e-4 (cosine), DFAD's MNIST setting for the same L1 objective on this LeNet
pair: at PRE-DFKD's CIFAR lr 0.1 the LeNet-5-half student collapsed to one class (10.00% at
round 15, L1 6.65; the LeNet has no BatchNorm to keep its logits in range).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lenet_pair import apply  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import predfkd  # noqa: E402


def get_config():
    c = apply(predfkd.configure(base_config()))
    c.generator.arch, c.generator.bn_eps, c.generator.init = "dafl_sn", 0.8, "uniform"
    c.memory.nz = 100
    c.student.lr = 0.01
    c.student.weight_decay = 1e-4
    return c
