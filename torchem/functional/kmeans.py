"""Stateless, batched K-means kernels: distances, assignment, Lloyd statistics, k-means++.

``X`` is ``[..., n, D]``, ``centers`` is ``[..., K, D]``; leading shapes broadcast.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["assign", "default_local_trials", "kmeans_plusplus_step", "lloyd_stats", "squared_distances"]


def squared_distances(X: Tensor, centers: Tensor) -> Tensor:
    """Squared Euclidean distances ``[..., n, K]`` by the GEMM expansion
    ``|x|^2 - 2 x.c + |c|^2`` on data centred on the mean of the centres (so float32 data
    far from the origin does not cancel), clamped at zero."""
    dtype = torch.promote_types(X.dtype, centers.dtype)
    X, centers = X.to(dtype), centers.to(dtype)
    ref = centers.mean(-2, keepdim=True)
    xc = X - ref
    cc = centers - ref
    d2 = xc.square().sum(-1, keepdim=True) - 2.0 * (xc @ cc.mT) + cc.square().sum(-1).unsqueeze(-2)
    return d2.clamp_min_(0.0) if not d2.requires_grad else d2.clamp_min(0.0)


def assign(X: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centre of every sample.

    The argmin is taken on the GEMM-expanded distances; the winning distance is then
    recomputed exactly as ``|x - c|^2`` so the reported distances (and the inertia) carry no
    cancellation error.

    Returns:
        ``(labels [..., n] int64, sq_dist [..., n])``.
    """
    labels = squared_distances(X, centers).argmin(-1)
    batch = torch.broadcast_shapes(X.shape[:-2], centers.shape[:-2])
    idx = labels.unsqueeze(-1).expand(*labels.shape, X.shape[-1])
    nearest = torch.gather(centers.expand(*batch, *centers.shape[-2:]), -2, idx)
    return labels, (X - nearest).square().sum(-1)


def lloyd_stats(
    X: Tensor, labels: Tensor, n_clusters: int, sample_weight: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per-cluster weight and weighted sum of the samples, in float64 (additive over chunks).

    Scatter-adds, not a one-hot product: ``n D`` float64 additions instead of an ``n K D``
    float64 GEMM (slow on GPUs, 1/64 of float32's speed on consumer ones), and no
    ``[n, K]`` one-hot matrix.

    Args:
        X: ``[..., n, D]`` samples (leading dimensions broadcast against ``labels``'s).
        labels: ``[..., n]`` cluster of each sample (int64).
        n_clusters: ``K``.
        sample_weight: optional ``[..., n]``.

    Returns:
        ``(counts [..., K], sums [..., K, D])``.
    """
    lead = torch.broadcast_shapes(X.shape[:-2], labels.shape[:-1])
    n, d = X.shape[-2:]
    w = torch.ones((), dtype=torch.float64, device=X.device) if sample_weight is None else sample_weight.double()
    w, labels = w.expand(*lead, n), labels.expand(*lead, n)
    counts = torch.zeros(*lead, n_clusters, dtype=torch.float64, device=X.device).scatter_add_(-1, labels, w)
    xw = X.double() if sample_weight is None else X.double() * sample_weight.double().unsqueeze(-1)
    sums = torch.zeros(*lead, n_clusters, d, dtype=torch.float64, device=X.device)
    sums.scatter_add_(-2, labels.unsqueeze(-1).expand(*lead, n, d), xw.expand(*lead, n, d))
    return counts, sums


def kmeans_plusplus_step(
    X: Tensor,
    closest: Tensor,
    generator: torch.Generator,
    n_local_trials: int,
    sample_weight: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One greedy k-means++ step (Arthur & Vassilvitskii; scikit-learn's greedy variant).

    Draws ``n_local_trials`` candidates with probability proportional to (weighted) squared
    distance to the closest chosen centre and keeps the one that lowers the potential most.

    Args:
        X: ``[B, N, D]`` data (all of it: k-means++ is not a chunked algorithm).
        closest: ``[B, R, N]`` squared distance of each sample to its closest centre so far,
            for ``R`` independent seedings.
        generator: random generator.
        n_local_trials: candidates per step.
        sample_weight: optional ``[B, N]``.

    Returns:
        ``(index [B, R], closest [B, R, N])``: the chosen sample and updated distances.
    """
    b, r, n = closest.shape
    mass = closest.double() if sample_weight is None else closest.double() * sample_weight.double().unsqueeze(1)
    cum = mass.cumsum(-1)
    total = cum[..., -1:]
    u = torch.rand(b, r, n_local_trials, generator=generator, device=generator.device, dtype=torch.float64)
    u = u.to(X.device) * total
    cand = torch.searchsorted(cum, u).clamp_max_(n - 1)  # [B, R, T]
    pts = torch.gather(X.unsqueeze(1).expand(b, r, n, X.shape[-1]), 2, cand.unsqueeze(-1).expand(-1, -1, -1, X.shape[-1]))
    # [B, R, N, T], by blocks of samples: the expansion's temporaries are [block, D]
    d2 = torch.cat([squared_distances(X[:, None, s : s + 2**16], pts) for s in range(0, n, 2**16)], -2)
    new_closest = torch.minimum(closest.unsqueeze(-1), d2)
    pot = new_closest.double() if sample_weight is None else new_closest.double() * sample_weight.double()[:, None, :, None]
    best = pot.sum(-2).argmin(-1)  # [B, R]
    index = torch.gather(cand, -1, best.unsqueeze(-1)).squeeze(-1)
    closest = torch.gather(new_closest, -1, best[:, :, None, None].expand(b, r, n, 1)).squeeze(-1)
    return index, closest


def default_local_trials(n_clusters: int) -> int:
    """scikit-learn's number of greedy k-means++ candidates."""
    return 2 + int(math.log(n_clusters))
