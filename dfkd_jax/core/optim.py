"""Optimisers and learning-rate schedules from a config section, and the optimiser step.

Schedules are optax functions of the optimiser's own step count, so they are
evaluated inside the jitted round and never force a recompile. Weight decay is
PyTorch's: ``wd * p`` added to the gradient before SGD momentum or Adam.
"""

from __future__ import annotations

import dataclasses

import optax


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """An optimiser and its schedule: the keys of ``config.generator`` / ``config.student`` that describe it."""

    optimizer: str = "adam"  # sgd | adam
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | step
    milestones: tuple[float, ...] = (0.2, 0.4)  # fractions of the run (step schedule)
    decay: float = 0.1
    grad_clip: float = 0.0
    lr_min: float = 0.0  # the cosine schedule's final learning rate

    @classmethod
    def from_section(cls, section) -> "OptimizerSpec":
        return cls(optimizer=str(section.optimizer), lr=float(section.lr), b1=float(section.b1),
                   b2=float(section.b2), momentum=float(section.momentum), weight_decay=float(section.weight_decay),
                   schedule=str(section.schedule), milestones=tuple(float(m) for m in section.milestones),
                   decay=float(section.decay), grad_clip=float(section.grad_clip),
                   lr_min=float(getattr(section, "lr_min", 0.0)))


def schedule(section, total_steps: int) -> optax.Schedule:
    """The learning rate of ``section`` (an ``OptimizerSpec`` or a config section) over ``total_steps``."""
    lr = float(section.lr)
    total_steps = max(int(total_steps), 1)
    if section.schedule == "cosine":
        # to lr_min at the end (CMI / Fast: CosineAnnealingLR(eta_min=2e-4) over the run)
        return optax.cosine_decay_schedule(lr, total_steps, alpha=float(getattr(section, "lr_min", 0.0)) / lr)
    if section.schedule == "step":
        # milestones that round to the same step multiply (two milestones, two decays)
        bounds: dict[int, float] = {}
        for f in section.milestones:
            step = max(int(round(f * total_steps)), 1)
            bounds[step] = bounds.get(step, 1.0) * float(section.decay)
        return optax.piecewise_constant_schedule(lr, bounds)
    return optax.constant_schedule(lr)


def make_optimizer(section, total_steps: int) -> optax.GradientTransformation:
    """The optimiser of ``section`` (an ``OptimizerSpec``, or ``config.generator`` / ``config.student``) for a
    run of ``total_steps`` updates."""
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


def optimizer_step(tx: optax.GradientTransformation, grads, opt_state, params):
    """``(params, opt_state)`` after one step of ``tx``: ``tx.update`` then ``optax.apply_updates``. Every
    update of the package (networks, pixels, latents) is this function."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
