"""CMI: Contrastive Model Inversion (Fang, Song, Wang, Shen, Wang, Song, IJCAI 2021, "Contrastive Model
Inversion for Data-Free Knowledge Distillation").

Synthesis (``dfkd_jax.synthesis.generator_inversion``): each round a generator re-drawn from
N(0, 0.02) and a latent batch are optimised jointly for ``g_steps`` against Eq. 9 of the paper,
``L_inv = bn * L_bn + oh * CE(t, y) + adv * L_adv`` (DeepInversion's prior and CE on the global
view, the masked adversarial KL of Eq. 8: only samples on which student and teacher agree), plus
``cr * L_cr`` (Eq. 11): an InfoNCE between a local and a global view's instance embeddings (the
teacher's BN-input channel means) through a 2-layer MLP head, with negatives drawn from a memory
bank of past batches' embeddings. The lowest-loss iterate goes to the pool and its embeddings to
the bank. Student: KD at tau 20 from the augmented pool.

Matched to zju-vipa/CMI at 9e79fa9 (every term cited by line in ``synthesis/generator_inversion.py``)
and ``scripts/cmi/cmi_cifar10.sh`` / Fast-Datafree ``scripts/cmi_cifar.sh`` l. 1-22: ``--g_steps 200
--lr_g 1e-3 --adv 0.5 --bn 1.0 --oh 1.0 --cr 0.8 --cr_T 0.2 --T 20``, batch 256, 400 KD steps per
synthesised batch, student SGD 0.1 (wd 1e-4, cosine to 2e-4 over 200 epochs). Generator: the CMI/Fast
``Generator`` (``generator.arch='cmi'``, Sigmoid, nz 256, ngf 64).

Readings where paper and code differ: the paper's Eq. 11 anchors on one view of each sample; the
code's "naive implementation" (l. 319-326) is used: the local projections are the anchors, the
detached global projections the keys, the current rows' and the bank rows' mean cross-entropies
summed. Bank rows not yet written are never drawn (see the synthesiser's docstring for the
reference's off-by-one at a full bank).

Switch (not the default): ``--config.synthesis.reset=keep`` draws the generator once and keeps it across
rounds (new latents, targets and Adam each round), the ``feature_reuse`` option of the CuDFKD/AdaDFKD
authors' CMI (ljrprocc/DataFree). The Fashion-MNIST config sets it: at 5 steps per round a re-drawn
generator stays near its random init (``configs/fashion_mnist/lenet_pair.py``).
"""

from __future__ import annotations

from dfkd_jax.methods.students import inversion_student


def configure(config):
    config.method = "cmi"
    config.synthesis.kind = "generator"
    config.synthesis.loop = "python"  # 200 steps per round
    config.generator.arch = "cmi"
    config.generator.nz = 256
    config.generator.ngf = 64
    config.generator.init = "normal"
    config.synthesis.reset = "normal"
    config.generator.steps = 200
    config.generator.lr = 1e-3
    config.generator.b1, config.generator.b2 = 0.5, 0.999
    config.generator.terms = {"bn": 1.0, "one_hot": 1.0, "adv_kd_masked": 0.5}
    config.generator.student_mode = "eval"
    config.hparams.adv_tau = 1.0  # kldiv's default T=1 in the masked term
    config.synthesis.cr = 0.8
    config.synthesis.cr_temperature = 0.2
    config.synthesis.bank_size = 40960
    config.synthesis.n_neg = 4096
    config.synthesis.head_dim = 256
    inversion_student(config)
    return config
