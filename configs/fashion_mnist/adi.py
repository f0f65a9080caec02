"""ADI on Fashion-MNIST, LeNet-5 -> LeNet-5-half, at the equal budget (lenet_pair.apply_inversion says what
changes for the inversion family and why)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lenet_pair import apply_inversion  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import adi  # noqa: E402


def get_config():
    return apply_inversion(adi.configure(base_config()))
