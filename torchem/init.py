"""Batched initialisation: k-means++, Lloyd refinement, random responsibilities, random data
points. Every routine works on ``B`` problems and ``R`` restarts at once, on the data's device,
and draws its randomness from one ``torch.Generator`` so a ``random_state`` reproduces it."""

from __future__ import annotations

import torch
from torch import Tensor

from ._utils import rand
from .data import TensorSource
from .em import Family, accumulate
from .functional.kmeans import default_local_trials, kmeans_plusplus_step, lloyd_stats, squared_distances

__all__ = [
    "Lloyd",
    "gather_rows",
    "kmeans_plusplus",
    "labelled_mass",
    "lloyd",
    "random_distinct_indices",
    "random_resp",
    "seeded_centers",
    "seeded_kmeans_plusplus",
]


def gather_rows(X: Tensor, index: Tensor) -> Tensor:
    """``X [B, N, D]``, ``index [B, R, K]`` -> ``[B, R, K, D]``."""
    b, r, k = index.shape
    flat = index.reshape(b, r * k, 1).expand(b, r * k, X.shape[-1])
    return torch.gather(X, 1, flat).reshape(b, r, k, X.shape[-1])


def _closest(X: Tensor, seeds: Tensor) -> Tensor:
    """``[B, R, N]`` squared distance of each row of ``X [B, N, D]`` to its nearest seed of
    ``seeds [B, R, m, D]``, in blocks of rows (k-means++'s potential)."""
    n = X.shape[1]
    return torch.cat([squared_distances(X[:, None, s : s + 2**16], seeds).amin(-1) for s in range(0, n, 2**16)], -1)


def kmeans_plusplus(
    X: Tensor,
    n_clusters: int,
    n_seeds: int,
    generator: torch.Generator,
    *,
    sample_weight: Tensor | None = None,
    n_local_trials: int | None = None,
) -> Tensor:
    """Greedy k-means++ seeding of ``n_seeds`` independent restarts for each problem.

    Args:
        X: ``[B, N, D]`` data.
        n_clusters: ``K``.
        n_seeds: ``R`` restarts.
        generator: random generator.
        sample_weight: optional ``[B, N]`` weights.
        n_local_trials: candidates per step; ``2 + log(K)`` by default.

    Returns:
        ``[B, R, K]`` indices of the chosen samples.
    """
    b, n, _ = X.shape
    trials = n_local_trials or default_local_trials(n_clusters)
    mass = torch.ones(b, n, dtype=torch.float64, device=X.device) if sample_weight is None else sample_weight.double()
    cum = mass.cumsum(-1).unsqueeze(1)  # [B, 1, N]
    u = rand(generator, b, n_seeds, 1, device=X.device) * cum[..., -1:]
    first = torch.searchsorted(cum.expand(b, n_seeds, n).contiguous(), u).squeeze(-1).clamp_max_(n - 1)  # [B, R]
    indices = [first]
    seeds = gather_rows(X, first.unsqueeze(-1))
    closest = _closest(X, seeds)  # [B, R, N]
    for _ in range(1, n_clusters):
        index, closest = kmeans_plusplus_step(X, closest, generator, trials, sample_weight)
        indices.append(index)
    return torch.stack(indices, dim=-1)


class Lloyd(Family):
    """K-means as a family of the driver: the hard-EM limit of a Gaussian mixture with equal
    weights and covariances ``eps I``, where ``log p_k(x) = -|x - c_k|^2`` up to scale, so the
    classification E-step is the nearest-centre assignment and the M-step is the mean of each
    cluster. Parameters: ``{"centers": [B, R, K, D]}``; statistics ``counts [B, R, K]`` and
    ``sums [B, R, K, D]`` (float64). :class:`torchem.KMeans` adds Hamerly's bounded pass and
    the re-seeding of empty clusters."""

    objective = "inertia"

    def prepare(self, params, precise=False):
        return {"centers": params["centers"].double() if precise else params["centers"]}

    def log_prob(self, X, prepared):
        return squared_distances(X, prepared["centers"]).neg_(), None

    def log_weights(self, params):
        c = params["centers"]
        return c.new_zeros(c.shape[:-1])

    def stats(self, X, resp, prepared, aux, sample_weight):
        """The responsibilities of K-means are one-hot (it is only run with the classification
        E-step): each sample is scatter-added to its cluster (:func:`lloyd_stats`) instead of
        a float64 product with the one-hot matrix."""
        counts, sums = lloyd_stats(X, resp.argmax(-1), resp.shape[-1], sample_weight)
        return {"counts": counts, "sums": sums}

    def m_step(self, stats, params):
        """The mean of each cluster; a cluster without points keeps its centre."""
        counts, old = stats["counts"], params["centers"]
        new = stats["sums"] / counts.clamp_min(1e-300).unsqueeze(-1)
        failed = torch.zeros(counts.shape[:-1], dtype=torch.bool, device=counts.device)
        return {"centers": torch.where((counts > 0).unsqueeze(-1), new, old.double())}, failed


def _label_weight(source: TensorSource) -> Tensor:
    """``[B, N]`` float64: each labelled row's weight (a labelled row of weight 0 weighs
    nothing, as if absent), zero for the unlabelled rows."""
    mass = (source.labels >= 0).double()
    if source.sample_weight is not None:
        mass = mass * source.sample_weight.to(mass.device, torch.float64)
    return mass


