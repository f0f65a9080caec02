"""Synthesisers: the ways of making pseudo-samples (``config.synthesis.kind``).

- ``online`` (``online.py``): one persistent generator updated every round (DFAD ... PRE-DFKD);
- ``pixels`` (``pixels.py``): the batch itself is the parameter (DeepInversion / ADI);
- ``generator`` (``generator_inversion.py``): a generator re-drawn each round plus optimised
  latents, the lowest-loss iterate kept (CMI);
- ``meta`` (``meta.py``): a generator kept across rounds, meta-updated after a few inner steps (Fast);
- ``soft_pixels`` (``soft_pixels.py``): the batch optimised toward soft targets sampled from the
  teacher's weights (``targets.py``: ZSKD's Dirichlet, soft-targeted synthesis's normal);
- a transfer set (``config.synthesis.transfer_set``, ``dfkd_jax.transfer``): no synthesis at all,
  the pool is a stored set.

The interface is in ``base.py``; how to add one is in ``docs/architecture.md``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dfkd_jax import objectives
from dfkd_jax.errors import ConfigError

KINDS = ("online", "pixels", "generator", "meta", "soft_pixels")


def inversion_spec(config, teacher_meta):
    from dfkd_jax.models.generators import INIT_SCHEMES
    from dfkd_jax.synthesis.inversion import InversionSpec
    s = config.synthesis
    if str(s.reset) not in (*INIT_SCHEMES, "keep"):
        raise ConfigError(f"Unknown --config.synthesis.reset={s.reset!r}: the generator is re-drawn every round by one "
                          f"of {', '.join(INIT_SCHEMES)}, or drawn once and kept across rounds with 'keep'.")
    return InversionSpec(
        steps=int(config.generator.steps), batch_size=int(s.batch_size or config.train.batch_size),
        terms=tuple((k, float(v)) for k, v in config.generator.terms.items()),
        hparams=objectives.HParams.from_config(config), num_classes=int(teacher_meta.num_classes),
        image_shape=tuple(teacher_meta.input_shape), rounds=int(config.train.rounds), lr=float(config.generator.lr),
        b1=float(config.generator.b1), b2=float(config.generator.b2), lr_z=float(s.lr_z), nz=int(config.generator.nz),
        student_mode=str(config.generator.student_mode), pool_logits=bool(config.student.pool_logits),
        cr=float(s.cr), cr_temperature=float(s.cr_temperature), bank_size=int(s.bank_size), n_neg=int(s.n_neg),
        head_dim=int(s.head_dim), embedding=str(s.embedding), embedding_fusion=str(s.embedding_fusion),
        reset=str(s.reset), meta=str(s.meta), reptile_scale=float(s.reptile_scale),
        bn_momentum=float(s.bn_momentum), warmup=int(s.warmup), reset_l0_round=int(s.reset_l0_round))


def _bn_shapes(distiller):
    """Per teacher, per BN call: the channel count (from shapes only)."""
    from dfkd_jax.bn_capture import apply_with_bn_stats
    shape = distiller.teacher.meta.input_shape
    out = []
    for t in distiller.teachers:
        _, stats = jax.eval_shape(lambda v: apply_with_bn_stats(t.model, v, jnp.zeros((2, *shape)), train=False),
                                  t.variables)
        out.append(tuple(int(s[0].shape[-1]) for s in stats))
    return tuple(out)


def _embed_dim(spec, distiller) -> int:
    """The width of CMI's instance embedding: per teacher its BN inputs' channels (``bn_means``) or its
    pooled feature's width (``feature``), summed over teachers (``concat``) or shared by them (``mean``)."""
    if spec.embedding == "bn_means":
        widths = [sum(layers) for layers in _bn_shapes(distiller)]
    else:
        from dfkd_jax.engine.distiller import _feature_width
        widths = [_feature_width(t.model, distiller.teacher.meta.input_shape) for t in distiller.teachers]
    if spec.embedding_fusion == "concat":
        return sum(widths)
    if len(set(widths)) > 1:
        raise ConfigError(f"config.synthesis.embedding_fusion='mean' averages the teachers' instance embeddings, "
                          f"but their widths differ ({', '.join(map(str, widths))} for synthesis.embedding="
                          f"{spec.embedding!r}). Use --config.synthesis.embedding_fusion=concat.")
    return widths[0]


