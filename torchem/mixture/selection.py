"""Choosing the number of components and the covariance type of a Gaussian mixture as one
batched job: :class:`GaussianMixtureIC`.

The grid of models (every ``n_components`` K times every ``covariance_type``, times the
``n_init`` restarts) is one ``[B, R]`` batch of the one EM driver (:func:`torchem.em.run_em`):

* Models of different K share one batch: every model has ``K_max`` components, those beyond
  its own K *masked* -- log-weight ``-inf`` (so responsibility exactly 0), mean at the centre
  of the live means (so the kernels' centring is the model's own) and the factor of its first
  component (so every log-density stays finite: no ``inf - inf``, no NaN). Their statistics
  are replaced by the first component's before the M-step, so they never fail or warn, and
  their parameters are put back after it. The live components then follow exactly the EM of
  the plain :class:`~torchem.GaussianMixture` of that K.
* The covariance types share the data pass: one pass reads each chunk once and computes every
  type's log-densities and statistics from it (:class:`_GridFamily`). The parameters of every
  type are held in one layout, the ``full`` one (``[.., K, D, D]`` factors; ``diag`` on the
  diagonal, ``spherical`` a multiple of the identity, ``tied`` repeated over K), so all models
  stack along the restarts dimension; each type's kernels read their own layout, cut from it
  exactly.
* A model that has converged (or failed) is left out of the later passes: the driver keeps
  its parameters unchanged, and the family recomputes only the models whose parameters moved
  (:meth:`_GridFamily.run_pass`), so the batch costs about what the models cost one by one,
  without their per-fit overhead.
* Each model starts where ``GaussianMixture(n_components=K, covariance_type=t,
  random_state=random_state)`` starts (the k-means initialisation is computed once per K and
  shared by the covariance types, which start from the same responsibilities), so every cell
  of the grid is that fit.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch
from torch import Tensor

from .._utils import caller_stacklevel, check_fitted, check_int, check_real
from ..data import Source, TensorSource
from ..em import EMResult, Family, accumulate, select_best
from ..estimator import EMEstimator, EstimatorModule
from ..init import Lloyd, gather_rows, kmeans_plusplus
from .. import exceptions
from ..functional import covariance as C
from ..functional import gaussian as G
from ..functional.kmeans import default_local_trials
from .base import _KMEANS_INIT_ITER
from .gaussian import GaussianMixture, _GaussianFamily

__all__ = ["GaussianMixtureIC"]

_CRITERIA = ("bic", "aic")


# --------------------------------------------------------------------------------------------
# One layout for every covariance type: the full one
# --------------------------------------------------------------------------------------------


class _Layout:
    """How one covariance type sits in the grid's shared layouts: its factor among ``[.., K, D, D]``
    full factors, its Mahalanobis weights and its moments among the ``full`` features ``z`` of
    ``x - c`` (the products ``x_i x_j``, squares first, then ``x - c`` itself; see
    :func:`~torchem.functional.covariance.quadratic_features`). One entry per type in
    :data:`_LAYOUTS`, as the covariance table of :mod:`torchem.functional.covariance`."""

    #: the features its log-densities read (:func:`_columns`): ``"all"``, or ``"elementwise"``
    #: (the squares and ``x``: a diagonal precision weighs no cross product)
    lp_columns = "all"
    #: the features its statistics read (``"x"``: the sums alone, ``tied``'s scatter being the
    #: model's own nowhere)
    stat_columns = "all"

    def embed(self, prec_chol: Tensor, k: int, d: int) -> Tensor:
        """``[.., K, D, D]`` factors from the type's own layout (values copied, exactly)."""
        return prec_chol

    def cut(self, full: Tensor) -> Tensor:
        """The type's own layout cut from ``[.., K, D, D]`` factors (inverse of :meth:`embed`)."""
        return full

    def weights(self, mc: Tensor, prec_chol: Tensor, d: int) -> tuple[Tensor, Tensor]:
        """``(w [.., K, F], b [.., K])`` with ``(x-mu)^T P (x-mu) = z . w + b`` for the full
        features ``z`` (``mc``: the means about ``c``)."""
        return C.lookup("full").expansion(mc, self.embed(prec_chol, mc.shape[-2], d))

    def second_moments(self, rz: Tensor, scatter, d: int) -> Tensor:
        """The type's ``sxx`` statistic from ``rz = r^T z`` (``[.., K, F]``, float64), or from
        ``scatter()``, the ``[B, R_type, D, D]`` scatter of the chunk's rows (each weighted by its
        total responsibility under the model)."""
        return rz[..., :-d]


class _TiedLayout(_Layout):
    stat_columns = "x"

    def embed(self, prec_chol, k, d):
        return prec_chol.unsqueeze(-3).expand(*prec_chol.shape[:-2], k, d, d)

    def cut(self, full):
        return full[..., 0, :, :]

    def second_moments(self, rz, scatter, d):
        return scatter()


class _ElementwiseLayout(_Layout):
    """``diag`` and ``spherical``: their features (squares or their sum, and ``x``) are among
    the full ones; their weights are placed there."""

    lp_columns = stat_columns = "elementwise"

    def weights(self, mc, prec_chol, d):
        w, b = self.table.expansion(mc, prec_chol)  # [quadratic part | x]
        width = C.lookup("full").expansion_width(d)
        out = w.new_zeros(*w.shape[:-1], width)
        out[..., :d] = w[..., : w.shape[-1] - d]  # per square (diag), or one for all (spherical)
        out[..., width - d:] = w[..., -d:]
        return out, b


class _DiagLayout(_ElementwiseLayout):
    table = C.lookup("diag")

    def embed(self, prec_chol, k, d):
        return torch.diag_embed(prec_chol)

    def cut(self, full):
        return torch.diagonal(full, dim1=-2, dim2=-1)

    def second_moments(self, rz, scatter, d):
        return rz[..., :d]


class _SphericalLayout(_ElementwiseLayout):
    table = C.lookup("spherical")

    def embed(self, prec_chol, k, d):
        return prec_chol[..., None, None] * torch.eye(d, dtype=prec_chol.dtype, device=prec_chol.device)

    def cut(self, full):
        return full[..., 0, 0]

    def second_moments(self, rz, scatter, d):
        return rz[..., :d].sum(-1)


