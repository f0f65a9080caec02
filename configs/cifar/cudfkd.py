"""CuDFKD on CIFAR-10/100 at the authors' published settings, one script per teacher/student pair.

Every pair runs CuDFKD's method (dfkd_jax/methods/cudfkd.py): epochs x 40 rounds of 1 generator
+ 10 student updates, the generator's one_hot + bn - 20 H(p_bar at T) + the masked adversarial
9 KL_3 whose weight starts at ``adv`` and grows by ``grad_adv`` per epoch between ``begin`` and
``end``; the student's loss (L1, or KL at T) weighted by the self-paced v from lambda_0 (alpha
1e-4 per student update on CIFAR-10, 2e-5 on CIFAR-100: datafree_kd.py l. 774-777); student SGD
0.1 momentum 0.9 wd 1e-4 cosine; generator (DCGAN_Generator_CIFAR10 = LargeGenerator, N(0, 0.02)
init, Sigmoid) Adam 1e-3 betas (0.9, 0.99), nz 512. What differs between the pairs is in
RECIPES below, read from the scripts in ljrprocc/DataFree at bf3096b (``scripts/cudfkd/``;
the pair is the script's --teacher/--student, which for cudfkd_cifar100_wrn402_wrn161.sh is
wrn40_2 -> wrn40_1). Pairs without a script are refused.
Usage: --config configs/cifar/cudfkd.py:cifar10,r34_r18
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pairs import apply_pair, published_recipe  # noqa: E402

from dfkd_jax.config import base_config  # noqa: E402
from dfkd_jax.methods import cudfkd  # noqa: E402

# (dataset, pair): the script's --batch_size, --epochs, --adv, --grad_adv, --begin_fraction, --end_fraction,
# --T, --lambda_0 and --loss (l1: nn.L1Loss; kl: KLDiv at T, datafree_kd.py l. 408-413)
RECIPES = {
    ("cifar10", "r34_r18"): dict(  # scripts/cudfkd/cudfkd_cifar10_resnet34_resnet18.sh l. 4-34
        batch=512, epochs=250, adv=0.0, grad_adv=0.5, begin=0.25, end=0.75, T=20.0, lambda0=2.0, loss="l1"),
    ("cifar100", "r34_r18"): dict(  # scripts/cudfkd/cudfkd_cifar100_resnet34_resnet18.sh l. 4-35
        batch=768, epochs=400, adv=0.0, grad_adv=0.35, begin=0.2, end=0.8, T=5.0, lambda0=1.0, loss="l1"),
    ("cifar10", "w40_2_w16_1"): dict(  # scripts/cudfkd/cudfkd_cifar10_wrn402_wrn161.sh l. 4-35
        batch=1024, epochs=250, adv=0.5, grad_adv=0.05, begin=0.25, end=0.75, T=20.0, lambda0=2.0, loss="kl"),
    ("cifar100", "w40_2_w40_1"): dict(  # scripts/cudfkd/cudfkd_cifar100_wrn402_wrn161.sh l. 4-35
        batch=1024, epochs=500, adv=0.0, grad_adv=0.12, begin=0.2, end=0.75, T=2.0, lambda0=1.0, loss="kl"),
}


def get_config(arg="cifar10,r34_r18"):
    r = published_recipe(RECIPES, arg, "CuDFKD")
    c = cudfkd.configure(base_config(), epochs=r["epochs"], grad_adv=r["grad_adv"], begin=r["begin"], end=r["end"],
                         adv=r["adv"])
    c = apply_pair(c, arg)
    c.train.batch_size = r["batch"]
    c.hparams.balance_tau = c.student.tau = r["T"]  # the entropy's T (cudfkd.py l. 108-109) and KLDiv's
    c.student.terms = {"l1": 1.0} if r["loss"] == "l1" else {"kd": 1.0}
    c.hparams.spl_lambda0 = r["lambda0"]
    c.hparams.spl_alpha = 1e-4 if c.data.dataset == "cifar10" else 2e-5  # datafree_kd.py l. 774-777
    c.generator.ngf = 64
    c.train.log_every = 50
    c.train.eval_every = 400
    c.train.checkpoint_every = 2000
    c.train.sample_every = 4000
    return c
