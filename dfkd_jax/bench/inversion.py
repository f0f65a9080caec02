"""The inversion family's rounds against PyTorch eager: ADI, CMI and Fast (cpu-speed cases
``inversion_adi``, ``inversion_cmi``, ``inversion_fast``; ``inversion`` runs the three).

Each case times one round of ``steps`` synthesis steps (no student steps) of a method, as dfkd_jax's
synthesiser does it (``dfkd_jax.synthesis``) and as PyTorch eager code written the way the reference
does it, on a WRN-16-2 teacher and a WRN-16-1 student (random weights, BatchNorm with random running
statistics), batch 64, 32x32x3 (Fashion-MNIST-32x3). What the sides share (``_TorchInversion``):
the frozen teacher with a forward hook on every BatchNorm (DeepInversion's statistics term per layer,
Fast's BN momentum, CMI's per-sample channel means), the student in eval mode, the run's
normalisation, and the lowest-loss iterate kept with ``loss.item()`` per step (the reference's
``best_cost > loss.item()``).

- ADI (``dfkd_jax.synthesis.pixels``; the reference's ``DeepInvSyntheiszer.synthesize``, zju-vipa/CMI
  ``deepinversion.py`` l. 84-105): N(0, 1) pixels, Adam (betas 0.5, 0.99); per step DeepInversion's
  jitter + flip, ``bn`` x 10, CE against sorted random targets, ``-JS_3`` against the student and the
  L1 total variation (1e-3); the pixels clipped to the valid range after each step.
- CMI (``dfkd_jax.synthesis.generator_inversion``; zju-vipa/CMI ``datafree/synthesis/contrastive.py``,
  ``CMISynthesizer.synthesize``), configs/fashion_mnist32x3/cmi.py's settings: the CMI generator (ngf 16,
  nz 256) re-drawn from N(0, 0.02) every round, one Adam over it and the latents (lr 1e-3, betas 0.5,
  0.999); per step a global view (crop + flip) and a local view (resized crop + flip) of G(z),
  ``bn + CE + 0.5 * masked KL`` on the global view, both views' teacher BN-input means through the
  MLP head with 1,024 negatives from the memory bank (4,096 rows), ``0.8 * L_cr`` with the head's own
  Adam; the best iterate's embeddings pushed to the bank. The bank starts full (as after its first
  64 rounds at batch 64), so that every round draws all 1,024 negatives on both sides.
- Fast (``dfkd_jax.synthesis.meta``; zju-vipa/Fast-Datafree ``datafree/synthesis/fast_meta.py``,
  ``FastMetaSynthesizer.synthesize`` with ``is_maml=1``), configs/fashion_mnist32x3/fast.py's settings:
  a clone of the kept meta generator (ngf 16) and fresh latents take the inner Adam steps (lr 3e-3,
  latents 0.01) on ``10 * bn + 0.4 * CE + 1.1 * masked KL`` of a crop + flip view, the statistics term
  with BN momentum 0.9 (``(1 - m) * batch + m * mmt``, ``mmt`` an EMA over rounds); the inner gradients
  summed into the meta generator's gradient, one meta Adam step (lr 3e-3 * steps) per round. The
  adversarial term is on from the first round (the config's warm-up rounds would time a smaller round).

The PyTorch augmentations are written with torch ops (the reference uses kornia): a per-sample crop
of the zero-padded batch by index, the resized crop as a per-sample affine ``grid_sample`` (bilinear,
border), per-sample flips. The PyTorch rounds keep the best iterate in memory (the references write
it to an image folder); dfkd_jax pushes it to its on-device pool. dfkd_jax runs the rounds as the
method configs do (``synthesis.loop``: ``'python'`` for ADI and CMI, one jitted step per iteration;
``'unroll'`` for Fast).
"""

from __future__ import annotations

import functools
import os
import random
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dfkd_jax.bench import harness, torch_round

