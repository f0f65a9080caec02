"""DFAD: Data-Free Adversarial Distillation (Fang, Song, Xu, Song, 2019, arXiv:1912.11006).

Imitation stage (Eq. 4): the student minimises the mean absolute error between its
logits and the teacher's, L1(s, t), on generator samples. Generation stage (Eq. 5):
the generator maximises that discrepancy, i.e. minimises -L1(s, t), with gradients
through both networks; Eq. 6's -log(L1 + 1) form (``adv_log_l1``) is used for
segmentation. One round = 1 generator update + 5 student updates, each student
update on a fresh batch from the frozen generator.

Matched to the released code (VainF/Data-Free-Adversarial-Distillation, ``DFAD_cifar.py``
l. 17-46, ``network/gan.py`` GeneratorA): both losses ``F.l1_loss`` (mean over batch and
classes), the student and the generator in train mode throughout, the teacher's logits
not detached in the generator's loss; GeneratorA's BatchNorms have PyTorch's eps 1e-5
(``generator.arch='dafl'``). The reference runs the 5 student updates before the
generator's in each iteration; here the generator's comes first in every round.

Published defaults (CIFAR): student SGD lr 0.1, momentum 0.9, wd 5e-4, x0.1 at 20%
and 40% of the run; generator Adam lr 1e-3; batch 256; GeneratorA nz 256. MNIST:
student lr 0.01, wd 1e-4, batch 512, nz 100. The paper argues that MAE keeps the
generator's gradients from vanishing when the student already agrees with the teacher.
"""

from __future__ import annotations

from dfkd_jax.methods import students


def configure(config):
    config.method = "dfad"
    config.generator.arch = "dafl"
    config.generator.terms = {"adv_l1": 1.0}
    config.generator.steps = 1
    config.generator.optimizer = "adam"
    config.generator.lr = 1e-3
    config.generator.b1, config.generator.b2 = 0.9, 0.999
    config.student.terms = {"l1": 1.0}
    config.student.steps = 5
    config.student.batch = "fresh"
    students.sgd(config, 0.1, 5e-4, "step", milestones=(0.2, 0.4))
    config.generator.schedule = "step"
    config.generator.milestones = (0.2, 0.4)
    return config


def configure_segmentation(config):
    """DFAD for semantic segmentation (``DFAD_camvid_deeplab.py``): ``configure`` plus the
    segmentation objective and setting. Generator: GeneratorB (``dfad_b_resize`` by default,
    the faster form on XLA; ``dfad_b`` is DFAD's transposed-conv network, see docs/models.md),
    nz 256, initialised as ``network/gan.py`` does (``generator.init='normal'``), minimising ``-log(L1(s, t) + 1)`` (Eq. 6) over per-pixel logits; student: L1 on
    the per-pixel logits (the ``F.l1_loss`` mean over batch, classes and pixels); 5 student
    updates on fresh batches per generator update; batch 64; student SGD lr 0.1, momentum
    0.9, wd 5e-4 (NYUv2: 5e-5), generator Adam 1e-3, both x0.1 (NYUv2: x0.3) after 100 and
    200 of 300 epochs, i.e. at 1/3 and 2/3 of the run. DFAD updates the student before the
    generator inside an iteration; the engine's round does the generator first: over a run
    the two orders alternate the same way. DFAD's student has dropout 0.5 in its ASPP
    projection; the engine's networks have none (dfkd_jax.models.deeplab).
    """
    configure(config)
    config.generator.arch = "dfad_b_resize"
    config.generator.nz = 256
    config.generator.ngf = 64
    config.generator.init = "normal"  # GeneratorB's own init: N(0, 0.02) weights, N(1, 0.02) BN scales
    config.generator.terms = {"adv_log_l1": 1.0}
    config.student.terms = {"l1": 1.0}
    config.train.batch_size = 64
    config.student.milestones = (1 / 3, 2 / 3)
    config.generator.milestones = (1 / 3, 2 / 3)
    return config
