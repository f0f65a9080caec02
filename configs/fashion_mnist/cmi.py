"""CMI on Fashion-MNIST, LeNet-5 -> LeNet-5-half, at the equal budget (lenet_pair.apply_inversion says what
changes for the inversion family and why).

``--config configs/fashion_mnist/cmi.py:ARCH`` takes another 32x32x1 teacher architecture (with
``--config.teacher.checkpoint``), e.g. ``lenet5_bn``, whose BatchNorm gives CMI its bn term back: the
single-teacher runs MTCKI is compared with.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lenet_pair import apply_inversion  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import cmi  # noqa: E402


def get_config(teacher="lenet5"):
    return apply_inversion(cmi.configure(base_config()), teacher=teacher)
