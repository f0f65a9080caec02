"""The dfkd_jax DFAD round in PyTorch (eager), as the speed reference of ``tools/benchmark.py``.

It computes what ``dfkd_jax.engine.round`` computes for DFAD (``generator.terms =
{'adv_l1': 1}``, ``student.terms = {'l1': 1}``, 1 generator + 5 student updates,
``student.batch = 'fresh'``):

1. generator update: ``z ~ N(0, 1)`` of shape ``(B, nz)``, ``x = G(z)`` (train-mode
   BatchNorm), teacher in eval mode, student in train mode, loss ``-mean|s - t|``
   (L1 over classes, mean over the batch), one Adam step on G. Only G's gradients
   are computed; the student's BatchNorm running statistics are left as they were
   (the JAX round discards them in this step too).
2. ``student_steps`` student updates, each on a fresh batch ``G(z')`` made under
   ``torch.no_grad()`` (G still in train mode), loss ``mean|s - t|``, one SGD step
   (momentum, PyTorch-style L2 weight decay) on S.

The only differences from the JAX round are in state neither round reads: G's
BatchNorm running statistics (the JAX round keeps only the generator step's update
and stores the biased batch variance; PyTorch updates them on every forward with
the unbiased one). Learning rates are constant (the JAX schedules are optax
functions of the step count and cost nothing per round).

The modules below have the PyTorch key names of the public checkpoints, so their
``state_dict`` converts with ``dfkd_jax.convert.convert_state_dict``: LeNet-5 and its
halves in DFAD's scheme (``conv1..conv3``, ``fc1``, ``fc2``), DAFL/DFAD's ``GeneratorA``
(``l1.0``, ``conv_blocks0.0``, ``conv_blocks1.{0,1}``, ``conv_blocks2.{0,1,3,5}``), the CMI/Fast
``Generator`` (``l1.0``, ``conv_blocks.{0,2,3,6,7,9}``; ``dfkd_jax.bench.inversion``'s rounds) and
the CIFAR ResNet-18/34 (``conv1``, ``bn1``, ``layerN.i.*``, ``linear``).

torch is imported lazily: ``pip install -e .[torch]`` (torch==2.13.0; the CPU build is enough).
"""

from __future__ import annotations

import contextlib
import functools
import os
import types
from typing import Any, Sequence

LENET_WIDTHS = {"lenet5": (6, 16, 120, 84), "lenet5_half": (3, 8, 60, 42), "lenet5_half_zskd": (3, 8, 120, 84)}
RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
WRN_SIZES = {"wrn16_1": (16, 1), "wrn16_2": (16, 2), "wrn40_1": (40, 1), "wrn40_2": (40, 2)}  # (depth, widen)
ARCHITECTURES = tuple(LENET_WIDTHS) + tuple(RESNET_BLOCKS) + tuple(WRN_SIZES)
AUTOCAST_DTYPES = ("bfloat16",)


def require_torch():
    """The ``torch`` module, or an ImportError saying how to install it."""
    try:
        import torch
    except ImportError as e:
        raise ImportError("The PyTorch reference round needs torch, an optional extra of dfkd_jax: "
                          "pip install -e .[torch]  (torch==2.13.0; the CPU build is enough).") from e
    return torch


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def setup_torch(device: str = "cpu", threads: int | None = None):
    """Import torch, use every core of this machine for its CPU kernels, check ``device``."""
    torch = require_torch()
    torch.set_num_threads(threads or cpu_cores())
    if str(device).startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {device}: this torch build ({torch.__version__}) sees no CUDA device.")
        torch.backends.cudnn.benchmark = True  # XLA autotunes its convolutions too
    return torch


