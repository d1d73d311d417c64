"""Stateless, batched Gaussian kernels: log-densities, sufficient statistics and the M-step.

Every function accepts any leading batch shape ``...`` (independent problems, restarts, or
both) that broadcasts between the data and the parameters. Notation:

* ``X``: ``[..., n, D]`` samples.
* ``means``: ``[..., K, D]`` component means (``loc`` in torch.distributions' words).
* ``prec_chol``: the Cholesky factor ``U`` of the precision, ``P = U U^T``, upper triangular,
  stored as scikit-learn's ``precisions_cholesky_``; its shape per covariance type is in the
  table of :mod:`torchem.functional.covariance`.

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
  :func:`stats_need_float64` send the pass to float64; where the moments about the centre
  cancel even there (components far apart), the precise pass takes them about each
  component's own mean (:func:`gaussian_stats_centred`).
* In float64, where even float64 rounding of the expansion would exceed
  :data:`FLOAT64_EXPANSION_TOLERANCE` nats (components narrow compared with their distance
  from the centre, sharing rows), the log-densities are computed from the differences
  ``x - mu`` themselves (:meth:`CovarianceType.mahalanobis
  <torchem.functional.covariance.CovarianceType.mahalanobis>`).
* Statistics are returned in float64 so they add exactly across chunks, batches and ranks.
* Log-determinants are read off the factor's diagonal; no matrix is ever inverted.

What depends on the covariance type is a method of its entry in
:data:`~torchem.functional.covariance.COVARIANCE_TYPES`; the functions here are written once
for every type and look the entry up by its name.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from .._utils import caller_stacklevel

from ._buffers import broadcast_shape, buffer
from .covariance import COVARIANCE_TYPES, lookup as _lookup
from .estep import _LOG2_E, responsibilities_base2_
from .covariance import quadratic_features, symmetric_from_pairs  # noqa: F401  (re-exported: documented here)

__all__ = [
    "expansion_error_bound",
    "gaussian_stats_centred",
    "COVARIANCE_TYPES",
    "covariances_from_precision_cholesky",
    "gaussian_e_step_stats",
    "gaussian_log_prob",
    "gaussian_log_prob_prepared",
    "gaussian_prepare",
    "gaussian_m_step",
    "gaussian_moments",
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

_LOG_2PI = math.log(2.0 * math.pi)

COLLAPSED_MESSAGE = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar, or scale the input data."
)


# --------------------------------------------------------------------------------------------
# Factor conversions (the table's methods, by name)
# --------------------------------------------------------------------------------------------


def log_det_precision_cholesky(prec_chol: Tensor, covariance_type: str, n_features: int) -> Tensor:
    """``log det U`` (half the log-determinant of the precision), per component.

    Returns:
        ``[..., K]`` for ``full``/``diag``/``spherical``; ``[...]`` for ``tied`` (one value
        shared by every component, broadcast by the caller).
    """
    return _lookup(covariance_type).log_det(prec_chol, n_features)


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
    return _lookup(covariance_type).factor_from_covariances(covariances)


def precision_cholesky_from_precisions(precisions: Tensor, covariance_type: str) -> tuple[Tensor, Tensor]:
    """Upper-triangular ``U`` with ``U U^T = precisions`` (scikit-learn's flip trick).

    Returns:
        ``(prec_chol, failed)`` as in :func:`precision_cholesky_from_covariances`.
    """
    return _lookup(covariance_type).factor_from_precisions(precisions)


def covariances_from_precision_cholesky(prec_chol: Tensor, covariance_type: str) -> Tensor:
    """``cov = (U U^T)^{-1} = U^{-T} U^{-1}`` by a triangular solve."""
    return _lookup(covariance_type).covariances(prec_chol)


def precisions_from_precision_cholesky(prec_chol: Tensor, covariance_type: str) -> Tensor:
    """``P = U U^T``."""
    return _lookup(covariance_type).precisions(prec_chol)


def n_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Number of free parameters of a Gaussian mixture (for BIC/AIC)."""
    k, d = n_components, n_features
    return _lookup(covariance_type).n_covariance_parameters(k, d) + k * d + k - 1


# --------------------------------------------------------------------------------------------
# Log-densities
# --------------------------------------------------------------------------------------------


def _centre(means: Tensor) -> Tensor:
    """Reference point for centring: the mean of the component means, ``[..., 1, D]``.

    Computed in float64 and rounded to the means' dtype, so the statistics (which subtract it
    in the working dtype) and the M-step (which adds it back in float64) use the very same
    point."""
    return means.double().mean(-2, keepdim=True).to(means.dtype)


#: Rounding error of an expanded Mahalanobis distance, in units of the distance, above which
#: the kernels compute in float64 instead of float32.
EXPANSION_TOLERANCE = 1e-3

#: Relative rounding error of a variance computed from float32 second moments above which the
#: M-step's statistics are recomputed in float64 (see :func:`stats_need_float64`).
CANCELLATION_TOLERANCE = 1e-4

#: The same for float64 second moments, above which the statistics are recomputed about each
#: component's own mean: float64 covariances are held to 1e-8 of their scale at any separation
#: (the bound is taken ten times tighter, as rounding accumulates over a sum; unit clusters
#: more than ~2,000 standard deviations from the means' common centre take the second pass).
FLOAT64_CANCELLATION_TOLERANCE = 1e-9

#: Rounding error of an expanded Mahalanobis distance in float64, in nats (``eps`` times
#: :func:`expansion_error_bound`), above which the log-densities are computed from the
#: differences ``x - mu`` themselves (:meth:`CovarianceType.mahalanobis
#: <torchem.functional.covariance.CovarianceType.mahalanobis>`): responsibilities are then
#: held to about 1e-10 of themselves (components of unit scale more than ~700 standard
#: deviations from the means' common centre take that path).
FLOAT64_EXPANSION_TOLERANCE = 1e-10

#: Relative rounding error of a variance, from float64 second moments taken about a reference
#: point, above which stepwise EM takes a batch's statistics again about the new means (a
#: component that moved more than ~700 standard deviations from the reference in one step;
#: see :meth:`torchem.em.Family.needs_recentring`).
RECENTRING_TOLERANCE = 1e-10


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
    return _lookup(covariance_type).expansion_terms(mc, prec_chol).max()


def _bound(means: Tensor, prec_chol: Tensor, covariance_type: str, cache: dict | None) -> float:
    """:func:`expansion_error_bound` on the host (one synchronisation), kept in ``cache``."""
    if cache is not None and "bound" in cache:
        return cache["bound"]
    value = float(expansion_error_bound(means, prec_chol, covariance_type))
    if cache is not None:
        cache["bound"] = value
    return value


def _working_dtype(
    X: Tensor, means: Tensor, prec_chol: Tensor, covariance_type: str, forced: torch.dtype | None = None,
    cache: dict | None = None,
) -> torch.dtype:
    dtype = torch.promote_types(X.dtype, means.dtype)
    if forced is not None:
        return torch.promote_types(dtype, forced)
    if dtype == torch.float64 or means.requires_grad or prec_chol.requires_grad:
        return dtype
    if torch.finfo(dtype).eps * _bound(means, prec_chol, covariance_type, cache) > EXPANSION_TOLERANCE:
        return torch.float64
    return dtype


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
    ``z`` (see :meth:`CovarianceType.features <torchem.functional.covariance.CovarianceType.features>`)
    of the data centred on ``c``, the mean of the means; this
    returns ``c``, the weights ``w [..., K, F]``, the offsets ``b [..., K]`` and the
    log-determinants, in the working dtype: the data's, or float64 when float32 rounding of
    the expansion would exceed :data:`EXPANSION_TOLERANCE` (see
    :func:`expansion_error_bound`), or at least ``working_dtype`` when given.
    """
    ct = _lookup(covariance_type)
    data_dtype = data_dtype or means.dtype
    probe = torch.empty(0, dtype=data_dtype)
    cache: dict = {}  # the bound, synchronised once for both decisions
    dtype = _working_dtype(probe, means, prec_chol, covariance_type, working_dtype, cache)
    c = _centre(means).to(dtype)
    means, prec_chol = means.to(dtype), prec_chol.to(dtype)
    mc = means - c
    d = means.shape[-1]
    w, b = ct.expansion(mc, prec_chol)
    log_det = ct.component_log_det(prec_chol, d)
    const = log_det - 0.5 * d * _LOG_2PI  # [..., K]: the log-density at the mean
    prep = {
        "covariance_type": covariance_type,
        "dtype": dtype,
        "centre": c,
        "prec_chol": prec_chol,
        # log N(x) = z(x) . w' + b', with w' = -w/2 and b' = const - b/2: one GEMM.
        "w": (-0.5 * w).mT.contiguous(),  # [..., F, K]
        "b": (const - 0.5 * b).unsqueeze(-2),  # [..., 1, K]
        "const": const.unsqueeze(-2),  # [..., 1, K]
    }
    if _expansion_too_coarse(means, prec_chol, covariance_type, dtype, cache):
        prep["direct_means"] = means  # the log-densities come from x - mu (see gaussian_log_prob_prepared)
    return prep


def _expansion_too_coarse(means: Tensor, prec_chol: Tensor, covariance_type: str, dtype: torch.dtype,
                          cache: dict | None = None) -> bool:
    """Whether a float64 expansion would round the log-densities by more than
    :data:`FLOAT64_EXPANSION_TOLERANCE` nats (components far from their common centre compared
    with their width). Not decided while tracing or for gradients (a host-side decision; those
    paths keep the expansion)."""
    if dtype != torch.float64 or means.requires_grad or prec_chol.requires_grad or torch.compiler.is_compiling():
        return False
    return torch.finfo(dtype).eps * _bound(means, prec_chol, covariance_type, cache) > FLOAT64_EXPANSION_TOLERANCE


#: Elements of the ``[..., n, K, D]`` differences the direct E-step forms at once.
_DIRECT_BLOCK_ELEMENTS = 1 << 22


def _direct_log_prob(Xw: Tensor, prep: dict) -> Tensor:
    """``[..., n, K]`` log-densities from the differences ``x - mu_k`` (no expansion), in
    blocks of rows bounded by :data:`_DIRECT_BLOCK_ELEMENTS`."""
    ct = COVARIANCE_TYPES[prep["covariance_type"]]
    mu = prep["direct_means"].unsqueeze(-3)  # [..., 1, K, D]
    k, d = mu.shape[-2], mu.shape[-1]
    lead = math.prod(torch.broadcast_shapes(Xw.shape[:-2], prep["direct_means"].shape[:-2]))  # problems x restarts
    step = max(1, _DIRECT_BLOCK_ELEMENTS // max(1, k * d * lead))
    parts = [ct.mahalanobis(Xw[..., i:i + step, :].unsqueeze(-2) - mu, prep["prec_chol"])
             for i in range(0, Xw.shape[-2], step)]
    maha = parts[0] if len(parts) == 1 else torch.cat(parts, -2)
    return (prep["const"] - 0.5 * maha).contiguous()


def gaussian_log_prob_prepared(X: Tensor, prep: dict, *, return_aux: bool = False):
    """Component log-densities ``[..., n, K]`` of ``X [..., n, D]`` from
    :func:`gaussian_prepare`'s output (one GEMM per call), in ``X``'s dtype.

    If ``prep`` holds a ``"workspace"`` dict, the features returned in ``aux`` live in a
    buffer that the next call overwrites (the EM driver uses them before that)."""
    ct = COVARIANCE_TYPES[prep["covariance_type"]]
    ws = prep.get("workspace")
    Xw, c = X.to(prep["dtype"]), prep["centre"]
    direct = "direct_means" in prep  # log-densities from x - mu: the features only for aux
    z = None
    if return_aux or not direct:
        if ws is None or Xw.requires_grad or c.requires_grad:
            xc = Xw - c
        else:
            xc = torch.sub(Xw, c, out=buffer(ws, "xc", broadcast_shape(Xw.shape, c.shape), Xw))
        z = ct.features(xc, ws)
    log_prob = _direct_log_prob(Xw, prep) if direct else ct.log_prob_from_features(xc, z, prep, ws)
    # A Mahalanobis distance cannot be negative: cap rounding at the density's peak.
    if log_prob.requires_grad:
        log_prob = torch.minimum(log_prob, prep["const"])
    else:
        log_prob = torch.minimum(log_prob, prep["const"], out=log_prob) if log_prob.shape == broadcast_shape(log_prob.shape, prep["const"].shape) else torch.minimum(log_prob, prep["const"])
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
        (``[..., K, D (D + 1) / 2]``, see :func:`symmetric_from_pairs`), squares
        ``[..., K, D]`` for ``diag``, squared norms ``[..., K]`` for ``spherical``, and the
        total (unweighted by ``r``) scatter ``[..., D, D]`` for ``tied``.
    """
    ct = _lookup(covariance_type)
    if aux is None:
        dtype = _working_dtype(X, means, prec_chol, covariance_type, working_dtype)
        z = ct.features(X.to(dtype) - _centre(means).to(dtype))
    else:
        z = aux["z"]
    r = resp if sample_weight is None else resp * sample_weight.unsqueeze(-1)
    r = r.to(z.dtype)
    nk = r.sum(-2).double()
    both = (r.mT @ z).double()  # [..., K, F]
    return {"nk": nk, **ct.moment_stats(both, r, z, X.shape[-1])}


def gaussian_e_step_stats(
    X: Tensor, prep: dict, log_weights: Tensor, sample_weight: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """The soft E-step of a chunk and its statistics in one pass: what
    :func:`gaussian_log_prob_prepared`, :func:`~torchem.functional.estep.responsibilities` and
    :func:`gaussian_stats` give together, in fewer passes over the ``[..., K, n]``
    log-probabilities.

    The first GEMM computes the joint log-probabilities ``log2(w_k p_k(x))`` in base 2 and
    component-major (the log weights folded into its offsets through a column of ones of the
    features, :meth:`CovarianceType.offset_features
    <torchem.functional.covariance.CovarianceType.offset_features>`);
    :func:`~torchem.functional.estep.responsibilities_base2_` turns them into responsibilities
    in place; the second GEMM sums the responsibility-weighted features.

    Args:
        X: ``[..., n, D]`` samples in ``prep["dtype"]``.
        prep: :func:`gaussian_prepare`'s output with a ``"workspace"`` dict (for ``full``,
            ``diag`` or ``spherical`` covariances); the weights of the GEMM are kept in it for
            the next chunks of the pass.
        log_weights: ``[..., K]`` log mixing weights.
        sample_weight: optional ``[..., n]`` non-negative sample weights: they weight the
            statistics (the responsibilities are multiplied by them in place, one pass), not
            the log-likelihoods.

    Returns:
        ``(log_norm [..., n], stats)``: the per-sample log-likelihoods and the statistics of
        :func:`gaussian_stats` (with the same ``sample_weight``).
    """
    ct = COVARIANCE_TYPES[prep["covariance_type"]]
    ws = prep["workspace"]
    fused = prep.get("fused")
    if fused is None or fused[0] is not log_weights:
        lw = log_weights.to(prep["dtype"]).unsqueeze(-1)  # [..., K, 1]
        weights = (torch.cat([prep["w"].mT, prep["b"].mT + lw], -1) * _LOG2_E).contiguous()  # [..., K, F + 1]
        cap, c = (prep["const"].mT + lw) * _LOG2_E, prep["centre"]
        lead = broadcast_shape(weights.shape[:-2], c.shape[:-2], X.shape[:-2])
        if all(s == 1 for s in lead):  # one problem, one restart: 2-D GEMMs, fewer ops a chunk
            weights, cap, c = (t.reshape(t.shape[-2:]) for t in (weights, cap, c))
        fused = prep["fused"] = (log_weights, weights, cap, c, lead)
    _, weights, cap, c, lead = fused
    flat = weights.ndim == 2
    n = X.shape[-2]
    if flat:
        X = X.reshape(X.shape[-2:])
    z = ct.offset_features(X, c, ws)  # [..., n, F + 1]
    joint = buffer(ws, "log_prob", (*z.shape[:-2], weights.shape[-2], n), z)
    joint = torch.mm(weights, z.mT, out=joint) if flat else torch.matmul(weights, z.mT, out=joint)
    # the log-likelihoods in a reused float64 buffer: a fresh one of a chunk's length costs
    # page faults on CPU, and the driver sums them in float64
    log_norm = buffer(ws, "log_norm", (*joint.shape[:-2], n), joint.new_empty((), dtype=torch.float64))
    log_norm, r = responsibilities_base2_(joint, cap, log_norm)  # r: [..., K, n]
    if sample_weight is not None:  # weighted statistics: r w, in place
        sw = sample_weight.to(r.dtype)
        r.mul_(sw.reshape(1, n) if flat else sw.unsqueeze(-2))
    features = z[..., :-1]
    rz = (torch.mm(r, features) if flat else r @ features).double()  # [..., K, F]
    stats = {"nk": r.sum(-1).double(), **ct.moment_stats(rz, r.mT, features, X.shape[-1])}
    if flat:
        return log_norm.view(*lead, n), {k: v.view(*lead, *v.shape) for k, v in stats.items()}
    return log_norm, stats


def gaussian_stats_centred(
    X: Tensor, resp: Tensor, means: Tensor, covariance_type: str, *, sample_weight: Tensor | None = None
) -> dict[str, Tensor]:
    """The statistics of :func:`gaussian_stats` taken, in float64, about each component's own
    mean (``sx`` and ``sxx`` of ``x - mu_k``) instead of the means' common centre: the precise
    path for components far from that centre, whose moments about it cancel even in float64
    (two clusters 1e7 apart, or one row at 1e8). It computes each component's features in turn
    (a fall-back, used when :func:`stats_need_float64` says the common centre lost too much),
    so its memory is one chunk's features. The result carries a ``centred`` entry, which
    :func:`gaussian_m_step` reads.
    """
    ct = _lookup(covariance_type)
    X64, mu = X.double(), means.double()
    r = resp.double() if sample_weight is None else resp.double() * sample_weight.double().unsqueeze(-1)
    d, k = X.shape[-1], mu.shape[-2]
    rz, sxx = [], None
    for j in range(k):  # one component at a time: [.., n, F] features, not [.., K, n, F]
        z = ct.features(X64 - mu[..., j : j + 1, :])
        rj = r[..., j : j + 1]
        rz.append((rj.mT @ z).squeeze(-2))
        if ct.pooled:  # the scatter of every component about its own mean, summed
            part = z.mT @ (z * rj)
            sxx = part if sxx is None else sxx + part
    rz = torch.stack(rz, -2)  # [.., K, F]
    stats = {"nk": r.sum(-2)}
    stats.update({"sx": rz, "sxx": sxx} if ct.pooled else ct.moment_stats(rz, r, None, d))
    stats["centred"] = stats["nk"].new_ones(stats["nk"].shape[:-1])  # a marker that adds and reshapes like the rest
    return stats


def stats_need_float64(
    stats: dict[str, Tensor], covariance_type: str, eps: float, tolerance: float = CANCELLATION_TOLERANCE
) -> bool:
    """Whether variances computed from these statistics lost too much to rounding.

    The M-step subtracts ``mean^2`` from the second moment ``E[(x-c)^2]``; when both were
    accumulated from products rounded to ``eps``, the result carries an error of about
    ``eps * E[(x-c)^2]``. This returns True when that error exceeds ``tolerance`` of a
    variance (a component much narrower than its distance from the centre), so the caller can
    recompute the statistics in float64 (or, already in float64, about a nearer point).
    """
    nk = stats["nk"] + 10.0 * torch.finfo(torch.float64).eps
    mean_c = stats["sx"] / nk.unsqueeze(-1)
    return _lookup(covariance_type).variances_cancelled(stats, nk, mean_c, eps, tolerance)


def _regularised_cholesky(cov: Tensor, covariance_type: str, means: Tensor | None = None, *,
                          unregularised: bool = False) -> tuple[Tensor, Tensor]:
    """Precision factor of ``cov``; covariances that are not positive definite get a growing
    jitter (relative to their own scale) with a warning. Returns ``(prec_chol, failed)``.

    With the components' ``means``, a covariance whose scale lies below what float64 can
    resolve about its mean (``(10 eps |mu|)^2``: the rounding of the mean itself, as rows that
    are copies of one point with ``reg_covar=0`` leave it) is degenerate, not rounded, and is
    left failed (scikit-learn raises there too). With ``unregularised`` (``reg_covar=0``), so
    is one whose variance along a feature lies at or below the resolution of that feature's
    mean (a feature constant within a component), even where its factor exists: the likelihood
    has no maximum there, and a jitter or a factor of a rounding error would make one up
    (with ``reg_covar > 0`` the variance is bounded below, and the fit is the regularised one)."""
    ct = _lookup(covariance_type)
    prec_chol, failed = ct.factor_from_covariances(cov)
    # [..., K, D]: what float64 resolves about each component's mean, feature by feature
    resolution = None if means is None else (10.0 * torch.finfo(torch.float64).eps) ** 2 * means.double().square()
    degenerate = None
    if resolution is not None and unregularised:  # (no synchronisation of its own: read with failed's)
        degenerate = ct.unresolved(cov, resolution)
        failed = failed | degenerate
    if not bool(failed.any()):
        return prec_chol, failed
    rescued = failed if degenerate is None else failed & ~degenerate
    scale = ct.jitter_scale(cov)
    if resolution is not None:
        floor = resolution.mean(-1)  # [..., K]
        if floor.ndim > scale.ndim:  # one factor shared by the components
            floor = floor.amax(-1)
        scale = torch.where(scale > floor, scale, torch.zeros_like(scale))
    used = None
    for jitter in (1e-10, 1e-8, 1e-6, 1e-4):
        if not bool(rescued.any()):
            break
        add = jitter * scale
        trial = ct.add_to_diagonal(cov, add)
        mask = ct.expand_to_factor(rescued)
        trial_chol, trial_failed = ct.factor_from_covariances(trial)
        prec_chol = torch.where(mask, trial_chol, prec_chol)
        rescued = rescued & trial_failed
        used = jitter
    failed = rescued if degenerate is None else rescued | degenerate
    if not bool(failed.any()):  # every failure was rescued (else the caller raises)
        warnings.warn(
            "A component covariance was not positive definite; added up to "
            f"{used:g} x its mean variance to its diagonal. Increase reg_covar, or scale the "
            "input data, to avoid this.",
            RuntimeWarning,
            stacklevel=caller_stacklevel(),
        )
    return prec_chol, failed


def gaussian_m_step(
    stats: dict[str, Tensor],
    means: Tensor,
    covariance_type: str,
    reg_covar: float,
    *,
    centre: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Closed-form M-step from statistics produced by :func:`gaussian_stats`.

    Args:
        stats: summed statistics from :func:`gaussian_stats`.
        means: the means the statistics were taken with (their mean is the centre).
        covariance_type: the covariance type.
        reg_covar: non-negative value added to the diagonal of every covariance.
        centre: the point the statistics were taken about, broadcastable against ``means``,
            when it is not the means' mean (statistics of several models taken about one
            common point); ignored for statistics taken about each component's own mean.

    Returns:
        ``(log_weights, means, prec_chol, failed)`` in float64; ``failed`` marks (per
        component, or per problem for ``tied``) covariances that could not be made positive
        definite even with added jitter.
    """
    nk, new_means, cov = gaussian_moments(stats, means, covariance_type, reg_covar, centre=centre)
    log_weights = nk.log() - nk.sum(-1, keepdim=True).log()
    new_prec_chol, failed = _regularised_cholesky(cov, covariance_type, new_means, unregularised=reg_covar == 0)
    return log_weights, new_means, new_prec_chol, failed


def gaussian_moments(
    stats: dict[str, Tensor], means: Tensor, covariance_type: str, reg_covar: float, *, centre: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The weighted moments the M-step reads off the statistics of :func:`gaussian_stats`:
    ``(nk [..., K], xk [..., K, D], sk)``, the counts (plus ``10 eps``, as scikit-learn), the
    means and the covariances (``reg_covar`` added; shaped per covariance type), in float64.
    ``means`` are the means the statistics were taken with (``centre``: see
    :func:`gaussian_m_step`). A variational M-step
    (:class:`torchem.BayesianGaussianMixture`) turns them into posterior parameters."""
    nk = stats["nk"] + 10.0 * torch.finfo(torch.float64).eps
    # the reference the statistics were taken about: the means' centre, or each mean itself
    if "centred" in stats:
        c = means.double()
    else:
        c = (_centre(means) if centre is None else centre).double()
    mean_c = stats["sx"] / nk.unsqueeze(-1)
    cov = _lookup(covariance_type).covariances_from_stats(stats, nk, mean_c, means.shape[-1], reg_covar)
    return nk, mean_c + c, cov


# --------------------------------------------------------------------------------------------
# Unconstrained parametrisation (what the nn.Module stores)
# --------------------------------------------------------------------------------------------


def precision_cholesky_to_unconstrained(prec_chol: Tensor, covariance_type: str) -> Tensor:
    """Map a precision factor to an unconstrained tensor of the same shape: for ``full`` and
    ``tied`` the strict upper triangle is kept and the (positive) diagonal is replaced by its
    log; for ``diag`` and ``spherical`` the log of the factor."""
    return _lookup(covariance_type).to_unconstrained(prec_chol)


def precision_cholesky_from_unconstrained(raw: Tensor, covariance_type: str) -> Tensor:
    """Inverse of :func:`precision_cholesky_to_unconstrained`; differentiable, and any
    unconstrained tensor gives a valid (upper-triangular, positive-diagonal) factor."""
    return _lookup(covariance_type).from_unconstrained(raw)
