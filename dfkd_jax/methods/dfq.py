"""DFQ: Data-Free Network Quantization with Adversarial Knowledge Distillation (Choi et al., CVPRW 2020).

The generator minimises the adversarial KL (maximises KL(t || s) at tau 1), the
BatchNorm-statistics loss on the teacher (the "BNS" term, DeepInversion's R_feature),
the one-hot loss and the class-balance loss, with weights 1, 1, 1, 20. The student
minimises KL(t || s) with 10 student updates per generator update, each on a fresh batch.
The student here is a smaller full-precision network (the distillation half of the
method; its quantisation is outside this library's scope).

The settings are the CMI benchmark's re-run of DFQ (zju-vipa/CMI at 9e79fa9, the only
released DFQ-for-distillation code): ``scripts/dfq/dfq_cifar10_wrn402_wrn161.sh``
(adv 1, bn 1, oh 1, balance 20, 10 student steps per generator step, 200 epochs of 400
student steps, lr 0.1) and ``datafree_kd.py``:
- l. 110: student weight decay 1e-4 (the scripts do not change it); SGD momentum 0.9
  (l. 287), cosine over the epochs (l. 290);
- l. 256-259: generator ``LargeGenerator(nz=256, ngf=64)`` (``generator.arch='large'``:
  4*ngf channels first, Sigmoid output, then the teacher's normaliser); the criterion is
  ``KLDiv()`` at T = 1 with 'batchmean' for the generator and the student (the scripts'
  ``--T 20`` is overwritten there);
- ``datafree/synthesis/generative.py`` l. 40: generator Adam with betas (0.5, 0.999);
  l. 53: ``student.eval()`` during the generator's step (``generator.student_mode='eval'``);
  l. 79: ``generator.eval()`` when sampling the student's batches
  (``student.generator_mode='eval'``).
"""

from __future__ import annotations

from dfkd_jax.methods import students


def configure(config):
    config.method = "dfq"
    config.generator.arch = "large"
    config.generator.nz = 256
    config.generator.terms = {"adv_kl": 1.0, "bn": 1.0, "one_hot": 1.0, "balance": 20.0}
    config.generator.steps = 1
    config.generator.optimizer = "adam"
    config.generator.lr = 1e-3
    config.generator.b1, config.generator.b2 = 0.5, 0.999
    config.generator.student_mode = "eval"
    config.student.terms = {"kl": 1.0}
    config.student.steps = 10
    config.student.batch = "fresh"
    config.student.generator_mode = "eval"
    students.sgd(config, 0.1, 1e-4, "cosine")
    return config