@functools.cache
def _modules() -> types.SimpleNamespace:
    torch = require_torch()
    nn, F = torch.nn, torch.nn.functional

    class LeNet5(nn.Module):
        """32x32 input, 5x5 valid convolutions, 2x2 max-pool, ReLU (DFAD key names)."""

        def __init__(self, widths: Sequence[int], num_classes: int = 10, channels: int = 1):
            super().__init__()
            c1, c2, c3, f1 = widths
            self.conv1 = nn.Conv2d(channels, c1, 5)
            self.conv2 = nn.Conv2d(c1, c2, 5)
            self.conv3 = nn.Conv2d(c2, c3, 5)
            self.fc1 = nn.Linear(c3, f1)
            self.fc2 = nn.Linear(f1, num_classes)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = F.relu(self.conv3(x)).flatten(1)
            return self.fc2(F.relu(self.fc1(x)))

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            return F.relu(y + self.shortcut(x))

    class CifarResNet(nn.Module):
        """3x3 stem, no max-pool, four stages of BasicBlocks, global average pool, ``linear``."""

        def __init__(self, blocks: Sequence[int], num_classes: int = 10, channels: int = 3):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            cin = 64
            for stage, (width, n, stride) in enumerate(zip((64, 128, 256, 512), blocks, (1, 2, 2, 2)), 1):
                layers = []
                for i in range(n):
                    layers.append(BasicBlock(cin, width, stride if i == 0 else 1))
                    cin = width
                setattr(self, f"layer{stage}", nn.Sequential(*layers))
            self.linear = nn.Linear(512, num_classes)

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = self.layer4(self.layer3(self.layer2(self.layer1(y))))
            return self.linear(y.mean(dim=(2, 3)))

    class WRNBlock(nn.Module):
        """Pre-activation block: the activated input feeds conv1 and, on a width change, the 1x1 shortcut."""

        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin)
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.convShortcut = None if cin == cout else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

        def forward(self, x):
            act = F.relu(self.bn1(x))
            out = self.conv2(F.relu(self.bn2(self.conv1(act))))
            return out + (x if self.convShortcut is None else self.convShortcut(act))

    class WRNGroup(nn.Module):
        def __init__(self, n: int, cin: int, cout: int, stride: int):
            super().__init__()
            self.layer = nn.Sequential(*[WRNBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                         for i in range(n)])

        def forward(self, x):
            return self.layer(x)

    class WideResNet(nn.Module):
        """WRN-depth-widen: 3x3 stem, three groups of pre-activation blocks, BN-ReLU, global average pool, ``fc``."""

        def __init__(self, depth: int, widen: int, num_classes: int = 10, channels: int = 3):
            super().__init__()
            n = (depth - 4) // 6
            widths = (16, 16 * widen, 32 * widen, 64 * widen)
            self.conv1 = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
            self.block1 = WRNGroup(n, widths[0], widths[1], 1)
            self.block2 = WRNGroup(n, widths[1], widths[2], 2)
            self.block3 = WRNGroup(n, widths[2], widths[3], 2)
            self.bn1 = nn.BatchNorm2d(widths[3])
            self.fc = nn.Linear(widths[3], num_classes)

        def forward(self, x):
            y = self.block3(self.block2(self.block1(self.conv1(x))))
            return self.fc(F.relu(self.bn1(y)).mean(dim=(2, 3)))

    class GeneratorA(nn.Module):
        """DAFL/DFAD generator: Linear -> BN -> up -> conv-BN-LReLU -> up -> conv-BN-LReLU -> conv -> Tanh -> BN."""

        def __init__(self, nz: int = 100, ngf: int = 64, channels: int = 1, img_size: int = 32):
            super().__init__()
            self.size, self.width = img_size // 4, 2 * ngf
            c = self.width
            self.l1 = nn.Sequential(nn.Linear(nz, c * self.size * self.size))
            self.conv_blocks0 = nn.Sequential(nn.BatchNorm2d(c))
            self.conv_blocks1 = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c))
            self.conv_blocks2 = nn.Sequential(nn.Conv2d(c, ngf, 3, 1, 1), nn.BatchNorm2d(ngf), nn.LeakyReLU(0.2),
                                              nn.Conv2d(ngf, channels, 3, 1, 1), nn.Tanh(),
                                              nn.BatchNorm2d(channels, affine=False))

        def forward(self, z):
            h = self.conv_blocks0(self.l1(z).view(z.shape[0], self.width, self.size, self.size))
            h = F.leaky_relu(self.conv_blocks1(F.interpolate(h, scale_factor=2, mode="nearest")), 0.2)
            return self.conv_blocks2(F.interpolate(h, scale_factor=2, mode="nearest"))

    class CMIGenerator(nn.Module):
        """CMI/Fast ``Generator``: Linear -> BN -> up -> conv-BN-LReLU -> up -> conv-BN-LReLU -> conv -> Sigmoid
        (images in [0, 1]; dfkd_jax's ``'cmi'`` generator, same key names ``l1.0``, ``conv_blocks.N``)."""

        def __init__(self, nz: int = 256, ngf: int = 64, channels: int = 3, img_size: int = 32):
            super().__init__()
            self.args = (nz, ngf, channels, img_size)
            self.size, self.width = img_size // 4, 2 * ngf
            c = self.width
            self.l1 = nn.Sequential(nn.Linear(nz, c * self.size * self.size))
            self.conv_blocks = nn.Sequential(
                nn.BatchNorm2d(c), nn.Upsample(scale_factor=2),
                nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2),
                nn.Conv2d(c, ngf, 3, 1, 1, bias=False), nn.BatchNorm2d(ngf), nn.LeakyReLU(0.2),
                nn.Conv2d(ngf, channels, 3, 1, 1), nn.Sigmoid())

        def forward(self, z):
            return self.conv_blocks(self.l1(z).view(z.shape[0], self.width, self.size, self.size))

        def clone(self):
            """A new generator with this one's parameters and buffers (Fast's ``Generator.clone``)."""
            other = CMIGenerator(*self.args)
            other.load_state_dict(self.state_dict())
            return other

    return types.SimpleNamespace(LeNet5=LeNet5, CifarResNet=CifarResNet, WideResNet=WideResNet,
                                 GeneratorA=GeneratorA, CMIGenerator=CMIGenerator)


