"""CuDFKD: Curriculum Data-Free Knowledge Distillation (Li et al., 2022; the AdaDFKD authors' baseline).

Generator (easy to hard): ``one_hot + bn - 20 H(p_bar at tau 20) + alpha_adv(e) * L_adv`` with
``L_adv = -mean_i 1[argmax s_i = argmax t_i] * 9 KL_3(t_i || s_i)`` (``adv_kd_masked``), where
alpha_adv starts at 0 and grows by ``grad_adv`` per 40-round epoch between fractions
``begin`` = 0.25 and ``end`` = 0.75 of the run, then stays flat: first the generator makes
samples the teacher is sure of, then increasingly ones the student gets wrong. Here that is
``generator.terms.adv_kd_masked = grad_adv`` with the ramp ``(begin, end, 40)``
(``dfkd_jax.objectives.ramp_factor``): its strength follows the run's length as the
reference's does (final weight ``grad_adv * (end - begin) * rounds / 40``).

Student: ``v * l`` with l = L1(s, t), v = (1 + e^-lambda) / (1 + e^(l - lambda)) without
gradient (``dfkd_jax.terms.self_paced_weight``), lambda = lambda_0 + alpha * (student
updates so far) (``hparams.spl_lambda0``, ``hparams.spl_alpha``).

Matched to the released code (ljrprocc/DataFree at bf3096b):
- ``scripts/cudfkd/cudfkd_cifar10_resnet34_resnet18.sh``: ``--loss l1`` (l. 34), grad_adv 0.5
  (l. 17), lambda_0 2.0 (l. 33), T 20 (l. 20), ``lmda_ent -20`` (l. 21), oh 1, bn 1, adv_type
  kl, batch 512, 250 epochs of 400 / 10 = 40 rounds of 1 G + 10 S steps;
- ``datafree_kd.py`` l. 408-409: the student's criterion is ``nn.L1Loss()`` (mean over batch
  and classes); l. 698-700: ``adv += grad_adv`` after each epoch strictly between
  ``int(E b)`` and ``int(E f)`` (a staircase per epoch; here linear within the window);
  l. 774-778: alpha = 1e-4 on CIFAR-10 and 2e-5 otherwise (``configs/cifar/cudfkd.py`` sets
  2e-5 for CIFAR-100), lambda from the global student iteration;
- ``datafree/synthesis/cudfkd.py``: l. 15-23 and 62-64, the generator re-initialised with
  N(0, 0.02) (BatchNorm scales N(1, 0.02)) and Adam betas (0.9, 0.99); l. 75,
  ``student.eval()`` in the generator's step; l. 108-109, the entropy of the batch-mean
  softmax at T; l. 126-127, the masked 9 KL_3; l. 165, ``G.eval()`` when sampling the
  student's batches; l. 435 of ``datafree_kd.py``, ``DCGAN_Generator_CIFAR10(nz=512, ngf=64,
  d=2)``, the layers of ``LargeGenerator`` (``generator.arch='large'``, ``init='normal'``).

Deliberate deviation (docs/fidelity.md, CuDFKD): v per sample. The released code applies v to the batch's
scalar loss (``nn.L1Loss()`` reduces before ``curr_v``), one weight per batch.
"""

from __future__ import annotations

from dfkd_jax.methods import students

EPOCH_ROUNDS = 40


def configure(config, epochs: int = 250, grad_adv: float = 0.5, begin: float = 0.25, end: float = 0.75,
              adv: float = 0.0):
    """CuDFKD's terms and schedules; a run of ``epochs`` x 40 rounds.

    The adversarial weight is the reference's ``synthesizer.adv``: ``adv`` at the start, plus
    ``grad_adv`` per 40-round epoch between ``begin`` and ``end`` (``datafree_kd.py`` l. 698-700).
    With both set it is the weight ``grad_adv`` on the ramp ``(begin, end, 40, adv / grad_adv)``.
    """
    config.method = "cudfkd"
    config.generator.arch = "large"
    config.generator.init = "normal"
    config.generator.nz = 512
    config.generator.terms = {"one_hot": 1.0, "bn": 1.0, "balance": 20.0, "adv_kd_masked": grad_adv or adv}
    ramp = (begin, end, EPOCH_ROUNDS) + ((adv / grad_adv,) if adv else ())
    config.generator.ramps = {"adv_kd_masked": ramp} if grad_adv else {}
    config.hparams.adv_tau = 3.0
    config.hparams.balance_tau = 20.0
    config.generator.steps = 1
    config.generator.optimizer = "adam"
    config.generator.lr = 1e-3
    config.generator.b1, config.generator.b2 = 0.9, 0.99
    config.generator.student_mode = "eval"
    config.student.terms = {"l1": 1.0}
    config.student.tau = 20.0  # the script's T (used by the kd term when a config switches to it)
    config.student.self_paced = True
    config.hparams.spl_lambda0 = 2.0
    config.hparams.spl_alpha = 1e-4
    config.student.steps = 10
    config.student.batch = "fresh"
    config.student.generator_mode = "eval"
    students.sgd(config, 0.1, 1e-4, "cosine")
    config.train.batch_size = 512
    config.train.rounds = int(round(epochs * EPOCH_ROUNDS))
    return config
