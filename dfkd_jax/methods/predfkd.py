"""PRE-DFKD: Robust and Resource-Efficient Data-Free Knowledge Distillation by Generative
Pseudo Replay (Binici, Aggarwal, Pham, Leman & Mitra, AAAI 2022).

Novel generator (DAFL-shaped, spectral norm on its convolutions, ``dafl_sn``; nz 1000,
Adam lr 0.02) minimises ``one_hot + 5 balance (log10) + 0.1 activation + (1 - clip(JS_3(s, t) / K,
0, 1))`` (``adv_js``: ADI's competition term, probabilities clamped to [0.01, 0.99]).
Memory: a VAE (``dfkd_jax.memory``, Adam 5e-4) trained on half of each novel batch plus
128 samples replayed from itself, with loss ``||x_rec - x||_1 + ||T(x_rec) - T(x)||_1 +
1e-5 KL``; replayed samples decode latents moved by one Adam step (lr 0.02) towards
confident, class-balanced teacher predictions. Its cost is the VAE's parameters instead
of stored images. Student: L1(s, t) on the novel batch plus the replayed batch; per
round 1 novel-generator update then 10 student updates on fresh novel batches, the VAE
updated after each of the first 4.

Matched to the released code (kuluhan/PRE-DFKD at 604010d):
- ``utils/aux.py`` l. 70-85: the JS takes ``nn.KLDivLoss()``'s default 'mean' reduction
  (/ (B K)) before the clamp (``hparams.kl_reduction='mean'``: K times weaker than a
  'batchmean' JS, and the clamp at 1 never binds); ``distillation.py`` l. 62 passes
  ``outputs_T.detach()``: the adversarial term reaches the generator through the student only
  (``hparams.adv_detach_teacher``);
- ``networks/generator.py`` l. 17, 22, 64, 69: ``BatchNorm2d(c, 0.8)``, i.e. eps 0.8, in the
  novel generator and the memory's decoder (``generator.bn_eps``); l. 32-39, 78-85, 119-126:
  every conv and linear weight U(-0.08, 0.08), biases 0 (``generator.init='uniform'``, also
  for the VAE);
- ``main.py`` l. 30, 48-50: one ``latent_dim`` = 1000 for the novel generator and the memory
  (``memory.nz``); l. 57-58: the memory's Adam at lr_G / 40 = 5e-4; l. 84: memory batch =
  batch / 8; l. 99-108: each KD step first (``distill_knowledge``), then the memory's update
  for the first 4;
- ``distillation.py`` l. 13-33: the student's replay with ``mem_generator.eval()``
  (``memory.replay_mode='eval'``) and one Adam step on z against ``ie * entropy + oh *
  one_hot + mse(var(z), 1) + mse(mean(z), 0)`` with the generator's ie = 5, oh = 1
  (``dfkd_jax.memory``); l. 39, ``F.l1_loss`` on the concatenated batch; l. 98-136, the
  memory's own replay in train mode.
Not reproduced: in the run's first round (``i == 0 and epoch == 0``) the memory updates fit the
novel half only (l. 79-95), and
the released encoder's shape (see ``dfkd_jax.models.vae``).

Published: 400 epochs x 36 rounds, novel batch 1024, memory batch 128, student SGD lr
0.1, momentum 0.9, wd 5e-4, cosine.
"""

from __future__ import annotations

from dfkd_jax.methods import students


def configure(config):
    config.method = "predfkd"
    config.generator.arch = "dafl_sn"
    config.generator.bn_eps = 0.8
    config.generator.init = "uniform"
    config.generator.nz = 1000
    config.generator.terms = {"one_hot": 1.0, "balance": 5.0, "activation": 0.1, "adv_js": 1.0}
    config.hparams.balance_log_base = 10.0
    config.hparams.adv_tau = 3.0
    config.hparams.kl_reduction = "mean"
    config.hparams.adv_detach_teacher = True
    config.generator.steps = 1
    config.generator.optimizer = "adam"
    config.generator.lr = 0.02
    config.generator.student_mode = "train"
    config.student.terms = {"l1": 1.0}
    config.student.steps = 10
    config.student.batch = "fresh"
    config.student.generator_mode = "train"
    students.sgd(config, 0.1, 5e-4, "cosine")
    config.memory.enabled = True
    config.memory.nz = 1000
    config.memory.batch_size = 128
    config.memory.update_steps = 4
    config.memory.lr = 5e-4
    config.memory.kl_weight = 1e-5
    config.memory.z_lr = 0.02
    config.memory.replay_mode = "eval"
    config.train.batch_size = 1024
    config.train.rounds = 400 * 36
    return config