METHODS = ("adi", "cmi", "fast")
STEPS = {"adi": 20, "cmi": 20, "fast": 5}
BATCH = 64
PAIR = ("wrn16_2", "wrn16_1")
DATASET = "fashion_mnist32x3"
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")
_SHAPE = "WRN-16-2 teacher, WRN-16-1 student, batch {batch}, 32x32x3"
LABELS = {
    "adi": "ADI round: {steps} pixel-inversion steps, " + _SHAPE,
    "cmi": "CMI round: {steps} generator-inversion steps (generator ngf {ngf} re-drawn, contrastive head, "
           "{n_neg} negatives from a full bank of {bank}), " + _SHAPE,
    "fast": "Fast round: {steps} inner steps + 1 meta step (generator ngf {ngf}, BN momentum {mmt}), " + _SHAPE,
}


def config(method: str, steps: int | None = None, batch: int = BATCH, pair: tuple[str, str] = PAIR, **changes):
    """The dfkd_jax config of ``method``'s round in this benchmark: synthesis only (no student steps).

    ADI: its published config on the pair; CMI and Fast: configs/fashion_mnist32x3's. ``changes``: dotted
    config keys with ``__`` for the dots (``generator__ngf=4``), for tests on tiny shapes."""
    if method not in METHODS:
        raise ValueError(f"No inversion benchmark for {method!r}. Valid: {', '.join(METHODS)}.")
    if method == "adi":
        from dfkd_jax.config import base_config
        from dfkd_jax.methods import adi
        c = adi.configure(base_config())
        c.data.dataset = DATASET
    else:
        from dfkd_jax.bench.cpu_speed import load_config
        c = load_config(os.path.join(CONFIG_DIR, DATASET, f"{method}.py"))
        c.synthesis.warmup = 0  # Fast: the adversarial term from the first round
    c.teacher.arch, c.student.arch = pair
    c.generator.steps = int(steps or STEPS[method])
    c.student.steps = 0
    c.train.batch_size = c.synthesis.batch_size = batch
    c.student.pool_size = 4 * batch
    c.train.progress = False
    for key, value in changes.items():
        *path, leaf = key.split("__")
        setattr(functools.reduce(getattr, path, c), leaf, value)
    return c


def label(method: str, steps: int | None = None, batch: int = BATCH) -> str:
    c = config(method, steps, batch)
    return LABELS[method].format(steps=c.generator.steps, batch=batch, ngf=c.generator.ngf, n_neg=c.synthesis.n_neg,
                                 bank=c.synthesis.bank_size, mmt=c.synthesis.bn_momentum)


def full_bank(state):
    """``state`` with CMI's memory bank counted full (its rows taken as written), as after its first
    ``bank_size / batch`` rounds: every draw then takes all ``n_neg`` negatives."""
    bank = state.synth.bank
    count = jax.device_put(jnp.asarray(bank.rows.shape[0], bank.count.dtype), bank.count.sharding)
    return state.replace(synth=state.synth.replace(bank=bank.replace(count=count)))


def jax_round(method: str = "adi", steps: int | None = None, batch: int = BATCH, mode: str = "auto", **changes):
    """``(run, compile_s)``: ``run()`` does one round of ``method`` and blocks on it."""
    from dfkd_jax.engine.distiller import Distiller
    cfg = config(method, steps, batch, **changes)
    cfg.conv_impl = mode  # the Distiller traces its round under config.conv_impl
    teacher = harness.random_teacher(cfg.teacher.arch, cfg.data.dataset)
    d = Distiller.from_config(cfg, teacher)
    state = d.init(0)
    holder = [full_bank(state) if method == "cmi" else state]

    def run():
        holder[0], m = d.round(holder[0])
        return jax.block_until_ready(m)

    t0 = time.perf_counter()
    run()  # compiles the round's pieces
    return run, time.perf_counter() - t0


# -- PyTorch eager ------------------------------------------------------------------------------------

