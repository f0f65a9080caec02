"""Generator inversion: a generator re-drawn each round plus optimised latents, keeping the
lowest-loss iterate (CMI, Fang et al., IJCAI 2021, "Contrastive Model Inversion for Data-Free
Knowledge Distillation"; the base MTCKI extends).

Matched to zju-vipa/CMI at 9e79fa9, ``datafree/synthesis/contrastive.py``:

- l. 168-176, 274 (``reset_model``): every round the generator's conv/linear weights are re-drawn
  from N(0, 0.02) with zero biases and BatchNorm scales from N(1, 0.02)
  (``generators.reinitialize(..., 'normal')``, ``config.synthesis.reset``);
- l. 268-272: z ~ N(0, I) (nz 256) and sorted random targets; l. 275: one Adam over the generator
  and z, lr ``lr_g`` 1e-3, betas (0.5, 0.999); the generator in train mode (batch statistics);
- l. 244-257, 279: two views of G(z) (pixels): global = ``RandomCrop(pad 4)`` + flip, local =
  ``RandomResizedCrop(scale 0.25-1)`` + flip (``dfkd_jax.augment``), each normalised;
- l. 284-293: on the global view, ``bn * L_bn + oh * CE(t, y) + adv * L_adv`` with the masked KL
  ``-(mask * KL(t || s) summed over classes).mean()`` at T = 1 (``adv_kd_masked`` with
  ``hparams.adv_tau = 1``), the student in eval mode (l. 262);
- l. 215-221, 298-300: the instance embedding: per-sample spatial means of every teacher BN
  layer's input (``InstanceMeanHook``), concatenated over layers, of the global and of the local
  view (with several teachers, concatenated over teachers as well). The reference uses the
  4 stage inputs instead for a ResNet-34 teacher (``datafree_kd.py`` l. 280-281); here every
  teacher uses its BN inputs (a documented deviation for that one teacher). Not in the reference
  (MTCKI, ``dfkd_jax.methods.mtcki``): ``synthesis.embedding='feature'`` embeds each teacher's
  pooled penultimate feature instead (teachers without BatchNorm), and
  ``synthesis.embedding_fusion='mean'`` averages the teachers' embeddings (equal widths) instead
  of concatenating them;
- l. 17-31, 235-236: the head ``Linear(D, D) - ReLU - Linear(D, 256)`` then L2-normalised
  (``head_dim`` 256 from ``datafree_kd.py``), with its own Adam (lr ``lr_g``, betas (0.9, 0.999)),
  kept across rounds (PyTorch ``nn.Linear`` init);
- l. 301-326: ``n_neg`` 4096 rows drawn from the bank (40,960 rows of ``[local ; global]``);
  ``logits = head([local ; bank_local]) @ stop_grad(head([global ; bank_global]))^T / cr_T``
  (cr_T 0.2), cross-entropy with the diagonal as positives, averaged separately over the current
  rows and over the bank rows and summed (the current rows alone while the bank is empty);
  ``loss = cr * L_cr + L_inv`` (cr 0.8). The bank starts as N(0, 1) rows; rows not written yet are
  never drawn (the reference draws among ``[0, ptr)`` until more than 40,960 rows were written;
  at exactly 40,960 its ``ptr`` is back at 0 and it draws none: not reproduced);
- l. 329-333: the lowest-loss iterate's images (pixels, before augmentation) and its
  ``[local ; global]`` embeddings are kept; l. 342-343: they go to the pool and the bank.

``config.synthesis.reset='keep'`` (not CMI's default): the generator is drawn once (N(0, 0.02) as above)
and kept across rounds, each round starting from where the last one ended (its last iterate, with its
BatchNorm running statistics), with new latents, new targets and a new Adam. This is the ``feature_reuse``
switch of the CuDFKD/AdaDFKD authors' CMI (ljrprocc/DataFree, ``datafree/synthesis/contrastive.py``,
``update_G``: ``if not self.feature_reuse: reset_model(self.G)``; off there by default). With CMI's short
settings (5 steps per round) a generator re-drawn every round barely leaves its random init, and without a
bn term (BN-free teachers) nothing else pulls its output towards the data: on the Fashion-MNIST LeNet-5
the student stayed at chance (docs/fashion_mnist.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dfkd_jax import augment
from dfkd_jax import pool as pool_lib
from dfkd_jax.core.optim import optimizer_step
from dfkd_jax.core.state import ModelState, apply_update
from dfkd_jax.ensemble import feature_width
from dfkd_jax.errors import ConfigError
from dfkd_jax.models.generators import initialize
from dfkd_jax.models.layers import dense
from dfkd_jax.synthesis.base import BuildContext, forward, init_best, keep_best, sample_targets
from dfkd_jax.synthesis.inversion import (InversionBase, InversionSpec, adam_like, bn_shapes, common_fields,
                                          metrics_of, objective, pixel_generator)
from dfkd_jax.terms import l2_normalize


class MLPHead(nn.Module):
    """CMI's ``MLPHead``: ``Linear(D, D) - ReLU - Linear(D, dim)``, L2-normalised rows."""

    dim_in: int
    dim: int = 256

    @nn.compact
    def __call__(self, x):
        h = nn.relu(dense(self.dim_in, self.dim_in, name="fc1")(x))
        return l2_normalize(dense(self.dim, self.dim_in, name="fc2")(h))


