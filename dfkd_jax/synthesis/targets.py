"""Soft targets sampled from the teacher's weights: ZSKD's Dirichlet and soft-targeted synthesis's normal.

Pure functions of the teacher's fully connected weights (``dfkd_jax.models.anatomy``); the
samplers built from them are constants of a run (the teacher is frozen).

ZSKD (Nayak et al., ICML 2019, "Zero-Shot Knowledge Distillation in Deep Networks", Sec. 3;
released code vcl-iisc/ZSKD at 54c855f):
- class similarity ``C_ij = cos(w_i, w_j)`` of the head's class weight vectors (
  ``di_generation/dirichmat.py`` l. 8-9 normalises the columns of the TF ``(in, out)`` weight,
  i.e. the class vectors, and takes ``W^T W``);
- the concentration of class ``k`` is row ``k`` min-max normalised to ``[0, 1]``, times ``beta``,
  plus ``1e-4`` (``cifar_10_impressions_alexnet_Dirch.py`` l. 38-39: ``(sim - min) / (max - min)
  * scale + 0.0001``). ``dirichmat.py`` l. 15 first min-max normalises the whole matrix; an affine
  map of the matrix does not change a row's min-max normalisation, so it is left out;
- ``beta``: the paper's two scales, 1.0 and 0.1, half of the impressions each. In the
  released code the 0.1 scale is applied to the matrix (``dirichmat.py`` l. 18: ``norm1 / 10``)
  *before* the per-row min-max normalisation of the generator script, which undoes it, and
  ``generateDirch`` is called with ``scale=1`` (l. 129; ``#temp=sim*scale`` is commented out at
  l. 37): both halves of the released impressions are drawn with beta 1. We follow the paper;
  ``config.synthesis.dirichlet_betas = (1.0, 1.0)`` reproduces the released code.

Soft-targeted transfer set synthesis (Wang, AAAI 2021; no code released; the reading written here):
- the modelled layer ``l`` is the input of the classifier head (``'penultimate'``: LeNet-5's fc1
  output, the pooled features of the CIFAR networks) or the logits (``'logits'``);
- ``s^l ~ N(mu, Sigma)`` with ``Sigma = D R D``, ``D = sqrt(sigma) I``, ``mu = 0``;
  ``R_ij = cos(w_i, w_j)`` where ``w_i`` are the weights of the layer consuming ``l`` attached to
  unit ``i`` of ``l``: for the penultimate layer the head's weights *leaving* unit ``i`` (column
  ``i`` of PyTorch's ``weight``, length K); for the logits, which no layer consumes, the head's
  weights *entering* class ``i`` (ZSKD's class vectors, so that ``R = C``). Reading: the paper
  says "the weights of the next layer"; the logit case has no next layer;
- ``R`` is a Gram matrix of ``d_l`` vectors of length ``K``, positive semi-definite and of rank
  at most ``K``: samples are ``F z`` with ``F = V sqrt(max(lambda, 0))`` from ``R``'s
  eigendecomposition (a Cholesky factor does not exist when ``d_l > K``);
- the sample passes through the teacher's remaining layers (the head; the modelled activation
  enters the head as is, no ReLU) and ``y_soft = softmax(u / tau)``; for the logit layer
  ``y_soft = softmax(s / tau)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dfkd_jax.models import anatomy


def cosine_similarity_rows(vectors) -> np.ndarray:
    """``(n, n)`` cosine similarities of the rows of ``vectors`` ``(n, d)`` (float64)."""
    v = np.asarray(vectors, np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v @ v.T


def class_similarity(head: anatomy.DenseLayer) -> np.ndarray:
    """ZSKD's class similarity: ``C_ij = cos(w_i, w_j)`` over the head's class weight vectors. ``(K, K)``."""
    return cosine_similarity_rows(head.weight)


def dirichlet_concentration(similarity, beta: float, eps: float = 1e-4) -> np.ndarray:
    """ZSKD's concentrations: each row of ``similarity`` min-max normalised to [0, 1], times
    ``beta``, plus ``eps``. ``(K, K)``; row ``k`` is class ``k``'s."""
    c = np.asarray(similarity, np.float64)
    lo, hi = c.min(axis=1, keepdims=True), c.max(axis=1, keepdims=True)
    return beta * (c - lo) / (hi - lo) + eps


