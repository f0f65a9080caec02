"""PyTorch modules with the state_dict key names of the public DFKD model zoos (tests only).

Written for this project from the layouts in docs/models.md: the CIFAR ResNet of CMI/Fast
and DFAD, ZSKT's WideResNet, the block-wise VGG with BatchNorm, LeNet-5 in DFAD's
(``conv1``..``fc2``) and CMI/Fast's (``features.N``, ``fc.N``) key schemes, DAFL/DFAD's
``GeneratorA`` and the CMI/Fast ``Generator``. They only need to have the same keys, shapes
and forward computation as the zoo models.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- ResNet (CIFAR)
class ResBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, counts, num_classes=10, nc=3):
        super().__init__()
        self.conv1 = nn.Conv2d(nc, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for idx, (width, n, stride) in enumerate(zip((64, 128, 256, 512), counts, (1, 2, 2, 2)), 1):
            blocks = []
            for j in range(n):
                blocks.append(ResBlock(cin, width, stride if j == 0 else 1))
                cin = width
            setattr(self, f"layer{idx}", nn.Sequential(*blocks))
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        for idx in range(1, 5):
            y = getattr(self, f"layer{idx}")(y)
        y = F.adaptive_avg_pool2d(y, 1).flatten(1)
        return self.linear(y)


# ----------------------------------------------------------------------------- WideResNet
class WideBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.same = cin == cout
        if not self.same:
            self.convShortcut = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        a = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return y + (x if self.same else self.convShortcut(a))


class WideGroup(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth, widen, num_classes=10, nc=3):
        super().__init__()
        n = (depth - 4) // 6
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(nc, ch[0], 3, 1, 1, bias=False)
        self.block1 = WideGroup(n, ch[0], ch[1], 1)
        self.block2 = WideGroup(n, ch[1], ch[2], 2)
        self.block3 = WideGroup(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], num_classes)

    def forward(self, x):
        y = self.block3(self.block2(self.block1(self.conv1(x))))
        y = F.relu(self.bn1(y))
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


# ----------------------------------------------------------------------------- VGG (BN)
class BlockVGG(nn.Module):
    def __init__(self, cfg, num_classes=10, nc=3):
        super().__init__()
        cin = nc
        for b, widths in enumerate(cfg):
            mods = []
            for w in widths:
                mods += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
                cin = w
            setattr(self, f"block{b}", nn.Sequential(*mods[:-1]))  # last ReLU is applied in forward
        self.classifier = nn.Linear(512, num_classes)
        self.num_blocks = len(cfg)

    def forward(self, x):
        size = x.shape[2]
        for b in range(self.num_blocks):
            x = F.relu(getattr(self, f"block{b}")(x))
            if b < 3 or (b == 3 and size == 64):
                x = F.max_pool2d(x, 2, 2)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


VGG_CFG = {"vgg8": [[64], [128], [256], [512], [512]],
           "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
           "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
           "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
           "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4]}


# ----------------------------------------------------------------------------- LeNet-5
LENET_WIDTHS = {"lenet5": (6, 16, 120, 84), "lenet5_half": (3, 8, 60, 42), "lenet5_half_zskd": (3, 8, 120, 84),
                "lenet5_bn": (6, 16, 120, 84), "lenet5_half_bn": (3, 8, 60, 42)}


class LeNetDFAD(nn.Module):
    """DFAD/DAFL key names: conv1, conv2, conv3, fc1, fc2."""

    def __init__(self, widths, num_classes=10, nc=1):
        super().__init__()
        a, b, c, d = widths
        self.conv1 = nn.Conv2d(nc, a, 5)
        self.conv2 = nn.Conv2d(a, b, 5)
        self.conv3 = nn.Conv2d(b, c, 5)
        self.fc1 = nn.Linear(c, d)
        self.fc2 = nn.Linear(d, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x)).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


class LeNetBN(nn.Module):
    """dfkd_jax's lenet5_bn: conv (no bias) -> BatchNorm2d -> ReLU; keys conv1..3, bn1..3, fc1, fc2."""

    def __init__(self, widths, num_classes=10, nc=1):
        super().__init__()
        a, b, c, d = widths
        self.conv1, self.bn1 = nn.Conv2d(nc, a, 5, bias=False), nn.BatchNorm2d(a)
        self.conv2, self.bn2 = nn.Conv2d(a, b, 5, bias=False), nn.BatchNorm2d(b)
        self.conv3, self.bn3 = nn.Conv2d(b, c, 5, bias=False), nn.BatchNorm2d(c)
        self.fc1 = nn.Linear(c, d)
        self.fc2 = nn.Linear(d, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x))).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