def build_model(arch: str, num_classes: int = 10, channels: int = 1):
    """The PyTorch classifier ``arch`` (a name of ``ARCHITECTURES``), default-initialised."""
    m = _modules()
    if arch in LENET_WIDTHS:
        return m.LeNet5(LENET_WIDTHS[arch], num_classes, channels)
    if arch in RESNET_BLOCKS:
        return m.CifarResNet(RESNET_BLOCKS[arch], num_classes, channels)
    if arch in WRN_SIZES:
        return m.WideResNet(*WRN_SIZES[arch], num_classes, channels)
    raise ValueError(f"No PyTorch benchmark model for {arch!r}. Valid names: {', '.join(ARCHITECTURES)}.")


def build_generator(nz: int = 100, ngf: int = 64, channels: int = 1, img_size: int = 32, arch: str = "dafl"):
    """DAFL/DFAD ``GeneratorA`` (dfkd_jax's ``'dafl'`` generator) or the CMI/Fast ``Generator`` (``'cmi'``)."""
    if arch == "dafl":
        return _modules().GeneratorA(nz, ngf, channels, img_size)
    if arch == "cmi":
        return _modules().CMIGenerator(nz, ngf, channels, img_size)
    raise ValueError(f"No PyTorch benchmark generator {arch!r}. Valid names: dafl, cmi.")


