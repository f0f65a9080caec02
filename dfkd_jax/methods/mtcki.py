"""MTCKI: multi-teacher contrastive knowledge inversion (only the paper's abstract is public).

What the abstract says: invert the knowledge of several available teachers and fuse it into one
student, removing the bias of a single teacher's BatchNorm statistics; make the synthetic images
diverse by contrasting the current batch against stored historical images (the generator must
synthesise images unlike the history); add a multi-teacher-student contrastive loss to strengthen
the student's representation; generate the synthetic set once and reuse it for different students.
No code, equation, weight or schedule is published. The reading implemented here, with every choice
the abstract leaves open:

Synthesis: CMI's generator inversion (``dfkd_jax.methods.cmi``, ``synthesis/generator_inversion.py``)
against the M teachers of ``--config.teacher.checkpoints`` (``dfkd_jax.ensemble``: each teacher sees the
same pixels under its own normalisation):
- ``bn`` and ``one_hot`` per teacher, then combined over the teachers by ``hparams.teacher_reduction``:
  **'mean' by default** (the mean over teachers of each teacher's own term, so CMI's weights keep their
  meaning at any M and M copies of one teacher give CMI's numbers); 'sum' is the abstract-literal sum
  (the same as 'mean' with the weights times M); 'ensemble' is the CE of the mean logits (other methods);
- the adversarial term (CMI's masked KL) against the ensemble, the mean of the teachers' logits;
- CMI's contrast of the current batch with a memory bank of past batches' embeddings ("images unlike
  history"): the instance embedding is built per teacher (``synthesis.embedding``: CMI's BN-input means,
  or the pooled feature for teachers without BatchNorm) and **concatenated** over teachers before CMI's
  head by default (``synthesis.embedding_fusion='mean'`` averages them when their widths agree); the head,
  the bank (its rows: past lowest-loss iterates' embeddings), the negatives drawn and the temperature are
  CMI's;
- the lowest-loss iterate of each round goes to the pool, with the ensemble's logits when
  ``student.pool_logits`` (what an exported transfer set stores).

Student: KD at tau 20 against the ensemble's logits plus ``mt_contrast``
(``dfkd_jax.objectives.mt_contrast``, ``terms.multi_teacher_info_nce``): for each teacher m,
``logits_ij = <P_m f_s(x_i), f_m(x_j)> / tau_c`` over the batch with both sides L2-normalised, the
cross-entropy with the diagonal as positives (each student feature must pick out its own sample's
feature of teacher m among the batch's), averaged over the teachers; the teachers' features are
detached. ``P_m`` maps the student's feature to teacher m's width: a learned linear map (no bias), the
m-th block of the run's projector (``DistillState.projector``, trained by the student's optimiser with
the student and checkpointed with it). With one teacher of the student's width there is no projector
(identity), as for AdaDFKD; with several teachers every teacher gets a learned map, even one of the
student's width. The teacher side is not projected (``P_m f_m = f_m``): the student is pulled toward each
teacher's own feature geometry.

Generate once: ``--config.synthesis.export=DIR`` writes the pool as a transfer set at the end of the run
(``dfkd_jax.transfer``); ``--config.synthesis.transfer_set=DIR`` trains any student from it without
synthesis (the teachers still label augmented draws and give ``mt_contrast`` its features).

Defaults where the abstract is silent, and where they come from:
- everything of the synthesis (generator, 200 steps at lr 1e-3, betas (0.5, 0.999), bn 1, oh 1, adv 0.5
  at T 1, cr 0.8, cr_T 0.2, bank 40,960 rows, 4,096 negatives, head 256) and of the student's KD (tau 20,
  SGD 0.1, wd 1e-4, cosine to 0, 400 steps per batch, batch 256) is CMI's;
- ``mt_contrast`` weight 0.1: the weight of the nearest published analogue, AdaDFKD's student-teacher
  in-batch InfoNCE next to KD at tau 20 (``--s_nce 0.1``); its temperature ``hparams.mt_temperature`` 0.2
  is CMI's contrastive temperature (cr_T).
"""

from __future__ import annotations

from dfkd_jax.methods import cmi

MT_CONTRAST_WEIGHT = 0.1


def configure(config):
    cmi.configure(config)
    config.method = "mtcki"
    config.hparams.teacher_reduction = "mean"
    config.synthesis.embedding = "bn_means"
    config.synthesis.embedding_fusion = "concat"
    config.student.terms = {"kd": 1.0, "mt_contrast": MT_CONTRAST_WEIGHT}
    config.hparams.mt_temperature = 0.2
    return config
