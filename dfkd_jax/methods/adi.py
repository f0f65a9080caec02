"""DeepInversion / ADI (Yin et al., CVPR 2020, "Dreaming to Distill: Data-free Knowledge Transfer via
DeepInversion"): the pixels of a batch optimised against the teacher, kept in a pool the student
learns from.

Synthesis (``dfkd_jax.synthesis.pixels``, Eq. 2-3 and 8 of the paper): ``bn * R_feature`` (Eq. 4,
``bn``) + ``oh * CE(t, y)`` for sampled targets y (``one_hot``) + ``adv * R_compete`` (Eq. 8, the
1 - JS competition term) + ``tv * R_TV`` + ``l2 * ||x||``, under jitter + flip.

Matched to the reference implementation named by this project, the CMI code base (zju-vipa/CMI at
9e79fa9): ``datafree/synthesis/deepinversion.py`` (every line cited in ``synthesis/pixels.py``) and
``datafree_kd.py`` l. 248-252 (``tv=0.001, l2=0.0``), ``scripts/deepinv/deepinv_cifar10_wrn402_wrn161.sh``
and Fast-Datafree's ``scripts/deepinv_cifar.sh`` l. 1-22: ``--g_steps 1000 --lr_g 0.1 --adv 1 --bn 10
--oh 1 --T 20``, batch 256, ``--kd_steps 400 --ep_steps 400``, student SGD 0.1 (wd 1e-4, momentum 0.9,
cosine to 2e-4 over 200 epochs; ``datafree_kd.py`` l. 322-323).

Readings where paper and code differ:
- the competition term is the code's ``-JS_3(s, t)`` (``adv_js_neg``; l. 91), not the paper's
  ``1 - JS`` (``adv_js``); they differ by the constant 1 and the clip of the mean, not in gradient;
- the JS is the code's ``jsdiv`` (``terms.js``: KL(M || P) direction, probabilities clamped to
  [0.01, 0.99]); the paper's Eq. 8 is the textbook JS;
- Fast-Datafree's copy passes ``tv=0.0`` (its ``datafree_kd.py`` l. 261); the CMI code's 1e-3 is used;
- the student learns by KD at tau 20 from pool batches with crop + flip, the teacher labelling the
  augmented view each step (``datafree_kd.py`` ``train``: ``t_out = teacher(images)``). One round =
  one synthesised batch + ``student.steps`` KD steps (one reference epoch = 400 KD steps).
"""

from __future__ import annotations

from dfkd_jax.methods.students import inversion_student


def configure(config):
    config.method = "adi"
    config.synthesis.kind = "pixels"
    config.synthesis.loop = "python"  # 1000 steps per round: one jitted step in a Python loop
    config.generator.steps = 1000
    config.generator.lr = 0.1
    config.generator.b1, config.generator.b2 = 0.5, 0.99
    config.generator.terms = {"bn": 10.0, "one_hot": 1.0, "adv_js_neg": 1.0, "tv": 1e-3}
    config.generator.student_mode = "eval"
    config.hparams.adv_tau = 3.0
    config.hparams.kl_reduction = "batchmean"
    inversion_student(config)
    return config