class CMIState(flax.struct.PyTreeNode):
    head: ModelState | None
    bank: pool_lib.FeatureBank | None
    generator: Any = None  # ``{'params', 'batch_stats'}`` kept across rounds (``reset='keep'``), else None


def contrastive_loss(p_local, p_global, n_current: int, valid, temperature):
    """CMI's L_cr (``contrastive.py`` l. 320-326), with the bank rows beyond ``n_current`` masked by
    ``valid``: rows and columns of invalid bank entries take no part. Scalar."""
    keep = jnp.concatenate([jnp.ones((n_current,), bool), valid])
    logits = p_local @ jax.lax.stop_gradient(p_global).T / temperature
    logits = jnp.where(keep[None, :], logits, -1e9)
    ce = jax.nn.logsumexp(logits, axis=-1) - jnp.diagonal(logits)
    current = jnp.mean(ce[:n_current])
    n_bank = jnp.sum(valid)
    bank = jnp.sum(jnp.where(valid, ce[n_current:], 0.0)) / jnp.maximum(n_bank, 1)
    return current + jnp.where(n_bank > 0, bank, 0.0)


def instance_embedding(tv, source: str, fusion: str):
    """``(B, D)``: per teacher its BN inputs' spatial means (``source='bn_means'``, CMI) or its pooled feature
    (``'feature'``), concatenated over teachers (``fusion='concat'``) or averaged (``'mean'``)."""
    per = [jnp.asarray(p, jnp.float32) for p in (tv.per_bn_means if source == "bn_means" else tv.per_feature)]
    if len(per) == 1:
        return per[0]
    return jnp.mean(jnp.stack(per), axis=0) if fusion == "mean" else jnp.concatenate(per, axis=-1)


