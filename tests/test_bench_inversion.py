"""The inversion rounds of the cpu-speed benchmark (dfkd_jax.bench.inversion): ADI, CMI and Fast.

The PyTorch rounds must do the work dfkd_jax's synthesisers do: with the same weights (converted with
``dfkd_jax.convert``), latents, targets and views, the first synthesis step's loss is the same in both
frameworks (CMI: inversion loss + contrastive term through the same head; Fast: the inner loss with
the adversarial term on). Tiny shapes: WRN-16-1 as teacher and student, batch 4, generator ngf 4.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")

from dfkd_jax import augment  # noqa: E402
from dfkd_jax.bench import harness, inversion  # noqa: E402
from dfkd_jax.convert import convert_state_dict  # noqa: E402
from dfkd_jax.engine.distiller import Distiller  # noqa: E402
from dfkd_jax.core.state import ModelState  # noqa: E402
from dfkd_jax.models import build_model  # noqa: E402
from dfkd_jax.synthesis.base import Context  # noqa: E402
from dfkd_jax.teacher import Teacher  # noqa: E402

B, ARCH = 4, "wrn16_1"
TINY = dict(pair=(ARCH, ARCH), generator__ngf=4, generator__nz=8, synthesis__n_neg=8, synthesis__bank_size=16,
            synthesis__head_dim=8)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny batches gain nothing from more threads; on a loaded machine OpenMP's waits cost seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(method, steps=2):
    return inversion.config(method, steps, B, **TINY)


@pytest.mark.parametrize("method", inversion.METHODS)
def test_torch_rounds_run(method):
    r, run = inversion.torch_round_fn(torch, method, 2, B, **TINY)
    assert run() > 0
    losses = r.round()  # a second round: CMI draws from its bank, Fast's BN momentum is on
    assert len(losses) == 2 and np.all(np.isfinite(losses))
    if method == "fast":
        assert all(m is not None for m in r.hooks.mmt)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in r.gen.parameters())
    if method == "cmi":
        assert r.bank.n_updates > r.bank.max_size + B  # filled, then two rounds pushed


def test_torch_cmi_generator():
    from dfkd_jax.bench import torch_round
    g = torch_round.build_generator(8, 4, 3, 32, arch="cmi")
    with torch.no_grad():
        x = g(torch.randn(2, 8))
    assert x.shape == (2, 3, 32, 32) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert sorted(g.state_dict()) == sorted(g.clone().state_dict())
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), g.clone().state_dict().values()))
    with pytest.raises(ValueError, match="dafl, cmi"):
        torch_round.build_generator(arch="large")


def test_torch_augmentations():
    x = torch.rand(6, 3, 32, 32)
    torch.manual_seed(0)
    y = inversion.crop_flip(torch, x)
    assert y.shape == x.shape
    for img, out in zip(x, y):  # each output is a shifted window of its own image, possibly mirrored
        found = False
        for o in (out, out.flip(2)):
            padded = torch.nn.functional.pad(img, (4,) * 4)
            for dy in range(9):
                for dx in range(9):
                    found |= bool(torch.equal(padded[:, dy:dy + 32, dx:dx + 32], o))
        assert found
    z = inversion.resized_crop_flip(torch, x)
    assert z.shape == x.shape and float(z.min()) >= 0 and float(z.max()) <= 1
    full = torch.nn.functional.grid_sample(  # the identity box samples the image itself
        x, torch.nn.functional.affine_grid(torch.eye(2, 3)[None].repeat(6, 1, 1), list(x.shape), align_corners=False),
        align_corners=False)
    torch.testing.assert_close(full, x, rtol=1e-5, atol=1e-6)


def _jax_parts(cfg, r):
    """The distiller of ``cfg`` on ``r``'s teacher (converted) and a step context with ``r``'s student."""
    t_vars = convert_state_dict(r.teacher.state_dict(), ARCH)
    s_vars = convert_state_dict(r.student.state_dict(), ARCH)
    meta = harness.random_teacher(ARCH, inversion.DATASET).meta
    d = Distiller.from_config(cfg, Teacher(build_model(ARCH, 10), t_vars, meta))
    student = ModelState(params=s_vars["params"], batch_stats=s_vars["batch_stats"], opt_state=None)
    ctx = Context(student=student, projector=None, t_vars=d.teacher_variables, round=jnp.zeros((), jnp.int32))
    return d, ctx


def _inputs(cfg, seed=1):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((B, int(cfg.generator.nz))).astype(np.float32)
    y = np.sort(rng.integers(0, 10, B)).astype(np.int64)
    return z, y


def _first_step_metrics(d, ctx, state_fn, carry_fn, *args):
    """The metrics of the first synthesis step of ``d``'s synthesiser, all in one compiled call:
    ``state_fn(state, *args)`` and ``carry_fn(carry, *args)`` put the PyTorch side's values in."""

    def run(ctx, *args):
        synth = d.synth
        state = state_fn(synth.init(jax.random.PRNGKey(0), jax.random.PRNGKey(1)), *args)
        state, carry = synth.begin(state, jax.random.PRNGKey(2), jnp.zeros((), jnp.int32))
        return synth.step(state, carry_fn(carry, *args), None, ctx, jax.random.PRNGKey(3), jnp.float32(0))[3]

    return jax.device_get(jax.jit(run)(ctx, *args))