class BNHooks:
    """Forward hooks on every ``BatchNorm2d`` of a model, read after each forward.

    ``r_feature``: per layer DeepInversion's ``||var - rv||_2 + ||mean - rm||_2`` of its input (the
    reference's ``DeepInversionHook``); with ``momentum`` m > 0 (Fast's ``bn_mmt``) the input's
    ``(mean, var)`` are first replaced by ``(1 - m) * batch + m * mmt`` once ``update_mmt`` has set
    ``mmt`` (an EMA over calls of the last forward's statistics). ``means`` (``instance_means``):
    per layer the per-sample spatial means of its input (CMI's ``InstanceMeanHook``)."""

    def __init__(self, torch, model, momentum: float = 0.0, instance_means: bool = False):
        self.torch, self.momentum, self.instance_means = torch, float(momentum), instance_means
        self.layers = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        self.mmt: list[Any] = [None] * len(self.layers)
        self.last: list[Any] = [None] * len(self.layers)
        self.r_feature: list[Any] = []
        self.means: list[Any] = []
        for i, layer in enumerate(self.layers):
            layer.register_forward_hook(functools.partial(self._hook, i))

    def _hook(self, i, module, inputs, output):
        x = inputs[0]
        mean = x.mean([0, 2, 3])
        var = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1).var(1, unbiased=False)
        self.last[i] = (mean.detach(), var.detach())
        if self.momentum and self.mmt[i] is not None:
            m, (mm, mv) = self.momentum, self.mmt[i]
            mean, var = (1 - m) * mean + m * mm, (1 - m) * var + m * mv
        self.r_feature.append(self.torch.norm(module.running_var - var, 2) +
                              self.torch.norm(module.running_mean - mean, 2))
        if self.instance_means:
            self.means.append(x.mean([2, 3]))

    def clear(self):
        self.r_feature.clear()
        self.means.clear()

    def update_mmt(self):
        m = self.momentum
        self.mmt = [last if old is None else (m * old[0] + (1 - m) * last[0], m * old[1] + (1 - m) * last[1])
                    for old, last in zip(self.mmt, self.last)]


def crop_flip(torch, x, padding: int = 4):
    """Per sample: ``RandomCrop(size, padding)`` of the zero-padded image, then a horizontal flip with p 1/2."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    off = torch.randint(0, 2 * padding + 1, (b, 2))
    rows = (off[:, 0:1] + torch.arange(h))[:, None, :, None]
    cols = (off[:, 1:2] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    return flip(torch, out)


def flip(torch, x):
    coin = torch.rand(x.shape[0]) < 0.5
    return torch.where(coin[:, None, None, None], x.flip(3), x)


def resized_crop_flip(torch, x, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)):
    """Per sample: ``RandomResizedCrop(size, scale)`` (area fraction uniform in ``scale``, aspect ratio
    log-uniform in ``ratio``), bilinear resampling of the box to the full size, then a flip."""
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(*scale) * (h * w)
    r = torch.exp(torch.empty(b).uniform_(np.log(ratio[0]), np.log(ratio[1])))
    cw = torch.sqrt(area * r).round().clamp(1, w)
    ch = torch.sqrt(area / r).round().clamp(1, h)
    top = torch.floor(torch.rand(b) * (h - ch + 1))
    left = torch.floor(torch.rand(b) * (w - cw + 1))
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = cw / w, (2 * left + cw) / w - 1
    theta[:, 1, 1], theta[:, 1, 2] = ch / h, (2 * top + ch) / h - 1
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return flip(torch, out)


class _TorchInversion:
    """What the PyTorch rounds share: the config's teacher (eval mode, random running statistics, a
    ``BNHooks``) and student (eval mode), both frozen, the run's normalisation, the terms' weights.
    ``round()`` does one round and returns the per-step losses (floats); ``timed()`` its seconds."""

    momentum = 0.0
    instance_means = False

    def __init__(self, torch, cfg, seed: int = 0):
        from dfkd_jax.data.specs import get_spec
        self.torch, self.cfg = torch, cfg
        spec = get_spec(cfg.data.dataset)
        self.num_classes, (self.size, _, self.channels) = spec.num_classes, spec.image_shape
        torch.manual_seed(seed)
        self.teacher = torch_round.build_model(cfg.teacher.arch, self.num_classes, self.channels).eval()
        self.student = torch_round.build_model(cfg.student.arch, self.num_classes, self.channels).eval()
        for m in self.teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        for p in list(self.teacher.parameters()) + list(self.student.parameters()):
            p.requires_grad_(False)
        self.hooks = BNHooks(torch, self.teacher, self.momentum, self.instance_means)
        self.mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
        self.weights = dict(cfg.generator.terms)
        self.steps, self.batch = int(cfg.generator.steps), int(cfg.synthesis.batch_size)
        self.rng = np.random.default_rng(seed)

    def normalize(self, x):
        return (x - self.mean) / self.std

    def teacher_forward(self, x):
        self.hooks.clear()
        return self.teacher(x)

    def adversarial(self, s, t):
        """CMI's ``-(kldiv(s, t, reduction='none').sum(1) * mask).mean()``, mask: argmax s == argmax t."""
        F, tau = self.torch.nn.functional, float(self.cfg.hparams.adv_tau)
        mask = (s.max(1)[1] == t.max(1)[1]).float()
        kl = F.kl_div(F.log_softmax(s / tau, 1), F.softmax(t / tau, 1), reduction="none").sum(1) * tau * tau
        return -(kl * mask).mean()

    def inversion_loss(self, t, s, targets):
        """``bn * sum(r_feature) + oh * CE(t, y) + adv * adversarial`` (CMI's ``loss_inv``, Fast's loss)."""
        w = self.weights
        loss = w["bn"] * sum(self.hooks.r_feature) + w["one_hot"] * self.torch.nn.functional.cross_entropy(t, targets)
        return loss + w["adv_kd_masked"] * self.adversarial(s, t) if s is not None else loss

    def generator(self):
        c = self.cfg.generator
        return torch_round.build_generator(int(c.nz), int(c.ngf), self.channels, self.size, arch="cmi").train()

    def timed(self) -> float:
        t0 = time.perf_counter()
        self.round()
        return time.perf_counter() - t0


