"""The inversion family's round against PyTorch eager: ADI's pixel-inversion steps (cpu-speed case
``inversion``).

Both sides do what ``dfkd_jax.synthesis.pixels`` does for one round of ``steps`` synthesis steps
(no student steps), on a WRN-16-2 teacher and a WRN-16-1 student (random weights, BatchNorm with
random running statistics), batch 64, 32x32x3: N(0, 1) pixels, Adam (betas 0.5, 0.99); per step
DeepInversion's jitter + flip, the teacher with BN-input hooks (``bn`` x 10), CE against sorted
random targets, the student in eval mode for ``-JS_3`` and the L1 total variation (1e-3); the
lowest-loss iterate kept (PyTorch: ``loss.item()`` per step, as the reference's
``best_cost > loss.item()``), the pixels clipped to the valid range after each step. The PyTorch side
is the reference's ``DeepInvSyntheiszer.synthesize`` loop (zju-vipa/CMI ``deepinversion.py`` l. 84-105)
written against ``torch_round``'s modules. dfkd_jax runs its round as configured for the long
inversion loops (``synthesis.loop='python'``: one jitted step per iteration).
"""

from __future__ import annotations

import time

import jax
import numpy as np

from dfkd_jax.bench import harness, torch_round

STEPS = 20
BATCH = 64


def _config(steps: int, batch: int):
    from dfkd_jax.config import base_config
    from dfkd_jax.methods import adi
    c = adi.configure(base_config())
    c.data.dataset = "fashion_mnist32x3"
    c.teacher.arch, c.student.arch = "wrn16_2", "wrn16_1"
    c.generator.steps = steps
    c.student.steps = 0
    c.train.batch_size = c.synthesis.batch_size = batch
    c.student.pool_size = 4 * batch
    c.train.progress = False
    return c


def jax_round(steps: int = STEPS, batch: int = BATCH, mode: str = "auto"):
    """``(run, compile_s)``: ``run()`` does one ADI round (``steps`` synthesis steps) and blocks on it."""
    from dfkd_jax.engine.distiller import Distiller
    cfg = _config(steps, batch)
    cfg.conv_impl = mode  # the Distiller traces its round under config.conv_impl
    teacher = harness.random_teacher("wrn16_2", "fashion_mnist32x3")
    d = Distiller.from_config(cfg, teacher)
    holder = [d.init(0)]

    def run():
        holder[0], m = d.round(holder[0])
        return jax.block_until_ready(m)

    t0 = time.perf_counter()
    run()  # compiles begin, step, end, finish
    return run, time.perf_counter() - t0


def torch_round_fn(torch, steps: int = STEPS, batch: int = BATCH, seed: int = 0):
    """``run()``: the same round in PyTorch eager (returns the seconds it took)."""
    import torch.nn.functional as F
    torch.manual_seed(seed)
    teacher = torch_round.build_model("wrn16_2", 10, 3).eval()
    student = torch_round.build_model("wrn16_1", 10, 3).eval()
    for m in teacher.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    for p in list(teacher.parameters()) + list(student.parameters()):
        p.requires_grad_(False)
    feats = []

    def hook(module, inputs, output):
        x = inputs[0]
        mean = x.mean([0, 2, 3])
        var = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1).var(1, unbiased=False)
        feats.append(torch.norm(module.running_var - var, 2) + torch.norm(module.running_mean - mean, 2))

    for m in teacher.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.register_forward_hook(hook)
    mean = torch.tensor([0.2860] * 3).view(1, 3, 1, 1)
    std = torch.tensor([0.3530] * 3).view(1, 3, 1, 1)
    lo, hi = -mean / std, (1 - mean) / std

    def jsdiv(s, t, T=3.0):
        p, q = F.softmax(s / T, 1), F.softmax(t / T, 1)
        m = 0.5 * (p + q)
        p, q, m = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99), m.clamp(0.01, 0.99)
        return 0.5 * F.kl_div(p.log(), m, reduction="batchmean") + 0.5 * F.kl_div(q.log(), m, reduction="batchmean")

    def tv(x):
        d1 = x[:, :, :, :-1] - x[:, :, :, 1:]
        d2 = x[:, :, :-1, :] - x[:, :, 1:, :]
        d3 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:]
        d4 = x[:, :, :-1, :-1] - x[:, :, 1:, 1:]
        return d1.abs().mean() + d2.abs().mean() + d3.abs().mean() + d4.abs().mean()

    rng = np.random.default_rng(seed)

    def run():
        t0 = time.perf_counter()
        x = torch.randn(batch, 3, 32, 32).requires_grad_()
        y = torch.randint(0, 10, (batch,)).sort()[0]
        opt = torch.optim.Adam([x], 0.1, betas=(0.5, 0.99))
        best, best_x = 1e6, x.data
        for _ in range(steps):
            dy, dx = (int(v) for v in rng.integers(-4, 5, 2))
            xa = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            if rng.random() > 0.5:
                xa = torch.flip(xa, dims=(3,))
            feats.clear()
            t = teacher(xa)
            loss = 10 * sum(feats) + F.cross_entropy(t, y) - jsdiv(student(xa), t) + 1e-3 * tv(x)
            if best > loss.item():
                best, best_x = loss.item(), x.data.clone()
            opt.zero_grad()
            loss.backward()
            opt.step()
            x.data = torch.max(torch.min(x.data, hi), lo)
        return time.perf_counter() - t0

    return run


def inversion_case(torch, reps: int, warmup: int, log, steps: int = STEPS, batch: int = BATCH):
    """The cpu-speed case: XLA's convolutions, dfkd_jax's default and PyTorch eager, alternating."""
    from dfkd_jax.bench.cpu_speed import Variant, _result, _timed, alternate
    label = f"ADI round: {steps} pixel-inversion steps, WRN-16-2 teacher, WRN-16-1 student, batch {batch}, 32x32x3"
    log(label)
    variants = []
    for name, mode in (("xla", "xla"), ("dfkd_jax", "auto")):
        run, compile_s = jax_round(steps, batch, mode)
        variants.append(Variant(name, _timed(run), compile_s, None))
    variants.append(Variant("torch", torch_round_fn(torch, steps, batch)))
    return _result(label, "round", None, variants, alternate(variants, reps, warmup, log))
