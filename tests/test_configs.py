"""Every config file under configs/ loads and validates, and the published settings it claims hold."""

import glob
import importlib.util
import os

import pytest

from dfkd_jax.config import validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_ARGS = [f"{d},{p}" for d in ("cifar10", "cifar100")
              for p in ("r34_r18", "vgg11_r18", "w40_2_w16_1", "w40_2_w40_1", "w40_2_w16_2")]


def load(path, arg=None):
    spec = importlib.util.spec_from_file_location("cfg_" + os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def config_files(folder):
    return sorted(p for p in glob.glob(os.path.join(ROOT, "configs", folder, "*.py"))
                  if os.path.basename(p) not in ("pairs.py", "lenet_pair.py", "pairs_32x3.py"))


@pytest.mark.parametrize("path", config_files("fashion_mnist"), ids=os.path.basename)
def test_fashion_mnist_configs(path):
    c = load(path)
    validate(c)
    half = "lenet5_half_zskd" if c.method in ("zskd", "soft_targeted") else "lenet5_half"  # ZSKD's pair
    teacher = "lenet5_bn" if path.endswith("_bn.py") else "lenet5"
    if os.path.basename(path) == "default.py":
        teacher = c.teacher.arch
    assert (c.teacher.arch, c.student.arch, c.data.dataset) == (teacher, half, "fashion_mnist")
    assert ("bn" in c.generator.terms) == (teacher == "lenet5_bn")  # LeNet-5 has no BatchNorm


def test_lenet_pair_keeps_the_bn_term_for_a_batchnorm_teacher():
    import sys

    from dfkd_jax.config import base_config
    from dfkd_jax.methods import dfq, fast
    from dfkd_jax.models import has_batch_norm

    sys.path.insert(0, os.path.join(ROOT, "configs", "fashion_mnist"))
    from lenet_pair import apply, apply_inversion

    assert not has_batch_norm("lenet5") and has_batch_norm("lenet5_bn")
    assert has_batch_norm("wrn16_1", (32, 32, 3))
    c = apply(dfq.configure(base_config()), teacher="lenet5_bn")
    assert c.teacher.arch == "lenet5_bn" and c.generator.terms["bn"] == 1.0
    c = apply_inversion(fast.configure(base_config()), teacher="lenet5_bn")
    validate(c)
    assert c.teacher.arch == "lenet5_bn" and c.generator.terms["bn"] == 10.0 and c.generator.arch == "cmi"
    assert "bn" not in apply(dfq.configure(base_config())).generator.terms
    c = load(os.path.join(ROOT, "configs", "fashion_mnist", "cmi.py"), "lenet5_bn")  # CMI from one BN teacher
    validate(c)
    assert c.teacher.arch == "lenet5_bn" and c.generator.terms["bn"] == 1.0 and c.method == "cmi"
    assert c.synthesis.reset == "keep" and c.generator.steps == 5
    c = load(os.path.join(ROOT, "configs", "fashion_mnist", "mtcki.py"))  # BN-free LeNets: pooled features
    validate(c)
    assert "bn" not in c.generator.terms and c.synthesis.embedding == "feature" and c.synthesis.reset == "keep"
    c = load(os.path.join(ROOT, "configs", "fashion_mnist", "mtcki.py"), "lenet5_bn")  # BN teachers: CMI's embedding
    validate(c)
    assert c.generator.terms["bn"] == 1.0 and c.synthesis.embedding == "bn_means" and c.synthesis.cr == 0.8


# the pairs with a published script (the others are refused): CuDFKD ljrprocc/DataFree scripts/cudfkd/,
# AdaDFKD ljrprocc/DFKD scripts/adadfkd/ (their --teacher/--student)
SCRIPTED = {"cudfkd.py": {"cifar10,r34_r18", "cifar100,r34_r18", "cifar10,w40_2_w16_1", "cifar100,w40_2_w40_1"},
            "adadfkd.py": {"cifar10,r34_r18", "cifar10,w40_2_w16_2", "cifar100,vgg11_r18", "cifar100,w40_2_w16_2"}}


@pytest.mark.parametrize("path", config_files("cifar"), ids=os.path.basename)
def test_cifar_configs_every_pair(path):
    scripted = SCRIPTED.get(os.path.basename(path))
    for arg in CIFAR_ARGS:
        if scripted is not None and arg not in scripted:
            with pytest.raises(ValueError, match=f"no script for {arg}.*Pairs with a script: .*cifar10,r34_r18"):
                load(path, arg)
            continue
        c = load(path, arg)
        validate(c)
        assert c.teacher.checkpoint == f"teachers/{c.data.dataset}_{c.teacher.arch}"


def test_curriculum_configs_carry_each_pairs_script():
    """Each scripted pair's config holds that script's values (read in the scripts, written out here):
    batch, epochs (x 40 rounds), T, lambda_0, the loss, the adversarial weight and window; AdaDFKD's
    R2M weight (--hard), band width (--length), relation weight (--s_nce) and queue (--N_neg)."""
    cu = {  # arg: (teacher, student, batch, epochs, T, lambda_0, student terms, adv weight, ramp)
        "cifar10,r34_r18": ("resnet34", "resnet18", 512, 250, 20.0, 2.0, {"l1": 1.0}, 0.5, (0.25, 0.75, 40)),
        "cifar100,r34_r18": ("resnet34", "resnet18", 768, 400, 5.0, 1.0, {"l1": 1.0}, 0.35, (0.2, 0.8, 40)),
        # --adv 0.5 --grad_adv 0.05: 0.05 per epoch from 0.5 = 10 epochs' worth
        "cifar10,w40_2_w16_1": ("wrn40_2", "wrn16_1", 1024, 250, 20.0, 2.0, {"kd": 1.0}, 0.05, (0.25, 0.75, 40, 10)),
        "cifar100,w40_2_w40_1": ("wrn40_2", "wrn40_1", 1024, 500, 2.0, 1.0, {"kd": 1.0}, 0.12, (0.2, 0.75, 40)),
    }
    for arg, (t, s, batch, epochs, tau, lam0, st, w, ramp) in cu.items():
        c = load(os.path.join(ROOT, "configs", "cifar", "cudfkd.py"), arg)
        assert (c.teacher.arch, c.student.arch, c.train.batch_size, c.train.rounds) == (t, s, batch, epochs * 40), arg
        assert (c.hparams.balance_tau, c.student.tau, c.hparams.spl_lambda0) == (tau, tau, lam0), arg
        assert dict(c.student.terms) == st and c.generator.terms["adv_kd_masked"] == w, arg
        assert tuple(c.generator.ramps["adv_kd_masked"]) == pytest.approx(ramp), arg
        assert c.hparams.spl_alpha == (1e-4 if arg.startswith("cifar10,") else 2e-5)
    # the WRN script's weight by hand: 0.5 until 25% of the run, then + 0.05 per 40 rounds, 0.5 + 0.05 * 125 at 75%
    from dfkd_jax import objectives
    c = load(os.path.join(ROOT, "configs", "cifar", "cudfkd.py"), "cifar10,w40_2_w16_1")
    ramp, rounds = tuple(c.generator.ramps["adv_kd_masked"]), c.train.rounds
    for progress, weight in ((0.0, 0.5), (0.25, 0.5), (0.25 + 40 / rounds, 0.55), (0.75, 0.5 + 0.05 * 125),
                             (1.0, 6.75)):
        assert 0.05 * float(objectives.ramp_factor(progress, ramp, rounds)) == pytest.approx(weight, rel=1e-5), progress
    ada = {  # arg: (teacher, student, batch, epochs, begin, end, T, lambda_0, loss, hard, length, s_nce, N_neg)
        "cifar10,r34_r18": ("resnet34", "resnet18", 768, 300, 0.25, 0.75, 20.0, 2.2, "kd", 0.1, 0.9, 0.1, 4096),
        "cifar10,w40_2_w16_2": ("wrn40_2", "wrn16_2", 1024, 500, 0.0, 0.75, 20.0, 1.5, "kd", 0.1, 0.8, 0.1, 8192),
        "cifar100,vgg11_r18": ("vgg11", "resnet18", 1024, 400, 0.2, 0.8, 5.0, 1.0, "l1", 0.1, 0.8, 0.1, 12288),
        "cifar100,w40_2_w16_2": ("wrn40_2", "wrn16_2", 1024, 500, 0.2, 0.79, 2.0, 1.2, "kd", 0.1, 0.8, 0.15, 16384),
    }
    for arg, (t, s, batch, epochs, b, f, tau, lam0, loss, hard, length, s_nce, n_neg) in ada.items():
        c = load(os.path.join(ROOT, "configs", "cifar", "adadfkd.py"), arg)
        assert (c.teacher.arch, c.student.arch, c.train.batch_size, c.train.rounds) == (t, s, batch, epochs * 40), arg
        assert (c.hparams.r2m_begin, c.hparams.r2m_end, c.hparams.balance_tau, c.student.tau) == (b, f, tau, tau), arg
        assert c.hparams.spl_lambda0 == lam0 and dict(c.student.terms) == {loss: 1.0, "relation": s_nce}, arg
        assert (c.generator.terms["r2m"], c.hparams.r2m_window, c.hparams.r2m_queue_size) == (hard, length, n_neg), arg
        assert c.generator.terms["adv_kd"] == 1.0 and not c.generator.ramps, arg  # --adv 1 --grad_adv 0
        assert (c.hparams.r2m_temperature, c.hparams.relation_temperature) == (0.07, 0.07), arg  # --tau 0.07


@pytest.mark.parametrize("path", config_files("fashion_mnist32x3"), ids=os.path.basename)
def test_fashion_mnist32x3_pairs(path):
    for arg in ("wrn16_2,wrn16_1", "resnet34,resnet18"):
        c = load(path, arg)
        validate(c)
        assert c.data.dataset == "fashion_mnist32x3" and f"{c.teacher.arch},{c.student.arch}" == arg


def test_published_curriculum_settings():
    ada = load(os.path.join(ROOT, "configs", "cifar", "adadfkd.py"), "cifar10,r34_r18")
    assert (ada.train.batch_size, ada.train.rounds, ada.student.steps) == (768, 300 * 40, 10)
    assert (ada.hparams.r2m_queue_size, ada.hparams.r2m_window, ada.hparams.spl_lambda0) == (4096, 0.9, 2.2)
    assert ada.student.tau == 20.0 and ada.generator.terms["r2m"] == 0.1 and ada.student.terms["relation"] == 0.1
    assert ada.generator.terms["adv_kd"] == 1.0 and "adv_kd_masked" not in ada.generator.terms  # the current script
    assert not ada.generator.ramps and ada.hparams.relation_anchor == "teacher"
    cu = load(os.path.join(ROOT, "configs", "cifar", "cudfkd.py"), "cifar10,r34_r18")
    assert (cu.train.batch_size, cu.train.rounds) == (512, 250 * 40)
    assert cu.hparams.spl_alpha == 1e-4 and dict(cu.student.terms) == {"l1": 1.0}  # --loss l1
    assert cu.generator.terms["adv_kd_masked"] == 0.5  # grad_adv: per 40-round epoch
    assert tuple(cu.generator.ramps["adv_kd_masked"]) == (0.25, 0.75, 40)
    assert load(os.path.join(ROOT, "configs", "cifar", "cudfkd.py"), "cifar100,r34_r18").hparams.spl_alpha == 2e-5


def test_curriculum_methods_batchnorm_modes_and_betas():
    """CuDFKD and AdaDFKD as their authors run them, in the methods and in every scripted CIFAR pair: the student
    in eval mode in the generator's step (DataFree datafree/synthesis/cudfkd.py l. 75, DFKD
    datafree/synthesis/adadfkd.py l. 112), the generator in eval mode when sampling the student's batches
    (l. 165, l. 185), generator Adam betas (0.9, 0.99) (cudfkd.py l. 64, adadfkd.py l. 83). A base config
    (any other method) keeps both networks in train mode."""
    from dfkd_jax import methods
    from dfkd_jax.config import base_config
    for name in ("cudfkd", "adadfkd"):
        configs = [methods.configure(base_config(), name)]
        configs += [load(os.path.join(ROOT, "configs", "cifar", f"{name}.py"), arg) for arg in SCRIPTED[f"{name}.py"]]
        for c in configs:
            assert (c.generator.student_mode, c.student.generator_mode) == ("eval", "eval"), name
            assert (c.generator.optimizer, c.generator.b1, c.generator.b2) == ("adam", 0.9, 0.99), name
    base = base_config()
    assert (base.generator.student_mode, base.student.generator_mode) == ("train", "train")
    zskt = methods.configure(base_config(), "zskt")  # solver.py l. 30-31, utils/loaders.py l. 58, 65
    assert (zskt.generator.student_mode, zskt.student.generator_mode, zskt.student.batch) == ("train", "train",
                                                                                               "regenerate")


def test_published_dafl_and_dfq_settings():
    """DAFL-train.py: 120 iterations per epoch (2000 epochs = 240,000 rounds), BatchNorm2d(c, 0.8); the README's
    CIFAR-100 weights. CMI's DFQ: LargeGenerator, wd 1e-4, Adam betas (0.5, 0.999), eval-mode BatchNorm."""
    dafl10 = load(os.path.join(ROOT, "configs", "cifar", "dafl.py"), "cifar10,r34_r18")
    dafl100 = load(os.path.join(ROOT, "configs", "cifar", "dafl.py"), "cifar100,r34_r18")
    assert (dafl10.train.rounds, dafl10.generator.bn_eps) == (240_000, 0.8)
    assert dict(dafl10.generator.terms) == {"one_hot": 0.05, "activation": 0.01, "balance": 5.0}
    assert dict(dafl100.generator.terms) == {"one_hot": 0.5, "activation": 0.1, "balance": 20.0}
    dfq = load(os.path.join(ROOT, "configs", "cifar", "dfq.py"), "cifar10,r34_r18")
    assert (dfq.generator.arch, dfq.generator.nz, dfq.student.weight_decay) == ("large", 256, 1e-4)
    assert (dfq.generator.b1, dfq.generator.student_mode, dfq.student.generator_mode) == (0.5, "eval", "eval")
    zskt = load(os.path.join(ROOT, "configs", "cifar", "zskt.py"), "cifar10,w40_2_w16_1")
    assert (zskt.generator.arch, zskt.student.batch, zskt.hparams.kl_reduction) == ("zskt", "regenerate", "mean")


def test_published_dafl_student_schedule_by_epoch():
    """DAFL-train.py sets the student's lr at the start of each epoch of 120 iterations: 0.1 before epoch 800,
    0.01 before epoch 1600, 0.001 after (l. 145-151, 168). Our run counts one student update per round, so the
    schedule built the way the Distiller builds it must switch at updates 800 * 120 and 1600 * 120, not a round
    earlier or later."""
    from dfkd_jax.core.optim import schedule

    c = load(os.path.join(ROOT, "configs", "cifar", "dafl.py"), "cifar10,r34_r18")
    assert (c.student.steps, c.synthesis.warmup) == (1, 0)
    lr = schedule(c.student, c.train.rounds * c.student.steps)  # engine/distiller.py: rounds x steps updates
    epoch_start = {e: e * 120 for e in (0, 799, 800, 1599, 1600, 1999)}  # update index of an epoch's first iteration
    expected = {0: 0.1, 799: 0.1, 800: 0.01, 1599: 0.01, 1600: 0.001, 1999: 0.001}
    for epoch, step in epoch_start.items():
        assert float(lr(step)) == pytest.approx(expected[epoch]), epoch
        assert float(lr(step + 119)) == pytest.approx(expected[epoch]), epoch  # the epoch's last iteration


@pytest.mark.parametrize("method", [pytest.param("adi", marks=pytest.mark.slow), pytest.param("cmi", marks=pytest.mark.slow),
                                    pytest.param("fast", marks=pytest.mark.slow)])
def test_lenet_pair_inversion_student_stays_bounded(method):
    """The inversion family's student on the LeNet pair (configs/fashion_mnist/<method>.py: KD at tau 20, SGD
    with momentum, the BN-free LeNet-5-half) learns from a pool like ADI's first batch (noise-like images the
    teacher is confident on: logits of std ~5, as the trained teacher's) without diverging. At the published
    learning rate (0.1; Fast 0.2) its weights left [-1, 1] within a few updates and the round went NaN."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dfkd_jax import pool as pool_lib
    from dfkd_jax.engine.distiller import Distiller
    from tests.helpers import random_teacher

    c = load(os.path.join(ROOT, "configs", "fashion_mnist", f"{method}.py"))
    c.synthesis.loop, c.synthesis.warmup = "python", 0
    teacher = random_teacher()
    variables = jax.tree.map(lambda a: a, teacher.variables)
    variables["params"]["fc2"]["kernel"] = variables["params"]["fc2"]["kernel"] * 60.0  # confident teacher
    teacher = teacher.__class__(teacher.model, variables, teacher.meta)
    d = Distiller.from_config(c, teacher)
    state = d.init(0)
    pixels = jax.random.uniform(jax.random.PRNGKey(1), (c.synthesis.batch_size, 32, 32, 1))
    state = state.replace(pool=pool_lib.push(state.pool, jnp.round(pixels)))  # clipped to 0 / 1 like ADI's
    logits = d.ensemble.logits(d.teacher_variables, d.ensemble.from_pixels(jnp.round(pixels)))
    assert 3.0 < float(jnp.std(logits)) < 10.0
    carry, step = None, jax.jit(d.round_fn.student_step)
    for j in range(c.student.steps):
        state, m = step(state, carry, d.teacher_variables, jnp.asarray(j, jnp.int32))
        assert np.isfinite(float(m["student/loss"]))
    largest = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(state.student.params))
    assert largest < 2.0, largest


@pytest.mark.parametrize("path", config_files("fashion_mnist_scenes"), ids=os.path.basename)
def test_fashion_mnist_scenes_configs(path):
    """DFAD's segmentation objective, generator and schedule on the scenes pair."""
    c = load(path)
    validate(c)
    assert c.data.dataset == "fashion_mnist_scenes"
    assert (c.teacher.arch, c.student.arch) == ("deeplabv3_resnet50@0.125", "deeplabv3_mobilenetv2@0.25")
    assert dict(c.generator.terms) == {"adv_log_l1": 1.0} and dict(c.student.terms) == {"l1": 1.0}
    assert (c.generator.arch, c.generator.nz, c.generator.init) == ("dfad_b_resize", 256, "normal")
    assert (c.student.steps, c.student.batch, c.student.lr, c.generator.lr) == (5, "fresh", 0.1, 1e-3)
    assert tuple(c.student.milestones) == pytest.approx((1 / 3, 2 / 3))