class TorchADI(_TorchInversion):
    """ADI's round (``DeepInvSyntheiszer.synthesize``), the hyperparameters of its published config."""

    def round(self):
        torch, F = self.torch, self.torch.nn.functional
        lo, hi = self.normalize(torch.zeros(1, 1, 1, 1)), self.normalize(torch.ones(1, 1, 1, 1))
        x = torch.randn(self.batch, self.channels, self.size, self.size).requires_grad_()
        y = torch.randint(0, self.num_classes, (self.batch,)).sort()[0]
        opt = torch.optim.Adam([x], 0.1, betas=(0.5, 0.99))
        best, losses = 1e6, []
        self.best_x = x.data
        for _ in range(self.steps):
            dy, dx = (int(v) for v in self.rng.integers(-4, 5, 2))
            xa = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            if self.rng.random() > 0.5:
                xa = torch.flip(xa, dims=(3,))
            t = self.teacher_forward(xa)
            loss = 10 * sum(self.hooks.r_feature) + F.cross_entropy(t, y) - _jsdiv(F, self.student(xa), t) \
                + 1e-3 * _tv(x)
            losses.append(loss.item())
            if best > losses[-1]:
                best, self.best_x = losses[-1], x.data.clone()
            opt.zero_grad()
            loss.backward()
            opt.step()
            x.data = torch.max(torch.min(x.data, hi), lo)
        return losses


def _jsdiv(F, s, t, T=3.0):
    p, q = F.softmax(s / T, 1), F.softmax(t / T, 1)
    m = 0.5 * (p + q)
    p, q, m = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99), m.clamp(0.01, 0.99)
    return 0.5 * F.kl_div(p.log(), m, reduction="batchmean") + 0.5 * F.kl_div(q.log(), m, reduction="batchmean")


def _tv(x):
    d1 = x[:, :, :, :-1] - x[:, :, :, 1:]
    d2 = x[:, :, :-1, :] - x[:, :, 1:, :]
    d3 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:]
    d4 = x[:, :, :-1, :-1] - x[:, :, 1:, 1:]
    return d1.abs().mean() + d2.abs().mean() + d3.abs().mean() + d4.abs().mean()