class DFADRound:
    """One DFAD round per ``round()`` call on PyTorch modules (eager mode).

    ``round(zs)`` takes an optional list of ``1 + student_steps`` latent batches
    ``(B, nz)`` (the generator step's first, then one per student step), so that a
    test can feed the z the JAX round draws; without it z is drawn with ``torch.randn``.
    It returns ``{'generator/loss': scalar, 'student/loss': (student_steps,)}``
    as detached tensors (no host synchronisation inside the round).
    """

    def __init__(self, teacher, student, generator, *, batch_size: int, nz: int, student_steps: int = 5,
                 g_lr: float = 1e-3, g_betas: tuple[float, float] = (0.9, 0.999), g_weight_decay: float = 0.0,
                 s_lr: float = 0.1, s_momentum: float = 0.9, s_weight_decay: float = 5e-4, device: Any = "cpu",
                 autocast: str | None = None):
        torch = require_torch()
        self.torch = torch
        self.device = torch.device(device)
        if autocast is not None and autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be None or one of {', '.join(AUTOCAST_DTYPES)}, not {autocast!r}.")
        self.autocast = autocast
        self.teacher = teacher.to(self.device).eval()
        self.student = student.to(self.device).train()
        self.generator = generator.to(self.device).train()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.batch_size, self.nz, self.student_steps = int(batch_size), int(nz), int(student_steps)
        self._g_params = list(self.generator.parameters())
        self._s_running = [b for b in self.student.buffers() if b.is_floating_point()]
        self.opt_g = torch.optim.Adam(self._g_params, lr=g_lr, betas=tuple(g_betas), weight_decay=g_weight_decay)
        self.opt_s = torch.optim.SGD(self.student.parameters(), lr=s_lr, momentum=s_momentum,
                                     weight_decay=s_weight_decay)

    @classmethod
    def from_config(cls, config, teacher, student, generator, device: Any = "cpu",
                    autocast: str | None = None) -> "DFADRound":
        """Hyperparameters from a dfkd_jax config (a DFAD one: Adam on G, SGD on S)."""
        g, s = config.generator, config.student
        if g.optimizer != "adam" or s.optimizer != "sgd" or s.batch != "fresh" or int(g.steps) != 1:
            raise ValueError("The PyTorch reference round is DFAD's: 1 Adam generator step, SGD student steps "
                             "on fresh batches.")
        return cls(teacher, student, generator, batch_size=int(config.train.batch_size), nz=int(g.nz),
                   student_steps=int(s.steps), g_lr=float(g.lr), g_betas=(float(g.b1), float(g.b2)),
                   g_weight_decay=float(g.weight_decay), s_lr=float(s.lr), s_momentum=float(s.momentum),
                   s_weight_decay=float(s.weight_decay), device=device, autocast=autocast)

    def _autocast(self):
        """``torch.autocast`` in ``self.autocast``'s dtype, or a context that does nothing."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return self.torch.autocast(device_type=self.device.type, dtype=getattr(self.torch, self.autocast))

    def _z(self, zs, i: int):
        if zs is None:
            return self.torch.randn(self.batch_size, self.nz, device=self.device)
        return self.torch.as_tensor(zs[i], dtype=self.torch.float32).to(self.device)

    def round(self, zs=None) -> dict:
        torch = self.torch
        if zs is not None and len(zs) != 1 + self.student_steps:
            raise ValueError(f"zs must hold {1 + self.student_steps} latent batches, not {len(zs)}.")
        gen, student, teacher = self.generator, self.student, self.teacher

        # generator update: maximise the student-teacher L1 discrepancy
        saved = [b.clone() for b in self._s_running]
        with self._autocast():
            x = gen(self._z(zs, 0))
            loss_g = -(student(x).float() - teacher(x).float()).abs().mean()
        for p, grad in zip(self._g_params, torch.autograd.grad(loss_g, self._g_params)):
            p.grad = grad
        self.opt_g.step()
        with torch.no_grad():
            for b, v in zip(self._s_running, saved):
                b.copy_(v)

        # student updates, each on a fresh batch of the (updated, frozen) generator
        losses = []
        for j in range(self.student_steps):
            with torch.no_grad(), self._autocast():
                x = gen(self._z(zs, 1 + j))
                t = teacher(x).float()
            with self._autocast():
                loss_s = (student(x).float() - t).abs().mean()
            self.opt_s.zero_grad(set_to_none=True)
            loss_s.backward()
            self.opt_s.step()
            losses.append(loss_s.detach())
        return {"generator/loss": loss_g.detach(), "student/loss": torch.stack(losses)}

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)