class LeNetCMI(nn.Module):
    """CMI/Fast key names: features.0/3/6, fc.0/2."""

    def __init__(self, widths, num_classes=10, nc=1):
        super().__init__()
        a, b, c, d = widths
        self.features = nn.Sequential(nn.Conv2d(nc, a, 5), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(a, b, 5), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(b, c, 5), nn.ReLU())
        self.fc = nn.Sequential(nn.Linear(c, d), nn.ReLU(), nn.Linear(d, num_classes))

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


# ----------------------------------------------------------------------------- generators
class DAFLGeneratorTorch(nn.Module):
    """DAFL/DFAD GeneratorA keys: l1.0, conv_blocks0.0, conv_blocks1.{0,1}, conv_blocks2.{0,1,3,5}."""

    def __init__(self, nz=100, ngf=64, nc=1, img_size=32, eps=1e-5, zskt=False):
        """``eps``: of the BatchNorms after convolutions (DAFL's ``BatchNorm2d(128, 0.8)``); ``zskt``: no Tanh
        and an affine last BatchNorm (ZSKT's generator, here under GeneratorA's key names)."""
        super().__init__()
        self.s = img_size // 4
        self.c = 2 * ngf
        self.l1 = nn.Sequential(nn.Linear(nz, self.c * self.s * self.s))
        self.conv_blocks0 = nn.Sequential(nn.BatchNorm2d(self.c))
        self.conv_blocks1 = nn.Sequential(nn.Conv2d(self.c, self.c, 3, 1, 1), nn.BatchNorm2d(self.c, eps))
        self.conv_blocks2 = nn.Sequential(nn.Conv2d(self.c, ngf, 3, 1, 1), nn.BatchNorm2d(ngf, eps),
                                          nn.LeakyReLU(0.2), nn.Conv2d(ngf, nc, 3, 1, 1),
                                          nn.Identity() if zskt else nn.Tanh(),
                                          nn.BatchNorm2d(nc, affine=zskt))

    def forward(self, z):
        x = self.conv_blocks0(self.l1(z).view(z.shape[0], self.c, self.s, self.s))
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.leaky_relu(self.conv_blocks1(x), 0.2)
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv_blocks2(x)


class CMIGeneratorTorch(nn.Module):
    """CMI/Fast Generator keys: l1.0, conv_blocks.{0,2,3,6,7,9}; ``width=4``: CMI's LargeGenerator."""

    def __init__(self, nz=256, ngf=64, img_size=32, nc=3, width=2):
        super().__init__()
        self.s = img_size // 4
        self.c = width * ngf
        self.l1 = nn.Sequential(nn.Linear(nz, self.c * self.s * self.s))
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(self.c), nn.Upsample(scale_factor=2),
            nn.Conv2d(self.c, 2 * ngf, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * ngf), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, 1, 1, bias=False), nn.BatchNorm2d(ngf), nn.LeakyReLU(0.2),
            nn.Conv2d(ngf, nc, 3, 1, 1), nn.Sigmoid())

    def forward(self, z):
        return self.conv_blocks(self.l1(z).view(z.shape[0], self.c, self.s, self.s))


# ----------------------------------------------------------------------------- registry
def build(name: str, num_classes: int = 10, nc: int | None = None, scheme: str = "dfad") -> nn.Module:
    """The reference PyTorch module for a dfkd_jax architecture name."""
    if name in ("lenet5_bn", "lenet5_half_bn"):
        return LeNetBN(LENET_WIDTHS[name], num_classes, nc or 1)
    if name.startswith("lenet5"):
        cls = LeNetCMI if scheme == "cmi" else LeNetDFAD
        return cls(LENET_WIDTHS[name], num_classes, nc or 1)
    nc = nc or 3
    if name == "resnet18":
        return CifarResNet((2, 2, 2, 2), num_classes, nc)
    if name == "resnet34":
        return CifarResNet((3, 4, 6, 3), num_classes, nc)
    if name.startswith("wrn"):
        depth, widen = map(int, name[3:].split("_"))
        return WideResNet(depth, widen, num_classes, nc)
    if name in VGG_CFG:
        return BlockVGG(VGG_CFG[name], num_classes, nc)
    raise KeyError(name)


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and non-trivial BatchNorm statistics (non-zero means, non-unit variances).

    Conv/linear weights are drawn with a fan-in scaled normal so that deep nets keep
    activations of order one in eval mode; BN running stats are set directly.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                if m.affine:
                    m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g) * 1.5)
                m.num_batches_tracked.fill_(7)
    return module
