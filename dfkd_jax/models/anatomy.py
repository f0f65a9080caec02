"""What methods read of a classifier beyond its logits, for every architecture, without per-model code.

ZSKD and soft-targeted synthesis read the teacher's fully connected layers (the classifier
head's class weight vectors, the weights of the layer consuming a modelled FC layer) and
run sampled activations through the rest of the network; soft-targeted synthesis also reads
the first convolution's output. Rather than each model declaring these, they are found by
tracing one forward pass with ``flax.linen.intercept_methods``: every ``nn.Dense`` and
``nn.Conv`` call is recorded in call order with its module path (every layer of the zoo is
made by ``models.layers.dense``/``conv``).

What holds for every classifier of the zoo (checked by ``tests/test_anatomy.py`` on each
architecture), and what these functions rely on:
- the logits are the output of the last ``nn.Dense`` call (the head: LeNet's ``fc2``,
  ResNet's ``linear``, WRN's ``fc``, VGG's ``classifier``);
- the fully connected layers form a chain at the end of the network, a ReLU between two
  of them (LeNet: ``fc1 -> ReLU -> fc2``; the others have the head alone), and the model's
  ``feature`` output is the input of the first of them;
- the first ``nn.Conv`` call is the first layer (``conv1`` / ``block0_0``), applied to the input.

``DenseLayer.kernel`` is Flax's ``(in, out)``; its transpose is PyTorch's ``weight``
``(out, in)``, whose row ``j`` is the weight vector of output unit ``j`` (for the head: the
class weight vector of class ``j``) and whose column ``i`` holds the weights leaving input unit ``i``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dfkd_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DenseLayer:
    path: tuple[str, ...]  # module path, e.g. ('fc1',) or ('classifier',)
    kernel: Any  # (in, out)
    bias: Any  # (out,) or None

    @property
    def weight(self):
        """PyTorch's ``weight`` ``(out, in)``: row ``j`` is output unit ``j``'s weight vector."""
        return self.kernel.T

    def __call__(self, h):
        out = jnp.asarray(h, jnp.float32) @ jnp.asarray(self.kernel, jnp.float32)
        return out if self.bias is None else out + self.bias


def _record(kinds: tuple[type, ...]) -> tuple[list, Callable]:
    calls: list = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(context.module, kinds):
            calls.append((type(context.module), tuple(context.module.path), args[0], out))
        return out

    return calls, interceptor


def trace(model: nn.Module, variables: dict, x, train: bool = False):
    """``(outputs, calls)``: ``model.apply(variables, x, train=train)`` and, in call order, one
    ``(module type, path, input, output)`` per ``nn.Dense`` and ``nn.Conv`` call."""
    calls, interceptor = _record((nn.Dense, nn.Conv))
    with nn.intercept_methods(interceptor):
        out = model.apply(variables, x, train=train)
    return out, calls


def _params_at(params: dict, path: tuple[str, ...]) -> dict:
    node = params
    for name in path:
        node = node[name]
    return node


def dense_chain(model: nn.Module, variables: dict, input_shape) -> tuple[DenseLayer, ...]:
    """The model's fully connected layers in call order (the head last), with their weights.

    Found from shapes only (``jax.eval_shape``), the weights then read from ``variables``."""
    x = jax.ShapeDtypeStruct((1, *tuple(input_shape)), jnp.float32)
    paths: list = []

    def run(v, inp):
        _, calls = trace(model, v, inp)
        paths.extend(path for kind, path, _, _ in calls if issubclass(kind, nn.Dense))
        return 0

    jax.eval_shape(run, variables, x)
    if not paths:
        raise ConfigError(f"{type(model).__name__} has no fully connected layer: ZSKD and soft-targeted synthesis "
                          "read the classifier head's weights.")
    layers = []
    for path in paths:
        p = _params_at(variables["params"], path)
        layers.append(DenseLayer(path=path, kernel=p["kernel"], bias=p.get("bias")))
    return tuple(layers)


def head(chain: tuple[DenseLayer, ...]) -> DenseLayer:
    """The classifier head (features -> logits): the last fully connected layer."""
    return chain[-1]


def tail(chain: tuple[DenseLayer, ...], start: int) -> Callable:
    """The function from the input of ``chain[start]`` to the logits: the layers ``chain[start:]``
    with a ReLU between consecutive ones (``start = len(chain)``: the identity, i.e. from the logits)."""
    layers = chain[start:]

    def apply(h):
        h = jnp.asarray(h, jnp.float32)
        for i, layer in enumerate(layers):
            h = layer(nn.relu(h) if i else h)
        return h

    return apply


def apply_with_first_conv(model: nn.Module, variables: dict, x, train: bool = False):
    """``(outputs, conv1)``: the model's outputs and the output of its first convolution
    (before any normalisation or activation), differentiable w.r.t. ``x``."""
    captured: list = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if not captured and context.method_name == "__call__" and isinstance(context.module, nn.Conv):
            captured.append(out)
        return out

    with nn.intercept_methods(interceptor):
        out = model.apply(variables, x, train=train)
    if not captured:
        raise ConfigError(f"{type(model).__name__} has no convolution: the conv-1 activation term needs one.")
    return out, captured[0]
