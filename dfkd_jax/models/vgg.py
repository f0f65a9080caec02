"""CIFAR VGG with BatchNorm (RepDistiller's block-wise VGG, used by CMI/Fast): vgg8, vgg11, vgg13.

Each ``blockK`` is an ``nn.Sequential`` of [Conv3x3 (bias), BN, ReLU] repeated, with the
block's last ReLU applied in ``forward``; so inside a block the convolutions sit at
indices 0, 3, ... and the BatchNorms at 1, 4, ... (``block2.0.weight``, ``block2.1.running_mean``,
``block2.3.weight``, ``block2.4.running_var``). Flax names flatten them: ``block2_0``,
``block2_1``, ``block2_3``, ``block2_4``. MaxPool 2x2 after block0, block1, block2 (and
after block3 for 64x64 inputs), adaptive average pool, ``classifier`` Linear(512 -> classes).

Parameters at 10 classes: vgg8 3,918,858; vgg11 9,231,114; vgg13 9,416,010.
``blocks`` holds the five block outputs after their ReLU (before pooling).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from dfkd_jax.models.layers import batch_norm, conv, dense, max_pool2x

VGG_CFGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


class VGG(nn.Module):
    num_classes: int = 10
    cfg: Sequence[Sequence[int]] = VGG_CFGS["vgg11"]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        size = x.shape[1]
        in_ch = x.shape[-1]
        blocks = []
        for b, widths in enumerate(self.cfg):
            for j, width in enumerate(widths):
                if j:
                    x = nn.relu(x)
                x = conv(width, 3, in_ch, padding=1, name=f"block{b}_{3 * j}", dtype=self.dtype)(x)
                x = batch_norm(train, name=f"block{b}_{3 * j + 1}", dtype=self.dtype)(x)
                in_ch = width
            x = nn.relu(x)
            blocks.append(x)
            if b < 3 or (b == 3 and size == 64):
                x = max_pool2x(x)
        feature = jnp.mean(x, axis=(1, 2))
        logits = dense(self.num_classes, in_ch, name="classifier", dtype=self.dtype)(feature)
        return logits.astype(jnp.float32), {"feature": feature, "blocks": tuple(blocks)}


def vgg8(num_classes: int = 10, dtype: Any = jnp.float32) -> VGG:
    return VGG(num_classes=num_classes, cfg=VGG_CFGS["vgg8"], dtype=dtype)


def vgg11(num_classes: int = 10, dtype: Any = jnp.float32) -> VGG:
    return VGG(num_classes=num_classes, cfg=VGG_CFGS["vgg11"], dtype=dtype)
