"""AdaDFKD: adaptive inter-sample relations (Li et al., Neural Networks 2024), the seed method.

Generator: CuDFKD's loss (``dfkd_jax.methods.cudfkd``) plus ``lambda_R2M = 0.1`` times
the Relationship Refinement Module loss (``dfkd_jax.objectives.r2m``): an InfoNCE whose
anchor is the teacher's normalised feature of a pseudo-sample, whose positive is the
student's key of the same sample and whose negatives are a band of an on-device FIFO
queue of past student keys (``dfkd_jax.pool.KeyQueue``, part of the state and the
checkpoint). Sorted by similarity to the anchor, the band of width k = 0.9 slides from
the least similar negatives (easy) to the most similar (hard) between 25% and 75% of the
run, so generation moves from easy-to-distinguish to hard-to-distinguish samples.

Student: ``v * (KD_tau(s, t) + lambda_rel * InfoNCE(f_S, f_T))`` with lambda_rel = 0.1:
the relation term makes each student feature pick out its own teacher feature among
the batch's (temperature 0.07), and v is CuDFKD's self-paced weight.

Where this implementation departs from the authors' released code (on purpose):
- the student features are mapped to the teacher's width by a *learned* linear
  projection (part of the state, trained by the student's loss); the released code
  draws a fresh random projection at every call, so keys of different steps are not
  comparable;
- v is computed per sample; the released code collapses it to one scalar per batch;
- v is computed from the whole per-sample student loss (KD + relation).

Published (CIFAR-10 R34 -> R18): per epoch 40 rounds of 1 G + 10 S steps, 300 epochs,
batch 768, tau 20, k 0.9, N_neg 4096, lambda_0 2.2; SGD lr 0.1, momentum 0.9, wd 1e-4,
cosine; generator Adam lr 1e-3, nz 512; grad_adv 0.05 (the authors' CIFAR-10 script).
"""

from __future__ import annotations

from dfkd_jax.methods import cudfkd


def configure(config, epochs: int = 300, grad_adv: float = 0.05, begin: float = 0.25, end: float = 0.75):
    """AdaDFKD's terms and schedules for a run of ``epochs`` x 40 rounds."""
    cudfkd.configure(config, epochs=epochs, grad_adv=grad_adv, begin=begin, end=end)
    config.method = "adadfkd"
    config.generator.terms = {**config.generator.terms, "r2m": 0.1}
    config.hparams.r2m_queue_size = 4096
    config.hparams.r2m_window = 0.9
    config.hparams.r2m_begin = 0.25
    config.hparams.r2m_end = 0.75
    config.hparams.r2m_temperature = 0.07
    config.student.terms = {"kd": 1.0, "relation": 0.1}
    config.hparams.relation_temperature = 0.07
    config.hparams.spl_lambda0 = 2.2
    config.train.batch_size = 768
    return config
