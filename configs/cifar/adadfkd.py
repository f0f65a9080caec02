"""AdaDFKD on CIFAR-10/100 at the authors' published settings, one script per teacher/student pair.

Every pair runs AdaDFKD's method (dfkd_jax/methods/adadfkd.py): epochs x 40 rounds of 1 generator
+ 10 student updates; the generator's one_hot + bn - 20 H(p_bar at T) + the unmasked adversarial
9 KL_3 at a constant weight 1 + ``hard`` x R2M over a queue of ``N_neg`` student keys, the band of
width ``length`` sliding from easy to hard between ``begin`` and ``end``; the student's loss (KL at
T, or L1) + ``s_nce`` x the relation InfoNCE at ``tau`` 0.07, weighted by the self-paced v from
lambda_0 (alpha 1e-4 per student update on CIFAR-10, 2e-5 on CIFAR-100: datafree_kd.py
l. 765-768); student SGD 0.1 momentum 0.9 wd 1e-4 cosine; generator (DCGAN_Generator_CIFAR10 =
LargeGenerator, N(0, 0.02) init, Sigmoid) Adam 1e-3 betas (0.9, 0.99), nz 512. What differs
between the pairs is in RECIPES below, read from the scripts in ljrprocc/DFKD at cd281c4
(``scripts/adadfkd/``). The pair is the script's --teacher/--student, not its file name:
adadfkd_cifar100_resnet34_resnet18.sh runs vgg11 -> resnet18 (since 2023-05-27, a850ef5/ce08a80;
resnet34 before), and adadfkd_cifar10_wrn402_wrn161.sh runs wrn40_2 -> wrn16_2. Two scripts run
CIFAR-100 wrn40_2 -> wrn16_2: adadfkd_cifar100_wrn402_wrn162.sh (the one named for the pair, used
here) and adadfkd_cifar100_wrn402_wrn401.sh (460 epochs, end 0.8, otherwise the same). Pairs
without a script are refused.
Usage: --config configs/cifar/adadfkd.py:cifar10,r34_r18
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pairs import apply_pair, published_recipe  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import adadfkd  # noqa: E402

# (dataset, pair): the script's --batch_size, --epochs, --begin_fraction, --end_fraction, --T, --lambda_0,
# --hard (R2M weight), --length (band width), --s_nce (relation weight), --N_neg (queue) and --loss
# (kl: KLDiv at T; l1: nn.L1Loss, datafree_kd.py l. 552-557). All four: --adv 1 --grad_adv 0, --tau 0.07.
RECIPES = {
    ("cifar10", "r34_r18"): dict(  # scripts/adadfkd/adadfkd_cifar10_resnet34_resnet18.sh l. 4-41
        batch=768, epochs=300, begin=0.25, end=0.75, T=20.0, lambda0=2.2, hard=0.1, length=0.9, s_nce=0.1,
        N_neg=4096, loss="kl"),
    ("cifar10", "w40_2_w16_2"): dict(  # scripts/adadfkd/adadfkd_cifar10_wrn402_wrn161.sh l. 1 (one line)
        batch=1024, epochs=500, begin=0.0, end=0.75, T=20.0, lambda0=1.5, hard=0.1, length=0.8, s_nce=0.1,
        N_neg=8192, loss="kl"),
    ("cifar100", "vgg11_r18"): dict(  # scripts/adadfkd/adadfkd_cifar100_resnet34_resnet18.sh l. 4-40
        batch=1024, epochs=400, begin=0.2, end=0.8, T=5.0, lambda0=1.0, hard=0.1, length=0.8, s_nce=0.1,
        N_neg=12288, loss="l1"),
    ("cifar100", "w40_2_w16_2"): dict(  # scripts/adadfkd/adadfkd_cifar100_wrn402_wrn162.sh l. 4-38
        batch=1024, epochs=500, begin=0.2, end=0.79, T=2.0, lambda0=1.2, hard=0.1, length=0.8, s_nce=0.15,
        N_neg=16384, loss="kl"),
}


def get_config(arg="cifar10,r34_r18"):
    r = published_recipe(RECIPES, arg, "AdaDFKD")
    c = adadfkd.configure(base_config(), epochs=r["epochs"], adv=1.0, grad_adv=0.0, begin=r["begin"], end=r["end"])
    c = apply_pair(c, arg)
    c.train.batch_size = r["batch"]
    c.hparams.balance_tau = c.student.tau = r["T"]  # the entropy's T (adadfkd.py l. 134) and KLDiv's
    c.generator.terms = {**dict(c.generator.terms), "r2m": r["hard"]}
    c.hparams.r2m_window = r["length"]
    c.hparams.r2m_queue_size = r["N_neg"]
    c.student.terms = {("l1" if r["loss"] == "l1" else "kd"): 1.0, "relation": r["s_nce"]}
    c.hparams.spl_lambda0 = r["lambda0"]
    c.hparams.spl_alpha = 1e-4 if c.data.dataset == "cifar10" else 2e-5  # datafree_kd.py l. 765-768
    c.generator.ngf = 64
    c.train.log_every = 50
    c.train.eval_every = 400
    c.train.checkpoint_every = 2000
    c.train.sample_every = 4000
    return c