def test_cmi_torch_step_computes_the_jax_step(monkeypatch):
    # deterministic views on both sides: global = the images, local = their mirror images
    monkeypatch.setattr(augment, "crop_flip", lambda key, x: x)
    monkeypatch.setattr(augment, "resized_crop_flip", lambda key, x: x[:, :, ::-1, :])
    cfg = _config("cmi", steps=1)
    r = inversion.TorchCMI(torch, cfg)
    r.views = lambda x: (r.normalize(x), r.normalize(x.flip(3)))
    r.reset_generator()
    g = convert_state_dict(r.gen.state_dict(), "cmi")
    head = {f"fc{i + 1}": {"kernel": r.head[j].weight.detach().numpy().T, "bias": r.head[j].bias.detach().numpy()}
            for i, j in enumerate((0, 2))}
    d, ctx = _jax_parts(cfg, r)
    tx, tx_head = d.synth.tx, d.synth.tx_head

    def state_fn(state, head, g, z, y):  # the fresh state's bank is empty, as r's
        return state.replace(head=ModelState(params=head, batch_stats={}, opt_state=tx_head.init(head)))

    def carry_fn(carry, head, g, z, y):
        params = {"g": g["params"], "z": z}
        return {**carry, "params": params, "stats": g["batch_stats"], "opt": tx.init(params), "targets": y}

    z, y = _inputs(cfg)
    m = _first_step_metrics(d, ctx, state_fn, carry_fn, head, g, z, y.astype(np.int32))
    losses = r.round(torch.from_numpy(z), torch.from_numpy(y), reset=False)
    assert abs(float(m["synthesis/contrast"])) > 1e-3
    np.testing.assert_allclose(float(m["synthesis/loss"]), losses[0], rtol=1e-4)


def test_fast_torch_step_computes_the_jax_step(monkeypatch):
    monkeypatch.setattr(augment, "crop_flip", lambda key, x: x)
    cfg = _config("fast", steps=1)
    r = inversion.TorchFast(torch, cfg)
    r.view = r.normalize
    g = convert_state_dict(r.gen.state_dict(), "cmi")
    d, ctx = _jax_parts(cfg, r)
    synth = d.synth

    def state_fn(state, g, z, y):  # the meta generator is r's
        return state.replace(generator=ModelState(params=g["params"], batch_stats=g["batch_stats"],
                                                  opt_state=synth.tx_meta.init(g["params"])))

    def carry_fn(carry, g, z, y):
        params = {"g": carry["params"]["g"], "z": z}
        return {**carry, "params": params, "opt": {k: tx.init(params[k]) for k, tx in synth.tx_inner.items()},
                "targets": y}

    z, y = _inputs(cfg)
    m = _first_step_metrics(d, ctx, state_fn, carry_fn, g, z, y.astype(np.int32))
    losses = r.round(torch.from_numpy(z), torch.from_numpy(y))
    assert float(m["synthesis/bn"]) > 0 and float(m["synthesis/adv_kd_masked"]) <= 0
    np.testing.assert_allclose(float(m["synthesis/loss"]), losses[0], rtol=1e-4)


@pytest.mark.slow  # compiles the three rounds (about 1.5 minutes on 2 cores)
def test_inversion_cases_run():
    from dfkd_jax.bench import cpu_speed
    for method in inversion.METHODS:
        # the case itself at the benchmark's shapes would take minutes: its JAX side at tiny ones
        run, compile_s = inversion.jax_round(method, 2, B, "auto", **TINY)
        m = run()
        assert compile_s > 0 and np.isfinite(float(m["synthesis/loss"]))
    assert set(cpu_speed.INVERSION_CASES.values()) == set(inversion.METHODS)
    assert "inversion" in cpu_speed.CASES and all(c in cpu_speed.CASES for c in cpu_speed.INVERSION_CASES)
    assert inversion.label("cmi").startswith("CMI round: 20 generator-inversion steps (generator ngf 16")
    assert inversion.label("fast").startswith("Fast round: 5 inner steps + 1 meta step")
    assert inversion.label("adi") == ("ADI round: 20 pixel-inversion steps, WRN-16-2 teacher, WRN-16-1 student, "
                                      "batch 64, 32x32x3")