#: ``covariance_type`` -> its place in the grid's shared layouts.
_LAYOUTS: dict[str, _Layout] = {"full": _Layout(), "tied": _TiedLayout(), "diag": _DiagLayout(),
                                "spherical": _SphericalLayout()}


def _columns(z: Tensor, which: str, d: int, cache: dict | None = None) -> Tensor:
    """The features ``which`` (``"all"``, ``"x"`` or ``"elementwise"``: the squares then ``x``)
    of ``z [.., F]`` in the full layout; ``cache`` keeps them for the chunk."""
    if which == "all":
        return z
    if cache is not None and which in cache:
        return cache[which]
    out = z[..., -d:] if which == "x" else torch.cat([z[..., :d], z[..., -d:]], -1)
    if cache is not None:
        cache[which] = out
    return out


def _live_centre(means: Tensor, live: Tensor) -> Tensor:
    """``[.., 1, D]``: the mean of the live means (``live [R, K]`` against ``means [B, R, K, D]``),
    computed as the kernels compute the centre (float64, rounded to the means' dtype)."""
    m = live.to(torch.float64).unsqueeze(-1)
    total = (means.double() * m).sum(-2, keepdim=True)
    return (total / m.sum(-2, keepdim=True)).to(means.dtype)


class _GridFamily(Family):
    """The EM hooks of a grid of Gaussian mixtures (see :class:`torchem.em.Family`).

    Parameters hold ``R`` models along the restarts dimension, ordered by covariance type
    (contiguous runs), in the full layout: ``log_weights [B, R, K]``, ``means [B, R, K, D]``,
    ``prec_chol [B, R, K, D, D]``; ``K`` is the largest number of components, and model ``r``
    uses its first ``ks[r]``. Statistics are kept per covariance type (``"<type>:<name>"``,
    ``[B, R_type, ...]``).

    One pass computes, per chunk, the ``full`` features of the data centred on one point
    ``c`` (fixed for the fit: the mean of the initial means) once for every model, then one
    GEMM gives every model's log-densities and, after the E-step, one more every model's
    statistics (the other types' features are among the ``full`` ones; ``tied``'s scatter does
    not depend on the model). The precise pass (float64 statistics about each component's own
    mean) runs each type's own kernels.
    """

    def __init__(self, types: list[str], ks: list[int], k_max: int, reg_covar: float, compact: bool = True,
                 centre: Tensor | None = None, shared_precise: bool = False, ll_only: bool = False):
        self.types, self.ks, self.k_max, self.reg_covar, self.compact = list(types), list(ks), k_max, reg_covar, compact
        self.ll_only = ll_only  # the passes' log-likelihood alone (no statistics)
        # the initial statistics: taken about one given point for every model, so the precise
        # (float64) pass is the shared one in float64
        self.shared_precise = shared_precise
        self.centre = centre  # [B, 1, 1, D] in the data's dtype; set by the first pass
        self.segments: list[tuple[str, int, int]] = []  # (type, start, stop) along R
        for r, t in enumerate(self.types):
            if self.segments and self.segments[-1][0] == t:
                self.segments[-1] = (t, self.segments[-1][1], r + 1)
            else:
                self.segments.append((t, r, r + 1))
        self.families = {t: _GaussianFamily(t, reg_covar) for t, _, _ in self.segments}
        self._live = None
        self._cache = None

    def live(self, device) -> Tensor:
        """``[R, K]``: which components of each model are its own."""
        if self._live is None or self._live.device != device:
            ks = torch.tensor(self.ks, device=device)
            self._live = torch.arange(self.k_max, device=device) < ks.unsqueeze(-1)
        return self._live

    def _native(self, params: dict[str, Tensor], t: str, a: int, b: int) -> dict[str, Tensor]:
        return {"log_weights": params["log_weights"][:, a:b], "means": params["means"][:, a:b],
                "prec_chol": _LAYOUTS[t].cut(params["prec_chol"][:, a:b])}

    def subset(self, idx: list[int]) -> "_GridFamily":
        return _GridFamily([self.types[i] for i in idx], [self.ks[i] for i in idx], self.k_max, self.reg_covar,
                           compact=False, centre=self.centre)

    def _of(self, stats: dict[str, Tensor], t: str) -> dict[str, Tensor]:
        head = f"{t}:"
        return {k[len(head):]: v for k, v in stats.items() if k.startswith(head)}

    # ---- the pass ----------------------------------------------------------------------------

    def prepare(self, params, precise=False):
        if precise and not self.shared_precise:
            return {"precise": [(t, self.families[t].prepare(self._native(params, t, a, b), True))
                                for t, a, b in self.segments]}
        means = params["means"]
        if self.centre is None:
            self.centre = means.double().mean((1, 2), keepdim=True).to(means.dtype)
        bsz, r, k, d = means.shape
        c64 = self.centre.double()
        dtype = torch.float64 if precise else means.dtype
        if dtype != torch.float64:  # float32 rounding of the expansion too large: compute in float64
            eps = torch.finfo(dtype).eps
            for t, a, b in self.segments:
                terms = C.lookup(t).expansion_terms((means[:, a:b].double() - c64).abs(),
                                                    self._native(params, t, a, b)["prec_chol"].double())
                if eps * float(terms.max()) > G.EXPANSION_TOLERANCE:
                    dtype = torch.float64
                    break
        c = self.centre.to(dtype)
        ws, bs, consts = [], [], []
        for t, a, b in self.segments:
            pc = self._native(params, t, a, b)["prec_chol"].to(dtype)
            w, off = _LAYOUTS[t].weights(means[:, a:b].to(dtype) - c, pc, d)
            const = (C.lookup(t).component_log_det(pc, d) - 0.5 * d * math.log(2 * math.pi)).expand(off.shape)
            # each type's GEMM reads only the features its weights use (diag, spherical: 2 D of them)
            which = _LAYOUTS[t].lp_columns
            w = _columns(-0.5 * w, which, d)
            ws.append((a * k, b * k, which, w.reshape(bsz, (b - a) * k, w.shape[-1])))  # [B, R_t K, F_t]
            bs.append(const - 0.5 * off)
            consts.append(const)
        return {
            "dtype": dtype, "centre": c.reshape(bsz, 1, d), "r": r, "w": ws,
            "b": torch.cat(bs, 1).reshape(bsz, r * k, 1), "const": torch.cat(consts, 1).reshape(bsz, r * k, 1),
            "workspace": {},
        }

    def log_prob(self, X, prepared):
        if "precise" in prepared:
            outs = [self.families[t].log_prob(X, prep) for t, prep in prepared["precise"]]
            return torch.cat([o[0] for o in outs], 1), [o[1] for o in outs]
        x = X[:, 0].to(prepared["dtype"])  # [B, n, D]: one chunk for every model
        z = C.lookup("full").features(x - prepared["centre"], prepared["workspace"])  # [B, n, F]
        # component-major [B, R K, n]: the E-step's reductions over K then run along contiguous
        # rows of samples (vectorised), not over runs of K entries
        bsz, n, d = x.shape
        lp = z.new_empty(bsz, prepared["b"].shape[1], n)
        cache: dict[str, Tensor] = {}
        for lo, hi, which, w in prepared["w"]:
            torch.baddbmm(prepared["b"][:, lo:hi], w, _columns(z, which, d, cache).mT, out=lp[:, lo:hi])
        lp = torch.minimum(lp, prepared["const"], out=lp)  # a Mahalanobis distance is not negative
        lp = lp.to(X.dtype).view(bsz, prepared["r"], self.k_max, n).transpose(-1, -2)  # [B, R, n, K], a view
        return lp, (z, cache)

    def stats(self, X, resp, prepared, aux, sample_weight):
        out = {}
        if self.ll_only:
            return out
        if "precise" in prepared:
            shared = resp.shape[1] < len(self.types)  # the start: one type's responsibilities for every type
            for i, ((t, a, b), (_, prep)) in enumerate(zip(self.segments, prepared["precise"])):
                own = resp if shared else resp[:, a:b]
                part = self.families[t].stats(X, own, prep, None if aux is None else aux[i], sample_weight)
                out.update({f"{t}:{k}": v for k, v in part.items()})
            return out
        if aux is None:
            z, cache = C.lookup("full").features(X[:, 0].to(prepared["dtype"]) - prepared["centre"]), {}
        else:
            z, cache = aux
        bsz, r, n, k = resp.shape
        d = X.shape[-1]
        rr = resp.transpose(-1, -2).reshape(bsz, r * k, n).to(z.dtype)  # [B, R K, n]: a view of the E-step's layout
        if sample_weight is not None:
            wz, cache = z * sample_weight[:, 0].to(z.dtype).unsqueeze(-1), {}
            nk = (rr * sample_weight[:, 0].to(z.dtype).unsqueeze(-2)).sum(-1)
        else:
            wz, nk = z, rr.sum(-1)
        nk = nk.double().reshape(bsz, r, k)
        def scatter(a, b):  # [B, b - a, D, D]: models a..b's scatter about c, each row weighted by
            # its total responsibility (1 in EM; 0 for the rows a chosen-sample start leaves out)
            totals = rr[:, a * k:b * k].reshape(bsz, b - a, k, n).sum(2)  # [B, b - a, n]
            return C.symmetric_from_pairs((totals @ wz[..., :-d]).double(), d)

        shared = r < len(self.types)  # one type's responsibilities, the same for every type (the start)
        # r^T z as (z^T r)^T: MKL's kernel for the [F, R K] product over the long n is the faster
        rz = (wz.mT @ rr.mT).mT.double().reshape(bsz, r, k, -1) if shared else None  # [B, R, K, F]
        for t, a, b in self.segments:
            if shared:
                part, counts = rz, nk
            else:  # each type's GEMM reads only the features its statistics use
                cols = _columns(wz, _LAYOUTS[t].stat_columns, d, cache)
                part = (cols.mT @ rr[:, a * k:b * k].mT).mT.double().reshape(bsz, b - a, k, -1)
                counts = nk[:, a:b]
            out.update({f"{t}:nk": counts, f"{t}:sx": part[..., -d:],
                        f"{t}:sxx": _LAYOUTS[t].second_moments(part, lambda: scatter(0, r) if shared else scatter(a, b), d)})
        return out

    def _any_type(self, check: str, stats, params) -> bool:
        """Whether any covariance type's own family answers ``check`` with True."""
        return any(getattr(self.families[t], check)(self._of(stats, t), self._native(params, t, a, b))
                   for t, a, b in self.segments)

    def needs_precise_pass(self, stats, params) -> bool:
        return self._any_type("needs_precise_pass", stats, params)

    def needs_recentring(self, stats, params) -> bool:
        return self._any_type("needs_recentring", stats, params)

    def run_pass(self, source, params, hard):
        """The pass over the models whose parameters moved since the last pass; the others
        (converged or failed: the driver keeps their parameters) reuse that pass's results."""
        if not self.compact:
            return None
        if self.centre is None:
            self.centre = params["means"].double().mean((1, 2), keepdim=True).to(params["means"].dtype)
        r_total = len(self.types)
        if self._cache is None:
            moved = list(range(r_total))
        else:
            old, _, _ = self._cache
            changed = torch.zeros(r_total, dtype=torch.bool, device=params["means"].device)
            for key, value in params.items():
                changed |= (value != old[key]).flatten(2).any(-1).any(0)
            moved = changed.nonzero().squeeze(-1).tolist()
        if self._cache is not None and not moved:
            _, stats, ll = self._cache
            return dict(stats), ll
        if len(moved) == r_total:
            sub, sub_params = self.subset(moved), params
        else:
            index = torch.tensor(moved, device=params["means"].device)
            sub, sub_params = self.subset(moved), {k: v.index_select(1, index) for k, v in params.items()}
        part, ll_sum, total = accumulate(sub, source, sub_params, hard=hard, over_ranks=False)
        total = total.unsqueeze(-1)
        ll_part = torch.where(total > 0, ll_sum / total.clamp_min(1e-300), torch.zeros_like(ll_sum))
        if len(moved) == r_total:
            stats, ll = part, ll_part
        else:
            _, stats, ll = self._cache
            stats, ll = dict(stats), ll.clone()
            ll[:, moved] = ll_part
            for t, a, b in self.segments:
                inside = [r - a for r in moved if a <= r < b]
                if not inside:
                    continue
                pos = torch.tensor(inside, device=ll.device)
                for key, value in self._of(part, t).items():
                    full = stats[f"{t}:{key}"].clone()
                    full[:, pos] = value
                    stats[f"{t}:{key}"] = full
        self._cache = ({k: v.clone() for k, v in params.items()}, stats, ll)
        return dict(stats), ll

    # ---- M-step ------------------------------------------------------------------------------

    def m_step(self, stats, params):
        live = self.live(params["means"].device)
        d = params["means"].shape[-1]
        out = {"log_weights": [], "means": [], "prec_chol": []}
        failed_all = []
        tiny = 10.0 * torch.finfo(torch.float64).eps
        for t, a, b in self.segments:
            own = self._of(stats, t)
            lv = live[a:b]  # [R_t, K]
            ct = C.lookup(t)
            if not ct.pooled:
                # masked components take the first component's statistics: a valid M-step
                # (never a failure or a warning of their own); their results are replaced below
                own = {k: (torch.where(lv.reshape(lv.shape + (1,) * (v.ndim - 3)), v, v[:, :, :1])
                           if v.ndim >= 3 else v) for k, v in own.items()}
            _, means, prec_chol, failed = G.gaussian_m_step(own, params["means"][:, a:b], t, self.reg_covar,
                                                            centre=self.centre)
            nk = self._of(stats, t)["nk"] + tiny
            total = torch.where(lv, nk, torch.zeros_like(nk)).sum(-1, keepdim=True)
            log_weights = torch.where(lv, nk.log() - total.log(), torch.full_like(nk, -torch.inf))
            means = torch.where(lv.unsqueeze(-1), means, _live_centre(means, lv))
            out["log_weights"].append(log_weights)
            out["means"].append(means)
            out["prec_chol"].append(_LAYOUTS[t].embed(prec_chol, self.k_max, d))
            failed_all.append(ct.per_problem(failed))
        new = {k: torch.cat(v, 1) for k, v in out.items()}
        return new, torch.cat(failed_all, 1)


