"""ShuffleNetV2 of the CMI/Fast registry (``shufflenetv2``: RepDistiller's CIFAR ShuffleNetV2, net size 1).

Ma et al., ECCV 2018, as RepDistiller (``models/ShuffleNetv2.py``) wrote it for 32x32
inputs and CMI/Fast register it: ``conv1`` 1x1 3->24 (no bias) - ``bn1`` - ReLU, three
stages of one ``DownBlock`` (stride 2) and n ``BasicBlock``s (n = 3, 7, 3; widths 116,
232, 464), ``conv2`` 1x1 464->1024 - ``bn2`` - ReLU, average pool (4x4 on 32x32: global),
``linear``. All convolutions are bias-free; 3x3 ones are depthwise (``groups`` = width).

* BasicBlock (width c): split channels in halves x1 | x2; x2 -> ``conv1`` 1x1 - ``bn1`` -
  ReLU - ``conv2`` 3x3 dw - ``bn2`` - ``conv3`` 1x1 - ``bn3`` - ReLU; concatenate [x1, x2'];
  channel shuffle with 2 groups.
* DownBlock (in -> out, mid = out/2): left ``conv1`` 3x3 dw stride 2 - ``bn1`` - ``conv2``
  1x1 -> mid - ``bn2`` - ReLU; right ``conv3`` 1x1 -> mid - ``bn3`` - ReLU - ``conv4`` 3x3 dw
  stride 2 - ``bn4`` - ``conv5`` 1x1 - ``bn5`` - ReLU; concatenate [left, right]; shuffle.

Keys ``layer2.0.conv4.weight`` (DownBlock), ``layer2.3.bn2.running_var`` (BasicBlock) ->
Flax ``layer2_0/conv4``, ``layer2_3/bn2``. 1,263,278 parameters at 10 classes.
``blocks``: the three stage outputs; ``feature``: the pooled 1024-d vector.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from dfkd_jax.models.layers import batch_norm, conv, dense


def channel_shuffle(x, groups: int = 2):
    """PyTorch's ``view(N, g, C/g, H, W).permute(0, 2, 1, 3, 4)`` on NHWC maps: channel i*(C/g)+j -> j*g+i."""
    n, h, w, c = x.shape
    return x.reshape(n, h, w, groups, c // groups).swapaxes(3, 4).reshape(n, h, w, c)


class ShuffleBasicBlock(nn.Module):
    channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = self.channels // 2
        x1, x2 = x[..., :c], x[..., c:]

        def cbn(h, k, i, groups=1):
            h = conv(c, k, c, padding=(k - 1) // 2, use_bias=False, groups=groups, name=f"conv{i}",
                     dtype=self.dtype)(h)
            return batch_norm(train, name=f"bn{i}", dtype=self.dtype)(h)

        out = nn.relu(cbn(x2, 1, 1))
        out = cbn(out, 3, 2, groups=c)
        out = nn.relu(cbn(out, 1, 3))
        return channel_shuffle(jnp.concatenate([x1, out], axis=-1))


class ShuffleDownBlock(nn.Module):
    in_channels: int
    out_channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        cin, mid = self.in_channels, self.out_channels // 2

        def cbn(h, features, in_features, k, i, stride=1, groups=1):
            h = conv(features, k, in_features, stride=stride, padding=(k - 1) // 2, use_bias=False, groups=groups,
                     name=f"conv{i}", dtype=self.dtype)(h)
            return batch_norm(train, name=f"bn{i}", dtype=self.dtype)(h)

        left = cbn(x, cin, cin, 3, 1, stride=2, groups=cin)
        left = nn.relu(cbn(left, mid, cin, 1, 2))
        right = nn.relu(cbn(x, mid, cin, 1, 3))
        right = cbn(right, mid, mid, 3, 4, stride=2, groups=mid)
        right = nn.relu(cbn(right, mid, mid, 1, 5))
        return channel_shuffle(jnp.concatenate([left, right], axis=-1))


class ShuffleNetV2(nn.Module):
    num_classes: int = 10
    out_channels: Sequence[int] = (116, 232, 464, 1024)
    num_blocks: Sequence[int] = (3, 7, 3)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        out = conv(24, 1, x.shape[-1], use_bias=False, name="conv1", dtype=self.dtype)(x)
        out = nn.relu(batch_norm(train, name="bn1", dtype=self.dtype)(out))
        cin, blocks = 24, []
        for stage, (width, n) in enumerate(zip(self.out_channels[:3], self.num_blocks), 1):
            out = ShuffleDownBlock(cin, width, dtype=self.dtype, name=f"layer{stage}_0")(out, train)
            for i in range(n):
                out = ShuffleBasicBlock(width, dtype=self.dtype, name=f"layer{stage}_{i + 1}")(out, train)
            cin = width
            blocks.append(out)
        last = self.out_channels[3]
        out = conv(last, 1, cin, use_bias=False, name="conv2", dtype=self.dtype)(out)
        out = nn.relu(batch_norm(train, name="bn2", dtype=self.dtype)(out))
        feature = jnp.mean(out, axis=(1, 2))
        logits = dense(self.num_classes, last, name="linear", dtype=self.dtype)(feature)
        return logits.astype(jnp.float32), {"feature": feature, "blocks": tuple(blocks)}
