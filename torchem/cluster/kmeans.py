"""K-means (Lloyd's algorithm) as hard EM on the shared driver, with scikit-learn's interface."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._estimator import EstimatorModule
from ..exceptions import NotFittedError
from .._utils import InputKind, as_float_tensor, check_data, check_fitted, check_int, check_real, make_generator, to_output
from .. import data as data_module
from ..data import TensorSource, auto_chunk_size, concat_blocks, inference_blocks, open_stream, reservoir_sample
from ..distributed import all_reduce_sum, broadcast_params, check_consistent, gather_samples, is_distributed, signature, world_size
from ..em import Family, run_em
from ..functional._buffers import buffer
from ..functional.kmeans import assign, lloyd_stats, squared_distances
from ..init import gather_rows, kmeans_plusplus, random_distinct_indices

__all__ = ["KMeans"]


def _count_distinct_up_to(X: Tensor, k: int) -> int:
    """The number of distinct rows of ``X [N, D]``, counted only as far as ``k``: growing
    prefixes are examined, so data with many distinct points costs a sort of ``8k`` rows."""
    m = 8 * k
    while True:
        distinct = torch.unique(X[:m], dim=0).shape[0]
        if distinct >= k or m >= X.shape[0]:
            return distinct
        m *= 8


def _mean_variance(source: TensorSource) -> Tensor:
    """``[B]`` mean over features of the (unweighted) variance of the data, in float64, chunk
    by chunk (and over the ranks of a distributed fit): scikit-learn's scale for ``tol``."""
    total = None
    for _, X, _ in source.chunks():
        part = X.double().sum(1)
        total = part if total is None else total + part
    n = torch.tensor(float(source.n_samples), dtype=torch.float64, device=total.device)
    total, n = all_reduce_sum([total, n])
    mean = total / n
    sq = None
    for _, X, _ in source.chunks():
        part = (X.double() - mean.unsqueeze(1)).square().sum(1)
        sq = part if sq is None else sq + part
    return (all_reduce_sum([sq])[0] / n).mean(-1)


def _argmin_keeping(d2: Tensor, current: Tensor, first: bool, best: Tensor | None = None) -> Tensor:
    """Row argmin of ``d2 [S, K]`` that keeps the ``current`` label of every row where it
    still attains the minimum. On CPU an argmin over a short last dimension costs several
    times a plain ``amin``, and after the first passes few rows change label, so the argmin
    is taken only on those rows (on ties the current label stays, as in the bounded passes)."""
    if first:
        return d2.argmin(-1)
    if best is None:
        best = d2.amin(-1)
    new = current.clone()
    rows = (d2.gather(-1, current.unsqueeze(-1)).squeeze(-1) != best).nonzero(as_tuple=True)[0]
    if rows.numel():
        new.index_copy_(0, rows, d2.index_select(0, rows).argmin(-1))
    return new


def _keep_farthest(a, b, m: int):
    """Merge two ``(distance [B, R, p], sample [B, R, p, D], weight [B, R, p])`` candidate
    lists into the ``m`` farthest (the first list first on ties)."""
    d = torch.cat([a[0], b[0]], -1)
    top, order = d.topk(min(m, d.shape[-1]), dim=-1)
    rows = torch.cat([a[1], b[1]], 2).gather(2, order.unsqueeze(-1).expand(*order.shape, a[1].shape[-1]))
    return top, rows, torch.cat([a[2], b[2]], -1).gather(2, order)