class _MaskedLloyd(Lloyd):
    """Lloyd iterations of the K-means initialisations of every K and restart as one batch
    (``centers [B, R, K, D]``): centres beyond a model's K (``live [R, K]`` False) are never
    nearest, so they keep no points and stay put. As for the Gaussian grid, one pass centres
    the chunk once (on the mean of the first centres), one GEMM gives every model's
    ``2 x.c - |c|^2`` (the nearest centre's ranking; ``|x|^2`` is the same for all) and one more
    every model's cluster sums."""

    def __init__(self, live: Tensor, centers: Tensor, ref: Tensor | None = None):
        self.live = live
        self.ref = centers.double().mean((1, 2)).unsqueeze(1).to(centers.dtype) if ref is None else ref  # [B, 1, D]

    def subset(self, idx: Tensor) -> "_MaskedLloyd":
        """The models ``idx`` (along R) alone, about the same reference point."""
        return _MaskedLloyd(self.live.index_select(0, idx), self.live, ref=self.ref)

    def prepare(self, params, precise=False):
        c = params["centers"]
        dtype = torch.float64 if precise else c.dtype
        bsz, r, k, d = c.shape
        cc = c.to(dtype) - self.ref.unsqueeze(1).to(dtype)
        return {"dtype": dtype, "r": r, "w": 2.0 * cc.reshape(bsz, r * k, d),
                "b": (-cc.square().sum(-1)).masked_fill_(~self.live, -torch.inf).reshape(bsz, r * k, 1)}

    def log_prob(self, X, prepared):
        xc = X[:, 0].to(prepared["dtype"]) - self.ref.to(prepared["dtype"])
        lp = torch.baddbmm(prepared["b"], prepared["w"], xc.mT)  # [B, R K, n]: component-major, as the grid's
        bsz, _, n = lp.shape
        return lp.view(bsz, prepared["r"], -1, n).transpose(-1, -2), None

    def stats(self, X, resp, prepared, aux, sample_weight):
        bsz, r, n, k = resp.shape
        rr = resp.transpose(-1, -2).reshape(bsz, r * k, n).double()
        if sample_weight is not None:
            rr = rr * sample_weight[:, 0].double().unsqueeze(-2)
        return {"counts": rr.sum(-1).reshape(bsz, r, k), "sums": (rr @ X[:, 0].double()).reshape(bsz, r, k, -1)}


