"""CuDFKD: Curriculum Data-Free Knowledge Distillation (Li et al., 2022; the AdaDFKD authors' baseline).

Generator (easy to hard): ``one_hot + bn - 20 H(p_bar) + alpha_adv(e) * L_adv``, where
alpha_adv starts at 0 and grows linearly (by ``grad_adv`` per epoch) between fractions
``begin`` = 0.25 and ``end`` = 0.75 of the run, then stays flat: first the generator
makes samples the teacher is sure of, then increasingly ones the student gets wrong.
Here that is ``generator.terms.adv_kd_masked = grad_adv * (end - begin) * E`` with
``generator.ramps.adv_kd_masked = (begin, end)`` (``dfkd_jax.objectives.ramp_factor``).
Readings, from the authors' released code where the paper is vague:
- ``L_adv = -mean_i 1[argmax s_i = argmax t_i] * 9 KL_3(t_i || s_i)``: the KL at tau 3
  scaled by 9, masked to samples on which student and teacher agree (``adv_kd_masked``;
  the unmasked form is ``adv_kd``);
- the entropy is of the batch-mean teacher softmax at the student's temperature tau
  (``hparams.balance_tau = student.tau``), natural log.

Student: ``v * l`` with l = KD_tau (or L1), v = (1 + e^-lambda) / (1 + e^(l - lambda))
per sample without gradient (``dfkd_jax.terms.self_paced_weight``), lambda = lambda_0 +
alpha * iteration: ``hparams.spl_lambda0`` and ``hparams.spl_growth = alpha x`` the
run's student iterations, so the schedule keeps its shape when a run is shortened.

Published (CIFAR-10 R34 -> R18): 40 rounds of 1 G + 10 S steps per epoch, 250 epochs,
batch 512, tau 20, lambda_0 2.0, alpha 1e-4 (growth 10 over 100,000 iterations),
grad_adv 0.5; student SGD lr 0.1, momentum 0.9, wd 1e-4, cosine; generator Adam lr 1e-3,
betas (0.9, 0.99), nz 512, a DCGAN-style generator with Sigmoid output.
"""

from __future__ import annotations

EPOCH_ROUNDS = 40


def configure(config, epochs: int = 250, grad_adv: float = 0.5, begin: float = 0.25, end: float = 0.75):
    """CuDFKD's terms and schedules for a run of ``epochs`` x 40 rounds."""
    config.method = "cudfkd"
    config.generator.arch = "cmi"
    config.generator.nz = 512
    config.generator.terms = {"one_hot": 1.0, "bn": 1.0, "balance": 20.0,
                              "adv_kd_masked": grad_adv * (end - begin) * epochs}
    config.generator.ramps = {"adv_kd_masked": (begin, end)}
    config.hparams.adv_tau = 3.0
    config.hparams.balance_tau = 20.0
    config.generator.steps = 1
    config.generator.optimizer = "adam"
    config.generator.lr = 1e-3
    config.generator.b1, config.generator.b2 = 0.9, 0.99
    config.student.terms = {"kd": 1.0}
    config.student.tau = 20.0  # (balance_tau above follows it; set both when changing tau)
    config.student.self_paced = True
    config.hparams.spl_lambda0 = 2.0
    config.hparams.spl_growth = 1e-4 * epochs * EPOCH_ROUNDS * 10
    config.student.steps = 10
    config.student.batch = "fresh"
    config.student.optimizer = "sgd"
    config.student.lr = 0.1
    config.student.momentum = 0.9
    config.student.weight_decay = 1e-4
    config.student.schedule = "cosine"
    config.train.batch_size = 512
    config.train.rounds = int(round(epochs * EPOCH_ROUNDS))
    return config
