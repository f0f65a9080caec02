"""Capture the input statistics of every BatchNorm of a Flax model, without editing it.

DeepInversion's BN prior (``dfkd_jax.terms.bn_stats``) compares, for every BN
layer of the teacher, the mean and biased variance of the layer's *input* on
the synthetic batch with the layer's running statistics. PyTorch code does this
with forward hooks; here ``flax.linen.intercept_methods`` wraps every
``nn.BatchNorm.__call__`` during ``model.apply`` (every BN of the models is a
``flax.linen.BatchNorm`` made by ``dfkd_jax.models.layers.batch_norm``).

For each BN call, in call order, the interceptor records

    (batch_mean, batch_var, running_mean, running_var)

* ``batch_mean``/``batch_var``: mean and biased (1/n) variance of the input over
  every axis except the layer's feature axis (``module.axis``, -1 for NHWC and
  for (B, D) inputs), computed in float32 with the two-pass formula
  ``mean((x - mean)^2)``. They are differentiable w.r.t. the input, hence w.r.t.
  the image / generator.
* ``running_mean``/``running_var``: the layer's ``batch_stats`` ``mean``/``var``
  read *before* the call (so with ``train=True`` and a mutable
  ``batch_stats`` they are the values before this batch's update), wrapped in
  ``stop_gradient`` as the reference reads ``running_mean.data``.

Global batch: under ``jax.jit`` with the batch sharded over devices the means
are over the global batch (XLA inserts the cross-device reductions). Inside
``shard_map``/``pmap`` pass ``axis_name`` to average the per-device statistics
over that axis (equal per-device batch sizes assumed); a BN built with its own
``axis_name`` (cross-replica BN) is reduced over that axis by default.

Limitations: a BN ``mask=`` argument is ignored for the captured statistics;
BNs inside ``nn.scan``/``nn.remat``-lifted bodies would record values of an
inner trace (none of this library's models do that).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

BNStats = tuple[jax.Array, ...]  # (batch mean, batch var, running mean, running var[, per-sample means])

__all__ = ["apply_with_bn_stats", "input_moments"]


def input_moments(x: jax.Array, feature_axes: Any = -1,
                  axis_name: str | None = None) -> tuple[jax.Array, jax.Array]:
    """Mean and biased variance of ``x`` over every axis except ``feature_axes``.

    With ``axis_name`` (inside ``shard_map``/``pmap``) the statistics are
    averaged over that mapped axis (equal shard sizes assumed).
    """
    x = jnp.asarray(x).astype(jnp.float32)
    if isinstance(feature_axes, int):
        feature_axes = (feature_axes,)
    feature_axes = tuple(a % x.ndim for a in feature_axes)
    red = tuple(a for a in range(x.ndim) if a not in feature_axes)
    mean = jnp.mean(x, axis=red)
    if axis_name is not None:
        mean = jax.lax.pmean(mean, axis_name)
    shape = [1 if a in red else x.shape[a] for a in range(x.ndim)]
    var = jnp.mean(jnp.square(x - mean.reshape(shape)), axis=red)
    if axis_name is not None:
        var = jax.lax.pmean(var, axis_name)
    return mean, var


def apply_with_bn_stats(model: nn.Module, variables, x, train: bool = False, *,
                        axis_name: str | None = None, per_sample_means: bool = False,
                        **kw) -> tuple[Any, list[BNStats]]:
    """``model.apply(variables, x, train=train, **kw)`` plus the BN input statistics.

    Returns ``(outputs, stats)`` where ``outputs`` is exactly what ``apply``
    returns (e.g. ``(logits, aux)``, or ``((logits, aux), updates)`` when
    ``mutable=[...]`` is passed) and ``stats`` is a list with one
    ``(batch_mean, batch_var, running_mean, running_var)`` per
    ``nn.BatchNorm`` call, in call order, ready for ``terms.bn_stats``.
    Differentiable w.r.t. ``x``; usable inside ``jax.jit`` (the list is built
    at trace time). During ``init`` the running statistics do not exist before
    the first call; they are then read after it.

    ``per_sample_means``: each record gets a fifth entry, the input's mean over every
    axis but the batch and feature axes, ``(B, C)`` (CMI's ``InstanceMeanHook``:
    ``input[0].mean([2, 3])``, the instance embedding of its contrastive term).
    """
    stats: list[BNStats] = []

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if not (isinstance(module, nn.BatchNorm) and context.method_name == "__call__"):
            return next_fun(*args, **kwargs)
        inp = args[0] if args else kwargs["x"]
        name = axis_name if axis_name is not None else getattr(module, "axis_name", None)
        mean, var = input_moments(inp, module.axis, name)
        has_running = module.has_variable("batch_stats", "mean")
        if has_running:
            rmean = module.get_variable("batch_stats", "mean")
            rvar = module.get_variable("batch_stats", "var")
        out = next_fun(*args, **kwargs)
        if not has_running:
            rmean = module.get_variable("batch_stats", "mean")
            rvar = module.get_variable("batch_stats", "var")
        record = (mean, var, jax.lax.stop_gradient(jnp.asarray(rmean, jnp.float32)),
                  jax.lax.stop_gradient(jnp.asarray(rvar, jnp.float32)))
        if per_sample_means:
            x32 = jnp.asarray(inp).astype(jnp.float32)
            feat = module.axis % x32.ndim
            record = record + (jnp.mean(x32, axis=tuple(a for a in range(1, x32.ndim) if a != feat)),)
        stats.append(record)
        return out

    with nn.intercept_methods(interceptor):
        outputs = model.apply(variables, x, train=train, **kw)
    return outputs, stats
