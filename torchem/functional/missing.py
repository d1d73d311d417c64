"""Missing entries (NaN) marginalised out of a mixture: the E-step on the observed entries,
and the M-step's expected sufficient statistics (entries missing at random).

A missing entry is latent like the component: the E-step reads the density of each row's
observed entries only (for a Gaussian, the marginal of its observed sub-vector), and the
statistics replace each missing entry by its conditional expectation given the row's observed
entries and the component (for a Gaussian, the conditional mean, with the conditional
covariance added to the second moments). The statistics keep the layout of the complete-data
ones, so the families' M-steps, the driver, streams, ``partial_fit`` and torch.distributed
are unchanged. Everything here computes in float64.

Shapes: ``X [..., n, D]`` with NaN where an entry is missing; parameters ``[..., K, ...]``
whose leading dims broadcast against the data's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .covariance import lookup

__all__ = [
    "BLOCK_ELEMENTS",
    "Conditional",
    "KEEP_ELEMENTS",
    "expected_sums",
    "gaussian_log_prob_missing",
    "gaussian_stats_missing",
    "has_missing",
    "missingness_patterns",
    "observed",
]

_LOG_2PI = math.log(2.0 * math.pi)

#: Float64 elements of per-row work (``[n, K, D]``, and ``[n, K, D, D]`` for full and tied
#: covariances) that one block of rows may take: a chunk with missing entries is read in
#: blocks of rows bounded by it, so memory does not grow with the chunk.
BLOCK_ELEMENTS = 2**22


@dataclass(frozen=True)
class Conditional:
    """The ``aux`` of a chunk with missing entries: the (float64) parameters under which its
    missing entries are expected, i.e. the E-step's. The statistics read them even when they
    are taken about other parameters (stepwise EM's reference)."""

    params: dict
    kept: list | None = None  # the chunk's conditional moments (see gaussian_log_prob_missing)


def has_missing(X: Tensor) -> bool:
    """Whether ``X`` holds a NaN (a host synchronisation)."""
    return bool(torch.isnan(X).any())


def observed(X: Tensor) -> tuple[Tensor, Tensor]:
    """``(o, x0)``: the float64 mask of observed entries and ``X`` in float64 with 0 where missing."""
    o = ~torch.isnan(X)
    return o.double(), torch.where(o, X.double(), 0.0)


def _blocks(n: int, per_row: int):
    step = max(1, BLOCK_ELEMENTS // max(1, per_row))
    return [(s, min(n, s + step)) for s in range(0, n, step)]


def missingness_patterns(o: Tensor) -> tuple[Tensor, Tensor]:
    """``(patterns [Q, D], inverse [...])``: the distinct rows of the observed-entry mask
    ``o [..., D]`` (float 0/1) and each row's index among them. Each row's pattern is coded as
    integers of 62 bits and ranked by a sort (``torch.unique(dim=0)`` compares rows one by
    one: a hundred times slower)."""
    bits = o.reshape(-1, o.shape[-1]).to(torch.int64)
    weights = 2 ** torch.arange(62, device=o.device, dtype=torch.int64)
    inverse = None
    for s in range(0, bits.shape[-1], 62):  # one 62-bit word at a time, ranks combined
        word = (bits[:, s : s + 62] * weights[: bits.shape[-1] - s]).sum(-1)
        key = word if inverse is None else inverse * bits.shape[0] + torch.unique(word, return_inverse=True)[1]
        inverse = torch.unique(key, return_inverse=True)[1]
    q = int(inverse.max()) + 1
    first = torch.zeros(q, dtype=torch.int64, device=o.device).scatter_(0, inverse, torch.arange(bits.shape[0], device=o.device))
    return o.reshape(-1, o.shape[-1])[first], inverse.reshape(o.shape[:-1])


def _lead(o: Tensor, means: Tensor) -> tuple[int, ...]:
    return tuple(torch.broadcast_shapes(o.shape[:-2], means.shape[:-2]))


# --------------------------------------------------------------------------------------------
# Gaussians: the observed sub-vector's marginal and the missing entries' conditional moments
# --------------------------------------------------------------------------------------------


def _dense_block(o: Tensor, x0: Tensor, means: Tensor, prec_chol: Tensor, pooled: bool):
    """One block of rows, full or tied covariances.

    With the precision ``P = U U^T`` split into observed (``o``) and missing (``m``) blocks,
    the missing entries given the observed ones are ``N(mu_m - P_mm^-1 P_mo (x_o - mu_o),
    P_mm^-1)``, so ``E[x | x_o, k] - mu_k = T (x - mu_k)`` with ``T = diag(o) - P_mm^-1 P_mo``
    (0 on the missing columns); the observed sub-vector's Mahalanobis distance is the full one
    at the conditional mean, and ``log det Sigma_oo = log det P_mm - log det P``. All of this
    depends on the row only through its missingness pattern: ``P_mm`` (padded with the
    identity on the observed coordinates) is factored once per distinct pattern of the block
    and component, and ``T`` is gathered per row (elementwise work, no per-row solve).

    Returns ``(log_prob [.., n, K], dev [.., n, K, D] = E[x | x_o, k] - mu_k,
    cond_cov [.., Q, K', D, D] = P_mm^-1 per pattern (0 off the missing block), pattern [.., n],
    entropy [.., Q, K'] of the missing entries' conditional per pattern)``.
    """
    d = means.shape[-1]
    U = prec_chol.unsqueeze(-3) if pooled else prec_chol  # [.., K', D, D]
    P = (U @ U.mT).unsqueeze(-4)  # [.., 1, K', D, D]
    lead = _lead(o, means)
    n = o.shape[-2]
    patterns, inverse = missingness_patterns(o)  # [Q, D]
    inverse = inverse.expand(*lead, n)
    miss = 1.0 - patterns
    on_missing = (miss.unsqueeze(-1) * miss.unsqueeze(-2)).unsqueeze(-3)  # [Q, 1, D, D]
    eye_observed = torch.diag_embed(patterns).unsqueeze(-3)
    L = torch.linalg.cholesky(on_missing * P + eye_observed)  # [.., Q, K', D, D]: P_mm is positive definite
    half_logdet_mm = L.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # [.., Q, K']
    cond_cov = torch.cholesky_inverse(L) * on_missing  # P_mm^-1
    T = eye_observed - (cond_cov @ P) * patterns[:, None, None, :]
    kp, q = T.shape[-3], T.shape[-4]
    T_row = torch.gather(T.expand(*lead, q, kp, d, d), -4, inverse[..., None, None, None].expand(*lead, n, kp, d, d))
    half_row = torch.gather(half_logdet_mm.expand(*lead, q, kp), -2, inverse.unsqueeze(-1).expand(*lead, n, kp))
    dev = (T_row * (x0.unsqueeze(-2) - means.unsqueeze(-3)).unsqueeze(-2)).sum(-1)  # [.., n, K, D]
    maha = (dev.movedim(-2, -3) @ U).square().sum(-1).transpose(-1, -2)  # [.., n, K]
    log_det = U.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # [.., K']: half log det P
    log_prob = log_det.unsqueeze(-2) - half_row - 0.5 * (o.sum(-1, keepdim=True) * _LOG_2PI + maha)
    entropy = 0.5 * miss.sum(-1, keepdim=True) * (1.0 + _LOG_2PI) - half_logdet_mm  # of N(., P_mm^-1)
    return log_prob, dev, cond_cov, inverse, entropy


def _elementwise_block(o: Tensor, x0: Tensor, means: Tensor, prec_chol: Tensor):
    """One block of rows, diag or spherical covariances: features are independent given the
    component, so the observed entries' terms are summed and a missing entry is expected at
    the component's mean with its variance. Returns ``(log_prob, dev, variances [.., K, D])``."""
    u = prec_chol if prec_chol.shape == means.shape else prec_chol.unsqueeze(-1).expand(means.shape)
    delta = o.unsqueeze(-2) * (x0.unsqueeze(-2) - means.unsqueeze(-3))
    maha = (delta * u.unsqueeze(-3)).square().sum(-1)
    log_det = o @ u.log().mT  # [.., n, K]: the observed features' log precision factors
    log_prob = log_det - 0.5 * (o.sum(-1, keepdim=True) * _LOG_2PI + maha)
    return log_prob, delta, u.square().reciprocal()


def _gaussian_blocks(X: Tensor, means: Tensor, prec_chol: Tensor, covariance_type: str):
    ct = lookup(covariance_type)
    means, prec_chol = means.double(), prec_chol.double()
    o, x0 = observed(X)
    k, d = means.shape[-2:]
    dense = ct.dense
    lead = _lead(o, means)
    per_row = math.prod(lead) * k * d * (d if dense else 1)
    for s, e in _blocks(X.shape[-2], per_row):
        ob, xb = o[..., s:e, :], x0[..., s:e, :]
        if dense:
            yield ob, _dense_block(ob, xb, means, prec_chol, ct.pooled)
        else:
            yield ob, _elementwise_block(ob, xb, means, prec_chol)


#: Float64 elements of a chunk's conditional moments that :func:`gaussian_log_prob_missing`
#: keeps for :func:`gaussian_stats_missing` (``keep=True``) instead of letting it recompute them.
KEEP_ELEMENTS = 2**24


def gaussian_log_prob_missing(X: Tensor, means: Tensor, prec_chol: Tensor, covariance_type: str, *, keep: bool = False):
    """Component log-densities ``[..., n, K]`` (float64) of the observed entries of each row
    of ``X [..., n, D]`` (NaN where missing): ``log N(x_o | mu_o, Sigma_oo)``. Rows are read
    in blocks bounded by :data:`BLOCK_ELEMENTS`; full and tied covariances factor one matrix
    per distinct missingness pattern of a block and component, never one per row.

    With ``keep=True`` returns ``(log_prob, kept)``: the blocks' conditional moments, for
    :func:`gaussian_stats_missing` of the same chunk and parameters, when they take at most
    :data:`KEEP_ELEMENTS` numbers (else ``None``)."""
    blocks = list(_gaussian_blocks(X, means, prec_chol, covariance_type))
    log_prob = torch.cat([out[0] for _, out in blocks], -2)
    if not keep:
        return log_prob
    size = sum(t.numel() for _, out in blocks for t in out[1:])
    return log_prob, ([(ob, (None, *out[1:])) for ob, out in blocks] if size <= KEEP_ELEMENTS else None)


def gaussian_stats_missing(
    X: Tensor,
    resp: Tensor,
    means: Tensor,
    prec_chol: Tensor,
    covariance_type: str,
    about: Tensor,
    *,
    sample_weight: Tensor | None = None,
    kept: list | None = None,
    entropy: bool = False,
) -> dict[str, Tensor]:
    """Expected sufficient statistics of a chunk with missing entries, in the layout of
    :func:`torchem.functional.gaussian.gaussian_stats`: ``nk``, ``sx`` (sum of ``r (E[x] - a)``)
    and ``sxx`` (sum of ``r E[(x - a)(x - a)^T]``, which adds the conditional covariance of the
    missing entries to the outer product of the conditional means), float64.

    Args:
        X: ``[..., n, D]`` with NaN where missing.
        resp: ``[..., n, K]`` responsibilities.
        means, prec_chol: the parameters under which the missing entries are expected.
        covariance_type: the covariance type.
        about: ``[..., 1, D]`` (the means' common centre) or ``[..., K, D]`` (each component's
            own mean, the precise pass): the point ``a`` the moments are taken about.
        sample_weight: optional ``[..., n]`` weights.
        kept: what :func:`gaussian_log_prob_missing` kept of this chunk under these parameters.
        entropy: also return ``missing_entropy`` ``[...]``: ``sum_i w_i sum_k r_ik H_ik``, the
            entropies ``H_ik`` of the missing entries' conditionals ``q(x_m | x_o, k)`` (a term
            of a variational lower bound, where ``q`` is this Gaussian).
    """
    ct = lookup(covariance_type)
    r_all = resp.double() if sample_weight is None else resp.double() * sample_weight.double().unsqueeze(-1)
    shift = (means.double() - about.double()).unsqueeze(-3)  # [.., 1, K, D]: E[x] - a = dev + shift
    nk = sx = sxx = ent = None
    start = 0
    for ob, out in kept if kept is not None else _gaussian_blocks(X, means, prec_chol, covariance_type):
        n = ob.shape[-2]
        r = r_all[..., start : start + n, :]
        start += n
        dev = out[1]
        e = dev + shift  # [.., n, K, D]
        re = r.unsqueeze(-1) * e
        part_sx = re.sum(-3)
        if ct.dense:
            cond_cov, pattern = out[2], out[3]
            second = re.movedim(-2, -3).mT @ e.movedim(-2, -3)  # [.., K, D, D]
            lead = pattern.shape[:-1]
            rq = r.new_zeros(*torch.broadcast_shapes(lead, r.shape[:-2]), cond_cov.shape[-4], r.shape[-1])
            rq.scatter_add_(-2, pattern.unsqueeze(-1).expand(*rq.shape[:-2], n, r.shape[-1]), r.expand(*rq.shape[:-2], n, -1))
            # sum_q rq_qk P_mm^-1 of pattern q, as one product per component: [.., K, 1, Q] @ [.., K', Q, D D]
            spread = rq.mT.unsqueeze(-2) @ cond_cov.movedim(-3, -4).flatten(-2)
            second = second + spread.squeeze(-2).unflatten(-1, second.shape[-2:])
            part_ent = (rq * out[4]).sum((-2, -1)) if entropy else None
        else:
            var = out[2]  # [.., K, D]
            missing_mass = r.mT @ (1.0 - ob)  # [.., K, D]: responsibility mass of missing entries
            second = (re * e).sum(-3) + missing_mass * var  # the diagonals
            part_ent = (missing_mass * 0.5 * (1.0 + _LOG_2PI + var.log())).sum((-2, -1)) if entropy else None
        part_sxx = ct.second_moment_stats(second)
        part_nk = r.sum(-2)
        nk = part_nk if nk is None else nk + part_nk
        sx = part_sx if sx is None else sx + part_sx
        sxx = part_sxx if sxx is None else sxx + part_sxx
        if entropy:
            ent = part_ent if ent is None else ent + part_ent
    stats = {"nk": nk, "sx": sx, "sxx": sxx}
    if entropy:
        stats["missing_entropy"] = ent
    return stats


# --------------------------------------------------------------------------------------------
# Families of independent features (Bernoulli, Binomial, Poisson, Categorical)
# --------------------------------------------------------------------------------------------


def expected_sums(X: Tensor, resp: Tensor, expected: Tensor, sample_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(nk [..., K], sx [..., K, D])``, float64: ``sx_kd = sum_i r_ik E[x_id]``, with an
    observed entry as it is and a missing one at the component's expected value
    ``expected [..., K, D]`` (features independent given the component)."""
    o, x0 = observed(X)
    r = resp.double() if sample_weight is None else resp.double() * sample_weight.double().unsqueeze(-1)
    return r.sum(-2), r.mT @ x0 + (r.mT @ (1.0 - o)) * expected.double()
