"""ZSKT on Fashion-MNIST, LeNet-5 -> LeNet-5-half, at the project's CPU settings (lenet_pair.py).

ZSKT's objectives and optimisers (generator: maximise KL(t || s); student: KL + 250 x
attention over LeNet's three block outputs; Adam 1e-3 / 2e-3, cosine, clip 5); the
student learns from the pool instead of 10 updates on the last batch, and the batch is
256 instead of 128, as for every method in this folder.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lenet_pair import apply  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import zskt  # noqa: E402


def get_config():
    return apply(zskt.configure(base_config()))