class MemoryBank:
    """CMI's ``MemoryBank``: ``max_size`` N(0, 1) rows, written in a ring; ``get_data(k)`` draws ``k``
    distinct rows with ``random.sample`` among all rows once more than ``max_size`` were written, else
    among the written ones. ``fill()`` counts it full (the benchmark's steady state)."""

    def __init__(self, torch, max_size: int, dim: int, seed: int = 0):
        self.data = torch.randn(max_size, dim)
        self.max_size, self.ptr, self.n_updates = max_size, 0, 0
        self.random = random.Random(seed)

    def fill(self):
        self.n_updates = self.max_size + 1

    def add(self, feat):
        n = feat.shape[0]
        self.data[self.ptr:self.ptr + n] = feat.detach()
        self.ptr = (self.ptr + n) % self.max_size
        self.n_updates += n

    def get_data(self, k: int):
        population = self.max_size if self.n_updates > self.max_size else self.ptr
        return self.data[self.random.sample(range(population), k=min(k, population))]


class TorchCMI(_TorchInversion):
    """CMI's round (``CMISynthesizer.synthesize``); ``views(x) -> (global, local)`` normalised views of
    G(z) (a test may replace it); ``round(z, targets, reset)`` takes optional inputs (a test's)."""

    instance_means = True

    def __init__(self, torch, cfg, seed: int = 0):
        super().__init__(torch, cfg, seed)
        nn = torch.nn
        self.gen = self.generator()
        dim = sum(m.num_features for m in self.hooks.layers)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, int(cfg.synthesis.head_dim))).train()
        self.opt_head = torch.optim.Adam(self.head.parameters(), lr=float(cfg.generator.lr))
        self.bank = MemoryBank(torch, int(cfg.synthesis.bank_size), 2 * dim, seed)
        s = cfg.synthesis
        self.cr, self.cr_t, self.n_neg = float(s.cr), float(s.cr_temperature), int(s.n_neg)

    def views(self, x):
        return self.normalize(crop_flip(self.torch, x)), self.normalize(resized_crop_flip(self.torch, x))

    def reset_generator(self):
        """``reset_model``: conv/linear weights N(0, 0.02), zero biases, BatchNorm scales N(1, 0.02)."""
        nn = self.torch.nn
        for m in self.gen.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            if isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.constant_(m.bias, 0)

    def project(self, x):
        return self.torch.nn.functional.normalize(self.head(x), dim=1, p=2)

    def round(self, z=None, targets=None, reset: bool = True):
        torch, F, c = self.torch, self.torch.nn.functional, self.cfg.generator
        z = (torch.randn(self.batch, int(c.nz)) if z is None else z.clone()).requires_grad_()
        y = torch.randint(0, self.num_classes, (self.batch,)).sort()[0] if targets is None else targets
        if reset:
            self.reset_generator()
        opt = torch.optim.Adam([{"params": self.gen.parameters()}, {"params": [z]}], float(c.lr),
                               betas=(float(c.b1), float(c.b2)))
        best, losses = 1e6, []
        for _ in range(self.steps):
            x = self.gen(z)
            x_global, x_local = self.views(x)
            t = self.teacher_forward(x_global)
            loss_inv = self.inversion_loss(t, self.student(x_global), y)
            f_global = torch.cat(self.hooks.means, dim=1)
            self.teacher_forward(x_local)
            f_local = torch.cat(self.hooks.means, dim=1)
            cached_local, cached_global = torch.chunk(self.bank.get_data(self.n_neg), 2, dim=1)
            proj = self.project(torch.cat([f_local, cached_local, f_global, cached_global]))
            p_local, p_global = torch.chunk(proj, 2, dim=0)
            logits = p_local @ p_global.detach().T / self.cr_t
            ce = F.cross_entropy(logits, torch.arange(len(logits)), reduction="none")
            loss_cr = ce[:self.batch].mean() + ce[self.batch:].mean() if self.bank.n_updates > 0 else ce.mean()
            loss = self.cr * loss_cr + loss_inv
            losses.append(loss.item())
            if best > losses[-1]:
                best, self.best_x = losses[-1], x.data
                best_f = torch.cat([f_local.data, f_global.data], dim=1)
            opt.zero_grad()
            self.opt_head.zero_grad()
            loss.backward()
            opt.step()
            self.opt_head.step()
        self.bank.add(best_f)
        return losses


