"""PRE-DFKD's generative memory: training the VAE and replaying pseudo samples from it.

Binici, Aggarwal, Pham, Leman & Mitra, "Robust and Resource-Efficient Data-Free
Knowledge Distillation by Generative Pseudo Replay", AAAI 2022. Instead of
storing past synthetic batches, PRE-DFKD trains a VAE (``dfkd_jax.models.vae.VAE``)
on the novel generator's samples and, when the student needs old samples,
decodes latents that were nudged towards confident, class-balanced teacher
predictions. Both pieces are pure functions, safe under ``jax.jit``.

VAE loss (the memory's training objective), for a batch ``x`` and
``(x_rec, mu, logvar) = VAE(x)`` with ``z = mu + exp(logvar / 2) * eps``::

    L_VAE = mean |x_rec - x| + mean |T(x_rec) - T(x)| + kl_weight * KL(q(z|x) || N(0, I))
    KL    = mean_b sum_d 0.5 * (mu_bd^2 + exp(logvar_bd) - 1 - logvar_bd)

Readings where the paper is not explicit:
  * the two L1 norms are means (over pixels and batch; over classes and
    batch), i.e. PyTorch's ``F.l1_loss`` default reduction;
  * the KL is the closed form for a diagonal Gaussian against N(0, I), summed
    over latent dimensions and averaged over the batch; ``kl_weight`` = 1e-5
    multiplies it (``parts['kl']`` is reported unweighted);
  * ``T(x)`` is a constant target (``stop_gradient``) and ``x`` itself is
    detached: the VAE loss never reaches the novel generator. The gradient of
    ``T(x_rec)`` flows through the (frozen, eval-mode) teacher into the decoder.

Replay (pseudo samples from memory): draw ``z ~ N(0, I)`` of shape ``(n, nz)``,
take ONE Adam step (``optax.adam(z_lr)``, fresh state) on ``z`` against::

    L_z = w_b balance(T(D(z))) + w_oh mean_b one_hot(T(D(z)))
          + mean_d (var_b(z)_d - 1)^2 + mean_d mean_b(z)_d^2

and return ``stop_gradient(D(z'))``. This is PRE-DFKD's ``distillation.py``
(``loss_information_entropy * opt.ie + loss_one_hot * opt.oh`` plus
``F.mse_loss(torch.var(z, 0), 1) + F.mse_loss(torch.mean(z, 0), 0)``): the weights
are the novel generator's (``w_b`` = ie = 5, ``w_oh`` = oh = 1), the two moment
penalties are means over the ``nz`` dimensions (``F.mse_loss``), ``balance`` is
DAFL's information-entropy loss (``log_base`` 10, as the generator's term) and
``one_hot`` the cross-entropy against the teacher's argmax (``dfkd_jax.terms``).
``var_b`` and ``mean_b`` are per latent dimension over the batch, ``var_b`` the
unbiased variance (``torch.var``'s default). The first Adam step is
``z - z_lr * g / (|g| + 1e-8)``, about ``z - z_lr * sign(g)``.

BatchNorm: ``vae_loss`` runs the VAE in train mode and returns the updated running
statistics. ``replay`` decodes (and takes its latent step) in train mode by default
(batch statistics; the running statistics are left alone) or, with ``train=False``,
with the running statistics (PRE-DFKD's ``mem_generator.eval()`` when replaying to
the student).

Sharding: nothing here assumes a device layout. Under ``jax.jit`` with the batch
axis sharded (GSPMD), BatchNorm statistics, the batch moments of ``z`` and
every mean are over the global batch, as on one device. ``n`` and ``nz`` are
shapes and must be static under ``jit``.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dfkd_jax import terms

Array = jax.Array
LogitsFn = Callable[[Array], Array]

__all__ = ["kl_standard_normal", "vae_loss", "latent_moment_penalty", "replay_objective",
           "replay_latents", "replay"]


def kl_standard_normal(mu: Array, logvar: Array) -> Array:
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` summed over dims, averaged over the batch. Scalar."""
    mu, logvar = mu.astype(jnp.float32), logvar.astype(jnp.float32)
    per_sample = 0.5 * jnp.sum(jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar, axis=-1)
    return jnp.mean(per_sample)