def labelled_mass(source: TensorSource, k: int) -> Tensor:
    """``[B, K]`` float64 (weighted) count of the rows ``source`` labels with each class (a
    labelled row of weight 0 counts nothing, as if absent)."""
    labels = source.labels
    counts = torch.zeros(labels.shape[0], k, dtype=torch.float64, device=labels.device)
    return counts.scatter_add_(1, labels.clamp_min(0), _label_weight(source))


def seeded_centers(source: TensorSource, centers: Tensor) -> Tensor:
    """``centers [B, R, K, D]`` with every cluster that has labelled rows (of positive weight)
    in ``source`` moved to their (weighted) mean, as seeded k-means starts (Basu et al., 2002);
    the others as given."""
    one = torch.nn.functional.one_hot(source.labels.clamp_min(0), centers.shape[-2]).double()
    one *= _label_weight(source).unsqueeze(-1)  # [B, n, K]: each labelled row's weight at its class
    counts, sums = one.sum(1), one.mT @ source.X.double()  # [B, K], [B, K, D]
    seeded = (sums / counts.clamp_min(1e-300).unsqueeze(-1)).unsqueeze(1).to(centers.dtype)
    return torch.where((counts > 0)[:, None, :, None], seeded, centers)


def seeded_kmeans_plusplus(source: TensorSource, n_clusters: int, n_seeds: int, generator: torch.Generator) -> Tensor:
    """``[B, R, K, D]`` starting centres of seeded k-means: a cluster with labelled rows (of
    positive weight) in ``source`` starts at their mean (:func:`seeded_centers`), and the
    others are drawn by greedy k-means++ among the unlabelled rows, as if those means had been
    drawn first, so they fall away from the labelled classes rather than inside them (a
    labelled row is never drawn: the labelled E-step would keep it in its own class and leave
    the drawn cluster empty). The problems without labelled rows take :func:`kmeans_plusplus`'s
    draws, the very ones a fit without labels makes; when every cluster of every problem has
    labelled rows nothing is drawn."""
    X, sw, labels = source.X, source.sample_weight, source.labels
    b, _, d = X.shape
    seeded = None if labels is None else labelled_mass(source, n_clusters) > 0  # [B, K]
    if seeded is not None and bool(seeded.all()):
        return seeded_centers(source, X.new_zeros(b, n_seeds, n_clusters, d))
    centers = gather_rows(X, kmeans_plusplus(X, n_clusters, n_seeds, generator, sample_weight=sw))
    if seeded is None or not bool(seeded.any()):
        return centers
    centers = seeded_centers(source, centers)
    trials = default_local_trials(n_clusters)
    for bi in seeded.any(-1).nonzero().flatten().tolist():  # redraw the free clusters of the labelled problems
        given = seeded[bi].nonzero().flatten().tolist()
        free = [j for j in range(n_clusters) if j not in given]
        if not free:
            continue
        xb, c = X[bi : bi + 1], centers[bi : bi + 1]  # (a view: the draws are written into centers)
        mass = (labels[bi : bi + 1] >= 0).logical_not().double()
        if sw is not None:
            mass = mass * sw[bi : bi + 1].double()
        closest = _closest(xb, c[:, :, given])  # [1, R, N]
        for j in free:
            index, closest = kmeans_plusplus_step(xb, closest, generator, trials, mass)
            c[:, :, j] = gather_rows(xb, index.unsqueeze(-1))[:, :, 0]
    return centers


def lloyd(source: TensorSource, centers: Tensor, n_iter: int) -> Tensor:
    """A few Lloyd iterations on ``centers [B, R, K, D]`` (a cluster that loses all its points
    keeps its centre), on data that every rank holds alike (no sum over the ranks). Returns
    the refined centres in their dtype."""
    family = Lloyd()
    for _ in range(n_iter):
        params = {"centers": centers}
        stats, _, _ = accumulate(family, source, params, hard=True, over_ranks=False)
        centers = family.m_step(stats, params)[0]["centers"].to(centers.dtype)
    return centers



def random_distinct_indices(n_samples: int, n_pick: int, lead: tuple[int, int], generator: torch.Generator, device) -> Tensor:
    """``[B, R, n_pick]`` distinct sample indices for every problem and restart."""
    b, r = lead
    keys = torch.rand(b, r, n_samples, generator=generator, device=generator.device)
    return keys.topk(n_pick, dim=-1).indices.to(device)


_RESP_BLOCK = 4096


def random_resp(seed: int, start: int, shape: tuple[int, ...], device, dtype) -> Tensor:
    """Random responsibilities (uniform, normalised per sample) for the chunk of
    ``shape = (B, R, n, K)`` starting at sample ``start``.

    The numbers are drawn in fixed blocks of samples, each from its own generator seeded by
    ``seed`` and the block's index, so every pass over the data sees the same
    responsibilities and they do not depend on the chunk size.
    """
    b, r, n, k = shape
    device = torch.device(device)
    first, last = start // _RESP_BLOCK, (start + n - 1) // _RESP_BLOCK
    blocks = []
    for block in range(first, last + 1):
        try:
            gen, where = torch.Generator(device=device), device
        except RuntimeError:  # a device without its own generator
            gen, where = torch.Generator(), torch.device("cpu")
        gen.manual_seed((seed * 1_000_003 + block) % (2**63 - 1))
        blocks.append(torch.rand(b, r, _RESP_BLOCK, k, generator=gen, dtype=torch.float64, device=where))
    offset = start - first * _RESP_BLOCK
    resp = torch.cat(blocks, dim=2)[:, :, offset : offset + n].to(device=device, dtype=dtype)
    return resp / resp.sum(-1, keepdim=True)
