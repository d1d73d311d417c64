"""K-means (Lloyd's algorithm) as hard EM on the shared driver, with scikit-learn's interface."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch
from torch import Tensor

from .. import exceptions
from ..estimator import EMEstimator
from .._utils import as_float_tensor, caller_stacklevel, check_data, check_fitted, check_int, check_real, to_output
from ..data import HOW_TO_WEIGHT, Source, TensorSource, check_batch_weight, check_sample_weight, inference_blocks
from ..distributed import all_gather, all_reduce_sum
from ..em import accumulate
from .. import _threads
from .._threads import run_ordered, slot, workers
from ..functional._buffers import buffer
from ..functional.kmeans import assign, lloyd_stats, squared_distances
from ..init import Lloyd, gather_rows, kmeans_plusplus, random_distinct_indices, seeded_centers, seeded_kmeans_plusplus

__all__ = ["KMeans"]




def _moments(source: Source, ref: Tensor | None = None) -> tuple[Tensor, int, Tensor, Tensor, Tensor]:
    """``(ref [B, D], rows, s [B, D], q [B], spread [B])`` of one float64 pass over ``source``
    (this rank's rows): the sums ``s = sum (x - ref)``, ``q = sum |x - ref|^2`` and ``spread =
    sum w |x - ref|^2`` about ``ref``, by default the mean of the first rows (of the first
    chunk that holds any), the data taken less ``ref`` in a chunk buffer reused for the pass,
    so the moments do not cancel."""
    b, d = source.n_problems, source.n_features
    f64 = dict(dtype=torch.float64, device=source.device)
    given, count = ref is not None, 0
    ref = torch.zeros(b, d, **f64) if ref is None else ref
    s, q, spread = torch.zeros(b, d, **f64), torch.zeros(b, **f64), torch.zeros(b, **f64)
    ones = torch.ones(d, **f64)
    workspace: dict = {}  # the pass's chunk buffer, freed with it
    for _, X, w in source.chunks():
        if count == 0 and X.shape[1] and not given:
            ref = X[:, : min(X.shape[1], 4096)].double().mean(1)  # [B, D]
        x = buffer(workspace, "moments", X.shape, ref).copy_(X).sub_(ref.unsqueeze(1))  # [B, n, D]
        s += x.sum(1)
        per = torch.matmul(x.square_(), ones)  # [B, n]: |x - ref|^2 (a GEMV, no sum over short rows)
        q += per.sum(-1)
        spread += per.sum(-1) if w is None else (per * w.double()).sum(-1)
        count += X.shape[1]
    return ref, count, s, q, spread


def _scales(source: Source, tol: float) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(tol_abs [B], ref [B, D], spread [B])``: scikit-learn's absolute tolerance, ``tol``
    times the mean over features of the (unweighted) variance of the data (over the ranks of
    a distributed fit), and :func:`_moments`'s reference near this rank's data and this rank's
    ``sum w |x - ref|^2``, which the exact inertia of :meth:`_KMeansFamily._inertia` reads:
    one float64 pass, the ranks' counts, means and scatters about their means combined
    exactly (Chan's rule). With ``tol = 0`` no pass (``ref`` and ``spread`` are then ``None``:
    :meth:`_KMeansFamily._prepare_rows` takes them)."""
    b, d = source.n_problems, source.n_features
    if tol == 0:
        return torch.zeros(b, dtype=torch.float64, device=source.device), None, None
    ref, count, s, q, spread = _moments(source)
    n = torch.full((b, 1), float(count), dtype=torch.float64, device=source.device)
    mean = ref + s / n.clamp_min(1.0)
    scatter = (q - s.square().sum(-1) / n.squeeze(-1).clamp_min(1.0)).clamp_min(0.0)  # about this rank's mean
    ranks = torch.stack(all_gather(torch.cat([n, mean, scatter.unsqueeze(-1)], -1)))  # [ranks, B, D + 2]
    n_r, mean_r, scatter_r = ranks[..., :1], ranks[..., 1:-1], ranks[..., -1]
    total = n_r.sum(0)  # [B, 1]
    centre = (n_r * mean_r).sum(0) / total
    scatter = scatter_r.sum(0) + (n_r.squeeze(-1) * (mean_r - centre).square().sum(-1)).sum(0)
    return scatter / (total.squeeze(-1) * d) * tol, ref, spread


def _assign_labelled(X: Tensor, centers: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
    """:func:`~torchem.functional.kmeans.assign` of ``X [B, 1, n, D]`` to ``centers [B, R, K, D]``
    with the rows that ``labels [B, n]`` names (``>= 0``) kept in their cluster (seeded
    k-means): ``(labels [B, R, n], squared distance [B, R, n])``."""
    lab, dist = assign(X, centers)
    if labels is None:
        return lab, dist
    known = (labels >= 0).unsqueeze(1)
    fixed = labels.clamp_min(0).unsqueeze(1).expand_as(lab)
    own = torch.gather(centers.expand(*lab.shape[:-1], *centers.shape[-2:]), -2,
                       fixed.unsqueeze(-1).expand(*fixed.shape, X.shape[-1]))
    return torch.where(known, fixed, lab), torch.where(known, (X - own).square().sum(-1), dist)


def _argmin_keeping(d2: Tensor, current: Tensor, first: bool) -> Tensor:
    """Argmin over the centres of ``d2 [S, K]`` that keeps the ``current [S]`` label of every
    point where it still attains the minimum (``first``: no current labels, the plain
    argmin): on exact ties the current label stays, as in the bounded passes."""
    if first:
        return d2.argmin(-1)
    best = d2.amin(-1)
    new = current.clone()
    rows = (d2.gather(-1, current.unsqueeze(-1)).squeeze(-1) != best).nonzero(as_tuple=True)[0]
    if rows.numel():
        new.index_copy_(0, rows, d2.index_select(0, rows).argmin(1))
    return new


def _keep_farthest(a, b, m: int):
    """Merge two ``(distance [B, R, p], sample [B, R, p, D], weight [B, R, p])`` candidate
    lists into the ``m`` farthest (the first list first on ties)."""
    d = torch.cat([a[0], b[0]], -1)
    top, order = d.topk(min(m, d.shape[-1]), dim=-1)
    rows = torch.cat([a[1], b[1]], 2).gather(2, order.unsqueeze(-1).expand(*order.shape, a[1].shape[-1]))
    return top, rows, torch.cat([a[2], b[2]], -1).gather(2, order)


def _query_distances(X: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
    """Squared distances of a query chunk to the centres, ``(d2 [..., n, K], scale [..., n, 1])``
    with ``|x - c_k|^2 = scale^2 d2``: ``scale`` is 1, unless some squared distance overflows
    the dtype (coordinates past ~1e154 in float64, ~1e19 in float32), in which case each row is
    measured in units of its largest coordinate (or centre's), exact differences taken."""
    d2 = squared_distances(X, centers)
    one = d2.new_ones(d2.shape[:-1] + (1,))
    if bool(torch.isfinite(d2).all()):
        return d2, one
    dtype = d2.dtype
    Xw, cw = X.to(dtype), centers.to(dtype)
    scale = torch.maximum(Xw.abs().amax(-1, keepdim=True), cw.abs().amax((-2, -1)).reshape(cw.shape[:-2] + (1, 1)))
    scale = torch.where(scale > 0, scale, one)
    diff = (Xw / scale).unsqueeze(-2) - cw.unsqueeze(-3) / scale.unsqueeze(-1)  # [..., n, K, D]
    return diff.square().sum(-1), scale


def _check_finite(d: Tensor, X: Tensor, what: str) -> None:
    if not bool(torch.isfinite(d).all()):
        raise ValueError(f"X holds values (up to {float(X.abs().max()):.3g} in absolute value) whose {what} to a "
                         f"centre overflows {d.dtype}; query a float64 model (model.double()) with float64 data, "
                         "or scale the data.")


class _Share:
    """What one thread of a bounded pass (:meth:`_KMeansFamily.run_pass`) keeps: the moves of
    the points of the chunk it works on out of and into the clusters (counts and sums from
    zero each chunk, ``moved`` once any point moved), and its own workspace, kept from pass
    to pass."""

    def __init__(self):
        self.workspace: dict = {}
        self.counts = self.sums = None
        self.moved = False

    def start(self, counts: Tensor, sums: Tensor) -> None:
        """Zero moves shaped like the running ``counts`` and ``sums``."""
        if self.counts is None or self.counts.shape != counts.shape or self.sums.shape != sums.shape:
            self.counts, self.sums = torch.zeros_like(counts), torch.zeros_like(sums)
        elif self.moved:
            self.counts.zero_()
            self.sums.zero_()
        self.moved = False


class _KMeansFamily(Lloyd):
    """The :class:`~torchem.init.Lloyd` family (K-means as hard EM) made for one fit: passes
    over in-memory data skip, with Hamerly's bounds, the distances that cannot change an
    assignment (``run_pass``; streamed data takes the driver's generic pass), empty clusters
    are re-seeded from the points farthest from their centres (scikit-learn's rule), and a
    restart stops when its centres move less than ``tol``. It keeps the per-point bounds and
    the data source for the length of its fit."""

    def __init__(self, source: TensorSource, tol: float):
        self.source = source
        self.workspace: dict = {}  # chunk buffers reused from pass to pass
        # [B] absolute tolerance on the total squared centre shift; [B, D] reference near
        # the data and [B] sum w |x - ref|^2 (None: taken by the first _inertia)
        self.tol, self.ref, self.spread = _scales(source, tol)
        self.labels = None  # [B, R, N] current assignment (bounded passes)
        # [B, R, N] float64 lower bound on (distance to the nearest other centre) - (distance
        # to the own centre): a point whose slack is not negative keeps its cluster
        self.slack = None
        self._workers: list[_Share] = []  # per thread of a bounded pass: its moves and workspace
        self.rows = None  # the data as the bounded pass's GEMMs read it (_prepare_rows)
        self._lowest_on_ties = False  # the final pass: exact ties to the lowest index (final_assignment)

    #: Which pass in-memory data takes: the dense GEMM + argmin pass (``True``), Hamerly's
    #: bounded pass (``False``), or ``None``: dense on CUDA devices, bounded on the CPU. The
    #: bounded pass saves distance computations at the price of per-point state, gathers and
    #: host synchronisations (``nonzero``) that stall a GPU; the dense pass has none.
    dense: bool | None = None

    #: The fraction of a chunk's points whose bounds fail above which the bounded pass
    #: assigns the whole chunk in place rather than gathering those points: gathering costs
    #: about 1.2 times the dense chunk's work per gathered point (500k x 32, K = 64, on CPU).
    dense_fraction: float = 0.7

    #: Entries of the ``[K, rows]`` distance block that :meth:`_assign_rows` computes at once
    #: (2 MB in float32: past a core's L2 cache, inside the shared L3). Blocks of 2**19
    #: entries rather than 2**17 made whole 20-iteration fits 0.86-0.94x as long at 500k x 32,
    #: K = 64, and 0.92-0.93x at 50k x 16, K = 16, on one thread and on two (fewer, larger
    #: GEMMs and per-block operations); 2**20 gained nothing more.
    block_entries: int = 2**19

    #: Entries of ``[rows, K]`` in a chunk of the bounded pass (at least ``chunk_size`` rows):
    #: the pass works mostly on per-point vectors, so its chunks are larger than the GEMM
    #: passes'; on the CPU the chunks run side by side on threads (:meth:`run_pass`).
    pass_entries: int = 2**23

    # ----------------------------------------------------------------------------------------
    # Dense pass (for GPUs: sync-free, no per-point state)
    # ----------------------------------------------------------------------------------------

    def _dense_pass(self, source: TensorSource, params):
        """One Lloyd E-step and the M-step's statistics with no host synchronisation and
        nothing kept per point, chunk by chunk.

        Per chunk: one GEMM ``[B, R, n, K]`` in the data's dtype on data centred on the mean
        of each restart's centres gives ``|c|^2 - 2 x.c`` up to ``|x|^2``; its two smallest
        entries name two candidates, whose distances are then taken exactly in float64, and
        the nearer wins (the lower index on a tie, as ``argmin``). So a near-tie that the
        expansion's rounding cannot settle is settled exactly, as the bounded pass does (only
        three or more centres within the rounding of one point, a measure-zero case, are
        settled among the expansion's best two). Rows the source labels keep their cluster.
        The statistics are float64 scatter-adds
        (:func:`~torchem.functional.kmeans.lloyd_stats`) and the inertia is the sum of the exact
        distances.

        Returns:
            ``(stats, mean log-likelihood [B, R])`` as :meth:`run_pass`.
        """
        centers = params["centers"]
        b, r, k, d = centers.shape
        dev, dtype = centers.device, source.dtype
        c64 = centers.double()
        ref = c64.mean(-2, keepdim=True)  # [B, R, 1, D]
        cc = (c64 - ref).to(dtype)
        cn = cc.square().sum(-1).unsqueeze(-2)  # [B, R, 1, K]
        ref = ref.to(dtype)
        counts = torch.zeros(b, r, k, dtype=torch.float64, device=dev)
        sums = torch.zeros(b, r, k, d, dtype=torch.float64, device=dev)
        inertia = torch.zeros(b, r, dtype=torch.float64, device=dev)
        base = (torch.arange(b * r, device=dev) * k).view(b, r, 1)  # first row of each (problem, restart)
        for _, X, w, known in source.chunks(labels=True):
            n = X.shape[1]
            if k > 1:
                d2 = torch.matmul(X.unsqueeze(1) - ref, cc.mT).mul_(-2.0).add_(cn)  # [B, R, n, K]
                cand = d2.topk(2, dim=-1, largest=False).indices  # [B, R, n, 2]
                del d2
                e0, e1 = (self._exact(X, c64, base + cand[..., j]) for j in (0, 1))  # [B, R, n] float64
                second = (e1 < e0) | ((e1 == e0) & (cand[..., 1] < cand[..., 0]))
                labels = torch.where(second, cand[..., 1], cand[..., 0])
                dist = torch.where(second, e1, e0)
            else:
                labels = torch.zeros(b, r, n, dtype=torch.int64, device=dev)
                dist = self._exact(X, c64, base.expand(b, r, n))
            if known is not None:  # labelled rows stay in their cluster (seeded k-means)
                keep = (known >= 0).unsqueeze(1)  # [B, 1, n]
                fixed = known.clamp_min(0).unsqueeze(1).expand(b, r, n)
                labels = torch.where(keep, fixed, labels)
                dist = torch.where(keep, self._exact(X, c64, base + fixed), dist)
            w = None if w is None else w.unsqueeze(1)  # [B, 1, n]
            inertia += (dist if w is None else dist * w.double()).sum(-1)
            part = lloyd_stats(X.unsqueeze(1), labels, k, w)  # float64 scatter-adds
            counts += part[0]
            sums += part[1]
        return {"counts": counts, "sums": sums}, -inertia / source.total_weight().unsqueeze(-1)

    @staticmethod
    def _exact(X: Tensor, c64: Tensor, rows: Tensor) -> Tensor:
        """``|x - c|^2`` in float64 of each sample of ``X [B, n, D]`` to the centre of flat
        row ``rows [B, R, n]`` of ``c64 [B, R, K, D]``: one ``[B, R, n, D]`` float64 temporary,
        the difference taken in float64 (no float64 copy of the chunk)."""
        b, r, n = rows.shape
        gathered = c64.reshape(-1, c64.shape[-1]).index_select(0, rows.reshape(-1)).view(b, r, n, -1)
        return torch.sub(X.unsqueeze(1), gathered, out=gathered).square_().sum(-1)

    # ----------------------------------------------------------------------------------------
    # Bounded pass (Hamerly's exact acceleration of Lloyd)
    # ----------------------------------------------------------------------------------------

    def run_pass(self, source: TensorSource, params, hard: bool):
        """One Lloyd E-step and the statistics of the M-step, skipping the distance
        computations that bounds prove unnecessary (Hamerly, 2010, with his two bounds kept
        as one number per point).

        Every point keeps a lower bound ``s`` on its slack, the distance to the nearest other
        centre less the distance to its own (Hamerly's lower bound less his upper bound);
        after the centres move by ``d_j`` it becomes ``s - d_label - max_j d_j``. A point whose
        ``s`` is not negative cannot change cluster, so only the other points are compared
        with all ``K`` centres (:meth:`_assign_rows`: a GEMM in the data's dtype, the
        near-ties its rounding cannot settle taken exactly in float64), gathered, or in place
        where they are most of their chunk (:attr:`dense_fraction`). (Hamerly's second test,
        the upper bound against half the distance from its centre to the nearest other, needs
        the upper bound on its own; without it the state is one number per point, moved and
        tested with two vector operations a pass. His tightening of the upper bound before
        the full comparison cost as much as it saved: a whole 500k x 32, K = 64 fit ran 15%
        faster without.) The assignment is exactly Lloyd's; the per-cluster sums are kept up
        to date by moving only the points that changed cluster (float64 scatter-adds). Points
        the source labels are assigned with the others in the first pass and then moved to
        their own cluster (:meth:`_pin`); later passes skip them (a dense chunk reassigns
        them, and they are pinned again). On the CPU the chunks of rows run side by side on
        threads (:func:`torchem._threads.run_ordered`), each moving its points in sums of its
        own, which are added to the running sums in the chunks' order: the same sums on any
        number of threads.
        """
        if not isinstance(source, TensorSource):
            return None  # streamed: the driver's chunked pass (samples are not kept between passes)
        if self.dense if self.dense is not None else source.device.type == "cuda":
            return self._dense_pass(source, params)
        centers = params["centers"]
        b, r, k, d = centers.shape
        c64 = centers.double()
        n = source.n_samples
        dev = centers.device
        first = self.labels is None
        if first:
            self.labels = torch.zeros(b, r, n, dtype=torch.int64, device=dev)
            self.slack = torch.full((b, r, n), -torch.inf, dtype=torch.float64, device=dev)
            self.counts = torch.zeros(b * r * k, dtype=torch.float64, device=dev)
            self.sums = torch.zeros(b * r * k, d, dtype=torch.float64, device=dev)
            self._prepare_rows(source)
        Xc_flat, xx_flat, refd = self.rows
        # Flat views: point (p = b * R + r, i) is row p * N + i of the per-point state and its
        # sample is row b * N + i of the data.
        X_flat = source.X.reshape(b * n, d)
        w_flat = None if source.sample_weight is None else source.sample_weight.reshape(-1)
        step = max(source.chunk_size, min(n, max(1, self.pass_entries // (k * b * r))))
        rows = (source, c64, first, step, X_flat, Xc_flat, xx_flat, w_flat, refd)
        chunks = [(start, min(n, start + step)) for start in range(0, n, step)]
        while len(self._workers) < max(1, workers()):  # one per thread of the pass (slot 0: the caller)
            self._workers.append(_Share())

        def work(chunk):  # the moves of the chunk's points, made on this thread's own sums
            acc = self._workers[slot()]
            acc.start(self.counts, self.sums)
            self._pass_rows(*chunk, *rows, acc=acc)
            return (acc.counts.clone(), acc.sums.clone()) if acc.moved else None

        def take(moves):  # in the chunks' order, so the sums do not depend on the threads
            if moves is not None:
                self.counts += moves[0]
                self.sums += moves[1]

        if _threads.shares(dev, n, len(chunks)):
            run_ordered(chunks, work, take)  # chunks side by side on threads (torchem._threads)
        else:
            for chunk in chunks:
                take(work(chunk))
        if source.labels is not None:
            self._pin(source.labels, X_flat, w_flat, r, k)
        stats = {"counts": self.counts.view(b, r, k).clone(), "sums": self.sums.view(b, r, k, d).clone()}
        stats["counts"].clamp_min_(0.0)  # rounding of removed weights
        return stats, -self._inertia(source, c64, stats) / source.total_weight().unsqueeze(-1)

    def _pass_rows(self, begin: int, end: int, source: TensorSource, c64: Tensor, first: bool, step: int, X_flat: Tensor,
                   Xc_flat: Tensor, xx_flat: Tensor, w_flat: Tensor | None, refd: Tensor, acc) -> None:
        """The bounded pass (:meth:`run_pass`) over the rows ``begin .. end - 1``, ``step`` at
        a time: their labels and bounds are updated in place and the points that change
        cluster move in the sums of ``acc``, the :class:`_Share` of the thread running them."""
        b, r, k, d = c64.shape
        n = source.n_samples
        lab_flat, slack_flat = self.labels.view(-1), self.slack.view(-1)
        for start in range(begin, end, step):
            stop = min(end, start + step)
            lab = self.labels[..., start:stop]
            slack = self.slack[..., start:stop]
            need = slack <= 0 if self._lowest_on_ties else slack < 0  # [B, R, m]
            if not first and source.labels is not None:
                need &= (source.labels[:, start:stop] < 0).unsqueeze(1)  # labelled points stay
            count = need.numel() if first else int(need.count_nonzero())  # one synchronisation
            if count == 0:
                continue
            if b * r == 1 and count > self.dense_fraction * need.numel():
                w = None if w_flat is None else w_flat[start:stop]
                self._assign_rows(X_flat[start:stop], Xc_flat[start:stop], xx_flat[start:stop], w, c64[0, 0], refd[0], 0,
                                  lab[0, 0], self.slack[0, 0, start:stop], first, acc)
                continue
            # Gather the points whose bounds fail and compare them with every centre at once
            # (into workspace buffers: see _assign_rows).
            ws = acc.workspace
            if b * r == 1:
                pi, ii = None, need.view(-1).nonzero(as_tuple=True)[0].add_(start)
                prow = xrow = ii  # rows of the per-point state and of the data
            else:
                pi, ii = need.view(b * r, -1).nonzero(as_tuple=True)
                ii = ii + start
                prow = pi * n + ii
                xrow = torch.div(pi, r, rounding_mode="floor") * n + ii
            xc = torch.index_select(Xc_flat, 0, xrow, out=buffer(ws, "gathered_xc", (count, d), X_flat))  # [S, D]
            x = xc if Xc_flat is X_flat else torch.index_select(X_flat, 0, xrow, out=buffer(ws, "gathered_x", (count, d), X_flat))
            xx = torch.index_select(xx_flat, 0, xrow, out=buffer(ws, "gathered_xx", (count,), xx_flat))
            # all K distances of the remaining points, per (problem, restart)
            groups = [(0, None)] if b * r == 1 else [(p, (pi == p).nonzero(as_tuple=True)[0]) for p in torch.unique(pi).tolist()]
            for p, sel in groups:
                rows = prow if sel is None else prow.index_select(0, sel)
                xs = x if sel is None else x.index_select(0, sel)
                xcs = xc if sel is None else xc.index_select(0, sel)
                xxs = xx if sel is None else xx.index_select(0, sel)
                wts = None if w_flat is None else w_flat.index_select(0, xrow if sel is None else xrow.index_select(0, sel))
                lab_p = torch.index_select(lab_flat, 0, rows, out=buffer(ws, "gathered_lab", rows.shape, lab_flat))
                slack_p = buffer(ws, "gathered_slack", rows.shape, slack_flat)
                self._assign_rows(xs, xcs, xxs, wts, c64[p // r, p % r], refd[p // r], p * k, lab_p, slack_p, first, acc)
                lab_flat.index_copy_(0, rows, lab_p)
                slack_flat.index_copy_(0, rows, slack_p)

    def _pin(self, labels: Tensor, X_flat: Tensor, w_flat: Tensor | None, r: int, k: int) -> None:
        """Move every point that ``labels [B, N]`` names out of the cluster the pass gave it
        and into its own (assignment and running sums)."""
        b, n = labels.shape
        wrong = (labels >= 0).unsqueeze(1) & (self.labels != labels.unsqueeze(1))  # [B, R, N]
        if not bool(wrong.any()):
            return
        p, i = wrong.view(b * r, n).nonzero(as_tuple=True)
        rows = torch.div(p, r, rounding_mode="floor") * n + i  # rows of the data
        old, new = self.labels.view(-1)[p * n + i], labels.reshape(-1)[rows]
        self._move_rows(X_flat, rows, w_flat, p * k + old, p * k + new)
        self.labels.view(-1)[p * n + i] = new

    def final_assignment(self, source: Source, centers: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(labels [B, R, N], inertia [B, R], counts [B, R, K])`` under the final
        ``centers [B, R, K, D]`` from one more bounded pass (the bounds were moved with the
        last M-step, so only the points they cannot settle are compared with every centre:
        no second dense pass), or ``None`` where no bounded pass ran (streamed data). The
        inertia is summed exactly, ``|x - c_label|^2`` per sample, as :func:`assign` gives it."""
        if self.labels is None or not isinstance(source, TensorSource):
            return None
        # exact ties (centres that coincide, a point on a bisector) go to the lowest index, as
        # argmin and predict give them, rather than staying where the iterations left them
        self._lowest_on_ties = True
        try:
            stats, _ = self.run_pass(source, {"centers": centers}, True)
        finally:
            self._lowest_on_ties = False
        inertia = self._exact_inertia(source, centers, source.X.dtype)
        if not bool(torch.isfinite(inertia).all()):  # a squared distance past the data's dtype (float32 past ~1e19)
            inertia = self._exact_inertia(source, centers, torch.float64)
        inertia, counts = all_reduce_sum([inertia, stats["counts"]])
        return self.labels, inertia, counts

    def _exact_inertia(self, source: TensorSource, centers: Tensor, dtype: torch.dtype) -> Tensor:
        """``[B, R]`` (weighted) sum of ``|x - c_label|^2`` over this rank's rows, each
        distance taken in ``dtype`` (the data's; float64 where one overflows it) and summed in
        float64."""
        b, r, k, d = centers.shape
        inertia = torch.zeros(b, r, dtype=torch.float64, device=centers.device)
        rows = (torch.arange(b * r, device=centers.device) * k).view(b, r, 1)  # first centre of each restart
        c_flat = centers.reshape(b * r * k, d).to(dtype)
        X, wt, ws = source.X, source.sample_weight, self.workspace
        like = X.new_empty((), dtype=dtype)
        ones = like.new_ones(d)
        n = X.shape[1]
        step = max(1, 2**16 // (d * b * r))  # blocks that stay in cache, in reused buffers
        for start in range(0, n, step):
            lab = self.labels[..., start : start + step]
            m = lab.shape[-1]
            idx = lab.reshape(-1) if b * r == 1 else (lab + rows).view(-1)
            nearest = torch.index_select(c_flat, 0, idx, out=buffer(ws, "nearest", (b * r * m, d), like)).view(b, r, m, d)
            diff = torch.sub(X[:, None, start : start + m], nearest, out=nearest).square_().view(-1, d)
            # a GEMV: no sum over short rows
            dist = torch.mv(diff, ones, out=buffer(ws, "nearest_d", (b * r * m,), like)).view(b, r, m)
            inertia += (dist.double() if wt is None else dist.double() * wt[:, None, start : start + m].double()).sum(-1)
        return inertia

    def _inertia(self, source: TensorSource, c64: Tensor, stats) -> Tensor:
        """``[B, R]`` (weighted) inertia of the assignment, exactly, from the cluster sums (the
        bounds are only bounds): ``sum w |x - r|^2 - 2 sum_k (c_k - r).(S_k - n_k r) + sum_k
        n_k |c_k - r|^2``, about a reference ``r`` near the data (the first rows' mean), with
        ``sum w |x - r|^2`` computed once per fit (:meth:`_prepare_rows`)."""
        ref = self.ref[:, None, None, :]
        cc = c64 - ref
        moments = stats["sums"] - stats["counts"].unsqueeze(-1) * ref  # sum of w (x - r) per cluster
        inertia = self.spread[:, None] - 2.0 * (cc * moments).sum((-1, -2)) + (stats["counts"] * cc.square().sum(-1)).sum(-1)
        return inertia.clamp_min(0.0)

    def _prepare_rows(self, source: TensorSource) -> None:
        """Once per fit, the data as the bounded passes' GEMMs read it: ``self.rows = (Xc [B N,
        D], xx [B N], ref [B, D])``. ``ref`` is a reference near the data (the mean of its
        first rows, rounded to the data's dtype; zero where the data already lie about the
        origin, within their spread, as the rounding of a centring would cost more accuracy
        than it buys), ``Xc`` the data less ``ref`` in their dtype (the data itself where
        ``ref`` is zero: no copy), and ``xx`` their ``|x - ref|^2`` in their dtype (the GEMM's
        error bound is written in it, :meth:`_assign_rows`). Also takes the exact ``sum w |x -
        ref|^2`` of :meth:`_inertia` (float64), unless the tolerance's pass took it."""
        X = source.X
        b, n, d = X.shape
        if self.spread is None:
            self.ref, _, _, _, self.spread = _moments(source, X[:, : min(n, 4096)].double().mean(1))
        mean_square = self.spread / source.total_weight().double().clamp_min(1e-300)
        centre = bool((self.ref.square().sum(-1) > mean_square).any())
        refd = self.ref.to(X.dtype) if centre else self.ref.new_zeros(self.ref.shape, dtype=X.dtype)
        Xc = (X - refd.unsqueeze(1)).reshape(b * n, d) if centre else X.reshape(b * n, d)
        xx = torch.empty(b * n, dtype=X.dtype, device=X.device)
        ones = X.new_ones(d)
        step = 2**16
        for s in range(0, b * n, step):
            torch.mv(Xc[s : s + step].square(), ones, out=xx[s : s + step])
        self.rows = (Xc, xx, refd)

    @staticmethod
    def _relative_error(d: int, k: int, dtype: torch.dtype) -> float:
        """The error of a GEMM entry of :meth:`_assign_rows` (``|c|^2 - 2 x.c`` against the
        squared distance less ``|x|^2``, on centred data), per unit of ``|x|^2 + max |c|^2``:
        the expansion's rounding, ``2 (D + 2) eps``, the centre's index written in the low
        ``bits`` of the entry, ``2^(bits + 1) eps``, and ``18 eps`` for the rounding of the
        bounds' own arithmetic in the data's dtype. (A squared distance ``|x - c|^2`` is at
        most ``2 (|x|^2 + max |c|^2)``, so the ``16 eps`` of those widen the upper bound's
        square by at least ``8 eps`` of itself, and narrow the lower's: room for the rounding
        of their sums (``eps``), of their square roots (``eps / 2``) and of their difference
        (``eps / 2``), with ``eps`` to spare.)"""
        bits = (k - 1).bit_length()
        return (2.0 * (d + 2) + 2.0 ** (bits + 1) + 18.0) * torch.finfo(dtype).eps

    def _assign_rows(self, X: Tensor, Xc: Tensor, xx: Tensor, w: Tensor | None, c64: Tensor, ref: Tensor, base: int,
                     lab: Tensor, slack: Tensor, first: bool, acc: _Share) -> None:
        """Assign the rows ``X [S, D]`` (weights ``w [S]`` or ``None``) to their nearest centre
        among ``c64 [K, D]`` (one problem and restart, whose clusters are rows ``base ..
        base + K - 1`` of the running sums), exactly as Lloyd's algorithm: ``lab [S]`` holds
        their current labels and receives the new ones (``first``: no current labels), ``slack
        [S]`` receives the lower bound on their slack (:meth:`run_pass`); the points that
        changed cluster move in the running sums (float64 scatter-adds; all the rows on the ``first`` pass). ``Xc``
        and ``xx`` are the rows' part of :meth:`_prepare_rows`'s, ``ref [D]`` their reference;
        ``acc`` is the :class:`_Share` of the thread running them (the moves, the workspace).

        The rows are cut into blocks whose ``[K, S]`` distance matrix stays in cache (of
        :attr:`block_entries` entries). In each block one GEMM in the data's dtype, on the centred data ``Xc``, gives ``|c|^2 - 2
        x.c``, each entry within ``2 (D + 2) eps (|x|^2 + max |c|^2)`` of the squared distance
        less ``|x|^2``. The centre's index is then written into the low ``bits = ceil(log2
        K)`` bits of each entry's significand, which moves it by less than ``2^bits`` units in
        its last place (``2^(bits + 1) eps (|x|^2 + max |c|^2)``, counted in the error
        ``err``): one minimum over the centres then gives both the smallest entry and its
        centre (an argmin over ``K`` costs tens of times a minimum on CPU), and a second
        minimum, with the winner's entry set to infinity, the second smallest. They give the
        bounds, widened by ``err`` so they stay bounds; where the two lie within ``2 err`` of
        each other the GEMM cannot tell the nearer centre, and those rows' distances are taken
        exactly in float64 (on exact ties the current label stays). The per-row bound
        arithmetic runs once over all ``S`` rows, in the data's dtype (its rounding is
        counted in the error, :meth:`_relative_error`), not per block."""
        ws = acc.workspace
        n, d = X.shape
        k = c64.shape[0]
        dtype = X.dtype
        bits = (k - 1).bit_length()
        mask = (1 << bits) - 1
        block = max(256, min(n, self.block_entries // max(k, 1)))  # a [K, block] matrix
        positions, low_bits, coef, sign = self._constants(X, k, block, ws)
        c_cen = c64 - ref.double()  # about the rounded reference the data is centred on
        cc = c_cen.to(dtype)
        cn = cc.square().sum(-1, keepdim=True)  # [K, 1]
        rel = self._relative_error(d, k, dtype)
        # a subnormal entry's index bits move it by up to 2^bits of the smallest subnormal
        tiny = 2.0 ** (bits + 1) * float(torch.finfo(dtype).smallest_normal) * torch.finfo(dtype).eps
        err = float(c_cen.square().sum(-1).amax()) * rel + tiny  # the error's part common to all rows
        # (past the dtype's range every row's bounds overflow, and all are settled exactly)
        err = min(err, float(torch.finfo(dtype).max))
        two = buffer(ws, "two", (2, n), X)  # the smallest and second smallest entry of each row
        # (every row-sized temporary is a workspace buffer: a fresh one of more than 128 kB is
        # a fresh mapping whose pages fault in on every pass)
        new = buffer(ws, "new", (n,), lab)
        if k == 1:
            two[1].fill_(torch.inf)
            new.zero_()
        for s in range(0, n, block):
            e = min(n, s + block)
            m = e - s
            d2 = torch.addmm(cn, cc, Xc[s:e].mT, alpha=-2.0, out=buffer(ws, "d2", (k, m), X))  # [K, m]
            if k == 1:
                torch.amin(d2, 0, out=two[0, s:e])
                continue
            d2.view(low_bits.dtype).bitwise_and_(~mask).bitwise_or_(low_bits)
            best = torch.amin(d2, 0, out=two[0, s:e])
            # (a NaN row, settled exactly below, may carry any bits: clamped)
            win = torch.bitwise_and(best.view(low_bits.dtype), mask, out=buffer(ws, "win", (m,), low_bits)).clamp_max_(k - 1)
            new[s:e] = win
            # the second smallest: the winner's entry set to infinity through the flat view
            flat = torch.add(positions[:m], win, alpha=m)
            torch.amin(d2.view(-1).index_fill_(0, flat, torch.inf).view(k, m), 0, out=two[1, s:e])
        # bounds: sqrt(best + |x|^2 + err) and sqrt(second + |x|^2 - err), in the data's dtype
        # (rel counts their rounding: a float64 square root costs five times a float32 one)
        bnd = torch.addcmul(two, coef, xx, out=buffer(ws, "bounds", (2, n), X)).add_(sign, alpha=err)
        # (written as "not above" so that a row whose squares overflow the dtype, NaN or
        # infinity here, is settled exactly too)
        close = None if k == 1 else torch.gt(bnd[1], bnd[0]).logical_not_().nonzero(as_tuple=True)[0]
        bnd.clamp_min_(0.0).sqrt_()
        if close is not None and close.numel():  # the GEMM cannot tell: exact distances
            old = lab.index_select(0, close)
            ex = (X.index_select(0, close).double().unsqueeze(1) - c64).square_().sum(-1)  # [c, K]
            lc = _argmin_keeping(ex, old, first or self._lowest_on_ties)
            new.index_copy_(0, close, lc)
            own = ex.gather(-1, lc.unsqueeze(-1)).squeeze(-1).sqrt_()
            other = ex.scatter_(-1, lc.unsqueeze(-1), torch.inf).amin(-1).sqrt_()
        torch.sub(bnd[1], bnd[0], out=slack)
        if close is not None and close.numel():
            slack.index_copy_(0, close, other.sub_(own))
        idx = None if first else torch.ne(new, lab).nonzero(as_tuple=True)[0]
        if idx is None or idx.numel():
            lab_new = new if idx is None else new.index_select(0, idx)
            lab_old = None if idx is None else lab.index_select(0, idx)
            if base:
                lab_new = lab_new + base
                lab_old = None if lab_old is None else lab_old + base
            self._move_rows(X, idx, w, lab_old, lab_new, acc)
            acc.moved = True
        lab.copy_(new)

    def _constants(self, X: Tensor, k: int, block: int, ws: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The fit's constants of :meth:`_assign_rows` (made once per workspace ``ws``): ``positions [block]``, the
        centres' indices ``[K, 1]`` as integers the width of the data's dtype, and the
        bounds' ``1 + rel`` and ``1 - rel``, ``+1`` and ``-1`` ``[2, 1]`` in that dtype."""
        key = ("constants", k, block, X.dtype)
        if key not in ws:
            as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[X.element_size()]
            rel = self._relative_error(X.shape[1], k, X.dtype)
            ws[key] = (torch.arange(block, device=X.device),
                       torch.arange(k, dtype=as_int, device=X.device).unsqueeze(1),
                       torch.tensor([[1.0 + rel], [1.0 - rel]], dtype=X.dtype, device=X.device),
                       torch.tensor([[1.0], [-1.0]], dtype=X.dtype, device=X.device))
        return ws[key]

    def _move_rows(self, X: Tensor, idx: Tensor | None, w: Tensor | None, old: Tensor | None, new: Tensor, acc=None) -> None:
        """Move the rows ``idx [c]`` of ``X [S, D]`` (all of them with ``idx = None``; weights
        ``w [S]`` or ``None``) out of the clusters ``old [c]`` (flat rows of the running sums;
        ``None``: none, the first pass) and into the clusters ``new [c]`` of ``acc``'s running
        sums (this family's by default, or a worker's :class:`_Share`): float64 scatter-adds,
        in blocks whose float64 copy stays in cache."""
        acc = self if acc is None else acc
        ws = acc.workspace
        c, d = new.shape[0], X.shape[1]
        f64 = torch.float64
        if w is None:
            wt = buffer(ws, "ones", (c,), acc.sums).fill_(1.0)
        else:
            wt = torch.index_select(w, 0, idx) if idx is not None else w
            wt = wt.to(f64)
        # (the points leave their old clusters as negated copies: index_add_ with alpha=-1
        # costs about six times a plain one on CPU, and adds the same negated values)
        if old is not None:
            acc.counts.index_add_(0, old, torch.neg(wt, out=buffer(ws, "moved_neg_w", (c,), acc.sums)))
        acc.counts.index_add_(0, new, wt)
        block = max(1, 2**16 // d)
        for s in range(0, c, block):
            e = min(c, s + block)
            xb = X[s:e] if idx is None else torch.index_select(X, 0, idx[s:e], out=buffer(ws, "moved", (e - s, d), X))
            x64 = buffer(ws, "moved64", (e - s, d), acc.sums).copy_(xb)
            if w is not None:
                x64.mul_(wt[s:e].unsqueeze(-1))
            if old is not None:
                acc.sums.index_add_(0, old[s:e], torch.neg(x64, out=buffer(ws, "moved64_neg", (e - s, d), acc.sums)))
            acc.sums.index_add_(0, new[s:e], x64)

    def _move_bounds(self, old: Tensor, new: Tensor) -> None:
        """After the centres move, loosen the bounds so they stay valid: each point's slack
        shrinks by its centre's move and the largest move."""
        if self.labels is None:
            return
        move = (new.double() - old.double()).square().sum(-1).sqrt()  # [B, R, K]
        move += move.amax(-1, keepdim=True)
        b, r, k = move.shape
        if b * r == 1:  # (index_select costs a third of gather on CPU; a reused buffer: see _assign_rows)
            lab = self.labels.view(-1)
            moved = torch.index_select(move.view(-1), 0, lab, out=buffer(self.workspace, "move", lab.shape, move))
            self.slack.view(-1).sub_(moved)
        else:
            self.slack -= torch.gather(move, -1, self.labels)

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
        for _, X, wc, lab in self.source.chunks(labels=True):
            _, dist = assign(X.unsqueeze(1), centers)  # [B, R, n] exact distances
            if lab is not None:  # labelled rows stay in their clusters
                dist = dist.masked_fill((lab >= 0).unsqueeze(1), -torch.inf)
            m = min(n_far, dist.shape[-1])
            d, i = dist.double().topk(m, dim=-1)
            rows = X.unsqueeze(1).expand(b, r, *X.shape[1:]).gather(2, i.unsqueeze(-1).expand(b, r, m, X.shape[-1]))
            wt = torch.ones_like(d) if wc is None else wc.double().unsqueeze(1).expand(b, r, -1).gather(2, i)
            best = (d, rows.double(), wt) if best is None else _keep_farthest(best, (d, rows.double(), wt), n_far)
        d, rows, wt = best
        pad = n_far - d.shape[-1]
        if pad:  # every rank sends the same shapes
            d = torch.cat([d, d.new_full((b, r, pad), -torch.inf)], -1)
            rows = torch.cat([rows, rows.new_zeros(b, r, pad, rows.shape[-1])], 2)
            wt = torch.cat([wt, wt.new_zeros(b, r, pad)], -1)
        # the farthest points over all the ranks, in rank order (this rank's alone without a group)
        parts = list(zip(all_gather(d), all_gather(rows), all_gather(wt)))
        best = parts[0]
        for other in parts[1:]:
            best = _keep_farthest(best, other, n_far)
        # where every (unlabelled) point already sits on its centre, relocating would only
        # stack two centres on one point (more clusters than distinct points): as
        # scikit-learn's, the empty clusters are then left as they are (their centres stay)
        movable = (best[0].amax(-1) > 0).tolist()  # [B][R], the same on every rank
        for bi in range(b):
            for ri in range(r):
                if not movable[bi][ri]:
                    continue
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


class KMeans(EMEstimator):
    """K-means clustering (Lloyd's algorithm) with scikit-learn's interface, run as hard EM on
    torchem's batched driver.

    Example:
        >>> import numpy as np
        >>> from torchem import KMeans
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]], dtype=float)
        >>> km = KMeans(n_clusters=2, random_state=0).fit(X)
        >>> km.labels_
        array([1, 1, 1, 0, 0, 0], dtype=int32)
        >>> km.predict([[0, 0], [12, 3]])
        array([1, 0], dtype=int32)
        >>> km.cluster_centers_
        array([[10.,  2.],
               [ 1.,  2.]])

    Distances come from the GEMM expansion ``|x|^2 - 2 x.c + |c|^2`` on data centred on the
    mean of the centres, chunk by chunk (no ``N x K x D`` tensor, and an ``N x K`` block only
    per chunk); the distance of each sample to its nearest centre is then recomputed exactly,
    so the inertia carries no cancellation. In-memory data on the CPU takes Hamerly's bounded
    passes (which skip the distances that cannot change an assignment); on CUDA a dense pass
    with no host synchronisation gives the same assignment. Empty clusters are re-seeded from
    the points farthest from their centres (as scikit-learn's, not where every point already
    sits on its centre: an empty cluster then keeps its centre). The ``n_init`` restarts run
    together; ``X`` of
    shape ``[B, N, D]`` clusters ``B`` independent datasets.

    Args:
        n_clusters: number of clusters ``K``.
        init: ``"k-means++"`` (greedy, batched, on device), ``"random"`` (distinct random
            samples), or initial centres ``[K, D]`` (or ``[B, K, D]``). As scikit-learn's, a
            fit whose ``labels_`` name fewer than ``K`` clusters (data with fewer than ``K``
            distinct points, where some centres coincide) warns (``ConvergenceWarning``).
        n_init: number of restarts, or ``"auto"`` (1 for ``k-means++`` or given centres, 10
            for ``random``, as scikit-learn).
        max_iter: the most Lloyd iterations.
        tol: stop when the total squared movement of the centres is at most ``tol`` times the
            mean variance of the features (scikit-learn's rule).
        verbose: 0 silent; 1 a progress bar (tqdm, when installed) and a summary line; 2 also
            a line every 10 iterations.
        random_state: ``None``, an int, a ``torch.Generator`` or a numpy random state.
        chunk_size: samples per chunk; ``None`` chooses from the available memory.
        nan_policy: ``"raise"`` only (NaN in the data is refused): K-means has no likelihood
            to marginalise a missing entry over, and ``labels_`` labels every row, so none
            can be left out. For data with missing entries, fit
            ``GaussianMixture(covariance_type="spherical", nan_policy="marginalize")``.
    """

    _param_names = ("centers",)
    _fitted_attributes = ("cluster_centers_", "labels_", "inertia_", "n_iter_", "n_features_in_")
    _cosmetic = ("verbose", "random_state", "chunk_size")
    _warn_not_converged = False  # as scikit-learn's KMeans
    _estimator_type = "clusterer"

    def _component_shapes(self, k: int, d: int) -> dict[str, tuple]:
        return {"centers": (k, d)}

    def _predict_chunk(self, X: Tensor, params, family, prepared) -> Tensor:
        # int32, as labels_ and fit_predict (and scikit-learn's KMeans.predict)
        return super()._predict_chunk(X, params, family, prepared).to(torch.int32)

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
        nan_policy: str = "raise",
    ):
        super().__init__()
        self.n_clusters = n_clusters
        self.nan_policy = nan_policy
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.chunk_size = chunk_size

    # ----------------------------------------------------------------------------------------
    # Hooks of the shared layer
    # ----------------------------------------------------------------------------------------

    @property
    def _n_components(self) -> int:
        return int(self.n_clusters)

    def _k_name(self) -> str:
        return "n_clusters"

    def _too_few_samples(self, n: int, k: int) -> str:
        return f"n_samples={n} should be >= n_clusters={k}. Reduce n_clusters or pass more data."

    def _method(self) -> str | None:
        return self.init if isinstance(self.init, str) else None

    def _failure_message(self) -> str:
        return ("K-means failed: squared distances of X overflow its dtype (coordinates past about 1e154 in "
                "float64, 1e19 in float32); scale the data (K-means commutes with scaling: fit X / s and multiply "
                "cluster_centers_ by s), or fit float64 data.")

    def _validate_hyperparameters(self) -> None:
        check_int(self.n_clusters, "n_clusters", 1)
        check_int(self.max_iter, "max_iter", 1)
        check_int(self.verbose, "verbose", 0)
        check_real(self.tol, "tol")
        if self.chunk_size is not None:
            check_int(self.chunk_size, "chunk_size", 1)
        if callable(self.init):
            raise ValueError(
                "init as a callable is not supported (scikit-learn's init(X, n_clusters, random_state)): call it "
                "yourself and pass the centres it returns, KMeans(n_clusters, init=centres), or use init='k-means++' "
                "or 'random'."
            )
        method = self._method()
        if method is not None and method not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++', 'random' or an array of centres; got {self.init!r}.")
        if self.n_init != "auto":
            check_int(self.n_init, "n_init", 1)
        if self.nan_policy != "raise":
            raise ValueError(
                f"KMeans supports nan_policy='raise' only; got {self.nan_policy!r}. K-means has no likelihood to "
                "marginalise missing entries over, and labels_ labels every row, so none can be left out: impute or drop "
                "the rows holding NaN, or fit GaussianMixture(covariance_type='spherical', nan_policy='marginalize')."
            )

    def _n_restarts(self) -> int:
        method = self._method()
        if method is None:
            return 1  # explicit centres: one run, as scikit-learn
        if self.n_init == "auto":
            return 10 if method == "random" else 1
        return int(self.n_init)

    def _em_settings(self) -> dict:
        # the family stops each restart on the movement of its centres (scikit-learn's rule)
        return {"tol": 0.0, "max_iter": int(self.max_iter), "hard": True, "verbose": int(self.verbose), "verbose_interval": 10}

    def _family(self, n_features: int) -> Lloyd:
        return Lloyd()

    def _fit_family(self, source: Source) -> _KMeansFamily:
        # scikit-learn's tolerance: tol times the mean variance of the features.
        family = _KMeansFamily(source, float(self.tol))
        self._bounded = family  # its bounds give the final labels (_select); dropped there
        return family

    def _bytes_per_sample(self, n_features: int, n_restarts: int, itemsize: int) -> int:
        k = int(self.n_clusters)
        # + float64 rows of the dense pass: the chunk, and one gathered centre per restart
        return itemsize * n_restarts * (4 * k + 2 * n_features) + 8 * n_restarts * k + 8 * n_features * (n_restarts + 1)

    def _store(self, params: dict[str, Tensor]) -> None:
        self._set_parameter("centers", params["centers"])

    def _constrained(self) -> dict[str, Tensor]:
        return {"centers": self.centers}

    def _starting_params(self, source: Source, n_init: int, generator: torch.Generator) -> dict[str, Tensor]:
        b, _, d = source.X.shape
        # Data with fewer distinct points than n_clusters is fitted as scikit-learn fits it: the
        # draws then repeat points, some centres coincide, and the fit warns that fewer than
        # n_clusters clusters keep points (_warn_if_clusters_coincide).
        if source.labels is not None and self._method() == "k-means++":
            # seeded k-means++: the labelled clusters at their means, the others drawn away from them
            centers = seeded_kmeans_plusplus(source, int(self.n_clusters), n_init, generator)
        else:
            centers = self._initial_centers(self._method(), source.X, source.sample_weight, n_init, generator, b, d,
                                            source.device, source.dtype)
            if source.labels is not None and self._method() is not None:
                centers = seeded_centers(source, centers)
        return {"centers": centers.to(source.dtype)}

    def _select(self, result, source: Source):
        """scikit-learn's rule: the restart whose final centres have the least inertia (the
        final assignment of every restart's centres, which also gives ``labels_``)."""
        final = result.params["centers"]  # [B, R, K, D]
        family = self.__dict__.pop("_bounded", None)
        done = None if family is None else family.final_assignment(source, final)
        labels, inertia, counts = done if done is not None else self._assign_all(source, final)  # [B, R, N], [B, R], [B, R, K]
        best = inertia.argmin(-1)  # [B]
        rows = torch.arange(final.shape[0], device=best.device)
        pick = lambda t: t[rows, best]  # noqa: E731
        # int32 labels (as scikit-learn's), of the best restart only; a stream's labels are on the host
        best_labels = labels[rows.to(labels.device), best.to(labels.device)].to(torch.int32)
        self._final = (best_labels, pick(inertia), pick(counts).unsqueeze(1))
        history = [pick(h) for h in result.history]
        return {"centers": pick(final)}, pick(result.lower_bound), pick(result.n_iter), pick(result.converged), history

    def _after_fit(self, source: Source, params) -> None:
        self._labels, self._inertia, self._counts = self._final
        del self._final
        self._warn_if_clusters_coincide()

    def _warn_if_clusters_coincide(self) -> None:
        """scikit-learn's ConvergenceWarning when ``labels_`` (over every rank) name fewer
        than ``n_clusters`` distinct clusters: data with fewer distinct points than clusters
        (a start drawn from it repeats points), or given centres that the data cannot all
        keep."""
        k = int(self.n_clusters)
        labels = self._labels  # [B, N] int32, of the best restart (counted as they are: no int64 copy)
        hits = torch.stack([torch.bincount(row, minlength=k) for row in labels])  # [B, K] labels, not weights
        hits = all_reduce_sum([hits.to(self._counts.device, torch.float64)])[0]
        distinct = (hits > 0).sum(-1).tolist()
        if min(distinct) < k:
            found = str(distinct[0]) if len(distinct) == 1 else ", ".join(map(str, distinct)) + " in the problems"
            warnings.warn(f"Number of distinct clusters ({found}) found smaller than n_clusters ({k}). "
                          "Possibly due to duplicate points in X.", exceptions.ConvergenceWarning, stacklevel=caller_stacklevel())

    def _how_to_get_parameters(self) -> str:
        return " (with init=<array of centres> and max_iter=1 to start close to given centres)."

    # ----------------------------------------------------------------------------------------
    # Fitting
    # ----------------------------------------------------------------------------------------

    def fit(self, X, y=None, sample_weight=None, *, labels=None, callback=None):
        """Compute the clustering.

        Args:
            X: ``[N, D]`` or ``[B, N, D]`` data (numpy or tensor); an ``np.memmap`` (or, on
                CUDA, a host array larger than half the free device memory) is streamed chunk
                by chunk, and a re-iterable of ``[n, D]`` batches (``X``, ``(X,)`` or a mapping
                ``{"X": X, "sample_weight": w}``, e.g. from a ``DataLoader``; weights are read
                from that key only, and labels are not used: a batch of two or more items,
                such as ``TensorDataset(X, y)``'s, is refused) is read once per iteration, with
                the driver's chunked pass. ``"k-means++"`` and ``"random"`` seed from a
                uniform sample of :data:`torchem.data.INIT_SAMPLE_SIZE` samples (all of them
                when there are fewer), for in-memory and streamed data alike. Under
                ``torch.distributed`` each rank passes its own shard.
            y: ignored.
            sample_weight: optional ``[N]`` (or ``[B, N]``) non-negative weights.
            labels: optional ``[N]`` (or ``[B, N]``) partial labels (seeded k-means):
                ``labels[i] = k`` keeps row ``i`` in cluster ``k`` in every assignment (and in
                ``labels_``), ``-1`` leaves it free; with ``"k-means++"`` or ``"random"`` a
                cluster with labelled rows starts at their mean (``"k-means++"`` then draws
                the other seeds away from those means). Streams carry them in
                ``{"X": X, "labels": l}`` batches. ``y`` is never read.
            callback: optional ``callback(iteration, lower_bound, model) -> bool`` called after
                every Lloyd iteration with minus the mean squared distance of the samples to
                their centres (a float, ``[B]`` for ``B`` problems) and this model holding the best
                restart's current centres (``cluster_centers_``, ``predict``, ``transform``
                and ``score`` work; ``labels_`` and ``inertia_`` are set at the end);
                returning ``True`` stops the fit.

        Returns:
            ``self``.
        """
        self._fit(X, sample_weight, callback=callback, labels=labels)
        return self

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
        """``(labels [B, R, N] int32, inertia [B, R], counts [B, R, K])``: the final assignment,
        its inertia and the (weighted) number of samples of each cluster, over all ranks.

        The labels are written chunk by chunk into one int32 tensor (no list joined at the
        end, which held them twice): on the device for data held there, on the host for
        streamed data (a memmap, a DataLoader, a host array larger than the device), so device
        memory never grows with the number of samples."""
        b, r = centers.shape[:2]
        host = source.X is None
        labels = torch.empty(b, r, source.n_samples, dtype=torch.int32, device="cpu" if host else centers.device)
        inertia = None
        counts = torch.zeros(*centers.shape[:-1], dtype=torch.float64, device=centers.device)
        for start, X, w, known in source.chunks(labels=True):
            lab, dist = _assign_labelled(X.unsqueeze(1), centers, known)
            labels[..., start : start + lab.shape[-1]] = lab.to(torch.int32)
            wt = torch.ones_like(dist, dtype=torch.float64) if w is None else w.double().unsqueeze(1).expand_as(dist)
            counts.scatter_add_(-1, lab, wt)
            part = (dist.double() * wt).sum(-1)
            inertia = part if inertia is None else inertia + part
        inertia, counts = all_reduce_sum([inertia, counts])
        return labels, inertia, counts

    def partial_fit(self, X, y=None, sample_weight=None, *, labels=None):
        """Update the centres with one batch of a stream (mini-batch k-means).

        Each sample moves its nearest centre towards itself with step ``1 / count``, where
        ``count`` is the (weighted) number of samples that centre has received so far: every
        centre is the running mean of the samples assigned to it (scikit-learn's
        ``MiniBatchKMeans`` rule, without its random reassignment of small clusters). The first
        call seeds the centres from its batch with ``init`` (so it needs at least
        ``n_clusters`` samples) unless the model is already fitted, in which case the stream
        continues from the fitted centres, each counted as having received its cluster's
        (weighted) size in the fit (as ``MiniBatchKMeans.partial_fit`` after ``fit``).
        ``labels_`` and ``inertia_`` describe the last batch, ``n_iter_`` counts the batches.
        Under ``torch.distributed`` every rank passes its own part of each batch; the
        per-centre sums are added over the ranks (and the first batch's parts, gathered, seed
        the centres), so all ranks keep identical centres.

        Args:
            X: ``[n, D]`` (or ``[B, n, D]``) batch.
            y: ignored.
            sample_weight: optional ``[n]`` non-negative weights.
            labels: optional ``[n]`` partial labels: labelled rows move their own cluster.

        Returns:
            ``self``.
        """
        return super().partial_fit(X, y, sample_weight, labels=labels)

    def _online_step(self, source: Source, params: dict[str, Tensor], state: dict | None, batch_weight):
        centers = params["centers"]  # [B, 1, K, D]
        if state is None:
            counts = getattr(self, "_counts", None) if self._fitted else None
            state = {"counts": torch.zeros(*centers.shape[:-1], dtype=torch.float64, device=centers.device)
                     if counts is None else counts.to(centers.device)}
        stats, _, _ = accumulate(self._family(source.n_features), source, params, hard=True)  # the ranks' parts make one batch
        c, s = stats["counts"], stats["sums"]
        total = state["counts"] + c
        moved = (centers.double() * state["counts"].unsqueeze(-1) + s) / total.clamp_min(1e-300).unsqueeze(-1)
        new = torch.where((c > 0).unsqueeze(-1), moved, centers.double()).to(centers.dtype)
        state["counts"] = total
        # labels and inertia of the batch, from the centres before the update
        labels, dist = _assign_labelled(source.X.unsqueeze(1), centers, source.labels)
        w = source.sample_weight
        inertia = (dist.double() if w is None else dist.double() * w.double().unsqueeze(1)).sum(-1)
        inertia, weight = all_reduce_sum([inertia, source.total_weight().double()])  # the whole batch, every rank
        self._labels, self._inertia = labels[:, 0].to(torch.int32), inertia[:, 0]
        self._counts = total
        return {"centers": new}, -inertia / weight.unsqueeze(-1), state

    def fit_predict(self, X, y=None, sample_weight=None, *, labels=None):
        """Fit and return the cluster of each sample (``labels_``)."""
        return self.fit(X, sample_weight=sample_weight, labels=labels).labels_

    # ----------------------------------------------------------------------------------------
    # Attributes
    # ----------------------------------------------------------------------------------------

    def _check_final(self, name: str) -> None:
        if "_labels" not in self.__dict__:  # inside a callback of a first fit
            raise exceptions.NotFittedError(f"{name} is set at the end of fit; inside a callback use cluster_centers_, predict, "
                                 "transform or score.")

    def _scalar(self, t: Tensor, cast):
        return cast(t.reshape(-1)[0]) if not self._stacked else self._attr(t)

    @property
    def cluster_centers_(self):
        """Cluster centres ``[K, D]`` (``[B, K, D]``)."""
        check_fitted(self)
        return self._attr(self.centers)

    @property
    def labels_(self):
        """Cluster of each training sample ``[N]`` (``[B, N]``), int32 as scikit-learn's."""
        check_fitted(self)
        self._check_final("labels_")
        return self._attr(self._labels if self._stacked else self._labels[0])

    @property
    def inertia_(self):
        """Sum of (weighted) squared distances of the samples to their closest centre."""
        check_fitted(self)
        self._check_final("inertia_")
        return self._scalar(self._inertia, float)

    # ----------------------------------------------------------------------------------------
    # Inference
    # ----------------------------------------------------------------------------------------

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
        if isinstance(temperature, bool) or not 0 < float(temperature) < float("inf"):
            raise ValueError(f"temperature must be a positive finite number (or None for the hard score); got {temperature!r}.")
        return float(temperature) * torch.logsumexp(-squared_distances(x, centers) / float(temperature), -1)

    @staticmethod
    def _joint(X, params, family, prepared):
        """Minus the squared distances of a chunk to every centre (what ``predict`` maximises).
        A row far beyond the centres (``|x - r|^2 > |c - r|^2 / eps``, ``r`` their mean: a
        query at 1e30, or at 1e200 where the squared distances overflow float64) drops their
        common term ``|x - r|^2``, which rounds away their differences, and is measured in
        units ``s`` of its largest coordinate: ``(|c - r|^2 - 2 (x - r).(c - r)) / s`` orders
        the centres as the exact distances do."""
        centers = params["centers"]
        d2 = squared_distances(X, centers)
        ref = centers.mean(-2, keepdim=True)
        xc, cc = X.to(d2.dtype) - ref, centers.to(d2.dtype) - ref
        eps = torch.finfo(d2.dtype).eps
        far = ~(xc.square().sum(-1, keepdim=True) * eps <= cc.square().sum(-1).amax(-1, keepdim=True).unsqueeze(-1))
        if not bool(far.any()):
            return d2.neg_()
        s = xc.abs().amax(-1, keepdim=True).clamp_min(1.0)
        linear = cc.square().sum(-1).unsqueeze(-2) / s - 2.0 * ((xc / s) @ cc.mT)
        return torch.where(far, linear, d2).neg_()

    @torch.no_grad()
    def transform(self, X):
        """Euclidean distance of each sample to every centre: ``[N, K]`` (``[B, N, K]``), in the
        container :meth:`set_output` asks for."""
        return self._wrap_output(self._distances(X), X)

    def _distances(self, X):
        """:meth:`transform`'s distances, unwrapped (a stream's blocks are joined first)."""
        joined = self._blocks(X, self._distances, 2)
        if joined is not None:
            return joined
        t, kind = self._check_input(X)

        def distances(x, params, *_):
            d2, scale = _query_distances(x, params["centers"])
            d = d2.sqrt_().mul_(scale)
            _check_finite(d, x, "distance")
            return d
        return to_output(self._map_chunks(t, distances, dim=-2), kind)

    def fit_transform(self, X, y=None, sample_weight=None, *, labels=None):
        """:meth:`fit`, then :meth:`transform` of the same ``X``."""
        return self.fit(X, sample_weight=sample_weight, labels=labels).transform(X)

    # scikit-learn's set_output for transform and fit_transform (read by its helpers).
    _sklearn_auto_wrap_output_keys = frozenset({"transform"})

    def set_output(self, *, transform=None):
        """The container of :meth:`transform`'s and :meth:`fit_transform`'s output, as
        scikit-learn's transformers have it: ``"default"`` (a NumPy array; a tensor for tensor
        input), ``"pandas"`` or ``"polars"`` (a data frame with the columns of
        :meth:`get_feature_names_out`, and the index of a pandas input); ``None`` leaves it as
        it is. Until it is set, scikit-learn's global ``transform_output`` applies. Returns
        ``self``."""
        if transform is not None:
            if transform not in ("default", "pandas", "polars"):
                raise ValueError(f"set_output's transform must be 'default', 'pandas', 'polars' or None; got {transform!r}.")
            self.__dict__.setdefault("_sklearn_output_config", {})["transform"] = transform
        return self

    def get_feature_names_out(self, input_features=None):
        """Names of :meth:`transform`'s output columns, one per cluster: ``kmeans0``,
        ``kmeans1``, ... (scikit-learn's). ``input_features``, when given, must be the fitted
        features (``feature_names_in_``, or as many names as ``n_features_in_``)."""
        check_fitted(self, "_fitted")
        if input_features is not None:
            names = np.asarray(input_features, dtype=object)
            fitted = self.__dict__.get("feature_names_in_")
            if fitted is not None and not np.array_equal(names, fitted):
                raise ValueError("input_features is not equal to feature_names_in_.")
            if names.ndim != 1 or len(names) != self.n_features_in_:
                raise ValueError(f"input_features should have length equal to the number of features "
                                 f"({self.n_features_in_}), got {names.size}.")
        return np.asarray([f"{type(self).__name__.lower()}{i}" for i in range(self.n_clusters)], dtype=object)

    def _wrap_output(self, out, X):
        """``out`` in the container :meth:`set_output` (or scikit-learn's global setting)
        asks for: only 2-D NumPy results, and scikit-learn is imported only when it is already
        in use (its global setting is unset otherwise)."""
        if not isinstance(out, np.ndarray) or out.ndim != 2:
            return out
        if "_sklearn_output_config" not in self.__dict__ and "sklearn" not in sys.modules:
            return out
        from sklearn.utils._set_output import _wrap_data_with_container

        return _wrap_data_with_container("transform", out, X, self)

    @torch.no_grad()
    def score(self, X, y=None, sample_weight=None):
        """Opposite of the (weighted) inertia of ``X`` under the fitted centres (streams: the
        weights of ``{"X": X, "sample_weight": w}`` batches count)."""
        blocks = inference_blocks(X)
        if blocks is not None:
            if sample_weight is not None:
                if not isinstance(X, np.memmap):
                    raise ValueError(f"sample_weight cannot be combined with an iterable X. {HOW_TO_WEIGHT}.")
                weights = check_sample_weight(sample_weight, X.shape).numpy()
                starts = np.cumsum([0] + [len(xb) for xb, _ in inference_blocks(X)])
                blocks = ((xb, weights[a:b]) for (xb, _), a, b in zip(blocks, starts[:-1], starts[1:]))
            parts, seen = [], False
            for xb, wb in blocks:
                seen = True
                # a stream batch's weights: checked, and a batch that weighs nothing adds nothing
                # (the whole stream may not weigh nothing)
                if wb is not None and not bool((check_batch_weight(wb, tuple(np.shape(xb))[:-1]) > 0).any()):
                    continue
                parts.append(self.score(xb, sample_weight=wb))
            if not parts:
                if seen:
                    raise ValueError("The sample weights of the stream X sum to zero; give some samples a positive weight.")
                raise ValueError("X yielded no samples; pass a non-empty iterable of [n_samples, n_features] batches.")
            return sum(parts[1:], parts[0])
        t, kind = self._check_input(X)
        w = check_sample_weight(sample_weight, t.shape)
        def nearest(x, params, *_):
            d2, scale = _query_distances(x, params["centers"])
            d = d2.amin(-1).double() * scale.squeeze(-1).double().square()
            _check_finite(d, x, "squared distance")
            return d
        d = self._map_chunks(t, nearest)
        if w is not None:
            d = d * w.to(d.device).double()
        value = -d.sum(-1)
        if not bool(torch.isfinite(value).all()):
            raise ValueError("The inertia of X overflows float64 (its squared distances sum past 1.8e308); "
                             "scale the data (fit and query it in smaller units).")
        if kind.is_numpy:
            return float(value) if value.ndim == 0 else value.cpu().numpy()
        return to_output(value, kind)

    # ----------------------------------------------------------------------------------------
    # State
    # ----------------------------------------------------------------------------------------

    def _structural_hyperparameters(self) -> dict:
        return {"n_clusters": self.n_clusters}

    def _init_reads_data(self) -> bool:
        return self._method() is not None

    def _distinct_rows_needed(self) -> int:
        return int(self.n_clusters) if self._method() is not None else 0

    def _extra_state(self) -> dict:
        return {"labels": self._labels, "inertia": self._inertia, "counts": getattr(self, "_counts", None)}

    def _load_extra_state(self, state: dict) -> None:
        self._labels, self._inertia = state["labels"], state["inertia"]
        self._counts = state.get("counts")  # partial_fit continues with the saved cluster sizes