# --------------------------------------------------------------------------------------------
# The fit: the shared fit sequence of the estimator layer, with the grid as its batch
# --------------------------------------------------------------------------------------------


def _check_grid(ic) -> tuple[list[int], list[str]]:
    """The validated grid ``(ks, types)`` of a :class:`GaussianMixtureIC`'s arguments."""
    ks = ic.n_components
    if isinstance(ks, numbers.Integral) and not isinstance(ks, bool):
        ks = [ks]
    try:
        ks = [check_int(k, "n_components", 1) for k in ks]
    except TypeError:
        raise ValueError(f"n_components must be an iterable of positive ints (e.g. range(1, 11)); got {ic.n_components!r}.") from None
    if not ks or len(set(ks)) != len(ks):
        raise ValueError(f"n_components must hold distinct positive ints (e.g. range(1, 11)); got {ic.n_components!r}.")
    types = [ic.covariance_type] if isinstance(ic.covariance_type, str) else ic.covariance_type
    try:
        types = list(types)
    except TypeError:
        raise ValueError(f"covariance_type must be a name or a tuple of names from {tuple(C.COVARIANCE_TYPES)}; "
                         f"got {ic.covariance_type!r}.") from None
    if not types or len(set(types)) != len(types) or any(t not in C.COVARIANCE_TYPES for t in types):
        raise ValueError(f"covariance_type must hold distinct names from {tuple(C.COVARIANCE_TYPES)}; "
                         f"got {ic.covariance_type!r}.")
    if ic.criterion not in _CRITERIA:
        raise ValueError(f"criterion must be 'bic' or 'aic'; got {ic.criterion!r}.")
    return ks, types