@dataclasses.dataclass(eq=False)
class GeneratorInversion(InversionBase):
    generator: Any
    embed_dim: int  # D: the instance embedding's width

    def __post_init__(self):
        self.contrast = self.spec.cr > 0  # without it (CMI's fast setting, cr 0) no head and no bank
        self.keep = self.spec.reset == "keep"  # the generator kept across rounds (module docstring)
        self.scheme = "normal" if self.keep else self.spec.reset
        if self.contrast and self.embed_dim == 0:
            raise ConfigError("CMI's contrastive term embeds the teachers' BatchNorm inputs; these teachers have no "
                              "BatchNorm. Set --config.synthesis.embedding=feature (their pooled features), "
                              "--config.synthesis.cr=0, or choose a BN teacher.")
        self.head = MLPHead(self.embed_dim, self.spec.head_dim) if self.contrast else None

    @property
    def tx(self):
        """One Adam over the generator and z at ``lr_g`` (l. 275); with ``synthesis.lr_z`` set (not CMI's
        default), z takes its own learning rate, as in Fast."""
        if not self.spec.lr_z:
            return adam_like(self.spec)
        return optax.multi_transform({"g": adam_like(self.spec), "z": adam_like(self.spec, lr=self.spec.lr_z)},
                                     lambda p: {"g": jax.tree.map(lambda _: "g", p["g"]), "z": "z"})

    @property
    def tx_head(self):
        """The head's own Adam: lr ``lr_g``, PyTorch's default betas (0.9, 0.999) (l. 236)."""
        return optax.adam(self.spec.lr)

    def init(self, key, aux_key):
        generator = None
        if self.keep:
            variables = initialize(self.generator, jax.random.fold_in(key, 1), self._z0(), init=self.scheme,
                                   train=False)
            generator = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
        if not self.contrast:
            return CMIState(head=None, bank=None, generator=generator)
        hp = self.head.init(key, jnp.zeros((2, self.embed_dim), jnp.float32))["params"]
        head = ModelState(params=hp, batch_stats={}, opt_state=self.tx_head.init(hp))
        bank = pool_lib.init_bank(aux_key, self.spec.bank_size, 2 * self.embed_dim)
        return CMIState(head=head, bank=bank, generator=generator)

    def _z0(self):
        return jnp.zeros((2, self.spec.nz), jnp.float32)

    def begin(self, state, key, round_):
        spec = self.spec
        kg, kz, ky = jax.random.split(key, 3)
        if self.keep:
            variables = state.generator
        else:
            variables = initialize(self.generator, kg, self._z0(), init=self.scheme, train=False)
        z = self.shard(jax.random.normal(kz, (spec.batch_size, spec.nz), jnp.float32))
        params = {"g": variables["params"], "z": z}
        x_like = jnp.zeros((spec.batch_size, *spec.image_shape), jnp.float32)
        carry = {"params": params, "stats": variables.get("batch_stats", {}), "opt": self.tx.init(params),
                 "targets": sample_targets(ky, spec.batch_size, spec.num_classes, True),
                 "best": init_best(x_like, jnp.zeros((spec.batch_size, 2 * self.embed_dim if self.contrast else 0),
                                                   jnp.float32))}
        return state, carry

    def step(self, state: CMIState, carry, pool, ctx, key, progress):
        spec, ens = self.spec, self.ensemble
        kg, kl, kb = jax.random.split(key, 3)
        n = spec.batch_size
        if self.contrast:
            assert state.bank is not None
            bank_rows, valid = pool_lib.bank_draw(state.bank, kb, spec.n_neg)

        def loss_fn(params, head_params):
            x, stats = forward(self.generator, {"params": params["g"], "batch_stats": carry["stats"]}, params["z"],
                               train=True)
            x = self.shard(x)
            x_global = ens.from_pixels(augment.crop_flip(kg, x))
            x_local = ens.from_pixels(augment.resized_crop_flip(kl, x))
            means = self.contrast and spec.embedding == "bn_means"
            inv, parts, tv = objective(spec, ens, self.student, ctx, x_global, x_global, carry["targets"], progress,
                                       with_means=means)
            if not self.contrast:
                return inv, (parts, stats, x, jnp.zeros((n, 0), jnp.float32))
            f_global = instance_embedding(tv, spec.embedding, spec.embedding_fusion)
            f_local = instance_embedding(ens.forward(ctx.t_vars, x_local, with_means=means), spec.embedding,
                                         spec.embedding_fusion)
            cached_local, cached_global = jnp.split(bank_rows, 2, axis=1)
            proj = self.head.apply({"params": head_params},
                                   jnp.concatenate([f_local, cached_local, f_global, cached_global]))
            p_local, p_global = jnp.split(proj, 2)
            cr = contrastive_loss(p_local, p_global, n, valid, spec.cr_temperature)
            total = inv + spec.cr * cr
            embed = jnp.concatenate([f_local, f_global], axis=1)
            return total, ({**parts, "contrast": cr}, stats, x, embed)

        head_params = state.head.params if self.contrast and state.head is not None else None
        (total, (parts, stats, x, embed)), (grads, head_grads) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(carry["params"], head_params)
        best = keep_best(carry["best"], total, x, embed)
        params, opt = optimizer_step(self.tx, grads, carry["opt"], carry["params"])
        carry = {**carry, "params": params, "stats": stats, "opt": opt, "best": best}
        if self.contrast and state.head is not None:
            state = state.replace(head=apply_update(state.head, self.tx_head, head_grads, {}))
        return state, carry, pool, metrics_of(total, parts, best.loss)

    def end(self, state: CMIState, carry, pool, ctx, key):
        best = carry["best"]
        pool = self.push_iterate(pool, ctx, best.x)
        if self.contrast and state.bank is not None:
            state = state.replace(bank=pool_lib.bank_push(state.bank, best.extra))
        if self.keep:
            state = state.replace(generator={"params": carry["params"]["g"], "batch_stats": carry["stats"]})
        return state, carry, pool, {}


def embed_dim(spec: InversionSpec, ctx: BuildContext) -> int:
    """The width of CMI's instance embedding: per teacher its BN inputs' channels (``bn_means``) or its
    pooled feature's width (``feature``), summed over teachers (``concat``) or shared by them (``mean``)."""
    if spec.embedding == "bn_means":
        widths = [sum(layers) for layers in bn_shapes(ctx)]
    else:
        widths = [feature_width(t.model, ctx.meta.input_shape) for t in ctx.teachers]
    if spec.embedding_fusion == "concat":
        return sum(widths)
    if len(set(widths)) > 1:
        raise ConfigError(f"config.synthesis.embedding_fusion='mean' averages the teachers' instance embeddings, "
                          f"but their widths differ ({', '.join(map(str, widths))} for synthesis.embedding="
                          f"{spec.embedding!r}). Use --config.synthesis.embedding_fusion=concat.")
    return widths[0]


from_config = InversionSpec.from_config


def build(spec: InversionSpec, ctx: BuildContext) -> GeneratorInversion:
    return GeneratorInversion(spec, **common_fields(ctx), generator=pixel_generator(spec, ctx, "generator"),
                              embed_dim=embed_dim(spec, ctx))
