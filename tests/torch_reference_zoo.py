"""PyTorch modules for the rest of the CMI/Fast zoo and the segmentation models (tests only).

Written for this project from the public definitions (RepDistiller's CIFAR ResNets and
ShuffleNetV2, DAFL's CIFAR ResNet-50, torchvision's MobileNetV2 as CMI/Fast register it,
DFAD's and CMI/Fast's DeepLabV3 with their MobileNetV2 backbones, DFAD's GeneratorB),
with the same state_dict keys, shapes and forward computation; layout notes are in the
docstrings of the matching ``dfkd_jax.models`` modules. Widths take a multiplier so the
conversion tests can run small versions of the same code.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _cbn(cin, cout, k, stride=1, pad=0, dil=1, groups=1):
    return [nn.Conv2d(cin, cout, k, stride, pad, dilation=dil, groups=groups, bias=False), nn.BatchNorm2d(cout)]


# ----------------------------------------------------------------------------- RepDistiller CIFAR ResNets
class TinyBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = _cbn(cin, cout, 3, stride, 1)
        self.conv2, self.bn2 = _cbn(cout, cout, 3, 1, 1)
        self.downsample = nn.Sequential(*_cbn(cin, cout, 1, stride)) if stride != 1 or cin != cout else None

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class TinyResNet(nn.Module):
    def __init__(self, depth, widths, num_classes=10, nc=3):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1, self.bn1 = _cbn(nc, widths[0], 3, 1, 1)
        cin = widths[0]
        for s, (w, stride) in enumerate(zip(widths[1:], (1, 2, 2)), 1):
            blocks = []
            for i in range(n):
                blocks.append(TinyBlock(cin, w, stride if i == 0 else 1))
                cin = w
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.layer3(self.layer2(self.layer1(y)))
        return self.fc(F.avg_pool2d(y, y.shape[-1]).flatten(1))


TINY = {"resnet8": (8, (16, 16, 32, 64)), "resnet14": (14, (16, 16, 32, 64)), "resnet20": (20, (16, 16, 32, 64)),
        "resnet32": (32, (16, 16, 32, 64)), "resnet44": (44, (16, 16, 32, 64)), "resnet56": (56, (16, 16, 32, 64)), "resnet110": (110, (16, 16, 32, 64)),
        "resnet8x4": (8, (32, 64, 128, 256)), "resnet32x4": (32, (32, 64, 128, 256))}


# ----------------------------------------------------------------------------- DAFL CIFAR ResNet-50
class CifarBottleneck(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1, self.bn1 = _cbn(cin, planes, 1)
        self.conv2, self.bn2 = _cbn(planes, planes, 3, stride, 1)
        self.conv3, self.bn3 = _cbn(planes, 4 * planes, 1)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != 4 * planes:
            self.shortcut = nn.Sequential(*_cbn(cin, 4 * planes, 1, stride))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + self.shortcut(x))


class CifarResNet50(nn.Module):
    def __init__(self, num_classes=10, nc=3):
        super().__init__()
        self.conv1, self.bn1 = _cbn(nc, 64, 3, 1, 1)
        cin = 64
        for s, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), (1, 2, 2, 2)), 1):
            blocks = []
            for i in range(n):
                blocks.append(CifarBottleneck(cin, planes, stride if i == 0 else 1))
                cin = 4 * planes
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.linear = nn.Linear(2048, num_classes)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        for s in range(1, 5):
            y = getattr(self, f"layer{s}")(y)
        return self.linear(F.adaptive_avg_pool2d(y, 1).flatten(1))


# ----------------------------------------------------------------------------- MobileNetV2 (classifier)
def make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _cbr6(cin, cout, k, stride=1, pad=None, dil=1, groups=1):
    pad = (k - 1) // 2 if pad is None else pad
    return nn.Sequential(*_cbn(cin, cout, k, stride, pad, dil, groups), nn.ReLU6())


class InvRes(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = int(round(cin * t))
        layers = [_cbr6(cin, hidden, 1)] if t != 1 else []
        layers += [_cbr6(hidden, hidden, 3, stride, groups=hidden), *_cbn(hidden, cout, 1)]
        self.conv = nn.Sequential(*layers)
        self.res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=10, nc=3):
        super().__init__()
        cin = 32
        feats = [_cbr6(nc, cin, 3, 2)]
        for t, c, n, s in SETTING:
            for i in range(n):
                feats.append(InvRes(cin, c, s if i == 0 else 1, t))
                cin = c
        feats.append(_cbr6(cin, 1280, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


# ----------------------------------------------------------------------------- ShuffleNetV2 (RepDistiller)
def shuffle(x, g=2):
    n, c, h, w = x.shape
    return x.view(n, g, c // g, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


class ShuffleBasic(nn.Module):
    def __init__(self, c):
        super().__init__()
        c //= 2
        self.conv1, self.bn1 = _cbn(c, c, 1)
        self.conv2, self.bn2 = _cbn(c, c, 3, 1, 1, groups=c)
        self.conv3, self.bn3 = _cbn(c, c, 1)

    def forward(self, x):
        half = x.shape[1] // 2
        x1, x2 = x[:, :half], x[:, half:]
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x2)))))
        return shuffle(torch.cat([x1, F.relu(self.bn3(self.conv3(y)))], 1))


class ShuffleDown(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        mid = cout // 2
        self.conv1, self.bn1 = _cbn(cin, cin, 3, 2, 1, groups=cin)
        self.conv2, self.bn2 = _cbn(cin, mid, 1)
        self.conv3, self.bn3 = _cbn(cin, mid, 1)
        self.conv4, self.bn4 = _cbn(mid, mid, 3, 2, 1, groups=mid)
        self.conv5, self.bn5 = _cbn(mid, mid, 1)

    def forward(self, x):
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        return shuffle(torch.cat([left, F.relu(self.bn5(self.conv5(right)))], 1))


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes=10, nc=3, widths=(116, 232, 464, 1024), blocks=(3, 7, 3)):
        super().__init__()
        self.conv1, self.bn1 = _cbn(nc, 24, 1)
        cin = 24
        for s, (w, n) in enumerate(zip(widths[:3], blocks), 1):
            setattr(self, f"layer{s}", nn.Sequential(ShuffleDown(cin, w), *[ShuffleBasic(w) for _ in range(n)]))
            cin = w
        self.conv2, self.bn2 = _cbn(cin, widths[3], 1)
        self.linear = nn.Linear(widths[3], num_classes)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.layer3(self.layer2(self.layer1(y)))
        y = F.relu(self.bn2(self.conv2(y)))
        return self.linear(F.adaptive_avg_pool2d(y, 1).flatten(1))


# ----------------------------------------------------------------------------- DeepLabV3 backbones
def scaled(w, m):
    return max(1, int(w * m))


class TVBottleneck(nn.Module):
    """torchvision Bottleneck: stride on the 3x3 conv, ``downsample`` shortcut."""

    def __init__(self, cin, planes, stride, dilation):
        super().__init__()
        self.conv1, self.bn1 = _cbn(cin, planes, 1)
        self.conv2, self.bn2 = _cbn(planes, planes, 3, stride, dilation, dilation)
        self.conv3, self.bn3 = _cbn(planes, 4 * planes, 1)
        self.downsample = nn.Sequential(*_cbn(cin, 4 * planes, 1, stride)) if stride != 1 or cin != 4 * planes else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class DilatedResNet50(nn.Module):
    def __init__(self, m=1.0, nc=3):
        super().__init__()
        stem = scaled(64, m)
        self.conv1, self.bn1 = _cbn(nc, stem, 7, 2, 3)
        cin, dil = stem, 1
        for s, (p, n, stride, dilate) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), (1, 2, 2, 2),
                                                       (False, False, True, True)), 1):
            p, prev = scaled(p, m), dil
            if dilate:
                dil, stride = dil * stride, 1
            blocks = []
            for i in range(n):
                blocks.append(TVBottleneck(cin, p, stride if i == 0 else 1, prev if i == 0 else dil))
                cin = 4 * p
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.out_channels = cin

    def forward(self, x):
        y = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for s in range(1, 5):
            y = getattr(self, f"layer{s}")(y)
        return y


class TVBasicBlock(nn.Module):
    """torchvision BasicBlock: ``conv1`` (stride) / ``conv2`` 3x3, ``downsample`` shortcut."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1, self.bn1 = _cbn(cin, planes, 3, stride, 1)
        self.conv2, self.bn2 = _cbn(planes, planes, 3, 1, 1)
        self.downsample = nn.Sequential(*_cbn(cin, planes, 1, stride)) if stride != 1 or cin != planes else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ImageNetResNet(nn.Module):
    """torchvision's ImageNet ResNet-18/34/50 (keys ``conv1, bn1, layerS.i.*, fc``)."""

    def __init__(self, blocks, bottleneck, num_classes=1000, nc=3):
        super().__init__()
        self.conv1, self.bn1 = _cbn(nc, 64, 7, 2, 3)
        cin = 64
        for s, (p, n, stride) in enumerate(zip((64, 128, 256, 512), blocks, (1, 2, 2, 2)), 1):
            layer = []
            for i in range(n):
                st = stride if i == 0 else 1
                layer.append(TVBottleneck(cin, p, st, 1) if bottleneck else TVBasicBlock(cin, p, st))
                cin = 4 * p if bottleneck else p
            setattr(self, f"layer{s}", nn.Sequential(*layer))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        y = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for s in range(1, 5):
            y = getattr(self, f"layer{s}")(y)
        return self.fc(y.mean((2, 3)))