class _KMeansFamily(Family):
    """K-means as the hard-EM limit of a Gaussian mixture with equal weights and covariances
    ``eps I``: ``log p_k(x) = -|x - c_k|^2`` up to scale, so the classification E-step is the
    nearest-centre assignment and the M-step is the mean of each cluster (Lloyd).

    The family computes each pass itself (``run_pass``: the assignment is always hard, so
    the driver's ``hard`` flag changes nothing) and keeps the data source so its M-step can
    re-seed empty clusters (scikit-learn's rule: from the points farthest from their
    centres)."""

    def __init__(self, source: TensorSource, tol: Tensor):
        self.source = source
        self.tol = tol  # [B] absolute tolerance on the total squared centre shift
        self.labels = None  # [B, R, N] current assignment (bounded passes)
        self.upper = None  # [B, R, N] float64 upper bound on |x - c_label|
        self.lower = None  # [B, R, N] float64 lower bound on the distance to any other centre
        self.workspace: dict = {}  # chunk buffers reused from pass to pass

    # ----------------------------------------------------------------------------------------
    # The generic hooks: streamed passes (the driver's chunked pass, always hard)
    # ----------------------------------------------------------------------------------------

    def prepare(self, params, precise=False):
        return {"centers": params["centers"].double() if precise else params["centers"]}

    def log_prob(self, X, prepared):
        # up to scale, the log-density of an equal-weight Gaussian with covariance eps I
        return squared_distances(X, prepared["centers"]).neg_(), None

    def log_weights(self, params):
        c = params["centers"]
        return c.new_zeros(c.shape[:-1])

    def stats(self, X, resp, prepared, aux, sample_weight):
        r = resp.double() if sample_weight is None else resp.double() * sample_weight.double().unsqueeze(-1)
        return {"counts": r.sum(-2), "sums": r.mT @ X.double()}

    # ----------------------------------------------------------------------------------------
    # Bounded pass (Hamerly's exact acceleration of Lloyd)
    # ----------------------------------------------------------------------------------------

    def run_pass(self, source: TensorSource, params, hard: bool):
        """One Lloyd E-step and the statistics of the M-step, skipping the distance
        computations that bounds prove unnecessary (Hamerly, 2010).

        Every point keeps an upper bound ``u`` on the distance to its centre and a lower
        bound ``l`` on the distance to every other centre; after the centres move by ``d_j``
        they become ``u + d_label`` and ``l - max_j d_j``. A point whose ``u`` is below both
        ``l`` and half the distance from its centre to the nearest other centre cannot change
        cluster, so only the other points are compared with all ``K`` centres (in float64).
        The assignment is exactly Lloyd's; the per-cluster sums are kept up to date by
        moving only the points that changed cluster (float64 scatter-adds).
        """
        if not isinstance(source, TensorSource):
            return None  # streamed: the driver's chunked pass (samples are not kept between passes)
        centers = params["centers"]
        b, r, k, d = centers.shape
        c64 = centers.double()
        n = source.n_samples
        dev = centers.device
        first = self.labels is None
        if first:
            self.labels = torch.zeros(b, r, n, dtype=torch.int64, device=dev)
            self.upper = torch.full((b, r, n), torch.inf, dtype=torch.float64, device=dev)
            self.lower = torch.zeros(b, r, n, dtype=torch.float64, device=dev)
            self.counts = torch.zeros(b * r * k, dtype=torch.float64, device=dev)
            self.sums = torch.zeros(b * r * k, d, dtype=torch.float64, device=dev)
        # half the distance from each centre to its nearest other centre: [B, R, K]
        cc = torch.cdist(c64, c64)
        cc.diagonal(dim1=-2, dim2=-1).fill_(torch.inf)
        half = 0.5 * cc.amin(-1)
        cnorm = c64.square().sum(-1)  # [B, R, K]
        # Flat views: point (p = b * R + r, i) is row p * N + i of the per-point state, its
        # sample is row b * N + i of the data, and centre j of p is row p * K + j.
        c_flat, half_flat = c64.reshape(b * r * k, d), half.reshape(-1)
        lab_flat, u_flat, low_flat = self.labels.view(-1), self.upper.view(-1), self.lower.view(-1)
        X_flat = source.X.reshape(b * n, d)
        w_flat = None if source.sample_weight is None else source.sample_weight.reshape(-1)
        # The bounded pass works mostly on per-point vectors, so it takes bigger chunks than
        # the GEMM passes (fewer, larger operations); the [S, K] float64 distance block of
        # the points that need it stays below 64 MiB.
        step = max(source.chunk_size, min(n, max(1, 2**23 // (k * b * r))))
        for start in range(0, n, step):
            stop = min(n, start + step)
            lab = self.labels[..., start:stop]
            u = self.upper[..., start:stop]
            low = self.lower[..., start:stop]
            need = u > torch.maximum(torch.gather(half, -1, lab), low)  # [B, R, m]
            if not first and not bool(need.any()):
                continue
            if b * r == 1 and (first or float(need.float().mean()) > 0.25):
                w = None if w_flat is None else w_flat[start:stop]
                self._dense_chunk(X_flat[start:stop], w, c64[0, 0], lab[0, 0], u[0, 0], low[0, 0], first)
                continue
            pi, ii = need.view(b * r, -1).nonzero(as_tuple=True)
            ii = ii + start
            prow = pi * n + ii  # rows of the per-point state
            xrow = torch.div(pi, r, rounding_mode="floor") * n + ii  # rows of the data
            old = lab_flat.index_select(0, prow)
            x = X_flat.index_select(0, xrow).double()  # [S, D]
            if not first:
                # tighten the upper bound with the exact distance to the current centre
                exact = torch.linalg.vector_norm(x - c_flat.index_select(0, pi * k + old), dim=-1)
                u_flat.index_copy_(0, prow, exact)
                keep = (exact > torch.maximum(half_flat.index_select(0, pi * k + old), low_flat.index_select(0, prow))).nonzero(as_tuple=True)[0]
                if keep.numel() < prow.numel():
                    pi, prow, xrow = pi[keep], prow[keep], xrow[keep]
                    x, old = x.index_select(0, keep), old.index_select(0, keep)
            if prow.numel() == 0:
                continue
            # all K distances of the remaining points, one float64 GEMM per (problem, restart)
            xx = x.square().sum(-1, keepdim=True)
            if b * r == 1:
                d2 = torch.addmm(cnorm[0, 0].unsqueeze(0), x, c64[0, 0].mT, alpha=-2.0).add_(xx).clamp_min_(0.0)
            else:
                d2 = torch.empty(x.shape[0], k, dtype=torch.float64, device=dev)
                for p in torch.unique(pi).tolist():
                    sel = (pi == p).nonzero(as_tuple=True)[0]
                    cp = c64[p // r, p % r]
                    d2[sel] = (xx[sel] - 2.0 * x[sel] @ cp.mT + cnorm[p // r, p % r]).clamp_min_(0.0)
            if k > 1:
                new_lab = _argmin_keeping(d2, old, first)
                # the second smallest distance (min twice is much faster than topk on CPU)
                new_l = d2.scatter_(-1, new_lab.unsqueeze(-1), torch.inf).amin(-1)
            else:
                new_lab, new_l = torch.zeros_like(old), torch.full_like(d2[:, 0], torch.inf)
            # the winner's distance exactly (the expansion may carry rounding)
            new_u = torch.linalg.vector_norm(x - c_flat.index_select(0, pi * k + new_lab), dim=-1)
            lab_flat.index_copy_(0, prow, new_lab)
            u_flat.index_copy_(0, prow, new_u)
            low_flat.index_copy_(0, prow, new_l.sqrt_().mul_(1.0 - 1e-12))
            # move the points that changed cluster in the running sums
            moved = (new_lab != old).nonzero(as_tuple=True)[0] if not first else None
            if moved is None or moved.numel():
                sel = (lambda t: t) if moved is None else (lambda t: t.index_select(0, moved))
                xm, pm = sel(x), sel(pi) * k
                wt = torch.ones(xm.shape[0], dtype=torch.float64, device=dev) if w_flat is None else w_flat.index_select(0, sel(xrow)).double()
                xw = xm if w_flat is None else xm * wt.unsqueeze(-1)
                if not first:
                    self.counts.index_add_(0, pm + sel(old), -wt)
                    self.sums.index_add_(0, pm + sel(old), -xw)
                self.counts.index_add_(0, pm + sel(new_lab), wt)
                self.sums.index_add_(0, pm + sel(new_lab), xw)
        ll = -(self.upper.square() * (1.0 if source.sample_weight is None else source.sample_weight.double().unsqueeze(1))).sum(-1)
        stats = {"counts": self.counts.view(b, r, k).clone(), "sums": self.sums.view(b, r, k, d).clone()}
        stats["counts"].clamp_min_(0.0)  # rounding of removed weights
        return stats, ll / source.total_weight().unsqueeze(-1)

    def _dense_chunk(self, X: Tensor, w, c64: Tensor, lab: Tensor, u: Tensor, low: Tensor, first: bool) -> None:
        """Assign every point of a chunk (one problem, one restart): used when most points
        need it, as in the first passes.

        The chunk is cut into blocks whose ``[S, K]`` distance matrix stays in cache. In each
        block one GEMM in the data's dtype, on data centred on the mean of the centres, gives
        ``|c|^2 - 2 x.c``; its row minimum is the nearest distance up to ``|x|^2``. The argmin
        is taken only on the rows whose current label no longer attains that minimum (a
        full argmin over ``K`` costs more than the GEMM on CPU). The bounds come from the same
        matrix widened by the GEMM's rounding (``2 (D + 2) eps (|x|^2 + max |c|^2)``), so they
        stay bounds; the bounded passes tighten them exactly in float64 where it matters."""
        ws = self.workspace
        n, d = X.shape
        k = c64.shape[0]
        dtype = X.dtype
        eps = torch.finfo(dtype).eps
        ref = c64.mean(0, keepdim=True)
        cc = (c64 - ref).to(dtype)
        cn = cc.square().sum(-1)
        ref = ref.to(dtype)
        cmax = float(c64.sub(c64.mean(0, keepdim=True)).square().sum(-1).max())
        block = max(256, min(n, 2**20 // max(k, 1)))
        for s in range(0, n, block):
            e = min(n, s + block)
            m = e - s
            xc = torch.sub(X[s:e], ref, out=buffer(ws, "xc", (m, d), X))
            xx = torch.linalg.vector_norm(xc, dim=-1).square_().double()
            d2 = torch.addmm(cn.unsqueeze(0), xc, cc.mT, alpha=-2.0, out=buffer(ws, "d2", (m, k), X))
            best = d2.amin(-1)
            old = lab[s:e]
            new = _argmin_keeping(d2, old, first, best)
            err = (2.0 * (d + 2) * eps) * (xx + cmax)
            u[s:e] = (best.double() + xx + err).clamp_min_(0.0).sqrt_()
            if k > 1:
                second = d2.scatter_(-1, new.unsqueeze(-1), torch.inf).amin(-1).double()
                low[s:e] = (second + xx - err).clamp_min_(0.0).sqrt_()
            else:
                low[s:e] = torch.inf
            idx = None if first else (new != old).nonzero(as_tuple=True)[0]
            if idx is None or idx.numel():
                xb = X[s:e] if idx is None else X[s:e].index_select(0, idx)
                x64 = torch.empty(xb.shape, dtype=torch.float64, device=X.device).copy_(xb)
                lab_new = new if idx is None else new.index_select(0, idx)
                if w is None:
                    wt = torch.ones(x64.shape[0], dtype=torch.float64, device=X.device)
                else:
                    wt = (w[s:e] if idx is None else w[s:e].index_select(0, idx)).double()
                    x64 = x64 * wt.unsqueeze(-1)
                if idx is not None:
                    lab_old = old.index_select(0, idx)
                    self.counts.index_add_(0, lab_old, -wt)
                    self.sums.index_add_(0, lab_old, -x64)
                self.counts.index_add_(0, lab_new, wt)
                self.sums.index_add_(0, lab_new, x64)
            old.copy_(new)

    def _move_bounds(self, old: Tensor, new: Tensor) -> None:
        """After the centres move, loosen the bounds so they stay valid."""
        if self.labels is None:
            return
        move = (new.double() - old.double()).square().sum(-1).sqrt()  # [B, R, K]
        self.upper += torch.gather(move, -1, self.labels)
        self.lower -= move.amax(-1, keepdim=True)

    def m_step(self, stats, params):
        counts, sums = stats["counts"].clone(), stats["sums"].clone()
        empty = counts == 0
        if bool(empty.any()):
            self._relocate(counts, sums, empty, params["centers"])
        centers = sums / counts.clamp_min(1e-300).unsqueeze(-1)
        centers = torch.where((counts > 0).unsqueeze(-1), centers, params["centers"].double())
        # the driver stores the centres in the data's dtype: move the bounds by that move
        self._move_bounds(params["centers"], centers.to(params["centers"].dtype))
        failed = torch.zeros(counts.shape[:-1], dtype=torch.bool, device=counts.device)
        return {"centers": centers}, failed

    def _relocate(self, counts: Tensor, sums: Tensor, empty: Tensor, centers: Tensor) -> None:
        """Move the points farthest from their (old) centres into the empty clusters."""
        b, r, k = counts.shape
        n_far = int(empty.sum(-1).max())
        best = None  # (distance [B, R, m], sample [B, R, m, D], weight [B, R, m]) of the farthest
        for _, X, wc in self.source.chunks():
            _, dist = assign(X.unsqueeze(1), centers)  # [B, R, n] exact distances
            m = min(n_far, dist.shape[-1])
            d, i = dist.double().topk(m, dim=-1)
            rows = X.unsqueeze(1).expand(b, r, *X.shape[1:]).gather(2, i.unsqueeze(-1).expand(b, r, m, X.shape[-1]))
            wt = torch.ones_like(d) if wc is None else wc.double().unsqueeze(1).expand(b, r, -1).gather(2, i)
            best = (d, rows.double(), wt) if best is None else _keep_farthest(best, (d, rows.double(), wt), n_far)
        if is_distributed():  # the farthest points over all the ranks, in rank order
            d, rows, wt = best
            pad = n_far - d.shape[-1]
            if pad:
                d = torch.cat([d, d.new_full((b, r, pad), -torch.inf)], -1)
                rows = torch.cat([rows, rows.new_zeros(b, r, pad, rows.shape[-1])], 2)
                wt = torch.cat([wt, wt.new_zeros(b, r, pad)], -1)
            parts = [[torch.empty_like(t) for _ in range(world_size())] for t in (d, rows, wt)]
            for out, t in zip(parts, (d, rows, wt)):
                torch.distributed.all_gather(out, t.contiguous())
            best = parts[0][0], parts[1][0], parts[2][0]
            for q in range(1, world_size()):
                best = _keep_farthest(best, (parts[0][q], parts[1][q], parts[2][q]), n_far)
        for bi in range(b):
            for ri in range(r):
                empties = torch.nonzero(empty[bi, ri]).flatten().tolist()
                for j, cluster in enumerate(empties):
                    x = best[1][bi, ri, j]
                    w = float(best[2][bi, ri, j])
                    old = int(assign(x.to(centers.dtype)[None], centers[bi, ri])[0][0])
                    sums[bi, ri, old] -= x * w
                    counts[bi, ri, old] -= w
                    sums[bi, ri, cluster] = x * w
                    counts[bi, ri, cluster] = w

    def converged(self, old, new):
        shift = (new["centers"].double() - old["centers"].double()).square().sum((-1, -2))  # [B, R]
        return shift <= self.tol.unsqueeze(-1)


class KMeans(EstimatorModule):
    """K-means clustering (Lloyd's algorithm) with scikit-learn's interface, run as hard EM on
    torchem's batched driver.

    Distances come from the GEMM expansion ``|x|^2 - 2 x.c + |c|^2`` on data centred on the
    mean of the centres, chunk by chunk (no ``N x K x D`` tensor, and an ``N x K`` block only
    per chunk); the distance of each sample to its nearest centre is then recomputed exactly,
    so the inertia carries no cancellation. Empty clusters are re-seeded from the points
    farthest from their centres. The ``n_init`` restarts run as one batch; ``X`` of shape
    ``[B, N, D]`` clusters ``B`` independent datasets.

    Args:
        n_clusters: number of clusters ``K``.
        init: ``"k-means++"`` (greedy, batched, on device), ``"random"`` (distinct random
            samples), or initial centres ``[K, D]`` (or ``[B, K, D]``).
        n_init: number of restarts, or ``"auto"`` (1 for ``k-means++`` or given centres, 10
            for ``random``, as scikit-learn).
        max_iter: the most Lloyd iterations.
        tol: stop when the total squared movement of the centres is at most ``tol`` times the
            mean variance of the features (scikit-learn's rule).
        verbose: 0 silent; 1 a progress bar (tqdm, when installed) and a summary line; 2 also
            a line every 10 iterations.
        random_state: ``None``, an int, a ``torch.Generator`` or a numpy random state.
        chunk_size: samples per chunk; ``None`` chooses from the available memory.
    """

    _param_names = ("centers",)
    _fitted_attributes = ("cluster_centers_", "labels_", "inertia_", "n_iter_", "n_features_in_")

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init="k-means++",
        n_init="auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        verbose: int = 0,
        random_state=None,
        chunk_size: int | None = None,
    ):
        super().__init__()
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.register_parameter("centers", None)
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        self._fitted = False

    # ----------------------------------------------------------------------------------------
    # Checks
    # ----------------------------------------------------------------------------------------

    def _validate(self) -> tuple[str | None, int]:
        check_int(self.n_clusters, "n_clusters", 1)
        check_int(self.max_iter, "max_iter", 1)
        check_int(self.verbose, "verbose", 0)
        check_real(self.tol, "tol")
        if self.chunk_size is not None:
            check_int(self.chunk_size, "chunk_size", 1)
        method = self.init if isinstance(self.init, str) else None
        if method is not None and method not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++', 'random' or an array of centres; got {self.init!r}.")
        if self.n_init == "auto":
            n_init = 10 if method == "random" else 1
        else:
            n_init = check_int(self.n_init, "n_init", 1)
        if method is None:
            n_init = 1  # explicit centres: one run, as scikit-learn
        return method, n_init

    def _weights(self, sample_weight, X: Tensor) -> Tensor | None:
        if sample_weight is None:
            return None
        w, _ = as_float_tensor(sample_weight, "sample_weight")
        shape = X.shape[:-1]
        if w.ndim == 1 and len(shape) == 2:
            w = w.expand(shape)
        if tuple(w.shape) != tuple(shape):
            raise ValueError(f"sample_weight should have shape {tuple(X.shape[-2:-1])} (one weight per sample); got {tuple(w.shape)}.")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("sample_weight must hold finite, non-negative numbers.")
        if bool((w.sum(-1) <= 0).any()):
            raise ValueError("sample_weight sums to zero; give some samples a positive weight.")
        return w

    def _input(self, X, name="X") -> tuple[Tensor, object]:
        check_fitted(self)
        t, kind = as_float_tensor(X, name)
        check_data(t, name, n_features=self.n_features_in_)
        if t.ndim == 3 and (not self._batched or t.shape[0] != self._batch_size):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, which does not match the fitted batch of problems.")
        return t, kind

    # ----------------------------------------------------------------------------------------
    # Fitting
    # ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def fit(self, X, y=None, sample_weight=None, *, callback=None):
        """Compute the clustering.

        Args:
            X: ``[N, D]`` or ``[B, N, D]`` data (numpy or tensor); an ``np.memmap`` (or, on
                CUDA, a host array larger than half the free device memory) is streamed chunk
                by chunk, and a re-iterable of ``[n, D]`` batches (``X`` or
                ``(X, sample_weight)``, e.g. a ``DataLoader``) is read once per iteration, with
                a plain chunked Lloyd pass. ``"k-means++"`` and ``"random"`` seed from a
                uniform sample of :data:`torchem.data.INIT_SAMPLE_SIZE` samples (all of them
                when there are fewer), for in-memory and streamed data alike. Under ``torch.distributed`` each rank passes its own shard.
            y: ignored.
            sample_weight: optional ``[N]`` (or ``[B, N]``) non-negative weights.
            callback: optional ``callback(iteration, lower_bound, model) -> bool`` called after
                every Lloyd iteration with minus the mean squared distance of the samples to
                their centres (a float, ``[B]`` if batched) and this model holding the best
                restart's current centres (``cluster_centers_``, ``predict``, ``transform``
                and ``score`` work; ``labels_`` and ``inertia_`` are set at the end);
                returning ``True`` stops the fit.

        Returns:
            ``self``.
        """
        method, n_init = self._validate()
        k = int(self.n_clusters)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable as callback(iteration, lower_bound, model); got {callback!r}.")
        error, sample, data = None, None, None
        try:
            data = self._open(X, sample_weight, n_init)
            source, kind, batched, b = data
            device, dtype, d = source.device, source.dtype, source.n_features
            generator = make_generator(self.random_state, device)
            streamed = not isinstance(source, TensorSource)
            if streamed or is_distributed() or source.n_samples > data_module.INIT_SAMPLE_SIZE:
                sample = reservoir_sample(source, -(-data_module.INIT_SAMPLE_SIZE // world_size()), generator)
        except (ValueError, TypeError) as exc:
            if not is_distributed():
                raise
            error = exc
        sig = {} if data is None else signature(self, d, dtype, b, batched, skip=("verbose", "random_state", "chunk_size"))
        check_consistent(sig, error)
        if sample is not None:
            Xs, ws = gather_samples(*sample)
        else:
            Xs, ws = source.X, source.sample_weight
        n = int(all_reduce_sum([torch.tensor(float(source.n_samples), device=source.device)])[0])
        if n < k:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}. Reduce n_clusters or pass more data.")
        for bi in range(b):
            distinct = _count_distinct_up_to(Xs[bi], k)
            if distinct < k:
                raise ValueError(
                    f"n_clusters={k} is larger than the number of distinct points ({distinct}) in "
                    + ("X" if sample is None or Xs.shape[1] == n else "a uniform sample of X")
                    + (f"[{bi}]" if batched else "")
                    + "; reduce n_clusters."
                )
        centers = self._initial_centers(method, Xs, ws, n_init, generator, b, d, device, dtype)
        centers = broadcast_params({"centers": centers})["centers"]

        # scikit-learn's tolerance: tol times the mean variance of the features.
        tol_abs = _mean_variance(source) * float(self.tol)  # [B]
        family = _KMeansFamily(source, tol_abs)
        params = {"centers": centers.to(dtype)}

        def report(it, lb, params_now):
            best = lb.argmax(-1)
            self._store(params_now["centers"][torch.arange(b, device=best.device), best], batched)
            self._batched, self._batch_size, self._output_numpy = batched, b, kind.is_numpy
            self.n_features_in_, self._fitted = d, True
            value = lb.max(-1).values.cpu().numpy()
            return bool(callback(it, float(value[0]) if not batched else value, self))

        result = run_em(family, source, params, tol=0.0, max_iter=int(self.max_iter), hard=True,
                        verbose=int(self.verbose), callback=None if callback is None else report)
        final = result.params["centers"]  # [B, R, K, D]
        labels, inertia, counts = self._assign_all(source, final)  # [B, R, N], [B, R], [B, R, K]
        best = inertia.argmin(-1)  # [B]
        pick = lambda t: t[torch.arange(b, device=t.device), best]  # noqa: E731
        self._store(pick(final), batched)
        self._labels = pick(labels)
        self._inertia = pick(inertia)
        self._n_iter = pick(result.n_iter)
        self._batched, self._batch_size = batched, b
        self._output_numpy = kind.is_numpy
        self.n_features_in_ = d
        self._anchor = self._anchor.to(device=device, dtype=dtype)
        self._fitted = True
        # partial_fit continues the fit: each centre has already received its cluster's weight
        self._counts = pick(counts).unsqueeze(1)  # [B, 1, K]
        self._partial_batches = 0  # n_iter_ of partial_fit counts its batches
        return self

    def _open(self, X, sample_weight, n_init: int):
        """``(source, kind, batched, B)``: the data as a chunk source on the compute device."""
        k = int(self.n_clusters)

        def check(chunk):
            if not bool(torch.isfinite(chunk).all()):
                raise ValueError("Input X contains NaN or infinity. Remove or impute those values before fitting.")

        def resolve(probe):
            device = self._anchor.device if self._anchor.device.type != "cpu" else probe.device
            return device, torch.promote_types(probe.dtype, self._anchor.dtype)

        stream = open_stream(
            X, sample_weight, anchor_device=self._anchor.device, resolve=resolve,
            bytes_per_sample=lambda d, b, itemsize: itemsize * n_init * b * (4 * k + 2 * d) + 8 * n_init * k,
            chunk_size=self.chunk_size, check=check,
        )
        if stream is not None:
            source, is_numpy, batched, b = stream
            return source, InputKind(is_numpy, None), batched, b
        X3, w, kind, batched = self._batch_input(X, sample_weight)
        b, n, d = X3.shape
        device, dtype = resolve(X3)
        source = TensorSource(X3, device=device, dtype=dtype, sample_weight=w)
        if self.chunk_size is not None:
            source.chunk_size = int(self.chunk_size)
        else:
            per = source.X.element_size() * n_init * (4 * k + 2 * d) + 8 * n_init * k
            source.chunk_size = auto_chunk_size(per, source.device, n)
        return source, kind, batched, b

    def _batch_input(self, X, sample_weight):
        """``(X [B, N, D], sample_weight [B, N] or None, kind, batched)`` of in-memory input, checked."""
        t, kind = as_float_tensor(X, "X")
        check_data(t, "X")
        batched = t.ndim == 3
        w = self._weights(sample_weight, t)
        if not batched:
            t, w = t.unsqueeze(0), None if w is None else w.unsqueeze(0)
        return t, w, kind, batched

    def _initial_centers(self, method, Xs: Tensor, ws, n_init: int, generator, b: int, d: int, device, dtype) -> Tensor:
        """``[B, R, K, D]`` starting centres from the data ``Xs [B, n, D]`` (all of it, or a sample)."""
        k = int(self.n_clusters)
        if method is None:
            c, _ = as_float_tensor(self.init, "init")
            if tuple(c.shape) not in ((k, d), (b, k, d)):
                raise ValueError(f"The shape of the initial centers {tuple(c.shape)} does not match the number of clusters {k} and features {d}: expected ({k}, {d}).")
            if not bool(torch.isfinite(c).all()):
                raise ValueError("init (the initial centres) contains NaN or infinity.")
            return c.to(device=device, dtype=dtype).expand(b, k, d).unsqueeze(1).contiguous()
        if method == "k-means++":
            return gather_rows(Xs, kmeans_plusplus(Xs, k, n_init, generator, sample_weight=ws))
        n = Xs.shape[1]
        if ws is None:
            idx = random_distinct_indices(n, k, (b, n_init), generator, device)
        else:
            p = ws.double().unsqueeze(1).expand(b, n_init, n).reshape(b * n_init, n)
            idx = torch.multinomial(p.to(generator.device), k, replacement=False, generator=generator).to(device)
            idx = idx.reshape(b, n_init, k)
        return gather_rows(Xs, idx)

    def _assign_all(self, source: TensorSource, centers: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(labels [B, R, N], inertia [B, R], counts [B, R, K])``: the final assignment, its
        inertia and the (weighted) number of samples of each cluster, over all ranks."""
        labels, inertia = [], None
        counts = torch.zeros(*centers.shape[:-1], dtype=torch.float64, device=centers.device)
        for _, X, w in source.chunks():
            lab, dist = assign(X.unsqueeze(1), centers)
            labels.append(lab)
            wt = torch.ones_like(dist, dtype=torch.float64) if w is None else w.double().unsqueeze(1).expand_as(dist)
            counts.scatter_add_(-1, lab, wt)
            part = (dist.double() * wt).sum(-1)
            inertia = part if inertia is None else inertia + part
        inertia, counts = all_reduce_sum([inertia, counts])
        return torch.cat(labels, -1), inertia, counts

    @torch.no_grad()
    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the centres with one batch of a stream (mini-batch k-means).

        Each sample moves its nearest centre towards itself with step ``1 / count``, where
        ``count`` is the (weighted) number of samples that centre has received so far: every
        centre is the running mean of the samples assigned to it (scikit-learn's
        ``MiniBatchKMeans`` rule, without its random reassignment of small clusters). The first
        call seeds the centres from its batch with ``init`` (so it needs at least
        ``n_clusters`` samples) unless the model is already fitted, in which case the stream
        continues from the fitted centres, each counted as having received its cluster's
        (weighted) size in the fit (as ``MiniBatchKMeans.partial_fit`` after ``fit``). ``labels_`` and ``inertia_`` describe the last
        batch, ``n_iter_`` counts the batches. Under ``torch.distributed`` every rank passes its
        own part of each batch; the per-centre sums are added over the ranks (and the first
        batch's parts, gathered, seed the centres), so all ranks keep identical centres.

        Args:
            X: ``[n, D]`` (or ``[B, n, D]``) batch.
            y: ignored.
            sample_weight: optional ``[n]`` non-negative weights.

        Returns:
            ``self``.
        """
        method, _ = self._validate()
        k = int(self.n_clusters)
        sig, error = {}, None
        try:
            X3, w, kind, batched = self._batch_input(X, sample_weight)
            b, n, d = X3.shape
            if self._fitted and (d != self.n_features_in_ or batched != self._batched or b != self._batch_size):
                raise ValueError(
                    f"partial_fit continues a model of {self._batch_size} problem(s) with {self.n_features_in_} "
                    f"features; X has shape {tuple(X3.shape if batched else X3.shape[1:])}. Pass batches of the same layout."
                )
            sig = signature(self, d, X3.dtype, b, batched, skip=("verbose", "random_state", "chunk_size"))
            sig.update(fitted=bool(self._fitted), stream_batches=getattr(self, "_partial_batches", 0))
        except (ValueError, TypeError) as exc:
            if not is_distributed():
                raise
            error = exc
        check_consistent(sig, error)  # every rank raises, or none
        if self._fitted:
            centers = self.centers.detach()
            centers = (centers if batched else centers.unsqueeze(0)).unsqueeze(1)
            dtype = torch.promote_types(X3.dtype, centers.dtype)
        else:
            dtype = torch.promote_types(X3.dtype, self._anchor.dtype)
            device = self._anchor.device if self._anchor.device.type != "cpu" else X3.device
            X3 = X3.to(device=device, dtype=dtype)
            # seed from the first batch (of every rank, under torch.distributed)
            Xg, wg = gather_samples(X3, None if w is None else w.to(device=device, dtype=dtype))
            if Xg.shape[1] < k:
                raise ValueError(
                    f"The first batch given to partial_fit seeds the centres and needs at least n_clusters = {k} "
                    f"samples; got {Xg.shape[1]}."
                )
            generator = make_generator(self.random_state, device)
            centers = self._initial_centers(method, Xg, wg, 1, generator, b, d, device, dtype)
            centers = broadcast_params({"centers": centers})["centers"]
        device = centers.device
        X3 = X3.to(device=device, dtype=dtype)
        w = None if w is None else w.to(device=device, dtype=dtype)
        counts = getattr(self, "_counts", None)
        if counts is None:
            counts = torch.zeros(b, 1, k, dtype=torch.float64, device=device)
        counts = counts.to(device)
        labels, dist = assign(X3.unsqueeze(1), centers.to(dtype))
        c, s = lloyd_stats(X3.unsqueeze(1), labels, k, None if w is None else w.unsqueeze(1))
        inertia = (dist.double() if w is None else dist.double() * w.double().unsqueeze(1)).sum(-1)
        c, s, inertia = all_reduce_sum([c, s, inertia])  # the ranks' parts make one batch
        total = counts + c
        moved = (centers.double() * counts.unsqueeze(-1) + s) / total.clamp_min(1e-300).unsqueeze(-1)
        centers = torch.where((c > 0).unsqueeze(-1), moved, centers.double()).to(dtype)
        self._counts = total
        self._store(centers[:, 0], batched)
        self._labels, self._inertia = labels[:, 0], inertia[:, 0]
        self._partial_batches = getattr(self, "_partial_batches", 0) + 1
        self._n_iter = torch.full((b,), self._partial_batches, dtype=torch.int64)
        self._batched, self._batch_size, self._output_numpy = batched, b, kind.is_numpy
        self.n_features_in_ = d
        self._anchor = self._anchor.to(device=device, dtype=dtype)
        self._fitted = True
        return self

    def _store(self, centers: Tensor, batched: bool) -> None:
        self._set_parameter("centers", centers if batched else centers.squeeze(0))

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit and return the cluster of each sample (``labels_``)."""
        return self.fit(X, sample_weight=sample_weight).labels_

    # ----------------------------------------------------------------------------------------
    # Attributes
    # ----------------------------------------------------------------------------------------

    def _attr(self, t: Tensor):
        return t.detach().cpu().numpy() if self._output_numpy else t.detach()

    def _scalar(self, t: Tensor, cast):
        return cast(t.reshape(-1)[0]) if not self._batched else self._attr(t)

    @property
    def cluster_centers_(self):
        """Cluster centres ``[K, D]`` (``[B, K, D]``)."""
        check_fitted(self)
        return self._attr(self.centers)

    @property
    def labels_(self):
        """Cluster of each training sample ``[N]`` (``[B, N]``)."""
        check_fitted(self)
        return self._attr(self._labels if self._batched else self._labels[0])

    @property
    def inertia_(self):
        """Sum of (weighted) squared distances of the samples to their closest centre."""
        check_fitted(self)
        return self._scalar(self._inertia, float)

    @property
    def n_iter_(self):
        """Lloyd iterations of the best restart."""
        check_fitted(self)
        return self._scalar(self._n_iter, int)

    # ----------------------------------------------------------------------------------------
    # Inference
    # ----------------------------------------------------------------------------------------

    def _chunked(self, t: Tensor, fn, dim: int = -1) -> Tensor:
        centers = self.centers.detach()
        dtype = torch.promote_types(t.dtype, centers.dtype)
        centers = centers.to(dtype)
        n = t.shape[-2]
        step = int(self.chunk_size) if self.chunk_size else auto_chunk_size(
            (4 * self.n_clusters + 2 * t.shape[-1]) * torch.finfo(dtype).bits // 8, centers.device, n
        )
        outs = [fn(t[..., s : s + step, :].to(device=centers.device, dtype=dtype), centers) for s in range(0, n, step)]
        return torch.cat(outs, dim=dim)

    @staticmethod
    def _dist(x, centers):
        return squared_distances(x, centers).sqrt()

    def forward(self, x: Tensor, temperature: float | None = None) -> Tensor:
        """Per-sample score of a tensor, differentiable with respect to ``x`` and ``centers``
        (after ``requires_grad_(True)``): minus the squared distance to the nearest centre
        (each sample's share of the inertia), ``[n]`` (``[B, n]``).

        With ``temperature = T > 0`` the hard minimum is relaxed to the soft minimum
        ``T * logsumexp(-|x - c_k|^2 / T)`` (soft k-means: up to constants, the log-likelihood
        of an equal-weight Gaussian mixture with covariances ``T/2 I``), which is smooth and
        gives every centre a gradient; it tends to the hard score as ``T -> 0``."""
        check_fitted(self)
        if not isinstance(x, Tensor):
            raise ValueError("forward expects a torch.Tensor; use score for numpy input.")
        check_data(x, "x", n_features=self.n_features_in_, check_finite=False)
        centers = self.centers
        dtype = torch.promote_types(x.dtype, centers.dtype)
        x, centers = x.to(dtype), centers.to(dtype)
        if temperature is None:
            return -assign(x, centers)[1]
        if isinstance(temperature, bool) or not float(temperature) > 0:
            raise ValueError(f"temperature must be a positive number (or None for the hard score); got {temperature!r}.")
        return float(temperature) * torch.logsumexp(-squared_distances(x, centers) / float(temperature), -1)

    def requires_grad_(self, requires_grad: bool = True):
        """Enable gradients on ``centers`` (frozen after ``fit``). An unfitted model has no
        centres to train: fit it first."""
        if requires_grad and not self._fitted:
            raise NotFittedError(
                "This KMeans has no centres to train yet: call fit(X) first (with init=<array of centres> and "
                "max_iter=1 to start close to given centres)."
            )
        return super().requires_grad_(requires_grad)

    @torch.no_grad()
    def predict(self, X):
        """Index of the closest centre for each sample: ``[N]`` (``[B, N]``) int64. ``X`` may
        also be an ``np.memmap`` (read in blocks) or an iterable of batches (a DataLoader, a
        generator), here and in ``transform`` and ``score``."""
        blocks = inference_blocks(X)
        if blocks is not None:
            return concat_blocks([self.predict(xb) for xb, _ in blocks], 1)
        t, kind = self._input(X)
        return to_output(self._chunked(t, lambda x, c: assign(x, c)[0]), kind)

    @torch.no_grad()
    def transform(self, X):
        """Euclidean distance of each sample to every centre: ``[N, K]`` (``[B, N, K]``)."""
        blocks = inference_blocks(X)
        if blocks is not None:
            return concat_blocks([self.transform(xb) for xb, _ in blocks], 2)
        t, kind = self._input(X)
        return to_output(self._chunked(t, self._dist, dim=-2), kind)

    def fit_transform(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).transform(X)

    @torch.no_grad()
    def score(self, X, y=None, sample_weight=None):
        """Opposite of the (weighted) inertia of ``X`` under the fitted centres (streams: the
        weights of ``(X, sample_weight)`` batches count)."""
        blocks = inference_blocks(X)
        if blocks is not None:
            if sample_weight is not None:
                if not isinstance(X, np.memmap):
                    raise ValueError("sample_weight cannot be combined with an iterable X; yield (X, sample_weight) batches.")
                weights = np.asarray(sample_weight)
                if weights.shape != (X.shape[0],):
                    raise ValueError(f"sample_weight should have shape ({X.shape[0]},) (one weight per sample); got {weights.shape}.")
                starts = np.cumsum([0] + [len(xb) for xb, _ in inference_blocks(X)])
                blocks = ((xb, weights[a:b]) for (xb, _), a, b in zip(blocks, starts[:-1], starts[1:]))
            parts = [self.score(xb, sample_weight=wb) for xb, wb in blocks]
            if not parts:
                raise ValueError("X yielded no samples; pass a non-empty iterable of [n_samples, n_features] batches.")
            return sum(parts[1:], parts[0])
        t, kind = self._input(X)
        w = self._weights(sample_weight, t)
        d = self._chunked(t, lambda x, c: assign(x, c)[1]).double()
        if w is not None:
            d = d * w.to(d.device).double()
        value = -d.sum(-1)
        if kind.is_numpy:
            return float(value) if value.ndim == 0 else value.cpu().numpy()
        return to_output(value, kind)

    # ----------------------------------------------------------------------------------------
    # State
    # ----------------------------------------------------------------------------------------

    def get_extra_state(self) -> dict:
        state = {"fitted": self._fitted}
        if self._fitted:
            state.update(batched=self._batched, batch_size=self._batch_size, output_numpy=self._output_numpy,
                         n_features_in=self.n_features_in_, labels=self._labels, inertia=self._inertia,
                         n_iter=self._n_iter, n_clusters=self.n_clusters, counts=self._counts)
        return state

    def set_extra_state(self, state: dict) -> None:
        self._fitted = bool(state.get("fitted", False))
        if self._fitted:
            if state["n_clusters"] != self.n_clusters:
                raise ValueError(f"The state dict was saved with n_clusters={state['n_clusters']}; this model has {self.n_clusters}.")
            self._batched, self._batch_size = state["batched"], state["batch_size"]
            self._output_numpy, self.n_features_in_ = state["output_numpy"], state["n_features_in"]
            self._labels, self._inertia, self._n_iter = state["labels"], state["inertia"], state["n_iter"]
            self._counts = state.get("counts")  # partial_fit continues with the saved cluster sizes
            self._partial_batches = 0
