"""The synthesiser interface, and what every synthesiser shares.

A synthesiser is one way of making pseudo-samples. The round (``dfkd_jax.engine.round``) is
the same for all of them: *synthesis steps into the pool, student steps from it*::

    carry = synth.begin(state.synth, key)                       # per-round reset
    for i in range(synth.steps):                                # k synthesis steps
        synth_state, carry, pool, metrics = synth.step(synth_state, carry, pool, ctx, key_i, progress)
    synth_state, carry, pool, metrics = synth.end(synth_state, carry, pool, ctx, key)   # hand over
    for j in range(student_steps):                              # m student steps
        batch = synth.student_batch(synth_state, carry, pool, ctx, key_j)

- ``init(key, aux_key) -> state``: the persistent state (checkpointed, donated): a generator, a
  meta generator, a contrastive head and its bank, BN-statistic momentum... (``None`` if none);
- ``begin(state, key) -> carry``: the working variables of one round (pixels or latents and
  their optimiser, a fresh generator, the best iterate so far); not checkpointed, rounds are atomic;
- ``step``: one jitted synthesis step (one optimiser update of whatever it optimises);
- ``end``: what the round hands to the pool (the lowest-loss iterate), and updates of the
  persistent state that happen once per round (a meta update, a bank push, BN momentum);
- ``student_batch(...) -> (x, t_logits | None, t_feature | None)``: the student's batch in the
  networks' input space. The default (``draw_from_pool``) draws from the pool, augments it on
  the device and leaves the teacher's logits to the student step (``None``) unless the pool
  stores them and the batch is not augmented;
- ``sample(state, pool, z)``: images for the sample grids.

``ctx`` (``Context``) is what a step may read of the rest of the run: the student's
variables (frozen here), the projector's parameters, the teachers' variables and the round.
Synthesisers with fixed-structure carries (the inversion family) can run their steps as a
Python loop over one jitted step, a ``lax.scan`` or unrolled (``config.synthesis.loop``);
the online generator is always unrolled (its carry is the batch of the last step).
"""

from __future__ import annotations

from typing import Any, Protocol

import flax
import jax
import jax.numpy as jnp

from dfkd_jax import augment as augment_lib
from dfkd_jax import pool as pool_lib
from dfkd_jax.engine.state import ModelState


@flax.struct.dataclass
class Context:
    student: ModelState
    projector: Any  # projector params or None
    t_vars: tuple  # the teachers' variables
    round: jax.Array


class Synthesiser(Protocol):
    steps: int
    fixed_carry: bool  # True: the carry is a fixed pytree (scan / Python loop possible)

    def init(self, key, aux_key) -> Any: ...

    def begin(self, state, key) -> Any: ...

    def step(self, state, carry, pool, ctx: Context, key, progress) -> tuple: ...

    def end(self, state, carry, pool, ctx: Context, key) -> tuple: ...

    def student_batch(self, state, carry, pool, ctx: Context, key) -> tuple: ...

    def sample(self, state, pool, z) -> jax.Array: ...


class SynthesiserBase:
    """Mixin of every synthesiser with a static description ``spec``: ``steps`` is the spec's (the
    synthesis steps per round). It adds no dataclass fields, so a synthesiser keeps its own field order."""

    spec: Any

    @property
    def steps(self) -> int:
        return self.spec.steps


def forward(model, variables: dict, x, train: bool):
    """``(outputs, new_batch_stats)`` for any of our models (batch statistics moved in train mode)."""
    if train and "batch_stats" in variables:
        out, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return out, upd["batch_stats"]
    return model.apply(variables, x, train=train), variables.get("batch_stats", {})


def to_input_space(ensemble, y, output_space: str):
    """A generator's output ``y`` in the run's input space, by the generator's ``output_space``:
    ``'pixels'`` in [0, 1] are normalised with the run's constants (``ensemble.from_pixels``);
    ``'tanh'`` outputs in [-1, 1] are the pixels ``(y + 1) / 2`` (DFAD's GeneratorB: with its
    mean = std = 0.5 normalisation this is ``y`` itself); ``'standardized'`` outputs are used as
    they are."""
    if output_space == "pixels":
        return ensemble.from_pixels(y)
    if output_space == "tanh":
        return ensemble.from_pixels((y + 1.0) * 0.5)
    if output_space == "standardized":
        return y
    raise ValueError(f"Unknown generator output space {output_space!r} (pixels | tanh | standardized).")


def apply_update(ms: ModelState, tx, grads, batch_stats) -> ModelState:
    updates, opt_state = tx.update(grads, ms.opt_state, ms.params)
    params = jax.tree.map(lambda p, u: p + u, ms.params, updates)
    return ModelState(params=params, batch_stats=batch_stats, opt_state=opt_state)


def draw_from_pool(pool, key, batch_size: int, augment: str, ensemble, shard):
    """The student's batch from the pool: drawn uniformly, augmented on the device (``augment``:
    ``'none'`` | ``'crop_flip'``), normalised to the run's input space. Stored logits are used only
    for an un-augmented batch; otherwise ``None`` (the student step asks the teachers)."""
    k_draw, k_aug = jax.random.split(key) if augment != "none" else (key, None)
    pixels, logits = pool_lib.sample(pool, k_draw, batch_size)
    pixels = shard(pixels)
    if augment != "none":
        pixels = augment_lib.AUGMENTATIONS[augment](k_aug, pixels)
        logits = None
    return ensemble.from_pixels(pixels), (None if logits is None else shard(logits)), None


def latest_from_pool(pool, ensemble, n: int):
    """The ``n`` images pushed last (oldest first), in the run's input space (sample grids)."""
    idx = (pool.ptr - n + jnp.arange(n)) % pool.size
    return ensemble.from_pixels(pool_lib.decode(pool.x[idx]))


@flax.struct.dataclass
class Best:
    """The lowest-loss iterate of a round so far (CMI's ``best_cost``/``best_inputs``)."""

    loss: jax.Array
    x: jax.Array
    extra: Any = None  # e.g. CMI's embeddings of that iterate


def init_best(x_like, extra_like=None) -> Best:
    return Best(loss=jnp.asarray(jnp.inf, jnp.float32), x=jnp.zeros_like(x_like),
                extra=None if extra_like is None else jax.tree.map(jnp.zeros_like, extra_like))


def keep_best(best: Best, loss, x, extra=None) -> Best:
    """``best`` replaced by ``(loss, x, extra)`` where ``loss`` is strictly lower (the reference's
    ``if best_cost > loss.item()``: ties keep the earlier iterate). ``x`` is the iterate the loss
    was computed on, i.e. *before* that step's update."""
    better = loss < best.loss
    pick = lambda new, old: jnp.where(better, jax.lax.stop_gradient(new), old)  # noqa: E731
    return Best(loss=jnp.where(better, loss, best.loss), x=pick(x, best.x),
                extra=None if extra is None else jax.tree.map(pick, extra, best.extra))


def sample_targets(key, batch_size: int, num_classes: int, sort: bool):
    """Random class targets ``randint(0, K)``; sorted for CMI / ADI (``targets.sort()``, "for better
    visualization"), unsorted for Fast."""
    y = jax.random.randint(key, (batch_size,), 0, num_classes)
    return jnp.sort(y) if sort else y
