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
    config.student.optimizer = "sgd"
    config.student.lr = 0.1
    config.student.momentum = 0.9
    config.student.weight_decay = 5e-4
    config.student.schedule = "step"
    config.student.milestones = (0.2, 0.4)
    config.generator.schedule = "step"
    config.generator.milestones = (0.2, 0.4)
    return config
