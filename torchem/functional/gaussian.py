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
* ``full``: the whitened residuals ``y = (x - mu_k) U_k`` come from one GEMM against all
  components' factors; the Mahalanobis term is ``|y|^2``. The M-step statistics reuse ``y``.
* ``diag``, ``spherical``, ``tied``: the Mahalanobis term is expanded into GEMMs
  (``x^2 P - 2 x P mu + mu P mu``) on centred data and clamped at zero.
* Statistics are returned in float64 so they add exactly across chunks, batches and ranks.
* Log-determinants are read off the factor's diagonal; no matrix is ever inverted.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

__all__ = [
    "COVARIANCE_TYPES",
    "covariances_from_precision_cholesky",
    "gaussian_log_prob",
    "gaussian_m_step",
    "gaussian_stats",
    "log_det_precision_cholesky",
    "n_parameters",
    "precision_cholesky_from_covariances",
    "precision_cholesky_from_precisions",
    "precisions_from_precision_cholesky",
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
    """Reference point for centring: the mean of the component means, ``[..., 1, D]``."""
    return means.mean(-2, keepdim=True)


def gaussian_log_prob(
    X: Tensor,
    means: Tensor,
    prec_chol: Tensor,
    covariance_type: str,
    *,
    return_aux: bool = False,
):
    """Component log-densities ``log N(x_i | mu_k, Sigma_k)``.

    Args:
        X: ``[..., n, D]`` samples.
        means: ``[..., K, D]`` means.
        prec_chol: precision Cholesky factor, shaped per ``covariance_type`` (module docstring).
        covariance_type: one of ``full``, ``tied``, ``diag``, ``spherical``.
        return_aux: also return intermediate tensors that :func:`gaussian_stats` can reuse.

    Returns:
        ``[..., n, K]`` log-densities, or ``(log_prob, aux)`` when ``return_aux``.
    """
    d = X.shape[-1]
    k = means.shape[-2]
    c = _centre(means)
    xc = X - c
    mc = means - c
    if covariance_type == "full":
        # y[n, k, :] = (x_n - mu_k) U_k, for all k in one GEMM against [D, K*D].
        u_flat = prec_chol.transpose(-3, -2).reshape(*prec_chol.shape[:-3], d, k * d)
        shift = (mc.unsqueeze(-2) @ prec_chol).squeeze(-2)  # [..., K, D]
        y = (xc @ u_flat).unflatten(-1, (k, d)) - shift.unsqueeze(-3)
        maha = y.square().sum(-1)
        aux = {"xc": xc, "y": y}
    elif covariance_type == "diag":
        prec = prec_chol.square()
        z = torch.cat([xc * xc, xc], dim=-1)  # [..., n, 2D]
        w = torch.cat([prec, -2.0 * mc * prec], dim=-1)  # [..., K, 2D]
        maha = (z @ w.mT + (mc * mc * prec).sum(-1).unsqueeze(-2)).clamp_min(0.0)
        aux = {"xc": xc, "z": z}
    elif covariance_type == "spherical":
        prec = prec_chol.square()
        sq = (xc * xc).sum(-1, keepdim=True)
        z = torch.cat([sq, xc], dim=-1)  # [..., n, D+1]
        w = torch.cat([torch.ones_like(mc[..., :1]), -2.0 * mc], dim=-1)  # [..., K, D+1]
        maha = ((z @ w.mT + (mc * mc).sum(-1).unsqueeze(-2)) * prec.unsqueeze(-2)).clamp_min(0.0)
        aux = {"xc": xc, "z": z}
    elif covariance_type == "tied":
        zx = xc @ prec_chol  # [..., n, D]
        zm = mc @ prec_chol  # [..., K, D]
        maha = (
            zx.square().sum(-1, keepdim=True) - 2.0 * (zx @ zm.mT) + zm.square().sum(-1).unsqueeze(-2)
        ).clamp_min(0.0)
        aux = {"xc": xc}
    else:
        raise ValueError(f"unknown covariance_type {covariance_type!r}; expected one of {COVARIANCE_TYPES}")
    log_det = log_det_precision_cholesky(prec_chol, covariance_type, d)
    if covariance_type == "tied":
        log_det = log_det.unsqueeze(-1)
    log_prob = log_det.unsqueeze(-2) - 0.5 * (d * _LOG_2PI + maha)
    if return_aux:
        return log_prob, aux
    return log_prob


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
) -> dict[str, Tensor]:
    """Additive sufficient statistics for the M-step, in float64.

    The statistics are taken about the current parameters (``means``, ``prec_chol``), which
    must stay fixed while statistics from several chunks are added up.

    Args:
        X: ``[..., n, D]`` samples.
        resp: ``[..., n, K]`` responsibilities.
        means, prec_chol: current parameters (see module docstring).
        covariance_type: the covariance type.
        sample_weight: optional ``[..., n]`` non-negative sample weights.
        aux: the ``aux`` returned by :func:`gaussian_log_prob` for the same ``X`` and
            parameters, to avoid recomputing intermediates.

    Returns:
        dict of float64 tensors: ``nk [..., K]`` (sum of responsibilities), ``sx [..., K, D]``
        (responsibility-weighted sum of ``x - c``, ``c`` the mean of ``means``), and the
        second-order term ``sxx``: ``[..., K, D, D]`` whitened scatter about each mean for
        ``full``, ``[..., K, D]`` for ``diag``, ``[..., K]`` for ``spherical``,
        ``[..., D, D]`` for ``tied``.
    """
    if aux is None:
        _, aux = gaussian_log_prob(X, means, prec_chol, covariance_type, return_aux=True)
    r = resp if sample_weight is None else resp * sample_weight.unsqueeze(-1)
    r64 = r.double()
    xc64 = aux["xc"].double()
    rt = r64.mT  # [..., K, n]
    nk = r64.sum(-2)
    if covariance_type == "full":
        y = aux["y"].transpose(-3, -2)  # [..., K, n, D]
        ry = y * r.mT.unsqueeze(-1)
        sxx = (ry.mT @ y).double()  # [..., K, D, D] = sum_n r y^T y, in the data's dtype
        return {"nk": nk, "sx": rt @ xc64, "sxx": sxx}
    if covariance_type in ("diag", "spherical"):
        both = rt @ aux["z"].double()  # [..., K, 2D] or [..., K, D+1]
        d = xc64.shape[-1]
        if covariance_type == "diag":
            return {"nk": nk, "sx": both[..., d:], "sxx": both[..., :d]}
        return {"nk": nk, "sx": both[..., 1:], "sxx": both[..., 0]}
    # tied: the total scatter about c does not depend on the responsibilities.
    w64 = r64.sum(-1, keepdim=True)  # per-sample total weight (1, or the sample weight)
    sxx = xc64.mT @ (xc64 * w64)
    return {"nk": nk, "sx": rt @ xc64, "sxx": sxx}


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
    if not bool(failed.all()):
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
    prec_chol: Tensor,
    covariance_type: str,
    reg_covar: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Closed-form M-step from statistics produced by :func:`gaussian_stats`.

    Args:
        stats: summed statistics, taken about ``means`` and ``prec_chol``.
        means, prec_chol: the parameters the statistics were taken about.
        covariance_type: the covariance type.
        reg_covar: non-negative value added to the diagonal of every covariance.

    Returns:
        ``(log_weights, means, prec_chol, failed)`` in float64; ``failed`` marks (per
        component, or per problem for ``tied``) covariances that could not be made positive
        definite even with added jitter.
    """
    nk = stats["nk"] + 10.0 * torch.finfo(torch.float64).eps
    log_weights = nk.log() - nk.sum(-1, keepdim=True).log()
    means64 = means.double()
    c = _centre(means64)
    mean_c = stats["sx"] / nk.unsqueeze(-1)
    new_means = mean_c + c
    d = means.shape[-1]
    if covariance_type == "full":
        u = prec_chol.double()
        low = u.mT
        # A = U^{-T} W U^{-1}: the scatter about the old means, by two triangular solves.
        t = torch.linalg.solve_triangular(low, stats["sxx"], upper=False)
        a = torch.linalg.solve_triangular(low, t.mT, upper=False)
        a = 0.5 * (a + a.mT)
        shift = mean_c - (means64 - c)
        cov = a / nk[..., None, None] - shift.unsqueeze(-1) * shift.unsqueeze(-2)
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
