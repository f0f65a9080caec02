"""DFQ: Data-Free Network Quantization with Adversarial Knowledge Distillation (Choi et al., CVPRW 2020).

The generator minimises the adversarial KL (maximises KL(t || s) at tau 1), the
BatchNorm-statistics loss on the teacher (the "BNS" term, DeepInversion's R_feature),
the one-hot loss and the class-balance loss, with weights 1, 1, 1, 20 (the CMI
benchmark's re-run; the paper leaves them to the experiment). The student minimises
KL(t || s) with 10 student updates per generator update, each on a fresh batch.
The student here is a smaller full-precision network (the distillation half of the
method; its quantisation is outside this library's scope).

Published defaults (CMI re-run, CIFAR): student SGD lr 0.1, momentum 0.9, wd 5e-4,
cosine over 200 epochs; generator Adam lr 1e-3.
"""

from __future__ import annotations


def configure(config):
    config.method = "dfq"
    config.generator.arch = "dafl"
    config.generator.terms = {"adv_kl": 1.0, "bn": 1.0, "one_hot": 1.0, "balance": 20.0}
    config.generator.steps = 1
    config.generator.optimizer = "adam"
    config.generator.lr = 1e-3
    config.student.terms = {"kl": 1.0}
    config.student.steps = 10
    config.student.batch = "fresh"
    config.student.optimizer = "sgd"
    config.student.lr = 0.1
    config.student.momentum = 0.9
    config.student.weight_decay = 5e-4
    config.student.schedule = "cosine"
    return config
