"""ZSKD (Nayak, Mopuri, Shaj, Babu & Chakraborty, ICML 2019, "Zero-Shot Knowledge Distillation in Deep
Networks"): data impressions optimised toward Dirichlet soft targets drawn from the teacher's class
similarities, then Hinton KD at temperature 20 on the impressions with ZSKD's augmentations.

Synthesis (``synthesis.kind = 'soft_pixels'``, ``targets = 'dirichlet'``; ``dfkd_jax.synthesis.targets``
and ``soft_pixels`` cite the released code, vcl-iisc/ZSKD at 54c855f, line by line):
- ``C = cos`` of the head's class weight vectors; the concentration of class ``k`` =
  ``beta`` x row ``k`` min-max normalised + 1e-4, beta in {1.0, 0.1}, half of the impressions each
  (the released code's two ``visualMat`` scales; its row normalisation cancels the 0.1, see
  ``targets.py``: ``synthesis.dirichlet_betas = (1.0, 1.0)`` reproduces it);
- ``soft_ce`` = CE(y, softmax(T(x) / 20)), batch mean (``noise_cost``, l. 85);
- Adam lr 1e-3 (TF's betas 0.9 / 0.999) for 1500 iterations per batch of 100 (the generator script's
  argparse defaults, l. 24-26); pixels U[0, 1], min-max rescaled each step, the last iterate kept;
- counts (the paper's experiments, Sec. 4): 24,000 impressions for MNIST, 48,000 for
  Fashion-MNIST, 40,000 for CIFAR-10;
  one round = one batch of one (class, beta) row, the rows cycled (``targets.DirichletTargets``),
  so 480 rounds of 100 give Fashion-MNIST's 48,000 (24 batches per row); ``synthesis.zskd_chain = 24``
  goes row by row and chains a row's batches as the released generator (``soft_pixels``).

Student (``model_training/train.py``): ``tau^2 * CE(softmax(t / 20), softmax(s / 20))`` with
``tau = 20`` (l. 126-129; ``kd`` here is the KL, the same gradient), the teacher labelling the
augmented images (``data_augmentation.py`` l. 70-71, softmax at T 20 l. 83); Adam lr 1e-3 (l. 31, 132), batch 64
(l. 28), 500 epochs (l. 27); the augmentations of ``data_augmentation.py`` (``student.augment = 'zskd'``,
``dfkd_jax.augment_zskd``: one of its 103 variants per image instead of all 103 per image;
``'zskd_all'`` feeds all 103, as the released trainer, at 103 times the cost of a step; ``'zskd_fill0'`` /
``'zskd_all_fill0'`` fill the translated strip black instead of the released white; docs/fidelity.md).
Reading: the released code distils after all impressions exist; here the student learns from the
pool while it fills (``student.steps`` per round), or from an exported transfer set
(``synthesis.export`` then ``synthesis.transfer_set``) after synthesis, the released order.
"""

from __future__ import annotations


def configure(config):
    config.method = "zskd"
    config.synthesis.kind = "soft_pixels"
    config.synthesis.targets = "dirichlet"
    config.synthesis.dirichlet_betas = (1.0, 0.1)
    config.synthesis.pixel_init = "uniform"
    config.synthesis.loop = "python"  # 1500 steps per round: one jitted step in a Python loop
    config.synthesis.batch_size = 100
    config.generator.steps = 1500
    config.generator.lr = 1e-3
    config.generator.b1, config.generator.b2 = 0.9, 0.999
    config.generator.terms = {"soft_ce": 1.0}
    config.hparams.target_tau = 20.0
    student(config)
    config.train.rounds = 480  # 48,000 Fashion-MNIST impressions in batches of 100
    config.student.pool_size = 48_000
    return config


def student(config, epochs: int = 500):
    """ZSKD's student: KD at tau 20 on augmented impressions, Adam 1e-3, batch 64, ``epochs`` passes
    over the final set spread over the rounds (``student.steps`` = epochs x set / 64 / rounds, set at
    the published counts by the dataset configs)."""
    config.student.terms = {"kd": 1.0}
    config.student.tau = 20.0
    config.student.optimizer = "adam"
    config.student.lr = 1e-3
    config.student.b1, config.student.b2 = 0.9, 0.999
    config.student.weight_decay = 0.0
    config.student.schedule = "constant"
    config.student.augment = "zskd"
    config.student.pool_dtype = "float32"  # the released impressions are float arrays (np.save)
    config.train.batch_size = 64
    config.student.steps = epochs * 48_000 // 64 // 480  # 781: 500 epochs over 48,000 impressions in 480 rounds
