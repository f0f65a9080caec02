"""ADI on the Fashion-MNIST-32x3 WRN-16-2 -> WRN-16-1 pair (pairs_32x3.apply_inversion)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pairs_32x3 import apply_inversion  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import adi  # noqa: E402


def get_config(arg="wrn16_2,wrn16_1"):
    return apply_inversion(adi.configure(base_config()), arg)
