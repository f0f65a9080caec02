"""ZSKT: Zero-shot Knowledge Transfer via Adversarial Belief Matching (Micaelli & Storkey, NeurIPS 2019).

The generator maximises the student-teacher disagreement KL(t || s) at tau 1 (Eq. 1,
``adv_kl``). The student minimises KL(t || s) plus beta times the attention-transfer
term over block groups (Eq. 2, ``kl`` + ``attention``, beta = 250 with the released
code's per-position mean, see ``dfkd_jax.terms.attention``).

Matched to the released code (polo5/ZeroShotKnowledgeTransfer at e24915d):
- ``solver.py`` l. 217-220: the KL is ``F.kl_div(log_softmax(s), softmax(t))`` with
  PyTorch's default ``'mean'`` reduction, i.e. divided by batch x classes, for both the
  generator (l. 225-226) and the student (l. 233): ``hparams.kl_reduction='mean'``. Next
  to ``250 x attention`` the KL is therefore K times smaller than a per-sample KL
  (K = 10 on CIFAR-10). ``'batchmean'`` is the textbook KL; beta = 250 was tuned with 'mean'.
- ``utils/loaders.py`` l. 41-51 with ``solver.py`` l. 89-116: one latent batch z serves
  n_G = 1 generator step and then n_S = 10 student steps, and every call re-generates
  G(z), so the student learns from G(z) *after* the generator's update
  (``student.batch='regenerate'``); the teacher's logits are computed once (l. 106-108).
- ``models/generator.py``: no Tanh, the last layer an affine ``BatchNorm2d(3)``
  (``generator.arch='zskt'``).
- BatchNorm modes: ``teacher.eval()`` and ``student.train()`` (l. 30-31; ``test()`` switches the
  student to eval only while it measures accuracy); the generator is never put in eval mode
  during training: ``utils/loaders.py`` calls ``generator.eval()`` only to draw sample grids and
  ``generator.train()`` right after (l. 58, 65). Hence ``generator.student_mode='train'`` and
  ``student.generator_mode='train'`` (set below); our sample grids follow
  ``student.generator_mode`` too, so they use the batch's statistics where the reference's
  grids use the running averages (grids only, training is unaffected). Gradient clipping at 5 on both
  (l. 100, 115); Adam lr 1e-3 (G) and 2e-3 (S), each with a cosine schedule over the run
  (stepped once per pseudo batch there, per update here).

Published defaults (``scripts/ZeroShot/main0.sh``): batch 128, nz 100, 80,000 pseudo
batches (rounds) on CIFAR-10.
"""

from __future__ import annotations


def configure(config):
    config.method = "zskt"
    config.generator.arch = "zskt"
    config.generator.terms = {"adv_kl": 1.0}
    config.hparams.kl_reduction = "mean"
    config.generator.steps = 1
    config.generator.optimizer = "adam"
    config.generator.lr = 1e-3
    config.generator.schedule = "cosine"
    config.generator.grad_clip = 5.0
    config.generator.nz = 100
    config.generator.student_mode = "train"
    config.student.terms = {"kl": 1.0, "attention": 250.0}
    config.student.steps = 10
    config.student.batch = "regenerate"
    config.student.generator_mode = "train"
    config.student.optimizer = "adam"
    config.student.lr = 2e-3
    config.student.weight_decay = 0.0
    config.student.schedule = "cosine"
    config.student.grad_clip = 5.0
    config.train.batch_size = 128
    return config
