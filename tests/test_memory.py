"""PRE-DFKD's building blocks: the VAE memory (dfkd_jax.models.vae), its loss and replay
(dfkd_jax.memory), and the spectrally normalised DAFL generator. Tiny sizes throughout."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dfkd_jax import memory
from dfkd_jax.models import GENERATORS, build_generator
from dfkd_jax.models.generators import DAFLGenerator, DAFLGeneratorSN
from dfkd_jax.models.vae import VAE

NZ, NGF, C, S, B, K = 8, 4, 1, 32, 8, 10


def rkey(seed: int):
    """An 'rbg' PRNG key: XLA:CPU compiles threefry-based initialisers several times slower."""
    return jax.random.key(seed, impl="rbg")


def fill(shapes, seed: int):
    """Concrete variables for the abstract tree ``shapes`` (``jax.eval_shape`` of ``init``), drawn with numpy:
    kernels U(+-1/sqrt(fan_in)) as PyTorch, biases U(+-0.1), BN scale/var 1 and mean 0, spectral-norm
    ``u`` N(0, 1) and ``sigma`` 1. Compiling the real initialisers costs seconds on XLA:CPU."""
    rng = np.random.default_rng(seed)

    def leaf(path, a):
        name = str(path[-1].key).split("/")[-1]
        if name == "kernel":
            bound = 1.0 / math.sqrt(math.prod(a.shape[:-1]))
            x = rng.uniform(-bound, bound, a.shape)
        elif name == "bias":
            x = rng.uniform(-0.1, 0.1, a.shape)
        elif name == "u":
            x = rng.normal(size=a.shape)
        else:
            x = np.zeros(a.shape) if name == "mean" else np.ones(a.shape)   # scale, var, sigma
        return jnp.asarray(x, a.dtype)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol, atol=tol)


def _count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


# A fixed linear "teacher": logits = flatten(x) @ W (differentiable, cheap).
W_T = jnp.asarray(np.random.default_rng(42).normal(0.0, 0.05, (S * S * C, K)), jnp.float32)


def teacher(x):
    return x.reshape(x.shape[0], -1) @ W_T


@pytest.fixture(scope="module")
def vae():
    return VAE(nz=NZ, ngf=NGF, channels=C, img_size=S)


@pytest.fixture(scope="module")
def variables(vae):
    x = jax.ShapeDtypeStruct((2, S, S, C), jnp.float32)
    return fill(jax.eval_shape(lambda x: vae.init(rkey(0), x, rkey(1), train=False), x), 0)


@pytest.fixture(scope="module")
def batch():
    return jnp.asarray(np.random.default_rng(7).normal(size=(B, S, S, C)), jnp.float32)


# ---------------------------------------------------------------- VAE
def test_vae_shapes_and_parameter_count(vae, variables, batch):
    # Encoder (nz 8, ngf 4, 1 channel, 32 -> 16 -> 8):
    #   conv0 1->4 3x3 no bias 36, bn0 2*4 = 8, conv1 4->8 3x3 no bias 288, bn1 2*8 = 16,
    #   mu and logvar heads 8*8*8 = 512 -> 8: 2 * (512*8 + 8) = 8208            -> 8,556
    # Decoder (DAFL, c = 2*ngf = 8, s = 8):
    #   l1 8 -> 8*8*8: 8*512 + 512 = 4608, bn 16, conv 8->8 576+8 = 584, bn 16,
    #   conv 8->4 288+4 = 292, bn 8, conv 4->1 36+1 = 37, final BN no affine 0  -> 5,561
    assert _count(variables["params"]["encoder"]) == 8_556
    assert _count(variables["params"]["decoder"]) == 5_561
    assert _count(variables["params"]) == 14_117
    out, _ = jax.eval_shape(lambda v, x, k: vae.apply(v, x, k, train=True, mutable=["batch_stats"]),
                            variables, batch, rkey(3))
    x_rec, mu, logvar = out
    assert x_rec.shape == (B, S, S, C) and mu.shape == logvar.shape == (B, NZ)
    imgs = jax.eval_shape(lambda v, z: vae.apply(v, z, train=False, method="decode"), variables,
                          jax.ShapeDtypeStruct((5, NZ), jnp.float32))
    assert imgs.shape == (5, S, S, C)


def test_kl_closed_form():
    # sample 0: dim 0 (mu 1, logvar 0): .5 (1 + 1 - 1 - 0) = .5
    #           dim 1 (mu 0, logvar ln 2): .5 (0 + 2 - 1 - ln 2) = .153426
    # sample 1: mu 0, logvar 0: 0.  Batch mean: (.653426 + 0) / 2 = .326713
    mu = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    logvar = jnp.array([[0.0, math.log(2.0)], [0.0, 0.0]])
    close(memory.kl_standard_normal(mu, logvar), 0.5 * (0.5 + 0.5 * (1.0 - math.log(2.0))))


def test_vae_loss_by_hand(vae, variables, batch):
    @jax.jit
    def run(v, x, k):
        out = memory.vae_loss(vae, v, x, k, teacher, kl_weight=0.1)
        (x_rec, mu, logvar), upd = vae.apply(v, x, k, train=True, mutable=["batch_stats"])
        (mu_e, logvar_e), _ = vae.apply(v, x, train=True, method="encode", mutable=["batch_stats"])
        z = mu_e + jnp.exp(logvar_e / 2) * jax.random.normal(k, (B, NZ))          # reparameterisation
        x_dec = vae.apply(v, z, train=True, method="decode", mutable=["batch_stats"])[0]
        return out, (x_rec, mu, logvar, upd["batch_stats"], mu_e, x_dec, teacher(x_rec), teacher(x))

    (loss, (stats, parts)), pieces = run(variables, batch, rkey(5))
    x_rec, mu, logvar, upd, mu_e, x_dec, t_rec, t_x = pieces
    close(mu, mu_e)
    close(x_rec, x_dec, 1e-4)
    # the three parts with plain numpy from the module's outputs
    x, xr, m, lv = (np.asarray(a, np.float64) for a in (batch, x_rec, mu, logvar))
    rec = np.abs(xr - x).mean()
    tea = np.abs(np.asarray(t_rec, np.float64) - np.asarray(t_x, np.float64)).mean()
    kl = (0.5 * (m ** 2 + np.exp(lv) - 1 - lv).sum(1)).mean()
    close(parts["reconstruction"], rec, 1e-4)
    close(parts["teacher"], tea, 1e-4)
    close(parts["kl"], kl, 1e-4)
    close(loss, rec + tea + 0.1 * kl, 1e-4)
    assert rec > 0 and tea > 0 and kl > 0
    jax.tree.map(lambda a, b: close(a, b, 1e-5), stats, upd)
    # the running stats moved (train-mode BN)
    assert not np.allclose(stats["encoder"]["bn0"]["mean"], variables["batch_stats"]["encoder"]["bn0"]["mean"])


def test_vae_loss_gradients_and_training(vae, variables, batch):
    """Gradients w.r.t. the params through a wrapper; a few Adam steps on a fixed batch lower the loss."""
    tx = optax.adam(3e-3)

    @jax.jit
    def step(params, stats, opt_state):
        def f(p, x):
            return memory.vae_loss(vae, {"params": p, "batch_stats": stats}, x, rkey(5), teacher)

        (loss, (stats, _)), (g, g_x) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(params, batch)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, loss, g, g_x

    params, stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    losses = []
    for i in range(15):
        params, stats, opt_state, loss, g, g_x = step(params, stats, opt_state)
        losses.append(float(loss))
        if i == 0:
            norms = jax.tree.map(lambda a: float(jnp.abs(a).sum()), g)
            assert all(np.isfinite(v) for v in jax.tree.leaves(norms))
            assert norms["encoder"]["mu"]["kernel"] > 0 and norms["encoder"]["conv0"]["kernel"] > 0
            assert norms["decoder"]["l1_0"]["kernel"] > 0 and norms["decoder"]["conv_blocks2_3"]["kernel"] > 0
            assert float(jnp.abs(g_x).max()) == 0.0        # the batch (and T(x)) are constants
    assert losses[-1] < 0.8 * losses[0], losses


# ---------------------------------------------------------------- replay
def _objective_by_hand(vae, variables, z):
    x = vae.apply(variables, z, train=True, method="decode", mutable=["batch_stats"])[0]
    t = teacher(x)
    logp = jax.nn.log_softmax(t, axis=-1)
    p_bar = jnp.exp(logp).mean(0)
    balance = jnp.sum(p_bar * jnp.log(p_bar)) / math.log(10.0)              # sum p log10 p
    one_hot = -jnp.mean(jnp.take_along_axis(logp, jnp.argmax(t, -1)[:, None], -1))
    n = z.shape[0]
    var = jnp.sum((z - z.mean(0)) ** 2, axis=0) / (n - 1)                     # unbiased, per dim
    # PRE-DFKD: 5 * ie + 1 * oh + F.mse_loss(var, 1) + F.mse_loss(mean, 0) (means over the nz dims)
    return 5.0 * balance + one_hot + jnp.mean((var - 1.0) ** 2) + jnp.mean(z.mean(0) ** 2)


def _mesh() -> Mesh:
    return Mesh(np.array(jax.devices()[:4]), ("b",))


def test_replay_is_one_adam_step(vae, variables):
    """replay_latents / replay against the update written out; jitted with the batch outputs sharded
    over the 4 test devices (batch sharding)."""
    lr, n = 0.02, 16
    batch_sharded, replicated = NamedSharding(_mesh(), P("b")), NamedSharding(_mesh(), P())

    @functools.partial(jax.jit, out_shardings=(batch_sharded, batch_sharded, batch_sharded, batch_sharded,
                                               (replicated, replicated), batch_sharded))
    def run(v, k):
        z1 = memory.replay_latents(vae, v, k, n, NZ, teacher, z_lr=lr)
        images = memory.replay(vae, v, k, n, NZ, teacher, z_lr=lr)
        z0 = jax.random.normal(k, (n, NZ))                              # replay's draw
        g = jax.grad(lambda z: _objective_by_hand(vae, v, z))(z0)
        objectives = (memory.replay_objective(vae, v, z0, teacher), _objective_by_hand(vae, v, z0))
        decoded = vae.apply(v, z1, train=True, method="decode", mutable=["batch_stats"])[0]
        return z1, images, z0, g, objectives, decoded

    z1, images, z0, g, (obj, obj_hand), decoded = run(variables, rkey(11))
    close(obj, obj_hand, 1e-5)
    # Adam, step 1: m_hat = g, v_hat = g^2 (the bias corrections cancel the (1 - beta)s), eps 1e-8
    g = np.asarray(g, np.float64)
    m_hat, v_hat = g, g ** 2
    expected = np.asarray(z0, np.float64) - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
    close(z1, expected, 1e-6)
    close(np.abs(np.asarray(z1) - np.asarray(z0)), lr, 1e-4)      # ~ lr * sign(g) on every coordinate
    assert images.shape == (n, S, S, C) and len(images.sharding.device_set) == 4
    close(images, decoded, 1e-4)


def test_replay_output_is_detached(vae, variables):
    """No gradient reaches the VAE through replayed samples (they are training data for the student)."""
    g = jax.jit(jax.grad(lambda p: memory.replay(vae, {**variables, "params": p}, rkey(0), 8, NZ,
                                                        teacher).sum()))(variables["params"])
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g))


def test_vae_loss_with_a_sharded_batch(vae, variables, batch):
    """vae_loss on a batch sharded over the 4 test devices equals the one-device value (global BN)."""
    f = jax.jit(lambda v, x: memory.vae_loss(vae, v, x, rkey(5), teacher))
    ref = f(variables, batch)
    out = f(variables, jax.device_put(batch, NamedSharding(_mesh(), P("b"))))
    jax.tree.map(lambda a, b: close(a, b, 1e-5), out, ref)


# ---------------------------------------------------------------- DAFLGeneratorSN
SN_CONVS = ["conv_blocks1_0", "conv_blocks2_0", "conv_blocks2_3"]


def test_dafl_sn_is_registered_with_the_dafl_parameters():
    assert GENERATORS["dafl_sn"] is DAFLGeneratorSN
    assert DAFLGeneratorSN.output_space == "standardized"
    kw = dict(nz=NZ, ngf=NGF, channels=3, img_size=S)
    z = jax.ShapeDtypeStruct((2, NZ), jnp.float32)
    v_sn = jax.eval_shape(lambda z: build_generator("dafl_sn", **kw).init(rkey(0), z, train=False), z)
    v = jax.eval_shape(lambda z: DAFLGenerator(**kw).init(rkey(0), z, train=False), z)
    assert jax.tree.map(lambda a: a.shape, v_sn["params"]) == jax.tree.map(lambda a: a.shape, v["params"])
    for name in SN_CONVS:
        assert set(v_sn["batch_stats"][f"{name}_sn"]) == {f"{name}/kernel/u", f"{name}/kernel/sigma"}


def _torch_matrix(kernel):
    """(kh, kw, in, out) -> (out, in*kh*kw), the matrix torch's spectral_norm normalises."""
    k = np.asarray(kernel, np.float64)
    return k.transpose(3, 2, 0, 1).reshape(k.shape[3], -1)


