"""Stateless, batched Gaussian kernels: log-densities, sufficient statistics and the M-step.

Every function accepts any leading batch shape ``...`` (independent problems, restarts, or
both) that broadcasts between the data and the parameters. Notation:

* ``X``: ``[..., n, D]`` samples.
* ``means``: ``[..., K, D]`` component means (``loc`` in torch.distributions' words).
* ``prec_chol``: the Cholesky factor ``U`` of the precision, ``P = U U^T``, upper triangular,
  stored as scikit-learn's ``precisions_cholesky_``:

  ============  ==================  ===============================================
  type          shape               meaning
  ============  ==================  ===============================================
  ``full``      ``[..., K, D, D]``  one upper-triangular factor per component
  ``tied``      ``[..., D, D]``     one factor shared by all components
  ``diag``      ``[..., K, D]``     ``1 / sqrt(variance)`` per feature
  ``spherical`` ``[..., K]``        ``1 / sqrt(variance)`` per component
  ============  ==================  ===============================================

Numerical choices:

* Densities are computed on data centred on the mean of the component means, so float32 data
  far from the origin loses nothing to cancellation; the result does not depend on that
  centre mathematically.
* The Mahalanobis term is expanded (``x^T P x - 2 x^T P mu + mu^T P mu``) into one GEMM of
  per-sample features (for ``full``: the products ``x_i x_j``, see
  :func:`quadratic_features`) against per-component weights; the same features, weighted by
  the responsibilities, are the M-step statistics (one more GEMM).
* Where float32 rounding of that expansion would matter (components narrow compared with
  their distance from the centre), :func:`expansion_error_bound` and
  :func:`stats_need_float64` send the pass to float64.
* Statistics are returned in float64 so they add exactly across chunks, batches and ranks.
* Log-determinants are read off the factor's diagonal; no matrix is ever inverted.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from ._buffers import buffer

__all__ = [
    "COVARIANCE_TYPES",
    "covariances_from_precision_cholesky",
    "gaussian_log_prob",
    "gaussian_log_prob_prepared",
    "gaussian_prepare",
    "gaussian_m_step",
    "gaussian_stats",
    "log_det_precision_cholesky",
    "n_parameters",
    "precision_cholesky_from_covariances",
    "precision_cholesky_from_precisions",
    "precisions_from_precision_cholesky",
    "stats_need_float64",
    "precision_cholesky_from_unconstrained",
    "precision_cholesky_to_unconstrained",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

_LOG_2PI = math.log(2.0 * math.pi)

COLLAPSED_MESSAGE = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar, or scale the input data."
)


# --------------------------------------------------------------------------------------------
# Factor conversions
# --------------------------------------------------------------------------------------------


def _eye_like(t: Tensor, d: int) -> Tensor:
    return torch.eye(d, dtype=t.dtype, device=t.device)


def log_det_precision_cholesky(prec_chol: Tensor, covariance_type: str, n_features: int) -> Tensor:
    """``log det U`` (half the log-determinant of the precision), per component.

    Returns:
        ``[..., K]`` for ``full``/``diag``/``spherical``; ``[...]`` for ``tied`` (one value
        shared by every component, broadcast by the caller).
    """
    if covariance_type in ("full", "tied"):
        return torch.diagonal(prec_chol, dim1=-2, dim2=-1).log().sum(-1)
    if covariance_type == "diag":
        return prec_chol.log().sum(-1)
    return n_features * prec_chol.log()


def precision_cholesky_from_covariances(
    covariances: Tensor, covariance_type: str
) -> tuple[Tensor, Tensor]:
    """Precision Cholesky factors from covariances, without forming an inverse.

    ``cov = L L^T`` (lower) gives ``U = L^{-T}``, so ``U U^T = cov^{-1}``.

    Returns:
        ``(prec_chol, failed)``: the factors and a boolean mask, shaped like one factor per
        matrix (``[..., K]`` or ``[...]``), of covariances that were not positive definite.
        Failed entries hold an arbitrary finite factor and must not be used.
    """
    if covariance_type in ("full", "tied"):
        chol, info = torch.linalg.cholesky_ex(covariances)
        failed = info > 0
        d = covariances.shape[-1]
        eye = _eye_like(covariances, d)
        chol = torch.where(failed[..., None, None], eye, chol)
        prec_chol = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False).mT
        return prec_chol, failed
    failed = ~(covariances > 0)
    if covariance_type == "diag":
        failed = failed.any(-1)
    safe = torch.where(covariances > 0, covariances, torch.ones_like(covariances))
    return safe.rsqrt(), failed


def precision_cholesky_from_precisions(precisions: Tensor, covariance_type: str) -> tuple[Tensor, Tensor]:
    """Upper-triangular ``U`` with ``U U^T = precisions`` (scikit-learn's flip trick).

    Returns:
        ``(prec_chol, failed)`` as in :func:`precision_cholesky_from_covariances`.
    """
    if covariance_type in ("full", "tied"):
        flipped = precisions.flip(-2, -1)
        chol, info = torch.linalg.cholesky_ex(flipped)
        return chol.flip(-2, -1), info > 0
    failed = ~(precisions > 0)
    if covariance_type == "diag":
        failed = failed.any(-1)
    safe = torch.where(precisions > 0, precisions, torch.ones_like(precisions))
    return safe.sqrt(), failed


def covariances_from_precision_cholesky(prec_chol: Tensor, covariance_type: str) -> Tensor:
    """``cov = (U U^T)^{-1} = U^{-T} U^{-1}`` by a triangular solve."""
    if covariance_type in ("full", "tied"):
        d = prec_chol.shape[-1]
        inv = torch.linalg.solve_triangular(prec_chol, _eye_like(prec_chol, d).expand_as(prec_chol), upper=True)
        return inv.mT @ inv
    return prec_chol.square().reciprocal()


def precisions_from_precision_cholesky(prec_chol: Tensor, covariance_type: str) -> Tensor:
    """``P = U U^T``."""
    if covariance_type in ("full", "tied"):
        return prec_chol @ prec_chol.mT
    return prec_chol.square()


def n_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Number of free parameters of a Gaussian mixture (for BIC/AIC)."""
    k, d = n_components, n_features
    cov = {
        "full": k * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
    }[covariance_type]
    return cov + k * d + k - 1


# --------------------------------------------------------------------------------------------
# Log-densities
# --------------------------------------------------------------------------------------------


def _centre(means: Tensor) -> Tensor:
    """Reference point for centring: the mean of the component means, ``[..., 1, D]``.

    Computed in float64 and rounded to the means' dtype, so the statistics (which subtract it
    in the working dtype) and the M-step (which adds it back in float64) use the very same
    point."""
    return means.double().mean(-2, keepdim=True).to(means.dtype)


_PAIR_CACHE: dict[tuple[int, str], tuple[Tensor, Tensor, Tensor]] = {}


def _pairs(d: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """The layout of :func:`quadratic_features`: for shift ``s = 0 .. D//2`` and feature
    ``i``, the pair ``(i, (i + s) mod D)``. Returns flat indices ``i*D + j`` and ``j*D + i``
    of every pair into a ``D x D`` matrix, and how many times each unordered pair ``{i, j}``
    is counted by ``x^T P x`` divided by how often it appears in the layout (1 on the
    diagonal and, for even ``D``, on the last shift, where each pair appears twice; else 2)."""
    key = (d, str(device))
    if key not in _PAIR_CACHE:
        h = d // 2 + 1
        s = torch.arange(h).repeat_interleave(d)
        i = torch.arange(d).repeat(h)
        j = (i + s) % d
        mult = torch.full((h * d,), 2.0)
        mult[s == 0] = 1.0
        if d % 2 == 0:
            mult[s == d // 2] = 1.0
        _PAIR_CACHE[key] = ((i * d + j).to(device), (j * d + i).to(device), mult.to(device))
    return _PAIR_CACHE[key]


def quadratic_features(xc: Tensor) -> Tensor:
    """``[..., n, (D//2 + 1) * D]``: the products ``x_i x_{(i+s) mod D}`` for shifts
    ``s = 0 .. D//2``, which cover every unordered pair ``{i, j}`` (at most twice), built by a
    single multiplication with a sliding window instead of a gather."""
    return _full_features(xc, with_linear=False)


def _full_features(xc: Tensor, with_linear: bool, workspace: dict | None = None) -> Tensor:
    """Quadratic features, followed by ``xc`` itself when ``with_linear``, in one buffer."""
    d = xc.shape[-1]
    h = d // 2 + 1
    lead = xc.shape[:-1]
    if xc.requires_grad or workspace is None:
        window = torch.cat([xc, xc], dim=-1).unfold(-1, d, 1)[..., :h, :]  # [..., n, h, D]
        quad = (xc.unsqueeze(-2) * window).reshape(*lead, h * d)
        return torch.cat([quad, xc], dim=-1) if with_linear else quad
    # Without autograd, every piece is written straight into preallocated buffers: copies
    # and concatenations of chunk-sized tensors cost as much as the GEMMs on CPU.
    doubled = buffer(workspace, "doubled", (*lead, 2 * d), xc)
    doubled[..., :d] = xc
    doubled[..., d:] = xc
    window = doubled.unfold(-1, d, 1)[..., :h, :]  # [..., n, h, D], a view
    z = buffer(workspace, "z", (*lead, h * d + (d if with_linear else 0)), xc)
    torch.mul(xc.unsqueeze(-2), window, out=z[..., : h * d].unflatten(-1, (h, d)))
    if with_linear:
        z[..., h * d :] = xc
    return z


def symmetric_from_pairs(pairs: Tensor, d: int) -> Tensor:
    """``[..., D, D]`` symmetric matrices from sums laid out as :func:`quadratic_features`."""
    flat, flat_t, _ = _pairs(d, pairs.device)
    out = pairs.new_zeros(*pairs.shape[:-1], d * d)
    out = out.index_copy(-1, flat_t, pairs).index_copy(-1, flat, pairs)
    return out.unflatten(-1, (d, d))


#: Rounding error of an expanded Mahalanobis distance, in units of the distance, above which
#: the kernels compute in float64 instead of float32.
EXPANSION_TOLERANCE = 1e-3

#: Relative rounding error of a variance computed from float32 second moments above which the
#: M-step's statistics are recomputed in float64 (see :func:`stats_need_float64`).
CANCELLATION_TOLERANCE = 1e-4


@torch.no_grad()
def expansion_error_bound(means: Tensor, prec_chol: Tensor, covariance_type: str) -> Tensor:
    """Size ``S`` of the terms that cancel when a Mahalanobis distance is expanded into GEMMs.

    Expanding ``(x - mu)^T P (x - mu)`` on data centred on ``c`` (the mean of the means)
    sums terms whose size, for a typical sample ``x`` of the component, is about
    ``S = sum_i P_ii (|mu_i - c_i| + sigma_i)^2``, so its rounding error is about
    ``eps * S``: small when the components sit within a few standard deviations of each
    other, large when they are tight and far apart. The same holds for the second-moment
    statistics, whose subtraction ``E[xx^T] - mu mu^T`` cancels the same terms. Returns the
    largest ``S`` over every component and batch entry (a
    0-d float64 tensor).
    """
    means = means.double()
    prec_chol = prec_chol.double()
    mc = (means - _centre(means)).abs()
    if covariance_type in ("full", "tied"):
        prec = prec_chol @ prec_chol.mT
        root = torch.diagonal(prec, dim1=-2, dim2=-1).sqrt()  # [..., K, D] or [..., D]
        d = prec_chol.shape[-1]
        inv = torch.linalg.solve_triangular(prec_chol, _eye_like(prec_chol, d).expand_as(prec_chol), upper=True)
        sigma = (inv.mT @ inv).diagonal(dim1=-2, dim2=-1).sqrt()
        if covariance_type == "tied":
            root, sigma = root.unsqueeze(-2), sigma.unsqueeze(-2)
        terms = (root * (mc + sigma)).square().sum(-1)
    elif covariance_type == "diag":
        terms = (prec_chol * mc + 1.0).square().sum(-1)
    else:
        terms = (prec_chol.unsqueeze(-1) * mc + 1.0).square().sum(-1)
    return terms.max()


def _working_dtype(
    X: Tensor, means: Tensor, prec_chol: Tensor, covariance_type: str, forced: torch.dtype | None = None
) -> torch.dtype:
    dtype = torch.promote_types(X.dtype, means.dtype)
    if forced is not None:
        return torch.promote_types(dtype, forced)
    if dtype == torch.float64 or means.requires_grad or prec_chol.requires_grad:
        return dtype
    if torch.finfo(dtype).eps * float(expansion_error_bound(means, prec_chol, covariance_type)) > EXPANSION_TOLERANCE:
        return torch.float64
    return dtype


def _features(xc: Tensor, covariance_type: str, workspace: dict | None = None) -> Tensor:
    """Per-sample features whose products with per-component weights give the expanded
    Mahalanobis distances, and whose responsibility-weighted sums are the statistics.

    With a ``workspace`` dict the result is a view of a buffer that the next call reuses."""
    if covariance_type == "full":
        return _full_features(xc, True, workspace)  # [..., n, (D//2 + 2) D]
    if covariance_type == "tied":
        return xc
    if xc.requires_grad or workspace is None:
        sq = xc * xc if covariance_type == "diag" else (xc * xc).sum(-1, keepdim=True)
        return torch.cat([sq, xc], dim=-1)  # [..., n, 2D] or [..., n, 1 + D]
    d = xc.shape[-1]
    first = d if covariance_type == "diag" else 1
    z = buffer(workspace, "z", (*xc.shape[:-1], first + d), xc)
    if covariance_type == "diag":
        torch.mul(xc, xc, out=z[..., :d])
    else:
        torch.sum(xc * xc, dim=-1, keepdim=True, out=z[..., :1])
    z[..., first:] = xc
    return z


def gaussian_prepare(
    means: Tensor,
    prec_chol: Tensor,
    covariance_type: str,
    *,
    working_dtype: torch.dtype | None = None,
    data_dtype: torch.dtype | None = None,
) -> dict:
    """Everything :func:`gaussian_log_prob` needs that depends on the parameters only, so an
    EM pass computes it once rather than once per chunk.

    The Mahalanobis distance is expanded as ``z(x) . w_k + b_k`` with per-sample features
    ``z`` (see :func:`_features`) of the data centred on ``c``, the mean of the means; this
    returns ``c``, the weights ``w [..., K, F]``, the offsets ``b [..., K]`` and the
    log-determinants, in the working dtype: the data's, or float64 when float32 rounding of
    the expansion would exceed :data:`EXPANSION_TOLERANCE` (see
    :func:`expansion_error_bound`), or at least ``working_dtype`` when given.
    """
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"unknown covariance_type {covariance_type!r}; expected one of {COVARIANCE_TYPES}")
    data_dtype = data_dtype or means.dtype
    probe = torch.empty(0, dtype=data_dtype)
    dtype = _working_dtype(probe, means, prec_chol, covariance_type, working_dtype)
    c = _centre(means).to(dtype)
    means, prec_chol = means.to(dtype), prec_chol.to(dtype)
    mc = means - c
    d = means.shape[-1]
    if covariance_type == "full":
        prec = prec_chol @ prec_chol.mT  # [..., K, D, D]
        flat, _, mult = _pairs(d, prec.device)
        quad = prec.flatten(-2).index_select(-1, flat) * mult.to(dtype)  # [..., K, (D//2+1) D]
        pm = (prec @ mc.unsqueeze(-1)).squeeze(-1)  # [..., K, D]
        w = torch.cat([quad, -2.0 * pm], dim=-1)
        b = (mc * pm).sum(-1)
    elif covariance_type == "diag":
        prec = prec_chol.square()
        w = torch.cat([prec, -2.0 * mc * prec], dim=-1)  # [..., K, 2D]
        b = (mc * mc * prec).sum(-1)
    elif covariance_type == "spherical":
        prec = prec_chol.square().unsqueeze(-1)
        w = torch.cat([prec, -2.0 * mc * prec], dim=-1)  # [..., K, 1 + D]
        b = (mc * mc).sum(-1) * prec.squeeze(-1)
    else:
        zm = mc @ prec_chol  # [..., K, D]: whitened means
        w = -2.0 * zm
        b = zm.square().sum(-1)
    log_det = log_det_precision_cholesky(prec_chol, covariance_type, d)
    if covariance_type == "tied":
        log_det = log_det.unsqueeze(-1)
    const = log_det - 0.5 * d * _LOG_2PI  # [..., K]: the log-density at the mean
    return {
        "covariance_type": covariance_type,
        "dtype": dtype,
        "centre": c,
        "prec_chol": prec_chol,
        # log N(x) = z(x) . w' + b', with w' = -w/2 and b' = const - b/2: one GEMM.
        "w": (-0.5 * w).mT.contiguous(),  # [..., F, K]
        "b": (const - 0.5 * b).unsqueeze(-2),  # [..., 1, K]
        "const": const.unsqueeze(-2),  # [..., 1, K]
    }


def gaussian_log_prob_prepared(X: Tensor, prep: dict, *, return_aux: bool = False):
    """Component log-densities ``[..., n, K]`` of ``X [..., n, D]`` from
    :func:`gaussian_prepare`'s output (one GEMM per call), in ``X``'s dtype.

    If ``prep`` holds a ``"workspace"`` dict, the features returned in ``aux`` live in a
    buffer that the next call overwrites (the EM driver uses them before that)."""
    covariance_type = prep["covariance_type"]
    ws = prep.get("workspace")
    Xw, c = X.to(prep["dtype"]), prep["centre"]
    if ws is None or Xw.requires_grad or c.requires_grad:
        xc = Xw - c
    else:
        xc = torch.sub(Xw, c, out=buffer(ws, "xc", torch.broadcast_shapes(Xw.shape, c.shape), Xw))
    z = _features(xc, covariance_type, ws)
    if covariance_type == "tied":
        zx = xc @ prep["prec_chol"]
        log_prob = zx @ prep["w"] + prep["b"] - 0.5 * zx.square().sum(-1, keepdim=True)
    elif ws is None or z.requires_grad or prep["w"].requires_grad:
        log_prob = z @ prep["w"] + prep["b"]
    else:
        shape = (*torch.broadcast_shapes(z.shape[:-2], prep["w"].shape[:-2]), z.shape[-2], prep["w"].shape[-1])
        log_prob = torch.matmul(z, prep["w"], out=buffer(ws, "log_prob", shape, z)).add_(prep["b"])
    # A Mahalanobis distance cannot be negative: cap rounding at the density's peak.
    if log_prob.requires_grad:
        log_prob = torch.minimum(log_prob, prep["const"])
    else:
        log_prob = torch.minimum(log_prob, prep["const"], out=log_prob) if log_prob.shape == torch.broadcast_shapes(log_prob.shape, prep["const"].shape) else torch.minimum(log_prob, prep["const"])
    log_prob = log_prob.to(X.dtype)
    if return_aux:
        return log_prob, {"z": z}
    return log_prob


def gaussian_log_prob(
    X: Tensor,
    means: Tensor,
    prec_chol: Tensor,
    covariance_type: str,
    *,
    return_aux: bool = False,
    working_dtype: torch.dtype | None = None,
):
    """Component log-densities ``log N(x_i | mu_k, Sigma_k)``.

    The Mahalanobis distances are expanded into one GEMM against per-component weights
    (``x^T P x - 2 x^T P mu + mu^T P mu`` on data centred on the mean of the means), so no
    ``[n, K, D]`` tensor is formed. When float32 rounding of that expansion would exceed
    :data:`EXPANSION_TOLERANCE` (see :func:`expansion_error_bound`), the computation runs in
    float64; the result keeps the inputs' dtype.

    Args:
        X: ``[..., n, D]`` samples.
        means: ``[..., K, D]`` means.
        prec_chol: precision Cholesky factor, shaped per ``covariance_type`` (module docstring).
        covariance_type: one of ``full``, ``tied``, ``diag``, ``spherical``.
        return_aux: also return the features that :func:`gaussian_stats` reuses.
        working_dtype: compute in (at least) this dtype instead of choosing automatically.

    Returns:
        ``[..., n, K]`` log-densities, or ``(log_prob, aux)`` when ``return_aux``.
    """
    prep = gaussian_prepare(
        means, prec_chol, covariance_type, working_dtype=working_dtype,
        data_dtype=torch.promote_types(X.dtype, means.dtype),
    )
    return gaussian_log_prob_prepared(X.to(torch.promote_types(X.dtype, means.dtype)), prep, return_aux=return_aux)


# --------------------------------------------------------------------------------------------
# Sufficient statistics and M-step
# --------------------------------------------------------------------------------------------


def gaussian_stats(
    X: Tensor,
    resp: Tensor,
    means: Tensor,
    prec_chol: Tensor,
    covariance_type: str,
    *,
    sample_weight: Tensor | None = None,
    aux: dict | None = None,
    working_dtype: torch.dtype | None = None,
) -> dict[str, Tensor]:
    """Additive sufficient statistics of a chunk, about the mean of the current means.

    The statistics are responsibility-weighted sums of ``x - c`` and of its products, ``c``
    being the mean of ``means``; they are computed in the working dtype of
    :func:`gaussian_log_prob` (float64 when float32 would lose accuracy) and returned in
    float64, so sums over chunks, batches and ranks add exactly. ``means`` (hence ``c``) must
    stay fixed while the statistics of several chunks are added up.

    Args:
        X: ``[..., n, D]`` samples.
        resp: ``[..., n, K]`` responsibilities.
        means, prec_chol: current parameters (see module docstring).
        covariance_type: the covariance type.
        sample_weight: optional ``[..., n]`` non-negative sample weights.
        aux: the ``aux`` returned by :func:`gaussian_log_prob` for the same ``X`` and
            parameters (saves recomputing the features).
        working_dtype: compute in (at least) this dtype when ``aux`` is not given.

    Returns:
        dict of float64 tensors: ``nk [..., K]`` (sum of responsibilities), ``sx [..., K, D]``
        (weighted sum of ``x - c``) and ``sxx``, the weighted sum of second powers:
        ``sum r (x-c)(x-c)^T`` for ``full``, laid out as :func:`quadratic_features`
        (``[..., K, (D//2 + 1) D]``, see :func:`symmetric_from_pairs`), squares
        ``[..., K, D]`` for ``diag``, squared norms ``[..., K]`` for ``spherical``, and the
        total (unweighted by ``r``) scatter ``[..., D, D]`` for ``tied``.
    """
    if aux is None:
        dtype = _working_dtype(X, means, prec_chol, covariance_type, working_dtype)
        z = _features(X.to(dtype) - _centre(means).to(dtype), covariance_type)
    else:
        z = aux["z"]
    r = resp if sample_weight is None else resp * sample_weight.unsqueeze(-1)
    r = r.to(z.dtype)
    nk = r.sum(-2).double()
    both = (r.mT @ z).double()  # [..., K, F]
    d = X.shape[-1]
    if covariance_type == "full":
        return {"nk": nk, "sx": both[..., -d:], "sxx": both[..., :-d]}
    if covariance_type == "diag":
        return {"nk": nk, "sx": both[..., d:], "sxx": both[..., :d]}
    if covariance_type == "spherical":
        return {"nk": nk, "sx": both[..., 1:], "sxx": both[..., 0]}
    # tied: the total scatter about c does not depend on the responsibilities.
    total = r.sum(-1, keepdim=True)  # per-sample weight (1, or the sample weight)
    return {"nk": nk, "sx": both, "sxx": (z.mT @ (z * total)).double()}


def stats_need_float64(stats: dict[str, Tensor], covariance_type: str, eps: float) -> bool:
    """Whether variances computed from these statistics lost too much to rounding.

    The M-step subtracts ``mean^2`` from the second moment ``E[(x-c)^2]``; when both were
    accumulated from products rounded to ``eps``, the result carries an error of about
    ``eps * E[(x-c)^2]``. This returns True when that error exceeds
    :data:`CANCELLATION_TOLERANCE` of a variance (a component much narrower than its
    distance from the centre), so the caller can recompute the statistics in float64.
    """
    nk = stats["nk"] + 10.0 * torch.finfo(torch.float64).eps
    mean_c = stats["sx"] / nk.unsqueeze(-1)
    if covariance_type == "full":
        d = mean_c.shape[-1]
        second = stats["sxx"][..., :d] / nk.unsqueeze(-1)  # shift 0: the squares
    elif covariance_type == "diag":
        second = stats["sxx"] / nk.unsqueeze(-1)
    elif covariance_type == "spherical":
        second = stats["sxx"] / nk
        mean_c = mean_c.square().sum(-1, keepdim=True)
        second = second.unsqueeze(-1)
        variance = second - mean_c
        return bool((eps * second > CANCELLATION_TOLERANCE * variance.abs()).any())
    else:
        n = nk.sum(-1, keepdim=True)
        second = torch.diagonal(stats["sxx"], dim1=-2, dim2=-1) / n
        mean_sq = (mean_c.square() * nk.unsqueeze(-1)).sum(-2) / n
        return bool((eps * second > CANCELLATION_TOLERANCE * (second - mean_sq).abs()).any())
    variance = second - mean_c.square()
    live = stats["nk"] > 0
    bad = (eps * second > CANCELLATION_TOLERANCE * variance.abs()) & live.unsqueeze(-1)
    return bool(bad.any())


def _regularised_cholesky(cov: Tensor, covariance_type: str) -> tuple[Tensor, Tensor]:
    """Precision factor of ``cov``; covariances that are not positive definite get a growing
    jitter (relative to their own scale) with a warning. Returns ``(prec_chol, failed)``."""
    prec_chol, failed = precision_cholesky_from_covariances(cov, covariance_type)
    if not bool(failed.any()):
        return prec_chol, failed
    if covariance_type in ("full", "tied"):
        scale = torch.diagonal(cov, dim1=-2, dim2=-1).mean(-1).clamp_min(0.0)
    elif covariance_type == "diag":
        scale = cov.mean(-1).clamp_min(0.0)
    else:
        scale = cov.clamp_min(0.0)
    used = None
    for jitter in (1e-10, 1e-8, 1e-6, 1e-4):
        add = jitter * scale
        if covariance_type in ("full", "tied"):
            trial = cov + add[..., None, None] * _eye_like(cov, cov.shape[-1])
            mask = failed[..., None, None]
        elif covariance_type == "diag":
            trial = cov + add[..., None]
            mask = failed[..., None]
        else:
            trial = cov + add
            mask = failed
        trial_chol, trial_failed = precision_cholesky_from_covariances(trial, covariance_type)
        prec_chol = torch.where(mask, trial_chol, prec_chol)
        failed = failed & trial_failed
        used = jitter
        if not bool(failed.any()):
            break
    if not bool(failed.any()):  # every failure was rescued (else the caller raises)
        warnings.warn(
            "A component covariance was not positive definite; added up to "
            f"{used:g} x its mean variance to its diagonal. Increase reg_covar, or scale the "
            "input data, to avoid this.",
            RuntimeWarning,
            stacklevel=3,
        )
    return prec_chol, failed


def gaussian_m_step(
    stats: dict[str, Tensor],
    means: Tensor,
    covariance_type: str,
    reg_covar: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Closed-form M-step from statistics produced by :func:`gaussian_stats`.

    Args:
        stats: summed statistics from :func:`gaussian_stats`.
        means: the means the statistics were taken with (their mean is the centre).
        covariance_type: the covariance type.
        reg_covar: non-negative value added to the diagonal of every covariance.

    Returns:
        ``(log_weights, means, prec_chol, failed)`` in float64; ``failed`` marks (per
        component, or per problem for ``tied``) covariances that could not be made positive
        definite even with added jitter.
    """
    nk = stats["nk"] + 10.0 * torch.finfo(torch.float64).eps
    log_weights = nk.log() - nk.sum(-1, keepdim=True).log()
    c = _centre(means).double()
    mean_c = stats["sx"] / nk.unsqueeze(-1)
    new_means = mean_c + c
    d = means.shape[-1]
    if covariance_type == "full":
        second = symmetric_from_pairs(stats["sxx"], d) / nk[..., None, None]
        cov = second - mean_c.unsqueeze(-1) * mean_c.unsqueeze(-2)
        cov = cov + reg_covar * torch.eye(d, dtype=cov.dtype, device=cov.device)
    elif covariance_type == "diag":
        cov = stats["sxx"] / nk.unsqueeze(-1) - mean_c.square() + reg_covar
    elif covariance_type == "spherical":
        cov = (stats["sxx"] / nk - mean_c.square().sum(-1)) / d + reg_covar
    else:
        outer = (mean_c * nk.unsqueeze(-1)).mT @ mean_c
        cov = (stats["sxx"] - outer) / nk.sum(-1)[..., None, None]
        cov = 0.5 * (cov + cov.mT) + reg_covar * torch.eye(d, dtype=cov.dtype, device=cov.device)
    new_prec_chol, failed = _regularised_cholesky(cov, covariance_type)
    return log_weights, new_means, new_prec_chol, failed


# --------------------------------------------------------------------------------------------
# Unconstrained parametrisation (what the nn.Module stores)
# --------------------------------------------------------------------------------------------


def precision_cholesky_to_unconstrained(prec_chol: Tensor, covariance_type: str) -> Tensor:
    """Map a precision factor to an unconstrained tensor of the same shape: for ``full`` and
    ``tied`` the strict upper triangle is kept and the (positive) diagonal is replaced by its
    log; for ``diag`` and ``spherical`` the log of the factor."""
    if covariance_type in ("full", "tied"):
        diag = torch.diagonal(prec_chol, dim1=-2, dim2=-1)
        return prec_chol.triu(1) + torch.diag_embed(diag.log())
    return prec_chol.log()


def precision_cholesky_from_unconstrained(raw: Tensor, covariance_type: str) -> Tensor:
    """Inverse of :func:`precision_cholesky_to_unconstrained`; differentiable, and any
    unconstrained tensor gives a valid (upper-triangular, positive-diagonal) factor."""
    if covariance_type in ("full", "tied"):
        diag = torch.diagonal(raw, dim1=-2, dim2=-1)
        return raw.triu(1) + torch.diag_embed(diag.exp())
    return raw.exp()