def zskd_concentrations(head: anatomy.DenseLayer, betas=(1.0, 0.1)) -> np.ndarray:
    """``(len(betas) * K, K)``: rows ``b * K + k`` = class ``k`` at ``betas[b]`` (the released code's
    row order: all classes at the first scale, then all at the second)."""
    c = class_similarity(head)
    return np.concatenate([dirichlet_concentration(c, float(b)) for b in betas], axis=0)


def feature_covariance(vectors, sigma: float) -> np.ndarray:
    """Soft-targeted synthesis: ``Sigma = D R D``, ``R`` the cosine similarities of the rows of
    ``vectors`` (``w_i``, one per unit of the modelled layer), ``D = sqrt(sigma) I``."""
    r = cosine_similarity_rows(vectors)
    d = np.sqrt(float(sigma)) * np.eye(r.shape[0])
    return d @ r @ d


def psd_factor(cov) -> np.ndarray:
    """``F`` with ``F F^T = cov`` for a positive semi-definite ``cov`` (eigendecomposition; negative
    rounding-error eigenvalues set to 0)."""
    lam, v = np.linalg.eigh(np.asarray(cov, np.float64))
    return v * np.sqrt(np.clip(lam, 0.0, None))[None, :]


@dataclasses.dataclass(frozen=True, eq=False)
class DirichletTargets:
    """ZSKD: round ``r`` draws its whole batch for row ``r mod (len(betas) K)`` of the concentrations
    (one class and one beta per batch, as the released code's batches; cycling the rows keeps the
    pool balanced over classes and scales while the student learns from it)."""

    concentrations: Any  # (rows, K)

    def __call__(self, key, round_, batch_size: int):
        alpha = jnp.asarray(self.concentrations, jnp.float32)
        row = jnp.asarray(round_, jnp.int32) % alpha.shape[0]
        return jax.random.dirichlet(key, alpha[row], (batch_size,))


@dataclasses.dataclass(frozen=True, eq=False)
class NormalTargets:
    """Soft-targeted synthesis: ``y = softmax(tail(F z) / tau)``, ``z ~ N(0, I)``."""

    factor: Any  # (d, d), F F^T = Sigma
    tail: Callable  # the modelled layer's activation -> logits
    tau: float

    def __call__(self, key, round_, batch_size: int):
        f = jnp.asarray(self.factor, jnp.float32)
        s = jax.random.normal(key, (batch_size, f.shape[1]), jnp.float32) @ f.T
        return jax.nn.softmax(self.tail(s) / self.tau, axis=-1)


def zskd_sampler(chain, betas) -> DirichletTargets:
    return DirichletTargets(zskd_concentrations(anatomy.head(chain), betas).astype(np.float32))


def normal_sampler(chain, layer: str, sigma: float, tau: float) -> NormalTargets:
    """The sampler of the modelled ``layer`` (``'penultimate'``: the head's input; ``'logits'``)."""
    head = anatomy.head(chain)
    if layer == "penultimate":
        vectors, tail = np.asarray(head.kernel), anatomy.tail(chain, len(chain) - 1)
    elif layer == "logits":
        vectors, tail = np.asarray(head.weight), anatomy.tail(chain, len(chain))
    else:
        raise ValueError(f"layer must be 'penultimate' or 'logits', not {layer!r}")
    factor = psd_factor(feature_covariance(vectors, sigma)).astype(np.float32)
    return NormalTargets(factor=factor, tail=tail, tau=float(tau))
