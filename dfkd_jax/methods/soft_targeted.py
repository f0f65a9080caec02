"""Soft-targeted transfer set synthesis (Wang, AAAI 2021, "Data-Free Knowledge Distillation with Soft
Targeted Transfer Set Synthesis"): an intermediate layer of the teacher modelled as a multivariate
normal whose covariance comes from the weights that consume it; sampled activations, pushed through the
rest of the teacher, give soft targets; inputs are optimised toward them; standard KD on the result.

Synthesis (``synthesis.kind = 'soft_pixels'``, ``targets = 'mvn'``; ``dfkd_jax.synthesis.targets``):
- the modelled layer ``synthesis.mvn_layer``: ``'penultimate'`` (the input of the classifier head:
  LeNet-5's fc1 output) or ``'logits'``;
- ``s ~ N(0, Sigma)``, ``Sigma = D R D``, ``R_ij = cos(w_i, w_j)`` of the consuming layer's weights,
  ``D = sqrt(sigma) I``, ``synthesis.mvn_sigma`` 1.5 (MNIST) / 2.0 (CIFAR-10);
- ``y_soft = softmax(u / tau)``, ``u`` the logits the remaining layers give ``s`` (``s`` itself for the
  logit layer), ``tau = hparams.target_tau``;
- the objective: ``soft_kl`` = KL(y_soft || softmax(T(x) / tau)) + ``lambda_a`` x ``conv1_activation``
  (``-mean |conv1 output|``), lambda_a 0.05 for LeNet-5 (0.1 for AlexNet).
Readings where the paper is silent (no code released): mu = 0 (the paper gives no mean); tau = 1 for the targets and
the matching, chosen by measurement: on ZSKD's Fashion-MNIST pair at 4,000 impressions (docs/results.md) the
student reached 47.00% best with tau 1, 30.55% with 4 and 30.33% with 20 (ZSKD's temperature, which the paper
follows for its KD; ``--config.hparams.target_tau=20`` restores that reading). At 20 the sampled targets are
near uniform and the KL is 14x smaller than the activation term; the optimisation of the inputs is ZSKD's
(the method it improves on): U[0, 1] pixels, Adam lr 1e-3, 1500 iterations per batch of 100, min-max
rescaled each step, the last iterate kept; ZSKD's counts (48,000 for Fashion-MNIST); the conv-1
activation is the first convolution's output before its non-linearity, of the first teacher.

Student: standard Hinton KD at tau 20 on the transfer set (ZSKD's student settings: Adam 1e-3, batch 64),
without ZSKD's augmentations (``student.augment = 'zskd'`` adds them).
"""

from __future__ import annotations

from dfkd_jax.methods import zskd


def configure(config):
    config.method = "soft_targeted"
    config.synthesis.kind = "soft_pixels"
    config.synthesis.targets = "mvn"
    config.synthesis.mvn_layer = "penultimate"
    config.synthesis.mvn_sigma = 1.5
    config.synthesis.pixel_init = "uniform"
    config.synthesis.loop = "python"
    config.synthesis.batch_size = 100
    config.generator.steps = 1500
    config.generator.lr = 1e-3
    config.generator.b1, config.generator.b2 = 0.9, 0.999
    config.generator.terms = {"soft_kl": 1.0, "conv1_activation": 0.05}
    config.hparams.target_tau = 1.0  # measured (docstring); ZSKD's soft_ce keeps 20
    zskd.student(config)
    config.student.augment = "none"
    config.train.rounds = 480
    config.student.pool_size = 48_000
    return config
