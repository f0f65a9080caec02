"""MTCKI on Fashion-MNIST: several LeNet-type teachers -> LeNet-5-half, at the inversion family's equal budget
(``lenet_pair.apply_inversion`` says what changes for that family on this pair and why; dfkd_jax/methods/mtcki.py
is the method and its reading).

The teachers come from ``--config.teacher.checkpoints`` (comma-separated teacher folders, each with its own
architecture; train them first, e.g. with tools/train_teacher.py). Without it the run has one teacher, the cached
LeNet-5 of ``teacher.arch``: MTCKI with M = 1. For example, two teachers of different architectures, synthesised
once and exported as a transfer set (``student.pool_size`` raised to keep all 150 x 256 samples), then a second
student trained from that set without synthesis:

    python -m dfkd_jax.main --config configs/fashion_mnist/mtcki.py --workdir runs/mtcki_2t \\
        --config.teacher.checkpoints=teachers/fm_lenet5,teachers/fm_lenet5_half_zskd \\
        --config.student.pool_size=38400 --config.synthesis.export=runs/mtcki_2t/transfer_set
    python -m dfkd_jax.main --config configs/fashion_mnist/mtcki.py --workdir runs/mtcki_2t_zskd_student \\
        --config.teacher.checkpoints=teachers/fm_lenet5,teachers/fm_lenet5_half_zskd \\
        --config.student.pool_size=38400 --config.synthesis.transfer_set=runs/mtcki_2t/transfer_set \\
        --config.student.arch=lenet5_half_zskd

``--config configs/fashion_mnist/mtcki.py:lenet5_bn`` is the form for BatchNorm teachers (e.g. ``lenet5_bn`` and
``lenet5_half_bn``): the bn term (mean over the teachers of each one's sum over its BN layers; a BN-free teacher
among them adds 0) and CMI's BN-input embedding come back.

What differs from configs/fashion_mnist/cmi.py, and why:
- the plain LeNets have no BatchNorm, so (as for CMI here) the bn term is dropped; but the contrast with history
  is MTCKI's own, so it stays (cr 0.8, CMI's weight): without BatchNorm each teacher's instance embedding is its
  pooled penultimate feature (``synthesis.embedding='feature'``) instead of BN-input means, concatenated over
  teachers;
- the generator is kept across rounds (``synthesis.reset='keep'``), as for CMI here;
- 5 synthesis steps per round, as CMI's fast setting here; with the contrast on, CMI's bank (40,960 rows) and
  4,096 negatives per step;
- the student: KD at tau 20 against the teachers' ensemble plus 0.1 x the multi-teacher-student InfoNCE, at the
  family's learning rate 0.01 on this BN-free student.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lenet_pair import apply_inversion  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import mtcki  # noqa: E402
from dfkd_jax.models import has_batch_norm  # noqa: E402


def get_config(teacher="lenet5"):
    c = apply_inversion(mtcki.configure(base_config()), teacher=teacher)
    c.generator.steps = 5  # CMI's fast setting (scripts/cmi_cifar.sh l. 24-45), as configs/fashion_mnist/cmi.py
    c.synthesis.embedding = "bn_means" if has_batch_norm(teacher) else "feature"
    return c