class TorchFast(_TorchInversion):
    """Fast's round (``FastMetaSynthesizer.synthesize``, ``is_maml=1``); ``view(x)``: the normalised
    crop + flip view (a test may replace it)."""

    def __init__(self, torch, cfg, seed: int = 0):
        self.momentum = float(cfg.synthesis.bn_momentum)
        super().__init__(torch, cfg, seed)
        c = cfg.generator
        self.gen = self.generator()
        self.meta_opt = torch.optim.Adam(self.gen.parameters(), float(c.lr) * self.steps,
                                         betas=(float(c.b1), float(c.b2)))
        self.ep, self.warmup = 0, int(cfg.synthesis.warmup)

    def view(self, x):
        return self.normalize(crop_flip(self.torch, x))

    def round(self, z=None, targets=None):
        torch, c = self.torch, self.cfg.generator
        self.ep += 1
        z = (torch.randn(self.batch, int(c.nz)) if z is None else z.clone()).requires_grad_()
        y = torch.randint(0, self.num_classes, (self.batch,)) if targets is None else targets
        fast = self.gen.clone().train()
        opt = torch.optim.Adam([{"params": fast.parameters()},
                                {"params": [z], "lr": float(self.cfg.synthesis.lr_z)}],
                               lr=float(c.lr), betas=(float(c.b1), float(c.b2)))
        best, losses = 1e6, []
        for it in range(self.steps):
            x = fast(z)
            xa = self.view(x)
            t = self.teacher_forward(xa)
            loss = self.inversion_loss(t, self.student(xa) if self.ep >= self.warmup else None, y)
            losses.append(loss.item())
            if best > losses[-1]:
                best, self.best_x = losses[-1], x.data
            opt.zero_grad()
            loss.backward()
            if it == 0:
                self.meta_opt.zero_grad()
            for p, q in zip(self.gen.parameters(), fast.parameters()):  # fomaml_grad
                p.grad = q.grad.detach().clone() if p.grad is None else p.grad.add_(q.grad)
            if it == self.steps - 1:
                self.meta_opt.step()
            opt.step()
        if self.momentum:
            self.hooks.update_mmt()
        return losses


TORCH_ROUNDS = {"adi": TorchADI, "cmi": TorchCMI, "fast": TorchFast}


def torch_round_fn(torch, method: str = "adi", steps: int | None = None, batch: int = BATCH, seed: int = 0,
                   **changes):
    """``(round_object, run)``: ``run()`` does ``method``'s round in PyTorch eager and returns its seconds."""
    r = TORCH_ROUNDS[method](torch, config(method, steps, batch, **changes), seed)
    if method == "cmi":
        r.bank.fill()
    return r, r.timed


def inversion_case(torch, reps: int, warmup: int, log, method: str = "adi", steps: int | None = None,
                   batch: int = BATCH):
    """The cpu-speed case of ``method``: XLA's convolutions, dfkd_jax's default and PyTorch eager, alternating."""
    from dfkd_jax.bench.cpu_speed import Variant, _result, _timed, alternate
    text = label(method, steps, batch)
    log(text)
    variants = []
    for name, mode in (("xla", "xla"), ("dfkd_jax", "auto")):
        run, compile_s = jax_round(method, steps, batch, mode)
        variants.append(Variant(name, _timed(run), compile_s, None))
    variants.append(Variant("torch", torch_round_fn(torch, method, steps, batch)[1]))
    return _result(text, "round", None, variants, alternate(variants, reps, warmup, log))