IMAGENET_RESNETS = {"resnet18_imagenet": ((2, 2, 2, 2), False), "resnet34_imagenet": ((3, 4, 6, 3), False),
                    "resnet50_imagenet": ((3, 4, 6, 3), True)}


class PadInvRes(nn.Module):
    """Inverted residual that pads its input by the dilation and convolves without padding.
    ``flat``: DFAD's flat ``conv`` sequence; otherwise CMI's nested ConvBNReLU6 blocks."""

    def __init__(self, cin, cout, stride, dil, t, flat):
        super().__init__()
        hidden = int(round(cin * t))
        self.d = dil
        self.res = stride == 1 and cin == cout
        if flat:
            layers = [*_cbn(cin, hidden, 1), nn.ReLU6()] if t != 1 else []
            layers += [*_cbn(hidden, hidden, 3, stride, 0, dil, hidden), nn.ReLU6(), *_cbn(hidden, cout, 1)]
        else:
            layers = [_cbr6(cin, hidden, 1, pad=0)] if t != 1 else []
            layers += [_cbr6(hidden, hidden, 3, stride, 0, dil, hidden), *_cbn(hidden, cout, 1)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        y = self.conv(F.pad(x, (self.d,) * 4))
        return x + y if self.res else y


class SegMobileNetV2(nn.Module):
    """scheme 'dfad': ``features.N``; scheme 'cmi': ``low_level_features`` / ``high_level_features``."""

    def __init__(self, m=1.0, scheme="dfad", nc=3, output_stride=8):
        super().__init__()
        dfad = scheme == "dfad"
        cin = int(32 * m) if dfad else make_divisible(32 * m)
        feats = [_cbr6(nc, cin, 3, 2, pad=1 if dfad else 0)]
        cs, dil = 2, 1
        for t, c, n, s in SETTING:
            prev = dil
            if cs == output_stride:
                stride, dil = 1, dil * s
            else:
                stride, cs = s, cs * s
            for i in range(n):
                d = prev if (i == 0 or dfad) else dil
                feats.append(PadInvRes(cin, int(c * m), stride if i == 0 else 1, d, t, flat=dfad))
                cin = int(c * m)
        if dfad:
            self.features = nn.Sequential(*feats)
        else:
            # as CMI/Fast: slices of one Sequential, which keep its indices (high_level_features.4 ... 17)
            features = nn.Sequential(*feats)
            self.low_level_features, self.high_level_features = features[:4], features[4:]
        self.dfad = dfad
        self.out_channels = cin

    def forward(self, x):
        if self.dfad:
            return self.features(x)
        return self.high_level_features(self.low_level_features(x))


# ----------------------------------------------------------------------------- DeepLabV3 head
class ASPP(nn.Module):
    def __init__(self, cin, rates, c):
        super().__init__()
        branches = [nn.Sequential(*_cbn(cin, c, 1), nn.ReLU())]
        branches += [nn.Sequential(*_cbn(cin, c, 3, 1, r, r), nn.ReLU()) for r in rates]
        branches.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), *_cbn(cin, c, 1), nn.ReLU()))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*_cbn(5 * c, c, 1), nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x):
        outs = []
        for i, branch in enumerate(self.convs):
            y = branch(x)
            if i == 4:
                y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(y)
        return self.project(torch.cat(outs, 1))


