"""Fast (Fast-Datafree, FastMeta; Fang, Mo, Wang, Song, Bei, Song, AAAI 2022, "Up to 100x Faster
Data-free Knowledge Distillation").

Synthesis (``dfkd_jax.synthesis.meta``): a generator kept across rounds is the meta initialisation;
each round a clone and a fresh latent batch take 2, 5 or 10 inner Adam steps on CMI's inversion
loss without the contrastive term (``bn * L_bn + oh * CE(t, y) + adv * L_adv``, the bn term with
BN-statistic momentum 0.9), and the meta generator takes one first-order MAML step on the sum of the
inner gradients (the paper's Eq. 7-8 with the Reptile alternative). The lowest-loss inner iterate
goes to the pool. Student: KD at tau 20 from the augmented pool; during the first 20 rounds (epochs)
only the pool grows (warm-up), the adversarial term starting in the last of them.

Matched to zju-vipa/Fast-Datafree at 0dcecbc (``datafree/synthesis/fast_meta.py``, cited by line in
``synthesis/meta.py``) and ``scripts/fast_cifar.sh`` (CIFAR-100, WRN/ResNet/VGG teachers):
``--batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --adv 1.1 (WRN; 1.33 ResNet-34, 1.0 VGG-11)
--bn 10.0 --oh 0.4 (0.5) --T 20 --bn_mmt 0.9 --warmup 20 --epochs 220 --is_maml 1 --reset_l0 1``, and
per inner-step count: ``--g_steps 2 --lr_g 5e-3 --lr_z 0.015``, ``5: 3e-3, 0.01``, ``10: 2e-3, 0.01``.
Student SGD 0.2, momentum 0.9, wd 1e-4, cosine to 2e-4 over the 200 epochs after the warm-up
(``datafree_kd.py`` l. 322-323, 399-400).

Not reproduced: the reference keeps training the student from pool images written as PNG files
(8-bit: ``student.pool_dtype='uint8'`` reproduces the quantisation, not the files).
"""

from __future__ import annotations

from dfkd_jax.errors import ConfigError
from dfkd_jax.methods.students import inversion_student

# inner steps -> (lr_g, lr_z), scripts/fast_cifar.sh
PUBLISHED = {2: (5e-3, 0.015), 5: (3e-3, 0.01), 10: (2e-3, 0.01)}


def configure(config, steps: int = 10, adv: float = 1.1, oh: float = 0.4):
    if steps not in PUBLISHED:
        raise ConfigError(f"Fast: published inner-step counts are {sorted(PUBLISHED)}, not {steps}.")
    config.method = "fast"
    config.synthesis.kind = "meta"
    config.synthesis.loop = "unroll"  # 2-10 steps: one program
    config.generator.arch = "cmi"
    config.generator.nz = 256
    config.generator.ngf = 64
    config.generator.init = "torch"
    config.generator.steps = steps
    config.generator.lr, config.synthesis.lr_z = PUBLISHED[steps]
    config.generator.b1, config.generator.b2 = 0.5, 0.999
    config.generator.terms = {"bn": 10.0, "one_hot": oh, "adv_kd_masked": adv}
    config.generator.student_mode = "eval"
    config.hparams.adv_tau = 1.0
    config.synthesis.meta = "fomaml"
    config.synthesis.bn_momentum = 0.9
    config.synthesis.warmup = 20
    config.synthesis.reset_l0_round = 119 + 20
    inversion_student(config, lr=0.2)
    config.train.rounds = 220
    return config