def test_dafl_sn_outputs_and_spectral_norm():
    kw = dict(nz=NZ, ngf=NGF, channels=3, img_size=S)
    gen = DAFLGeneratorSN(**kw)
    zs = jnp.asarray(np.random.default_rng(1).normal(size=(21, B, NZ)), jnp.float32)
    z = zs[20]
    v = fill(jax.eval_shape(lambda z: gen.init(rkey(0), z, train=False), z), 0)
    step = jax.jit(lambda v, z: gen.apply(v, z, train=True, mutable=["batch_stats"]))
    for i in range(20):
        x, upd = step(v, zs[i])
        v = {"params": v["params"], "batch_stats": upd["batch_stats"]}
    x, upd = step(v, z)
    assert x.shape == (B, S, S, 3) and x.dtype == jnp.float32
    xs = np.asarray(x, np.float64).reshape(-1, 3)
    close(xs.mean(0), np.zeros(3), 1e-4)                          # standardised per channel
    close(xs.std(0), np.ones(3), 1e-3)
    stats = upd["batch_stats"]
    normalised = dict(v["params"])
    for name in SN_CONVS:
        kernel = v["params"][name]["kernel"]
        sigma = float(stats[f"{name}_sn"][f"{name}/kernel/sigma"])
        top = np.linalg.svd(_torch_matrix(kernel), compute_uv=False)[0]
        assert abs(top / sigma - 1.0) < 0.05, (name, top, sigma)   # ||W / sigma||_2 ~ 1
        normalised[name] = {**v["params"][name], "kernel": kernel / sigma}
    # the forward pass really uses W / sigma: the plain DAFL generator with those kernels agrees
    plain = jax.jit(lambda p, z: DAFLGenerator(**kw).apply({"params": p}, z, train=True,
                                                           mutable=["batch_stats"])[0])(normalised, z)
    close(plain, x, 1e-4)
