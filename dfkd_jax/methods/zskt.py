"""ZSKT: Zero-shot Knowledge Transfer via Adversarial Belief Matching (Micaelli & Storkey, NeurIPS 2019).

The generator maximises the student-teacher disagreement KL(t || s) at tau 1 (Eq. 1,
``adv_kl``). The student minimises KL(t || s) plus beta times the attention-transfer
term over block groups (Eq. 2, ``kl`` + ``attention``, beta = 250 with the released
code's per-position mean, see ``dfkd_jax.terms.attention``). One round: n_G = 1
generator update, then n_S = 10 student updates on that same pseudo batch
(``student.batch = 'reuse'``).

Published defaults: batch 128, nz 100, student Adam lr 2e-3, generator Adam lr 1e-3,
cosine schedules on both, gradient clipping at 5 (global norm).
"""

from __future__ import annotations


def configure(config):
    config.method = "zskt"
    config.generator.arch = "dafl"
    config.generator.terms = {"adv_kl": 1.0}
    config.generator.steps = 1
    config.generator.optimizer = "adam"
    config.generator.lr = 1e-3
    config.generator.schedule = "cosine"
    config.generator.grad_clip = 5.0
    config.generator.nz = 100
    config.student.terms = {"kl": 1.0, "attention": 250.0}
    config.student.steps = 10
    config.student.batch = "reuse"
    config.student.optimizer = "adam"
    config.student.lr = 2e-3
    config.student.weight_decay = 0.0
    config.student.schedule = "cosine"
    config.student.grad_clip = 5.0
    config.train.batch_size = 128
    return config