def vae_loss(vae: nn.Module, variables: dict, x: Array, key: Array, teacher_logits_fn: LogitsFn,
             kl_weight: float = 1e-5) -> tuple[Array, tuple[Any, dict[str, Array]]]:
    """PRE-DFKD's memory loss on batch ``x``: ``(loss, (new_batch_stats, parts))``.

    ``variables = {'params': ..., 'batch_stats': ...}`` of ``vae``; ``key`` draws
    the reparameterisation noise; ``teacher_logits_fn(images) -> logits`` is a
    differentiable closure over the teacher in eval mode. ``parts`` holds the
    scalars ``reconstruction``, ``teacher`` and ``kl`` (unweighted). For the
    gradient, close over everything but the params::

        grad_fn = jax.grad(lambda p: vae_loss(vae, {**variables, 'params': p}, x, key, T)[0])
    """
    x = jax.lax.stop_gradient(x.astype(jnp.float32))
    (x_rec, mu, logvar), updates = vae.apply(variables, x, key, train=True, mutable=["batch_stats"])
    t_target = jax.lax.stop_gradient(teacher_logits_fn(x))
    reconstruction = jnp.mean(jnp.abs(x_rec - x))
    teacher = jnp.mean(terms.l1(teacher_logits_fn(x_rec), t_target))
    kl = kl_standard_normal(mu, logvar)
    loss = reconstruction + teacher + kl_weight * kl
    parts = {"reconstruction": reconstruction, "teacher": teacher, "kl": kl}
    return loss, (updates["batch_stats"], parts)


def latent_moment_penalty(z: Array) -> Array:
    """``mean_d (var_b(z) - 1)^2 + mean_d mean_b(z)^2`` for ``z`` of shape ``(B, nz)`` (unbiased
    variance; PyTorch's two ``F.mse_loss``). Scalar."""
    z = z.astype(jnp.float32)
    var = jnp.var(z, axis=0, ddof=1)
    mean = jnp.mean(z, axis=0)
    return jnp.mean(jnp.square(var - 1.0)) + jnp.mean(jnp.square(mean))


def _decode(vae: nn.Module, variables: dict, z: Array, train: bool = True) -> Array:
    """``vae.decode(z)`` with train-mode BatchNorm (updated running statistics dropped), or eval mode."""
    if not train:
        images: Array = vae.apply(variables, z, train=False, method="decode")  # type: ignore[assignment]
        return images
    images, _ = vae.apply(variables, z, train=True, method="decode", mutable=["batch_stats"])
    return images


def replay_objective(vae: nn.Module, variables: dict, z: Array, teacher_logits_fn: LogitsFn,
                     balance_log_base: float | None = 10.0, balance_weight: float = 5.0,
                     one_hot_weight: float = 1.0, train: bool = True) -> Array:
    """The latent objective ``L_z(z)`` minimised by the replay step (module docstring). Scalar."""
    t_logits = teacher_logits_fn(_decode(vae, variables, z, train))
    return (balance_weight * terms.balance(t_logits, log_base=balance_log_base)
            + one_hot_weight * jnp.mean(terms.one_hot(t_logits)) + latent_moment_penalty(z))


def replay_latents(vae: nn.Module, variables: dict, key: Array, n: int, nz: int,
                   teacher_logits_fn: LogitsFn, z_lr: float = 0.02,
                   balance_log_base: float | None = 10.0, balance_weight: float = 5.0,
                   one_hot_weight: float = 1.0, train: bool = True) -> Array:
    """``z ~ N(0, I)`` of shape ``(n, nz)`` drawn from ``key``, after one Adam step on ``L_z``. ``(n, nz)``."""
    z = jax.random.normal(key, (n, nz), jnp.float32)
    variables = jax.lax.stop_gradient(variables)
    grad = jax.grad(lambda z_: replay_objective(vae, variables, z_, teacher_logits_fn, balance_log_base,
                                                balance_weight, one_hot_weight, train))(z)
    tx = optax.adam(z_lr)
    updates, _ = tx.update(grad, tx.init(z), z)
    return optax.apply_updates(z, updates)


def replay(vae: nn.Module, variables: dict, key: Array, n: int, nz: int, teacher_logits_fn: LogitsFn,
           z_lr: float = 0.02, balance_log_base: float | None = 10.0, balance_weight: float = 5.0,
           one_hot_weight: float = 1.0, train: bool = True) -> Array:
    """``n`` pseudo samples replayed from the memory: ``stop_gradient(decode(z'))``, ``(n, H, W, C)``.

    ``z'`` is ``replay_latents(...)``; with ``train`` the decoder's BatchNorm uses the
    statistics of these ``n`` samples and leaves the VAE's running stats as they are;
    without, it uses the running statistics.
    """
    z = replay_latents(vae, variables, key, n, nz, teacher_logits_fn, z_lr, balance_log_base, balance_weight,
                       one_hot_weight, train)
    return jax.lax.stop_gradient(_decode(vae, jax.lax.stop_gradient(variables), z, train))
