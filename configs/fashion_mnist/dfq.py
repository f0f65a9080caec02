"""DFQ on Fashion-MNIST, LeNet-5 -> LeNet-5-half, at the project's CPU settings (lenet_pair.py).

Generator: adversarial KL + one_hot + 20 x balance; the bn term is dropped because the
LeNet-5 teacher has no BatchNorm. Student: KL, SGD lr 0.1 cosine, from the pool.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lenet_pair import apply  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import dfq  # noqa: E402


def get_config():
    return apply(dfq.configure(base_config()))
