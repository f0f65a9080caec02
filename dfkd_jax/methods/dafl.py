"""DAFL: Data-Free Learning of Student Networks (Chen et al., ICCV 2019).

The teacher acts as a fixed discriminator. The generator minimises (Eq. 5)
``L_oh + alpha * L_a + beta * L_ie``: the one-hot loss (Eq. 2, cross-entropy of the
teacher against its own argmax), the activation loss (Eq. 3, -mean |f_T| of the
teacher's features) and the information-entropy loss (Eq. 4, -H of the batch-mean
teacher prediction, log10 in the authors' code). The student does not enter the
generator's objective. In the same iteration the student learns by KD at tau = 1
from the teacher on the same batch (detached), so a round is one generator update
and one student update on that batch (``student.batch = 'reuse'``).

Published MNIST defaults: batch 512, nz 100, generator Adam lr 0.2, student Adam lr
2e-3, oh 1, a 0.1, ie 5 (CIFAR-10: oh 0.05, a 0.01, ie 5, nz 1000, SGD 0.1).
"""

from __future__ import annotations


def configure(config):
    config.method = "dafl"
    config.generator.arch = "dafl"
    config.generator.terms = {"one_hot": 1.0, "activation": 0.1, "balance": 5.0}
    config.hparams.balance_log_base = 10.0
    config.generator.steps = 1
    config.generator.optimizer = "adam"
    config.generator.lr = 0.2
    config.student.terms = {"kd": 1.0}
    config.student.tau = 1.0
    config.student.steps = 1
    config.student.batch = "reuse"
    config.student.optimizer = "adam"
    config.student.lr = 2e-3
    config.student.weight_decay = 0.0
    return config