def _head(cin, num_classes, rates, c):
    return nn.Sequential(ASPP(cin, rates, c), *_cbn(c, c, 3, 1, 1), nn.ReLU(), nn.Conv2d(c, num_classes, 1))


class CMIHead(nn.Module):
    def __init__(self, cin, num_classes, rates, c):
        super().__init__()
        self.classifier = _head(cin, num_classes, rates, c)

    def forward(self, x):
        return self.classifier(x)


class DeepLabV3(nn.Module):
    def __init__(self, backbone="resnet50", scheme="dfad", num_classes=11, m=1.0, nc=3):
        super().__init__()
        self.backbone = DilatedResNet50(m, nc) if backbone == "resnet50" else SegMobileNetV2(m, scheme, nc)
        rates, c = ((12, 24, 32) if scheme == "dfad" else (12, 24, 36)), scaled(256, m)
        cin = self.backbone.out_channels
        self.classifier = _head(cin, num_classes, rates, c) if scheme == "dfad" else CMIHead(cin, num_classes, rates, c)

    def forward(self, x):
        y = self.classifier(self.backbone(x))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------- DFAD GeneratorB
class GeneratorB(nn.Module):
    def __init__(self, nz=256, ngf=64, nc=3, img_size=128):
        super().__init__()
        self.init = img_size // 16
        self.project = nn.Sequential(nn.Flatten(), nn.Linear(nz, 8 * ngf * self.init ** 2))
        layers = [nn.BatchNorm2d(8 * ngf)]
        cin = 8 * ngf
        for cout in (4 * ngf, 2 * ngf, ngf, ngf):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
            cin = cout
        layers += [nn.Conv2d(ngf, nc, 3, 1, 1), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z):
        return self.main(self.project(z).view(z.shape[0], -1, self.init, self.init))


# ----------------------------------------------------------------------------- registry
def build(name: str, num_classes: int = 10, nc: int = 3) -> nn.Module:
    """The reference module of a dfkd_jax architecture name (``NAME`` or ``NAME@WIDTH`` for DeepLabV3)."""
    base, _, mult = name.partition("@")
    if base in TINY:
        return TinyResNet(*TINY[base], num_classes=num_classes, nc=nc)
    if base == "resnet50":
        return CifarResNet50(num_classes, nc)
    if base == "mobilenetv2":
        return MobileNetV2(num_classes, nc)
    if base in IMAGENET_RESNETS:
        return ImageNetResNet(*IMAGENET_RESNETS[base], num_classes=num_classes, nc=nc)
    if base == "shufflenetv2":
        return ShuffleNetV2(num_classes, nc)
    if base.startswith("deeplabv3_"):
        backbone = "resnet50" if "resnet50" in base else "mobilenetv2"
        return DeepLabV3(backbone, "cmi" if base.endswith("_cmi") else "dfad", num_classes, float(mult or 1.0), nc)
    raise KeyError(name)
