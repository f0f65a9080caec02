"""DAFL: Data-Free Learning of Student Networks (Chen et al., ICCV 2019).

The teacher acts as a fixed discriminator. The generator minimises (Eq. 5)
``L_oh + alpha * L_a + beta * L_ie``: the one-hot loss (Eq. 2, cross-entropy of the
teacher against its own argmax), the activation loss (Eq. 3, -mean |f_T| of the
teacher's features) and the information-entropy loss (Eq. 4, -H of the batch-mean
teacher prediction, log10 in the authors' code). The student does not enter the
generator's objective. In the same iteration the student learns by KD at tau = 1
from the teacher on the same batch (detached), so a round is one generator update
and one student update on that batch (``student.batch = 'reuse'``).

Matched to the released code (huawei-noah/Efficient-Computing at 225ddd2,
``Data-Efficient-Model-Compression/DAFL/DAFL-train.py``): the generator's two BatchNorms
after convolutions are ``nn.BatchNorm2d(128, 0.8)`` and ``(64, 0.8)`` (l. 66, 71): eps 0.8
(``generator.bn_eps``); an epoch is 120 iterations (l. 168), so CIFAR's 2000 epochs are
240,000 rounds; the student's KD is ``kl_div(..., size_average=False) / B`` at T 1 (l. 97-101)
on the generator's batch detached (l. 181), in train mode; the teacher in eval mode (l. 91).

Published MNIST defaults: batch 512, nz 100, generator Adam lr 0.2, student Adam lr
2e-3, oh 1, a 0.1, ie 5, 200 epochs (README: CIFAR-10 oh 0.05, a 0.01, ie 5; CIFAR-100 oh 0.5,
a 0.1, ie 20; nz 1000, batch 1024, generator lr 0.02, student SGD 0.1, x0.1 at epochs 800
and 1600).
"""

from __future__ import annotations


def configure(config):
    config.method = "dafl"
    config.generator.arch = "dafl"
    config.generator.bn_eps = 0.8
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
