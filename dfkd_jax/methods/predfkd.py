"""PRE-DFKD: Robust and Resource-Efficient Data-Free Knowledge Distillation by Generative
Pseudo Replay (Binici, Aggarwal, Pham, Leman & Mitra, AAAI 2022).

Novel generator (DAFL-shaped, spectral norm on its convolutions, ``dafl_sn``; nz 1000,
Adam lr 0.02) minimises ``one_hot + 5 balance (log10) + 0.1 activation + (1 - clip(JS_3(t, s),
0, 1))`` (``adv_js``: the ADI competition term, probabilities clamped to [0.01, 0.99]).
Memory: a VAE (``dfkd_jax.memory``, Adam 5e-4) trained on half of each novel batch plus
128 samples replayed from itself, with loss ``||x_rec - x||_1 + ||T(x_rec) - T(x)||_1 +
1e-5 KL``; replayed samples decode latents moved by one Adam step (lr 0.02) towards
confident, class-balanced teacher predictions. Its cost is the VAE's parameters instead
of stored images. Student: L1(s, t) on the novel batch plus the replayed batch; per
round 1 novel-generator update then 10 student updates on fresh novel batches, the VAE
updated during the first 4.

Published: 400 epochs x 36 rounds, novel batch 1024, memory batch 128, student SGD lr
0.1, wd 5e-4, cosine.
"""

from __future__ import annotations


def configure(config):
    config.method = "predfkd"
    config.generator.arch = "dafl_sn"
    config.generator.nz = 1000
    config.generator.terms = {"one_hot": 1.0, "balance": 5.0, "activation": 0.1, "adv_js": 1.0}
    config.hparams.balance_log_base = 10.0
    config.hparams.adv_tau = 3.0
    config.generator.steps = 1
    config.generator.optimizer = "adam"
    config.generator.lr = 0.02
    config.student.terms = {"l1": 1.0}
    config.student.steps = 10
    config.student.batch = "fresh"
    config.student.optimizer = "sgd"
    config.student.lr = 0.1
    config.student.momentum = 0.9
    config.student.weight_decay = 5e-4
    config.student.schedule = "cosine"
    config.memory.enabled = True
    config.memory.batch_size = 128
    config.memory.update_steps = 4
    config.memory.lr = 5e-4
    config.memory.kl_weight = 1e-5
    config.memory.z_lr = 0.02
    config.train.batch_size = 1024
    config.train.rounds = 400 * 36
    return config
