"""ZSKD and soft-targeted synthesis: the model anatomy they read, their targets, terms and augmentation,
against hand computations (numpy); the synthesiser through the engine at toy size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfkd_jax import augment_zskd, objectives, terms
from dfkd_jax.models import ARCHITECTURES, anatomy, build_model
from dfkd_jax.synthesis import targets
from dfkd_jax.synthesis.base import STUDENT_AUGMENTATIONS
from dfkd_jax.synthesis.soft_pixels import minmax_rescale
from tests.helpers import random_teacher, run_rounds, synthesis_config, tiny_config

HEAD_WIDTH = {"lenet5": 84, "lenet5_half": 42, "lenet5_half_zskd": 84, "resnet18": 512, "resnet34": 512,
              "wrn16_1": 64, "wrn16_2": 128, "wrn40_1": 64, "wrn40_2": 128, "vgg8": 512, "vgg11": 512}
FIRST_CONV = {"lenet5": 6, "lenet5_half": 3, "lenet5_half_zskd": 3, "resnet18": 64, "resnet34": 64, "wrn16_1": 16,
              "wrn16_2": 16, "wrn40_1": 16, "wrn40_2": 16, "vgg8": 64, "vgg11": 64}


def _shape(arch):
    return (32, 32, 1) if arch.startswith("lenet") else (32, 32, 3)


# -- the anatomy of every architecture -------------------------------------------------------------------
FAMILIES = ("lenet5", "resnet18", "wrn16_1", "vgg8")  # one per family in the default suite, every one under -m slow


@pytest.mark.parametrize("arch", [a if a in FAMILIES else pytest.param(a, marks=pytest.mark.slow)
                                  for a in sorted(ARCHITECTURES)])
def test_every_architecture_exposes_its_head_fc_layers_and_first_conv(arch):
    """Shapes only (eval_shape): the chain of FC layers ends in the head (width -> 10), starts at the
    ``feature`` output, and the first convolution is found, with no per-architecture code."""
    model, shape = build_model(arch, 10), _shape(arch)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape))))
    chain = anatomy.dense_chain(model, variables, shape)
    head = anatomy.head(chain)
    assert head.kernel.shape == (HEAD_WIDTH[arch], 10) and head.bias.shape == (10,)
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    (logits, aux), conv1 = jax.eval_shape(lambda v, x: anatomy.apply_with_first_conv(model, v, x), variables, x)
    assert chain[0].kernel.shape[0] == aux["feature"].shape[-1]
    assert len(chain) == (2 if arch.startswith("lenet") else 1)
    assert conv1.shape[0] == 2 and conv1.shape[-1] == FIRST_CONV[arch] and logits.shape == (2, 10)


def test_lenet_head_tail_and_first_conv_by_hand():
    t = random_teacher()
    chain = anatomy.dense_chain(t.model, t.variables, (32, 32, 1))
    assert [layer.path for layer in chain] == [("fc1",), ("fc2",)] and chain[1].weight.shape == (10, 84)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 32, 32, 1))
    fwd = jax.jit(lambda v, x: anatomy.apply_with_first_conv(t.model, v, x))  # eager convs are slow
    (logits, aux), conv1 = fwd(t.variables, x)
    p = {k: {n: np.asarray(a, np.float64) for n, a in v.items()} for k, v in t.variables["params"].items()}
    f = np.asarray(aux["feature"], np.float64)
    h = np.maximum(f @ p["fc1"]["kernel"] + p["fc1"]["bias"], 0)
    np.testing.assert_allclose(anatomy.tail(chain, 0)(f), h @ p["fc2"]["kernel"] + p["fc2"]["bias"], rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(anatomy.tail(chain, 0)(f), logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(anatomy.tail(chain, 1)(h), logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(anatomy.tail(chain, 2)(logits), logits)
    # conv1: a 5x5 valid convolution plus bias, before the ReLU, at one output position by hand
    xs, k = np.asarray(x, np.float64), p["conv1"]["kernel"]  # (5, 5, 1, 6)
    by_hand = np.einsum("hwc,hwco->o", xs[1, 3:8, 7:12], k) + p["conv1"]["bias"]
    np.testing.assert_allclose(np.asarray(conv1)[1, 3, 7], by_hand, rtol=1e-4, atol=1e-5)


# -- ZSKD's Dirichlet targets ----------------------------------------------------------------------------
HEAD_W = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # class weight vectors (PyTorch rows), K = 3, D = 2


def _head(weight, bias=None):
    return anatomy.DenseLayer(path=("fc",), kernel=np.asarray(weight).T, bias=bias)


def test_dirichlet_concentrations_by_hand():
    r = 1 / np.sqrt(2)
    c = targets.class_similarity(_head(HEAD_W))
    np.testing.assert_allclose(c, [[1, 0, r], [0, 1, r], [r, r, 1]], atol=1e-12)
    alpha = targets.zskd_concentrations(_head(HEAD_W), betas=(1.0, 0.1))
    # row k min-max normalised: row 2 is (r, r, 1) -> (0, 0, 1)
    expect_1 = np.array([[1, 0, r], [0, 1, r], [0, 0, 1]])
    np.testing.assert_allclose(alpha, np.concatenate([expect_1 + 1e-4, 0.1 * expect_1 + 1e-4]), atol=1e-12)


def test_dirichlet_rows_cycle_and_follow_their_concentration():
    alpha = targets.zskd_concentrations(_head(HEAD_W), betas=(1.0, 0.1)).astype(np.float32)
    sampler = jax.jit(targets.DirichletTargets(alpha), static_argnums=2)  # one compilation
    for r in (0, 4, 6 + 2):  # round r draws row r mod 6
        y = np.asarray(sampler(jax.random.PRNGKey(r), jnp.asarray(r), 4000))
        assert np.all(np.isfinite(y)) and np.allclose(y.sum(-1), 1, atol=1e-5)
        a = alpha[r % 6]
        np.testing.assert_allclose(y.mean(0), a / a.sum(), atol=0.03)


# -- soft-targeted synthesis's normal --------------------------------------------------------------------
def test_covariance_from_known_weights():
    kernel = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])  # (in=3, out=2): row i = weights leaving unit i
    r = 1 / np.sqrt(2)
    sigma = targets.feature_covariance(kernel, 1.5)
    np.testing.assert_allclose(sigma, 1.5 * np.array([[1, r, 0], [r, 1, r], [0, r, 1]]), atol=1e-12)
    f = targets.psd_factor(sigma)  # sigma has rank 2: no Cholesky factor, an eigen one
    np.testing.assert_allclose(f @ f.T, sigma, atol=1e-10)


def test_soft_targets_through_a_known_head():
    w1 = np.array([[1.0, -1.0, 0.5], [0.0, 2.0, 1.0]])  # fc1: 2 -> 3 (kernel (in, out))
    w2 = np.array([[1.0, 0.0], [0.5, -1.0], [2.0, 1.0]])  # head: 3 -> 2 (kernel)
    b2 = np.array([0.1, -0.2])
    chain = (anatomy.DenseLayer(("fc1",), w1, np.zeros(3)), anatomy.DenseLayer(("fc2",), w2, b2))
    tau = 2.0
    pen = targets.normal_sampler(chain, "penultimate", sigma=2.0, tau=tau)
    r = targets.cosine_similarity_rows(w2)  # the head's weights leaving each of the 3 penultimate units
    np.testing.assert_allclose(np.asarray(pen.factor, np.float64) @ np.asarray(pen.factor, np.float64).T, 2.0 * r,
                               atol=1e-5)
    key = jax.random.PRNGKey(3)
    y = np.asarray(pen(key, 0, 5), np.float64)
    z = np.asarray(jax.random.normal(key, (5, 3), jnp.float32), np.float64)
    u = (z @ np.asarray(pen.factor, np.float64).T) @ w2 + b2  # the sample enters the head as is
    e = np.exp(u / tau - (u / tau).max(-1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(-1, keepdims=True), rtol=1e-5)
    logit = targets.normal_sampler(chain, "logits", sigma=1.5, tau=tau)  # R = the class vectors' similarity
    f = np.asarray(logit.factor, np.float64)
    np.testing.assert_allclose(f @ f.T, 1.5 * targets.cosine_similarity_rows(w2.T), atol=1e-5)
    z = np.asarray(jax.random.normal(key, (5, 2), jnp.float32), np.float64)
    s = z @ f.T
    e = np.exp(s / tau - (s / tau).max(-1, keepdims=True))
    np.testing.assert_allclose(np.asarray(logit(key, 0, 5)), e / e.sum(-1, keepdims=True), rtol=1e-5)


# -- terms ------------------------------------------------------------------------------------------------
def test_soft_target_terms_by_hand():
    t = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    y = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    tau = 2.0
    logq = t / tau - np.log(np.exp(t / tau).sum(-1, keepdims=True))
    ce = -(y * logq).sum(-1)
    ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1)), 0).sum(-1)
    np.testing.assert_allclose(terms.soft_kl(t, y, tau), ylogy + ce, rtol=1e-5)
    h = objectives.HParams(target_tau=tau)
    conv1 = np.array([[[[1.0, -2.0]]], [[[0.5, 0.0]]]])
    v = objectives.View(x=None, t_logits=jnp.asarray(t), targets=jnp.asarray(y), t_conv1=jnp.asarray(conv1))
    g = objectives.GENERATOR_TERMS
    np.testing.assert_allclose(g["soft_ce"].fn(v, h), ce.mean(), rtol=1e-5)
    np.testing.assert_allclose(g["soft_kl"].fn(v, h), (ylogy + ce).mean(), rtol=1e-5)
    np.testing.assert_allclose(g["conv1_activation"].fn(v, h), -3.5 / 4, rtol=1e-6)
    assert g["conv1_activation"].needs == {"conv1"}


def test_minmax_rescale_of_the_whole_batch():
    p = jnp.array([[[[-1.0]], [[3.0]]], [[[1.0]], [[0.0]]]])
    np.testing.assert_allclose(minmax_rescale(p), (np.asarray(p) + 1) / 4)


# -- ZSKD's augmentation ------------------------------------------------------------------------------------
def test_zskd_variants_are_the_released_list():
    v = augment_zskd.VARIANTS
    assert v.shape == (103, 4) and len({tuple(r) for r in v}) == 103
    assert STUDENT_AUGMENTATIONS["zskd"] is augment_zskd.zskd


def test_zskd_transforms_by_hand():
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 10, 10, 2))
    xs = np.asarray(x)
    apply = jax.jit(augment_zskd.apply_variants)  # one compilation per input shape

    def one(scale=1.0, direction=-1, angle=0.0, flip=0):
        return np.asarray(apply(x, jnp.array([[scale, direction, angle, flip]], jnp.float32)))

    np.testing.assert_allclose(one(), xs, atol=1e-6)
    np.testing.assert_allclose(one(flip=1), xs[:, :, ::-1], atol=1e-6)
    np.testing.assert_allclose(one(flip=2), xs[:, ::-1], atol=1e-6)
    np.testing.assert_allclose(one(flip=3), xs.transpose(0, 2, 1, 3), atol=1e-6)
    n = 10 - 8  # 20% of 10 pixels: shift by 10 - ceil(8)
    left = one(direction=0)
    np.testing.assert_allclose(left[:, :, : 10 - n], xs[:, :, n:], atol=1e-6)
    assert np.all(left[:, :, 10 - n:] == 1.0)
    down = one(direction=3)
    np.testing.assert_allclose(down[:, n:], xs[:, : 10 - n], atol=1e-6)
    assert np.all(down[:, :n] == 1.0)
    r90 = one(angle=90.0)
    assert any(np.allclose(r90, np.rot90(xs, k, axes=(1, 2)), atol=1e-6) for k in (1, 3))
    np.testing.assert_allclose(one(angle=-90.0), np.rot90(r90, 2, axes=(1, 2)), atol=1e-6)
    const = jnp.full((1, 10, 10, 2), 0.3)  # a central zoom of a constant image is the constant
    zoom = apply(const, jnp.array([[0.6, -1, 0.0, 0]], jnp.float32))
    np.testing.assert_allclose(zoom, 0.3, atol=1e-6)
    rot = np.asarray(apply(const, jnp.array([[1.0, -1, 30.0, 0]], jnp.float32)))
    assert rot[0, 0, 0, 0] == 0.0 and rot[0, 5, 5, 0] == pytest.approx(0.3)  # zeros outside, as tf rotate


# -- through the engine -------------------------------------------------------------------------------------
def test_soft_targeted_synthesis_through_the_engine():
    """Wang's targets, the conv-1 term and ZSKD's augmentation, two rounds at toy size."""
    config = synthesis_config("soft_targeted", **{"student.augment": "zskd"})
    d, state, m = run_rounds(config, random_teacher())
    assert int(state.pool.count) == 16 and all(np.isfinite(v) for v in m.values()), m
    assert {"synthesis/soft_kl", "synthesis/conv1_activation"} <= set(m)
    pixels = np.asarray(state.pool.x[:16], np.float32)
    assert pixels.min() == 0.0 and pixels.max() == 1.0  # min-max rescaled batches


@pytest.mark.slow
def test_zskd_through_the_engine_and_its_python_loop():
    t = random_teacher()
    _, s1, m1 = run_rounds(synthesis_config("zskd"), t)
    _, s2, _ = run_rounds(synthesis_config("zskd", **{"synthesis.loop": "python"}), t)
    assert int(s1.pool.count) == 16 and np.isfinite(m1["synthesis/soft_ce"]) and np.isfinite(m1["student/loss"])
    np.testing.assert_allclose(np.asarray(s1.pool.x), np.asarray(s2.pool.x), atol=1e-5)


def test_soft_target_terms_need_the_soft_pixel_synthesiser():
    from dfkd_jax.config import base_config, validate
    from dfkd_jax.errors import ConfigError
    from dfkd_jax.methods import adi, zskd
    c = adi.configure(base_config())
    c.generator.terms["soft_kl"] = 1.0
    with pytest.raises(ConfigError, match="soft_pixels"):
        validate(c)
    c = zskd.configure(base_config())
    validate(c)
    c.generator.terms["bn"] = 1.0
    with pytest.raises(ConfigError, match="bn"):
        validate(c)