class _GridFit(EMEstimator):
    """The fit of a :class:`GaussianMixtureIC`'s grid by the shared fit sequence
    (:meth:`EMEstimator._fit`): its batch is the grid; it keeps the driver's result."""

    _param_names = ()
    _warn_not_converged = False

    def __init__(self, ic: "GaussianMixtureIC"):
        super().__init__()
        self.__dict__["ic"] = ic  # not a submodule: the grid's settings, read only
        self.ks, self.types = _check_grid(ic)
        self.tol, self.max_iter, self.verbose = ic.tol, ic.max_iter, ic.verbose
        self.verbose_interval, self.chunk_size, self.random_state = 10, ic.chunk_size, ic.random_state

    def get_params(self, deep=True):  # the distributed handshake compares the grid's arguments
        return {k: v for k, v in self.ic.get_params().items()}

    @property
    def _n_components(self):
        return max(self.ks)

    def _validate_hyperparameters(self):
        self.ic._validate()

    def _em_settings(self):
        # a model of the grid whose M-step fails stops there and is left out of the comparison
        return {**super()._em_settings(), "freeze_failed": True}

    def _n_restarts(self):
        return int(self.ic.n_init)

    def _cells(self) -> tuple[list[str], list[int]]:
        """``(type, K)`` of every model along R: type-major, then K, then restart."""
        n_init = int(self.ic.n_init)
        types = [t for t in self.types for _ in self.ks for _ in range(n_init)]
        ks = [k for _ in self.types for k in self.ks for _ in range(n_init)]
        return types, ks

    def _family(self, n_features):
        types, ks = self._cells()
        return _GridFamily(types, ks, max(self.ks), float(self.ic.reg_covar))

    def _bytes_per_sample(self, n_features, n_restarts, itemsize):
        # the types' kernels run one after the other on a chunk: the widest sets the working
        # memory, with the joined [R, n, K] log-densities of every model
        k = max(self.ks)
        per = max(C.lookup(t).workspace_width(n_features) + 4 * k + n_features for t in self.types) + k * len(self.types)
        return itemsize * n_restarts * len(self.ks) * per

    def _single(self, k: int, t: str) -> GaussianMixture:
        """The plain model of one cell (its initialisation is the cell's)."""
        ic = self.ic
        return GaussianMixture(k, covariance_type=t, tol=ic.tol, reg_covar=ic.reg_covar, max_iter=ic.max_iter,
                               n_init=ic.n_init, init_params=ic.init_params, random_state=ic.random_state,
                               chunk_size=ic.chunk_size)

    def _starting_params(self, source, n_init, generator):
        return self._restart_params(source, n_init, generator)

    def _restart_params(self, source: TensorSource, n_init: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Every cell's start, as :meth:`EMEstimator._restart_params` draws it for the single
        model: for each K, a copy of ``generator`` draws restart 0's initial responsibilities,
        then the seeds of the others. The k-means initialisations of every K and restart run
        their Lloyd iterations as one batch (components beyond K masked), and every covariance
        type takes its M-step from the same responsibilities, all cells in one float64 pass."""
        if source.n_problems != 1:
            raise ValueError("GaussianMixtureIC fits one problem: pass X of shape [n_samples, n_features] "
                             "(fit a GaussianMixtureIC per problem for several).")
        state = generator.get_state()
        k_max, d = max(self.ks), source.n_features
        kmeans = self.ic.init_params == "kmeans"

        def draw(k, g):  # k-means++ seeds, or the helper's responsibilities for other inits
            if kmeans:
                return kmeans_plusplus(source.X, k, 1, g, sample_weight=source.sample_weight)
            return self._single(k, self.types[0])._init_responsibilities(source, 1, g)

        # k-means++ draws its seeds one after the other, each step from the ones before, the
        # generator and the number of candidates (2 + log K): restart 0 of every K starts from
        # the same generator state, so its seeds are the first K of the run for the largest K
        # of the grid with as many candidates. Drawn once per number of candidates (three runs
        # for K = 1..8, not eight), unless later restarts need the generator's state after K seeds.
        shared = kmeans and n_init == 1
        longest = {default_local_trials(k): k for k in sorted(self.ks)} if shared else {}
        runs: dict[int, Tensor] = {}

        def first(k, g):
            if not shared:
                return draw(k, g)
            trials = default_local_trials(k)
            if trials not in runs:
                runs[trials] = kmeans_plusplus(source.X, longest[trials], 1, g, sample_weight=source.sample_weight,
                                               n_local_trials=trials)
            return runs[trials][..., :k]

        starts = []  # (K, start) of every cell of one covariance type, in the grid's order
        for k in self.ks:
            g = torch.Generator(generator.device)
            g.set_state(state)
            starts.append((k, first(k, g)))
            seeds = torch.randint(0, 2**62, (n_init - 1,), generator=g, device=g.device).tolist() if n_init > 1 else []
            starts += [(k, draw(k, torch.Generator(g.device).manual_seed(int(seed)))) for seed in seeds]
        n_types = len(self.types)
        if kmeans:
            ks = torch.tensor([k for k, _ in starts], device=source.device)
            centers = torch.cat([self._pad_rows(gather_rows(source.X, idx), k_max) for _, idx in starts], 1)
            lloyd = _MaskedLloyd(torch.arange(k_max, device=source.device) < ks.unsqueeze(-1), centers)
            moving = torch.arange(centers.shape[1], device=source.device)  # the models not yet at a fixed point
            for _ in range(_KMEANS_INIT_ITER):
                sub = lloyd if len(moving) == centers.shape[1] else lloyd.subset(moving)
                current = {"centers": centers.index_select(1, moving)}
                stats, _, _ = accumulate(sub, source, current, hard=True, over_ranks=False)
                new = sub.m_step(stats, current)[0]["centers"].to(centers.dtype)
                # a model at a fixed point stays there: its remaining iterations would change nothing
                still = (new != current["centers"]).flatten(2).any(-1).any(0)
                centers = centers.index_copy(1, moving, new)
                moving = moving[still]
                if not len(moving):
                    break

            def resp_fn(start, X):
                lp, _ = lloyd.log_prob(X, lloyd.prepare({"centers": centers}))
                # max's indices: the first maximum, as argmax, but a vectorised reduction along
                # the component-major layout (argmax is not)
                return torch.nn.functional.one_hot(lp.max(-1).indices, k_max).double()
        else:
            def resp_fn(start, X):  # [B, R / types, n, K_max]: the cells' responsibilities, shared by the types
                parts = [torch.nn.functional.pad(fn(start, X), (0, k_max - k)) for k, fn in starts]
                return torch.cat(parts, 1)

        # the reference of GaussianMixture's initial statistics: the first chunk's mean, unit
        # factors, here one point for every model (so the statistics share one feature pass)
        X0 = next(iter(source.chunks()))[1]
        m = X0.double().mean(-2, keepdim=True).unsqueeze(1)  # [B, 1, 1, D]
        r = n_types * len(starts)
        means = m.expand(source.n_problems, r, k_max, d)
        eye = torch.eye(d, dtype=torch.float64, device=source.device).expand(source.n_problems, r, k_max, d, d)
        about = {"log_weights": means.new_zeros(means.shape[:-1]), "means": means, "prec_chol": eye}
        types, ks = self._cells()
        family = _GridFamily(types, ks, k_max, float(self.ic.reg_covar), compact=False, centre=m, shared_precise=True)
        stats, _, _ = accumulate(family, source, about, about=about, resp=resp_fn, over_ranks=False)
        params, failed = family.m_step(stats, about)
        if family.needs_recentring(stats, about):
            # moments about that one point cancelled (a chosen row far from it): take them again,
            # each type's own, about the new means (GaussianMixture's start does the same)
            about = {key: v.double() for key, v in params.items()}
            family = _GridFamily(types, ks, k_max, float(self.ic.reg_covar), compact=False, centre=m)
            stats, _, _ = accumulate(family, source, about, about=about, resp=resp_fn, precise=True, over_ranks=False)
            params, failed = family.m_step(stats, about)
        # a model whose first M-step fails (GaussianMixture would raise) is left out: it runs
        # from unit covariances, marked failed whatever its EM does
        self._init_failed = failed
        if bool(failed.all()):
            raise ValueError(G.COLLAPSED_MESSAGE)
        params["prec_chol"] = torch.where(failed[..., None, None, None], eye, params["prec_chol"])
        return {key: v.to(source.dtype).contiguous() for key, v in params.items()}

    @staticmethod
    def _pad_rows(centers: Tensor, k_max: int) -> Tensor:
        """``[B, 1, K, D]`` centres padded to ``k_max`` with their mean (masked ones)."""
        extra = k_max - centers.shape[-2]
        if not extra:
            return centers
        mean = centers.double().mean(-2, keepdim=True).to(centers.dtype)
        return torch.cat([centers, mean.expand(*centers.shape[:-2], extra, centers.shape[-1])], -2)

    def _store(self, params):
        self._grid_params = params

    def _constrained(self):
        return self._grid_params

    def _online_step(self, source, params, state, batch_weight):
        raise TypeError("GaussianMixtureIC has no partial_fit.")

    def _record(self, result: EMResult, fit, source: Source, select: bool = False):
        self._result, self._fit_info = result, fit.info
        self._fitted = True
        return result.params

    def _after_fit(self, source: Source, params: dict[str, Tensor]) -> None:
        """Keep each cell's best restart, then one more pass for every model's log-likelihood
        under its final parameters (the criteria read it, as ``bic(X)`` would)."""
        result = self._result
        n_init = int(self.ic.n_init)
        b = result.lower_bound.shape[0]
        n_cells = len(self.types) * len(self.ks)

        def cells(t: Tensor) -> Tensor:  # [B, R, ...] -> [B * cells, n_init, ...]
            return t.reshape(b * n_cells, n_init, *t.shape[2:])

        failed = result.failed if result.failed is not None else torch.zeros_like(result.converged)
        failed = failed | self._init_failed.to(failed.device)
        lb = torch.where(failed, torch.full_like(result.lower_bound, -torch.inf), result.lower_bound)
        # restarts of a cell whose lower bounds agree to float64 rounding reached one optimum
        # (often with the components permuted): the first of them is kept, as the single fit
        # keeps the first of exactly equal ones, whatever the last bits the batch's kernels
        # (other shapes than the single fit's) leave in them
        by_cell = cells(lb)
        top = by_cell.amax(-1, keepdim=True)
        near = (top - by_cell) <= 64 * torch.finfo(torch.float64).eps * top.abs().clamp_min(1.0)
        rank = torch.where(near, top, by_cell)
        grouped = EMResult({k: cells(v) for k, v in result.params.items()}, rank, cells(result.n_iter),
                           cells(result.converged), [cells(h) for h in result.history])
        best, _, n_iter, converged, history = select_best(grouped)
        lower_bound = by_cell.gather(-1, rank.argmax(-1, keepdim=True)).squeeze(-1)  # the kept restart's own
        dead = cells(failed).all(-1)  # every restart of the cell failed
        types, ks = self._cells()
        family = _GridFamily(types[::n_init], ks[::n_init], max(self.ks), float(self.ic.reg_covar), compact=False,
                             ll_only=True)
        final = {k: v.reshape(b, n_cells, *v.shape[1:]) for k, v in best.items()}
        _, ll_sum, total = accumulate(family, source, final)
        self._best = final
        self._n_features = source.n_features
        self._cell_ll = ll_sum  # [B, cells]
        self._total = total  # [B]
        self._cell_lower_bound = lower_bound.reshape(b, n_cells)
        self._cell_n_iter = n_iter.reshape(b, n_cells)
        self._cell_converged = converged.reshape(b, n_cells)
        self._cell_history = [h.reshape(b, n_cells) for h in history]
        self._cell_failed = dead.reshape(b, n_cells)


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------


class GaussianMixtureIC(EstimatorModule):
    """Gaussian mixture whose number of components and covariance type are chosen by an
    information criterion (BIC or AIC), the whole grid of models fitted as one batch.

    Example:
        >>> import numpy as np
        >>> from torchem import GaussianMixtureIC
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) + 6])
        >>> ic = GaussianMixtureIC(n_components=range(1, 5), random_state=0).fit(X)
        >>> ic.n_components_, ic.covariance_type_
        (2, 'spherical')
        >>> ic.criterion_.shape  # [covariance types, n_components]
        (4, 4)
        >>> ic.predict([[0, 0], [6, 6]]).tolist() == ic.best_estimator_.predict([[0, 0], [6, 6]]).tolist()
        True

    Every model of the grid (each ``n_components`` value ``K`` with each ``covariance_type``,
    each with ``n_init`` restarts) is the model ``GaussianMixture(K, covariance_type=t, ...)``
    fits with the same arguments and ``random_state``: the same start, the same EM iterations
    (to rounding), but all of them advanced together by the batched kernels of one EM driver,
    on the CPU or on CUDA, reading the data once per iteration for the whole grid. Models of
    different ``K`` sit in one batch with the components beyond their own masked (zero
    weight; see :mod:`torchem.mixture.selection`); models that have converged drop out of
    the later passes.

    The criterion of each model is computed from the log-likelihood of the data under its final
    parameters, exactly as ``GaussianMixture.bic(X)`` / ``aic(X)``:
    ``BIC = -2 log L + p log n`` and ``AIC = -2 log L + 2 p``, with ``p`` the model's free
    parameters and ``n`` the number (total weight) of samples. The model with the lowest value
    (the first in the grid's order on ties) is refitted nowhere: it is ``best_estimator_``, a
    fitted :class:`~torchem.GaussianMixture` usable on its own, and ``predict``,
    ``predict_proba``, ``score_samples``, ``score``, ``sample``, ``bic`` and ``aic`` delegate
    to it. A model whose M-step fails (a collapsed component) is reported with an infinite
    criterion and a warning, instead of failing the whole grid. (With ``reg_covar=0`` a model
    that collapses onto repeated points may, by rounding, reach a degenerate finite fit where
    the single ``GaussianMixture`` fails: keep ``reg_covar > 0`` to compare models.)

    Data: as for :class:`~torchem.GaussianMixture`, a 2-D numpy array or tensor (on any
    device), an ``np.memmap`` or a re-iterable of batches (a DataLoader) streamed chunk by
    chunk, and under ``torch.distributed`` each rank's shard; ``.to("cuda")`` fits on the GPU and
    ``.double()`` in float64.

    Args:
        n_components: the numbers of components to compare (distinct positive ints; an int
            is the grid of that one value). Default ``range(1, 11)`` (as a tuple).
        covariance_type: the covariance types to compare: a tuple of names from ``"full"``,
            ``"tied"``, ``"diag"``, ``"spherical"``, or one name.
        criterion: ``"bic"`` (default) or ``"aic"``; both are kept (``bic_``, ``aic_``).
        tol, reg_covar, max_iter, n_init, init_params, random_state, chunk_size, verbose: as
            for :class:`~torchem.GaussianMixture`, used by every model of the grid.

    Attributes:
        criterion_: ``[n_covariance_types, n_n_components]`` numpy array of the chosen
            criterion, rows in ``covariance_type``'s order, columns in ``n_components``' order.
        bic_, aic_: both criteria, shaped as ``criterion_``.
        lower_bound_, n_iter_, converged_: each model's EM diagnostics, shaped as ``criterion_``.
        best_estimator_: the chosen model, a fitted :class:`~torchem.GaussianMixture`.
        n_components_, covariance_type_: its number of components and covariance type.
        best_index_: ``(row, column)`` of the chosen model in ``criterion_``.
        n_components_grid_, covariance_types_: the grid's columns and rows (tuples).
        n_features_in_: number of features seen by ``fit``.
    """

    _fitted_attributes = ("criterion_", "bic_", "aic_", "lower_bound_", "n_iter_", "converged_", "best_estimator_",
                          "n_components_", "covariance_type_", "best_index_", "n_components_grid_",
                          "covariance_types_", "n_features_in_")

    def __init__(
        self,
        n_components=tuple(range(1, 11)),
        *,
        covariance_type=("full", "tied", "diag", "spherical"),
        criterion: str = "bic",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        random_state=None,
        chunk_size: int | None = None,
        verbose: int = 0,
    ):
        super().__init__()
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.criterion = criterion
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.verbose = verbose
        self._fitted = False

    def _validate(self) -> None:
        _check_grid(self)
        check_real(self.tol, "tol")
        check_int(self.max_iter, "max_iter", 1)
        check_int(self.n_init, "n_init", 1)
        check_int(self.verbose, "verbose", 0)
        if self.chunk_size is not None:
            check_int(self.chunk_size, "chunk_size", 1)
        if self.init_params not in GaussianMixture._init_methods:
            raise ValueError(f"init_params must be one of {list(GaussianMixture._init_methods)}; got {self.init_params!r}.")
        if isinstance(self.reg_covar, bool) or not isinstance(self.reg_covar, numbers.Real) or not (
                math.isfinite(self.reg_covar) and self.reg_covar >= 0):
            raise ValueError(f"reg_covar must be a finite non-negative number; got {self.reg_covar!r}.")

    def __sklearn_is_fitted__(self) -> bool:
        return bool(self._fitted)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # its state_dict holds the chosen model's parameters only: loaded here they would change
        # best_estimator_ under criterion_, bic_ and lower_bound_ of another fit
        if any(key.startswith(prefix) for key in state_dict):
            raise TypeError(
                "A GaussianMixtureIC cannot load a state_dict: it holds only the chosen model's parameters, not the "
                "grid's criteria. Save the whole estimator (torch.save(ic) or pickle), or save "
                "ic.best_estimator_.state_dict() and load it into GaussianMixture(ic.n_components_, "
                "covariance_type=ic.covariance_type_)."
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ----------------------------------------------------------------------------------------
    # Fitting
    # ----------------------------------------------------------------------------------------

    def fit(self, X, y=None, sample_weight=None):
        """Fit every model of the grid as one batch and keep the one with the lowest criterion.

        Args:
            X: ``[N, D]`` data: a numpy array or a tensor on any device, an ``np.memmap``, or a
                re-iterable of ``[n, D]`` batches (e.g. a DataLoader), as for
                :meth:`GaussianMixture.fit <torchem.GaussianMixture.fit>`.
            y: ignored.
            sample_weight: optional ``[N]`` non-negative weights (``n`` of the BIC is their sum).

        Returns:
            ``self``.
        """
        self._validate()
        grid = _GridFit(self).to(device=self._anchor.device, dtype=self._anchor.dtype)
        grid._fit(X, sample_weight)  # a transaction: a failed fit leaves this estimator as it was
        self._set_results(grid)
        return self

    def _set_results(self, grid: _GridFit) -> None:
        ks, types = grid.ks, grid.types
        t_n, k_n = len(types), len(ks)
        ll = grid._cell_ll[0].reshape(t_n, k_n).double().cpu().numpy()
        n = float(grid._total[0])
        p = np.array([[G.n_parameters(k, grid._n_features, t) for k in ks] for t in types], dtype=np.float64)
        failed = grid._cell_failed[0].reshape(t_n, k_n).cpu().numpy()
        bic = np.where(failed, np.inf, -2.0 * ll + p * np.log(n))
        aic = np.where(failed, np.inf, -2.0 * ll + 2.0 * p)
        if bool(failed.all()):
            raise ValueError("Every model of the grid failed: " + G.COLLAPSED_MESSAGE)
        chosen = bic if self.criterion == "bic" else aic
        row, col = np.unravel_index(int(np.argmin(chosen)), chosen.shape)
        best = self._best_model(grid, int(row), int(col))
        converged = grid._cell_converged[0].reshape(t_n, k_n).cpu().numpy()
        if bool(failed.any()):
            names = [f"{types[i]} K={ks[j]}" for i, j in zip(*np.nonzero(failed))]
            warnings.warn(f"{len(names)} model(s) of the grid failed and are left out (criterion inf): "
                          f"{', '.join(names)}. {G.COLLAPSED_MESSAGE}", RuntimeWarning, stacklevel=caller_stacklevel())
        if not bool(converged[~failed].all()):
            names = [f"{types[i]} K={ks[j]}" for i, j in zip(*np.nonzero(~converged & ~failed))]
            warnings.warn(f"{len(names)} model(s) of the grid did not converge ({', '.join(names)}); their criteria "
                          "compare unfinished fits. Increase max_iter or tol.", exceptions.ConvergenceWarning,
                          stacklevel=caller_stacklevel())
        self.bic_, self.aic_, self.criterion_ = bic, aic, chosen
        self.lower_bound_ = grid._cell_lower_bound[0].reshape(t_n, k_n).cpu().numpy()
        self.n_iter_ = grid._cell_n_iter[0].reshape(t_n, k_n).cpu().numpy()
        self.converged_ = converged
        self.best_index_ = (int(row), int(col))
        self.n_components_grid_, self.covariance_types_ = tuple(int(k) for k in ks), tuple(types)
        self.n_components_, self.covariance_type_ = int(ks[col]), types[row]
        self.n_features_in_ = int(grid._n_features)
        names = grid.__dict__.get("feature_names_in_")
        if names is not None:
            self.feature_names_in_ = names
        else:
            self.__dict__.pop("feature_names_in_", None)
        self.best_estimator_ = best
        self._fitted = True

    def _best_model(self, grid: _GridFit, row: int, col: int) -> GaussianMixture:
        """The chosen cell as a fitted :class:`GaussianMixture` (its own fit's state)."""
        k, t = grid.ks[col], grid.types[row]
        cell = row * len(grid.ks) + col
        params = {key: v[0, cell] for key, v in grid._best.items()}
        params = {"log_weights": params["log_weights"][:k], "means": params["means"][:k],
                  "prec_chol": _LAYOUTS[t].cut(params["prec_chol"][:k])}
        model = grid._single(k, t).to(dtype=params["means"].dtype)
        model._set_fitted_parameters(params, stacked=False, output_numpy=grid._fit_info.kind.is_numpy)
        n_iter = int(grid._cell_n_iter[0, cell])
        model._lower_bound = grid._cell_lower_bound[0, cell:cell + 1].cpu().numpy()
        model._n_iter = np.array([n_iter], dtype=np.int64)
        model._converged = grid._cell_converged[0, cell:cell + 1].cpu().numpy()
        history = [h[0, cell] for h in grid._cell_history[:n_iter]]
        model._history = torch.stack(history).reshape(1, -1).cpu().numpy() if history else np.zeros((1, 0))
        # partial_fit continues the model as it would the single fit
        model._fit_samples, model._fit_weight = grid._fit_samples, grid._fit_weight
        names = grid.__dict__.get("feature_names_in_")
        if names is not None:
            model.feature_names_in_ = names
        return model

    # ----------------------------------------------------------------------------------------
    # The chosen model
    # ----------------------------------------------------------------------------------------

    def _chosen(self) -> GaussianMixture:
        check_fitted(self)
        return self.best_estimator_

    def forward(self, x: Tensor) -> Tensor:
        """Per-sample log-likelihood ``[n]`` of a tensor under the chosen model (its
        :meth:`GaussianMixture.forward <torchem.GaussianMixture.forward>`)."""
        return self._chosen()(x)

    def predict(self, X):
        """Component of each sample under the chosen model: ``[N]``."""
        return self._chosen().predict(X)

    def predict_proba(self, X):
        """Posterior probabilities of the chosen model's components: ``[N, K]``."""
        return self._chosen().predict_proba(X)

    def score_samples(self, X):
        """Log-likelihood of each sample under the chosen model: ``[N]``."""
        return self._chosen().score_samples(X)

    def score(self, X, y=None, sample_weight=None):
        """Mean (weighted) log-likelihood under the chosen model."""
        return self._chosen().score(X, sample_weight=sample_weight)

    def bic(self, X, sample_weight=None):
        """The chosen model's BIC on ``X``."""
        return self._chosen().bic(X, sample_weight)

    def aic(self, X, sample_weight=None):
        """The chosen model's AIC on ``X``."""
        return self._chosen().aic(X, sample_weight)

    def sample(self, n_samples: int = 1):
        """``(X, y)`` drawn from the chosen model (see :meth:`GaussianMixture.sample
        <torchem.GaussianMixture.sample>`)."""
        return self._chosen().sample(n_samples)

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit(X).predict(X)``."""
        return self.fit(X, sample_weight=sample_weight).predict(X)
