"""AdaDFKD: adaptive inter-sample relations (Li et al., Neural Networks 2024).

Generator: CuDFKD's loss (``dfkd_jax.methods.cudfkd``: one_hot + bn - 20 H(p_bar at tau 20))
with the adversarial ``9 KL_3(t || s)`` at a constant weight 1 and unmasked (``adv_kd``),
plus ``lambda_R2M = 0.1`` times the Relationship Refinement Module loss
(``dfkd_jax.objectives.r2m``): an InfoNCE whose anchor is the teacher's normalised feature
of a pseudo-sample, whose positive is the student's key of the same sample and whose
negatives are a band of an on-device FIFO queue of past student keys
(``dfkd_jax.pool.KeyQueue``, part of the state and the checkpoint). Sorted by similarity to
the anchor, the band of width k = 0.9 slides from the least similar negatives (easy) to the
most similar (hard) between 25% and 75% of the run.

Student: ``v * (KD_tau(s, t) + lambda_rel * InfoNCE(f_T, f_S))`` with tau 20, lambda_rel = 0.1:
the relation term makes each *teacher* feature pick out its own student feature among the
batch's (temperature 0.07; ``hparams.relation_anchor='student'`` is the transpose), and v is
CuDFKD's self-paced weight at lambda_0 = 2.2.

Matched to the released code (ljrprocc/DFKD at cd281c4):
- ``scripts/adadfkd/adadfkd_cifar10_resnet34_resnet18.sh`` (last changed in 30ff54e,
  2023-11-02): ``--adv 1.0 --grad_adv 0.0`` (l. 15-16), lambda_0 2.2 (l. 31), ``--hard 0.1``
  (R2M weight, l. 34), ``--length 0.9`` (l. 35), ``--tau 0.07`` (l. 36), ``--s_nce 0.1`` (l. 38),
  ``--loss kl`` at T 20 (l. 39, 18), ``--N_neg 4096`` (l. 41), batch 768, 300 epochs. The
  0.05-per-epoch ramp from 0 (``--adv 0.0 --grad_adv 0.05``) is in older commits of that
  script only (f6ab653 2023-06-30, masked; 2dc1785; 93c00de 2023-10-19, unmasked); the constant
  1.0 came back in bedf39f (2023-10-27), and earlier commits (1a4b5df, cbcaeb8) had it too:
  ``configure(config, adv=0.0, grad_adv=0.05, masked=True)`` gives f6ab653's form;
- ``datafree/synthesis/adadfkd.py`` l. 149-151: the adversarial KL without the mask (the mask
  line is commented out); l. 112, ``student.eval()`` in the generator's step; l. 185,
  ``G.eval()`` when sampling; l. 15-23 and 83, N(0, 0.02) init and Adam betas (0.9, 0.99);
- ``datafree/utils/_utils.py`` l. 612-625 (``difficulty_mining``): ``d = t s^T`` over the
  batch's normalised features and ``cross_entropy(d / 0.07, arange)``: row i (teacher i)
  must pick student i (``hparams.relation_anchor='teacher'``);
- ``datafree_kd.py`` l. 682 with ``get_alpha_adv``: the adversarial weight is
  ``adv + grad_adv * (epochs into the window)``; l. 765-769, alpha 1e-4 on CIFAR-10.

Deliberate deviations (docs/fidelity.md, AdaDFKD):
- the student features are mapped to the teacher's width by a *learned* linear projection
  (part of the state, trained by the student's loss); the released code draws a fresh
  random ``nn.Linear`` at every call (``_utils.py`` l. 608-611), so keys of different steps
  are not comparable;
- v is computed per sample from the whole per-sample student loss (KD + relation); the
  released code applies it to the batch's scalar loss (its ``KLDiv`` reduces with
  'batchmean' before ``curr_v``), one weight per batch.
"""

from __future__ import annotations

from dfkd_jax.errors import ConfigError
from dfkd_jax.methods import cudfkd


def configure(config, epochs: int = 300, adv: float = 1.0, grad_adv: float = 0.0, masked: bool = False,
              begin: float = 0.25, end: float = 0.75):
    """AdaDFKD's terms and schedules; a run of ``epochs`` x 40 rounds.

    ``adv``: the adversarial weight from the start; ``grad_adv``: its growth per 40-round epoch
    between ``begin`` and ``end`` (from 0; the two cannot both be set); ``masked``: CMI's mask.
    """
    if adv and grad_adv:
        raise ConfigError("AdaDFKD: set either a constant adversarial weight (adv) or a ramp from 0 (grad_adv).")
    cudfkd.configure(config, epochs=epochs, grad_adv=grad_adv, begin=begin, end=end)
    config.method = "adadfkd"
    adv_term = "adv_kd_masked" if masked else "adv_kd"
    terms = {k: v for k, v in config.generator.terms.items() if k != "adv_kd_masked"}
    config.generator.terms = {**terms, adv_term: grad_adv or adv, "r2m": 0.1}
    config.generator.ramps = {adv_term: (begin, end, cudfkd.EPOCH_ROUNDS)} if grad_adv else {}
    config.hparams.r2m_queue_size = 4096
    config.hparams.r2m_window = 0.9
    config.hparams.r2m_begin = begin
    config.hparams.r2m_end = end
    config.hparams.r2m_temperature = 0.07
    config.student.terms = {"kd": 1.0, "relation": 0.1}
    config.student.tau = 20.0
    config.hparams.relation_temperature = 0.07
    config.hparams.relation_anchor = "teacher"
    config.hparams.spl_lambda0 = 2.2
    config.train.batch_size = 768
    return config