def build_synthesiser(config, distiller, dtype):
    """The synthesiser of ``config`` for ``distiller`` (its teachers, student, mesh)."""
    from dfkd_jax.models import build_generator
    kind = str(config.synthesis.kind)
    if kind not in KINDS:
        raise ConfigError(f"config.synthesis.kind must be one of {', '.join(KINDS)}, not {kind!r}.")
    meta = distiller.teacher.meta
    h, w, c = meta.input_shape
    common = dict(student=distiller.student, ensemble=distiller.ensemble, shard=distiller.shard)
    if config.synthesis.transfer_set:
        from dfkd_jax.transfer import TransferSetSource
        return TransferSetSource(augment=str(config.student.augment), batch_size=int(config.train.batch_size),
                                 **common)

    def generator():
        g = build_generator(config.generator.arch, nz=config.generator.nz, ngf=config.generator.ngf, channels=c,
                            img_size=h if h == w else (h, w), dtype=dtype, bn_eps=float(config.generator.bn_eps),
                            init_scheme=str(config.generator.init))
        if h != w and not getattr(g, "rectangular", False):
            raise ConfigError(f"The {config.generator.arch} generator makes square images; the teacher takes "
                              f"{tuple(meta.input_shape)}. Use a generator that makes H x W images (dfad_b, "
                              "dfad_b_resize).")
        return g

    if kind == "online":
        from dfkd_jax.engine import optim
        from dfkd_jax.synthesis.online import OnlineGenerator, OnlineSpec
        g = generator()
        needs = objectives.needs(dict(config.generator.terms), objectives.GENERATOR_TERMS)
        spec = OnlineSpec(
            steps=int(config.generator.steps), student_batch=str(config.student.batch),
            batch_size=int(config.train.batch_size), nz=int(config.generator.nz),
            terms=tuple((k, float(v)) for k, v in config.generator.terms.items()),
            hparams=objectives.HParams.from_config(config), rounds=int(config.train.rounds),
            ramps=tuple((k, tuple(map(float, v))) for k, v in config.generator.ramps.items()),
            output_space=g.output_space, student_mode=str(config.generator.student_mode),
            generator_mode=str(config.student.generator_mode),
            queue_size=int(config.hparams.r2m_queue_size) if "queue" in needs else 0,
            queue_dim=distiller.feature_dims[0], student_has_steps=int(config.student.steps) > 0)
        tx = optim.make_optimizer(config.generator, int(config.train.rounds) * config.generator.steps)
        synth = OnlineGenerator(spec, g, tx=tx, init_model=distiller._init_model, projector=distiller.projector,
                                **common)
        return synth
    spec = inversion_spec(config, meta)
    from dfkd_jax.engine import sharding
    sharding.check_batch_size(spec.batch_size, distiller.mesh, "synthesis.batch_size")
    pool_args = dict(augment=str(config.student.augment), student_batch_size=int(config.train.batch_size))
    if kind == "pixels":
        from dfkd_jax.synthesis.pixels import PixelInversion
        return PixelInversion(spec, **common, **pool_args)
    if kind == "soft_pixels":
        from dfkd_jax.synthesis.soft_pixels import SoftTargetPixels, target_sampler
        return SoftTargetPixels(spec, targets=target_sampler(config, distiller.teachers[0]),
                                pixel_init=str(config.synthesis.pixel_init), **common, **pool_args)
    g = generator()
    if g.output_space != "pixels":
        raise ConfigError(f"The {kind} synthesiser augments the generator's images in pixel space; generator "
                          f"{config.generator.arch!r} does not output pixels. Use generator.arch='cmi' or 'large'.")
    if kind == "generator":
        from dfkd_jax.synthesis.generator_inversion import GeneratorInversion
        return GeneratorInversion(spec, generator=g, embed_dim=_embed_dim(spec, distiller), **common, **pool_args)
    from dfkd_jax.synthesis.meta import MetaGenerator
    return MetaGenerator(spec, generator=g, bn_shapes=_bn_shapes(distiller), **common, **pool_args)
