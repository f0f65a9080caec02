"""The synthesiser interface, and what every synthesiser shares.

A synthesiser is one way of making pseudo-samples. The round (``dfkd_jax.engine.round``) is
the same for all of them: *synthesis steps into the pool, student steps from it*::

    synth_state, carry = synth.begin(state.synth, key, round)        # per-round reset
    for i in range(steps):                                             # k synthesis steps
        synth_state, carry, pool, metrics = synth.step(synth_state, carry, pool, ctx, key_i, progress)
    synth_state, carry, pool, metrics = synth.end(synth_state, carry, pool, ctx, key)   # hand over
    for j in range(student_steps):                                     # m student steps
        batch = synth.student_batch(synth_state, carry, pool, ctx, key_j)

- ``init(key, aux_key) -> state``: the persistent state (checkpointed, donated): a generator, a
  meta generator, a contrastive head and its bank, BN-statistic momentum... (``None`` if none);
- ``begin(state, key, round) -> (state, carry)``: the working variables of one round (pixels or
  latents and their optimiser, a fresh generator, the best iterate so far; not checkpointed,
  rounds are atomic) and the persistent state after its per-round changes (Fast's ``reset_l0``);
- ``step(state, carry, pool, ctx, key, progress) -> (state, carry, pool, metrics)``: one jittable
  synthesis step (one optimiser update of whatever it optimises);
- ``end(state, carry, pool, ctx, key) -> (state, carry, pool, metrics)``: what the round hands to
  the pool (the lowest-loss iterate), and updates of the persistent state that happen once per
  round (a meta update, a bank push, BN momentum);
- ``student_batch(state, carry, pool, ctx, key) -> (x, t_logits | None, t_feature | None)``: the
  student's batch in the networks' input space. The default (``draw_from_pool``) draws from the
  pool, augments it on the device and leaves the teacher's logits to the student step (``None``)
  unless the pool stores them and the batch is not augmented;
- ``sample(state, pool, z)``: images for the sample grids; ``nz`` is the width of ``z``.

``ctx`` (``Context``) is what a step may read of the rest of the run: the student's
variables (frozen here), the projector's parameters, the teachers' variables and the round.
Synthesisers with fixed-structure carries (``fixed_carry``: the inversion family) can run their
steps as a Python loop over one jitted step, a ``lax.scan`` or unrolled
(``config.synthesis.loop``); the online generator is always unrolled (its carry is the batch of
the last step).

A kind of synthesiser is a module with ``from_config(config, build_ctx) -> spec`` (a frozen
description, built once) and ``build(spec, build_ctx) -> Synthesiser``, registered by name in
``dfkd_jax.synthesis`` (``register``); ``BuildContext`` is what building may read of the run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from dfkd_jax import augment, augment_zskd
from dfkd_jax import pool as pool_lib
from dfkd_jax.core.state import ModelState
from dfkd_jax.ensemble import Ensemble
from dfkd_jax.errors import ConfigError
from dfkd_jax.models import build_generator
from dfkd_jax.objectives import HParams

# the student's draws from the pool (``config.student.augment``), applied on the device per sample
STUDENT_AUGMENTATIONS: dict[str, Callable | None] = {"none": None, "crop_flip": augment.crop_flip,
                                                      "zskd": augment_zskd.zskd}


class Context(flax.struct.PyTreeNode):
    """What a synthesis step may read of the rest of the run (traced)."""

    student: ModelState
    projector: Any  # projector params or None
    t_vars: tuple  # the teachers' variables
    round: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class BuildContext:
    """What building a synthesiser may read of the run (static): the teachers, the student's module,
    the mesh and the batch sharding constraint, the compute dtype, the student's batch size and the
    run's length, the terms' hyperparameters (built once from the config), the learned projector
    (AdaDFKD) and the pooled-feature widths (teachers', student's)."""

    teachers: tuple  # dfkd_jax.teacher.Teacher, one or more
    ensemble: Ensemble
    student: nn.Module
    mesh: Mesh
    shard: Callable  # the batch sharding constraint
    dtype: Any
    batch_size: int  # the student's batch (train.batch_size)
    rounds: int
    hparams: HParams = HParams()
    projector: nn.Module | None = None
    feature_dims: tuple[int, int] = (0, 0)

    @property
    def meta(self):
        """The first teacher's metadata (classes, input shape, normalisation): the run's."""
        return self.teachers[0].meta


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    """A generator network (``config.generator``: ``arch``, ``nz``, ``ngf``, ``bn_eps``, ``init``)."""

    arch: str
    nz: int
    ngf: int
    bn_eps: float = 1e-5
    init: str = "torch"  # the reference init scheme (dfkd_jax.models.generators.initialize)

    @classmethod
    def from_config(cls, config) -> "GeneratorSpec":
        g = config.generator
        return cls(arch=str(g.arch), nz=int(g.nz), ngf=int(g.ngf), bn_eps=float(g.bn_eps), init=str(g.init))


def make_generator(spec: GeneratorSpec, ctx: BuildContext) -> nn.Module:
    """The generator of ``spec`` for the run's image shape; refused, with what to use, when it makes square
    images and the teachers take ``H != W``."""
    h, w, c = ctx.meta.input_shape
    g = build_generator(spec.arch, nz=spec.nz, ngf=spec.ngf, channels=c, img_size=h if h == w else (h, w),
                        dtype=ctx.dtype, bn_eps=spec.bn_eps, init_scheme=spec.init)
    if h != w and not getattr(g, "rectangular", False):
        raise ConfigError(f"The {spec.arch} generator makes square images; the teacher takes "
                          f"{tuple(ctx.meta.input_shape)}. Use a generator that makes H x W images (dfad_b, "
                          "dfad_b_resize).")
    return g


class Synthesiser(Protocol):
    """What the round calls (``dfkd_jax.engine.round.Round``); see the module docstring."""

    @property
    def steps(self) -> int: ...  # synthesis steps per round

    @property
    def nz(self) -> int: ...  # the width of ``sample``'s latents

    fixed_carry: bool  # True: the carry is a fixed pytree (scan / Python loop possible)

    def init(self, key: jax.Array, aux_key: jax.Array) -> Any: ...

    def begin(self, state: Any, key: jax.Array, round_: jax.Array) -> tuple[Any, Any]: ...

    def step(self, state: Any, carry: Any, pool: Any, ctx: Context, key: jax.Array,
             progress: jax.Array) -> tuple[Any, Any, Any, dict]: ...

    def end(self, state: Any, carry: Any, pool: Any, ctx: Context, key: jax.Array) -> tuple[Any, Any, Any, dict]: ...

    def student_batch(self, state: Any, carry: Any, pool: Any, ctx: Context, key: jax.Array) -> tuple: ...

    def sample(self, state: Any, pool: Any, z: jax.Array) -> jax.Array: ...


class SynthesiserBase:
    """Mixin of every synthesiser with a static description ``spec``: ``steps`` and ``nz`` are the spec's
    (``nz`` 1 when it has none). It adds no dataclass fields, so a synthesiser keeps its own field order."""

    spec: Any
    fixed_carry: bool = True

    @property
    def steps(self) -> int:
        return self.spec.steps

    @property
    def nz(self) -> int:
        return int(getattr(self.spec, "nz", 1))


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


def draw_from_pool(pool, key, batch_size: int, augment: str, ensemble, shard):
    """The student's batch from the pool: drawn uniformly, augmented on the device (``augment``:
    ``'none'`` | ``'crop_flip'``), normalised to the run's input space. Stored logits are used only
    for an un-augmented batch; otherwise ``None`` (the student step asks the teachers)."""
    k_draw, k_aug = jax.random.split(key) if augment != "none" else (key, None)
    pixels, logits = pool_lib.sample(pool, k_draw, batch_size)
    pixels = shard(pixels)
    if augment != "none":
        pixels = STUDENT_AUGMENTATIONS[augment](k_aug, pixels)  # type: ignore[misc]
        logits = None
    return ensemble.from_pixels(pixels), (None if logits is None else shard(logits)), None


def latest_from_pool(pool, ensemble, n: int):
    """The ``n`` images pushed last (oldest first), in the run's input space (sample grids)."""
    idx = (pool.ptr - n + jnp.arange(n)) % pool.size
    return ensemble.from_pixels(pool_lib.decode(pool.x[idx]))


class Best(flax.struct.PyTreeNode):
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
