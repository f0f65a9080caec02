"""bn_capture: BN input statistics captured by interception equal hand-computed ones."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dfkd_jax import terms
from dfkd_jax.bn_capture import apply_with_bn_stats
from dfkd_jax.models.layers import batch_norm


class TwoBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = batch_norm(train, name="bn1")(x)                      # input: x (B, H, W, 2)
        h = nn.relu(h) * 2.0 + 1.0
        h = batch_norm(train, name="bn2")(h.reshape(h.shape[0], -1))  # input: (B, H*W*2)
        return h.sum(-1), {"feature": h}


def _setup():
    model = TwoBN()
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 3, 2)) * 1.5 + 0.3
    v = model.init(jax.random.PRNGKey(1), x)
    # non-trivial running statistics
    bs = {"bn1": {"mean": jnp.array([0.5, -1.0]), "var": jnp.array([2.0, 0.25])},
          "bn2": {"mean": jnp.linspace(-1, 1, 12), "var": jnp.linspace(0.5, 3, 12)}}
    params = jax.tree_util.tree_map(lambda p: p + 0.1, v["params"])
    return model, {"params": params, "batch_stats": bs}, np.asarray(x, np.float64)


def _hand_stats(v, x):
    """Independent numpy forward of TwoBN in eval mode, recording each BN's input moments."""
    out = []
    bs, p = v["batch_stats"], v["params"]
    m1 = x.reshape(-1, 2).mean(0)
    v1 = ((x.reshape(-1, 2) - m1) ** 2).mean(0)
    out.append((m1, v1, np.asarray(bs["bn1"]["mean"]), np.asarray(bs["bn1"]["var"])))
    h = (x - np.asarray(bs["bn1"]["mean"])) / np.sqrt(np.asarray(bs["bn1"]["var"]) + 1e-5)
    h = h * np.asarray(p["bn1"]["scale"]) + np.asarray(p["bn1"]["bias"])
    h = (np.maximum(h, 0) * 2.0 + 1.0).reshape(x.shape[0], -1)
    m2 = h.mean(0)
    v2 = ((h - m2) ** 2).mean(0)
    out.append((m2, v2, np.asarray(bs["bn2"]["mean"]), np.asarray(bs["bn2"]["var"])))
    return out


def _check(stats, want):
    assert len(stats) == len(want) == 2
    for got, ref in zip(stats, want):
        for g, r in zip(got, ref):
            np.testing.assert_allclose(np.asarray(g), r, rtol=1e-5, atol=1e-5)


def test_captured_stats_equal_hand_computed():
    model, v, x = _setup()
    # jitted: one compile is far cheaper on CPU than eager op-by-op (eager use is covered below)
    (logits, aux), stats = jax.jit(lambda v, x: apply_with_bn_stats(model, v, x))(v, jnp.asarray(x, jnp.float32))
    assert logits.shape == (4,)
    _check(stats, _hand_stats(v, x))
    want = sum(np.linalg.norm(m - rm) + np.linalg.norm(s - rs) for m, s, rm, rs in _hand_stats(v, x))
    np.testing.assert_allclose(float(jax.jit(terms.bn_stats)(stats)), want, rtol=1e-5)


def test_train_mode_reads_running_stats_before_update():
    """Eager call, train mode with mutable batch_stats."""
    model, v, x = _setup()
    (_, updates), stats = apply_with_bn_stats(model, v, jnp.asarray(x, jnp.float32), train=True,
                                              mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(stats[0][2]), np.asarray(v["batch_stats"]["bn1"]["mean"]))
    m1 = x.reshape(-1, 2).mean(0)
    np.testing.assert_allclose(np.asarray(stats[0][0]), m1, rtol=1e-5, atol=1e-6)
    # the update did happen: 0.9 * running + 0.1 * batch
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["bn1"]["mean"]),
                               0.9 * np.asarray(v["batch_stats"]["bn1"]["mean"]) + 0.1 * m1, rtol=1e-5)


def test_jit_and_gradient():
    model, v, x = _setup()

    @jax.jit
    def loss(v, x):
        _, stats = apply_with_bn_stats(model, v, x)
        return terms.bn_stats(stats), stats

    val, stats = loss(v, jnp.asarray(x, jnp.float32))
    _check(stats, _hand_stats(v, x))
    g = jax.jit(jax.grad(lambda x: loss(v, x)[0]))(jnp.asarray(x, jnp.float32))
    assert g.shape == x.shape
    assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).sum()) > 0
    # finite-difference check of one coordinate
    e = np.zeros_like(x); e[0, 0, 0, 0] = 1e-2
    fd = (float(loss(v, jnp.asarray(x + e, jnp.float32))[0])
          - float(loss(v, jnp.asarray(x - e, jnp.float32))[0])) / 2e-2
    np.testing.assert_allclose(float(g[0, 0, 0, 0]), fd, rtol=2e-2, atol=2e-3)


def test_sharded_batch_on_mesh():
    """The batch of 4 sharded over the 4 test devices: the statistics are those of the global batch."""
    model, v, x = _setup()
    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
    xs = jax.device_put(jnp.asarray(x, jnp.float32), NamedSharding(mesh, P("data")))
    vr = jax.device_put(v, NamedSharding(mesh, P()))

    @jax.jit
    def f(v, x):
        _, stats = apply_with_bn_stats(model, v, x)
        return stats

    assert len(xs.sharding.device_set) == 4 and xs.addressable_shards[0].data.shape[0] == 1
    _check(f(vr, xs), _hand_stats(v, x))


def test_shard_map_axis_name():
    """Inside shard_map over 4 devices (one example each) the statistics are reduced over the axis."""
    model, v, x = _setup()
    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))

    def per_shard(x):
        _, stats = apply_with_bn_stats(model, v, x, axis_name="data")
        return stats

    f = jax.jit(jax.shard_map(per_shard, mesh=mesh, in_specs=P("data"), out_specs=P(), check_vma=False))
    _check(f(jnp.asarray(x, jnp.float32)), _hand_stats(v, x))
