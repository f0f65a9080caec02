"""Optimisers and learning-rate schedules from a config section.

Schedules are optax functions of the optimiser's own step count, so they are
evaluated inside the jitted round and never force a recompile. Weight decay is
PyTorch's: ``wd * p`` added to the gradient before SGD momentum or Adam.
"""

from __future__ import annotations

import optax


def schedule(section, total_steps: int) -> optax.Schedule:
    lr = float(section.lr)
    total_steps = max(int(total_steps), 1)
    if section.schedule == "cosine":
        # to lr_min at the end (CMI / Fast: CosineAnnealingLR(eta_min=2e-4) over the run)
        return optax.cosine_decay_schedule(lr, total_steps, alpha=float(section.get("lr_min", 0.0)) / lr)
    if section.schedule == "step":
        # milestones that round to the same step multiply (two milestones, two decays)
        bounds: dict[int, float] = {}
        for f in section.milestones:
            step = max(int(round(f * total_steps)), 1)
            bounds[step] = bounds.get(step, 1.0) * float(section.decay)
        return optax.piecewise_constant_schedule(lr, bounds)
    return optax.constant_schedule(lr)


def make_optimizer(section, total_steps: int) -> optax.GradientTransformation:
    """The optimiser of ``config.generator`` or ``config.student`` for a run of ``total_steps`` updates."""
    lr = schedule(section, total_steps)
    chain = []
    if section.grad_clip:
        chain.append(optax.clip_by_global_norm(float(section.grad_clip)))
    if section.weight_decay:
        chain.append(optax.add_decayed_weights(float(section.weight_decay)))
    if section.optimizer == "sgd":
        chain.append(optax.sgd(lr, momentum=float(section.momentum) or None))
    else:
        chain.append(optax.adam(lr, b1=float(section.b1), b2=float(section.b2)))
    return optax.chain(*chain)
