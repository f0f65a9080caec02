"""Synthesisers: the ways of making pseudo-samples (``config.synthesis.kind``), and their registry.

- ``online`` (``online.py``): one persistent generator updated every round (DFAD ... PRE-DFKD);
- ``pixels`` (``pixels.py``): the batch itself is the parameter (DeepInversion / ADI);
- ``generator`` (``generator_inversion.py``): a generator re-drawn each round plus optimised
  latents, the lowest-loss iterate kept (CMI);
- ``meta`` (``meta.py``): a generator kept across rounds, meta-updated after a few inner steps (Fast);
- ``soft_pixels`` (``soft_pixels.py``): the batch optimised toward soft targets sampled from the
  teacher's weights (``targets.py``: ZSKD's Dirichlet, soft-targeted synthesis's normal);
- a transfer set (``config.synthesis.transfer_set``, ``dfkd_jax.transfer``): no synthesis at all,
  the pool is a stored set.

A kind is a module (or any object) with ``from_config(config, ctx) -> spec`` and
``build(spec, ctx) -> Synthesiser`` (``base.BuildContext``, ``base.Synthesiser``); ``register``
adds one. The spec is built once, from the config, when the run is built; nothing after that reads
the config. How to add a kind is in ``docs/architecture.md``.
"""

from __future__ import annotations

from typing import Any, Protocol

from dfkd_jax.errors import ConfigError
from dfkd_jax.synthesis import generator_inversion, meta, online, pixels, soft_pixels
from dfkd_jax.synthesis.base import BuildContext, Synthesiser


class Kind(Protocol):
    """A kind of synthesiser: its spec from the config, and the synthesiser from its spec."""

    def from_config(self, config, ctx: BuildContext) -> Any: ...

    def build(self, spec: Any, ctx: BuildContext) -> Synthesiser: ...


REGISTRY: dict[str, Kind] = {"online": online, "pixels": pixels, "generator": generator_inversion, "meta": meta,
                             "soft_pixels": soft_pixels}


def register(name: str, kind: Kind) -> None:
    """Make ``config.synthesis.kind=name`` build synthesisers with ``kind`` (a module or object with
    ``from_config`` and ``build``)."""
    REGISTRY[name] = kind


def kinds() -> tuple[str, ...]:
    """The registered kinds, in registration order."""
    return tuple(REGISTRY)


def get(name: str) -> Kind:
    if name not in REGISTRY:
        raise ConfigError(f"config.synthesis.kind must be one of {', '.join(REGISTRY)}, not {name!r}.")
    return REGISTRY[name]


def spec_from_config(config, ctx: BuildContext) -> tuple[str, Any]:
    """``(kind, spec)`` of the run's synthesiser; a transfer-set run's kind is ``'transfer_set'`` (its spec the
    student's pool draw: ``(augment, batch_size)``)."""
    if config.synthesis.transfer_set:
        return "transfer_set", (str(config.student.augment), int(config.train.batch_size))
    name = str(config.synthesis.kind)
    return name, get(name).from_config(config, ctx)


def build(kind: str, spec: Any, ctx: BuildContext) -> Synthesiser:
    """The synthesiser of ``(kind, spec)`` (``spec_from_config``) for the run of ``ctx``."""
    if kind == "transfer_set":
        from dfkd_jax.transfer import TransferSetSource  # imports tensorflow_datasets: only for transfer-set runs
        augment, batch_size = spec
        return TransferSetSource(student=ctx.student, ensemble=ctx.ensemble, shard=ctx.shard, augment=augment,
                                 batch_size=batch_size)
    return get(kind).build(spec, ctx)
