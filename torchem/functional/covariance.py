"""The covariance types of a Gaussian mixture: one strategy object per type, in one table.

Everything that depends on the covariance type (the shape of the stored factor, its
parameter count, the conversions between the factor, covariances and precisions, the
E-step's features and expanded Mahalanobis weights, the statistics and the M-step's
covariances, sampling, ``torch.distributions`` components) is a method of an entry of
:data:`COVARIANCE_TYPES`, much as scikit-learn's ``_gaussian_mixture`` dispatches on dicts of
functions keyed by ``covariance_type``. Callers look the entry up once
(``ct = COVARIANCE_TYPES[covariance_type]``, or :func:`lookup` for a ``ValueError`` on an
unknown name) and call its methods; nothing else in torchem
branches on the type's name.

Every entry stores the Cholesky factor ``U`` of the precision (``P = U U^T``, upper
triangular), scikit-learn's ``precisions_cholesky_``:

============  ==================  ===============================================
type          factor shape        meaning
============  ==================  ===============================================
``full``      ``[..., K, D, D]``  one upper-triangular factor per component
``tied``      ``[..., D, D]``     one factor shared by all components
``diag``      ``[..., K, D]``     ``1 / sqrt(variance)`` per feature
``spherical`` ``[..., K]``        ``1 / sqrt(variance)`` per component
============  ==================  ===============================================

A "factor" below is one such matrix, vector or number: one per component, or one per
problem for ``tied``. The methods are pure functions of tensors with any leading batch
shape ``...``; the module-level functions of :mod:`torchem.functional.gaussian` are built
on them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor
from torch import distributions as D

from ._buffers import broadcast_shape, buffer

__all__ = ["COVARIANCE_TYPES", "CovarianceType", "lookup", "quadratic_features", "symmetric_from_pairs"]


def _offset_buffer(workspace: dict, lead: tuple[int, ...], width: int, like: Tensor) -> Tensor:
    """``[*lead, width + 1]`` of workspace's ``"zb"`` buffer whose last column holds ones: rows
    padded to a multiple of 8 elements (aligned vector stores and GEMM reads), the ones written
    only into rows that did not hold them yet (a strided fill costs as much as a feature)."""
    stride = -(-(width + 1) // 8) * 8
    rows = math.prod(lead)
    padded = buffer(workspace, "zb", (rows, stride), like)
    mark = workspace.get("zb_ones")
    if mark is None or mark[0] is not workspace["zb"] or mark[1] != stride or mark[2] < rows:
        padded[:, width] = 1.0
        workspace["zb_ones"] = (workspace["zb"], stride, rows)
    return padded[:, : width + 1].unflatten(0, lead)


def _eye_like(t: Tensor, d: int) -> Tensor:
    return torch.eye(d, dtype=t.dtype, device=t.device)


# --------------------------------------------------------------------------------------------
# The layout of the quadratic features (full covariances)
# --------------------------------------------------------------------------------------------


_PAIR_CACHE: dict[tuple[int, str], tuple[Tensor, Tensor, Tensor]] = {}


def _quadratic_width(d: int) -> int:
    """``D (D + 1) / 2``: the products of :func:`quadratic_features`, one per unordered pair."""
    return d * (d + 1) // 2


def _pairs(d: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """The layout of :func:`quadratic_features`: for shift ``s = 0 .. (D-1)//2`` and feature
    ``i``, the pair ``(i, (i + s) mod D)``, then, for even ``D``, the pairs ``(i, i + D/2)`` for
    ``i < D/2`` (the shift ``D/2`` meets each of its pairs twice; it is kept once). Returns
    flat indices ``i*D + j`` and ``j*D + i`` of every pair into a ``D x D`` matrix, and how
    many times each unordered pair ``{i, j}`` is counted by ``x^T P x`` (1 on the diagonal,
    else 2)."""
    key = (d, str(device))
    if key not in _PAIR_CACHE:
        with torch.inference_mode(False):  # kept for later calls: normal tensors, autograd may save them
            _PAIR_CACHE[key] = _pair_layout(d, device)
    return _PAIR_CACHE[key]


def _pair_layout(d: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_pairs`'s tensors, made afresh."""
    h = (d + 1) // 2
    s = torch.arange(h).repeat_interleave(d)
    i = torch.arange(d).repeat(h)
    if d % 2 == 0:
        s = torch.cat([s, torch.full((d // 2,), d // 2)])
        i = torch.cat([i, torch.arange(d // 2)])
    j = (i + s) % d
    mult = torch.where(s == 0, 1.0, 2.0)
    return (i * d + j).to(device), (j * d + i).to(device), mult.to(device)


def quadratic_features(xc: Tensor) -> Tensor:
    """``[..., n, D (D + 1) / 2]``: the products ``x_i x_j`` of every unordered pair, laid out
    as ``x_i x_{(i+s) mod D}`` for shifts ``s = 0 .. (D-1)//2`` (then ``x_i x_{i + D/2}``,
    ``i < D/2``, for even ``D``), built by multiplications with a sliding window instead of
    a gather."""
    return _full_features(xc, with_linear=False)


def _products(xc: Tensor, doubled: Tensor, out: Tensor | None = None) -> Tensor:
    """The products of :func:`quadratic_features` from ``xc`` and ``doubled = [xc, xc]``
    (``[..., n, 2 D]``), into ``out`` when given: ``out`` then holds at least ``D`` more
    columns after the products, which the caller writes afterwards (for even ``D`` one
    multiplication writes the whole shift ``D/2``, its second half spilling into them)."""
    d = xc.shape[-1]
    h = (d + 1) // 2
    if out is None:
        quad = (xc.unsqueeze(-2) * doubled.unfold(-1, d, 1)[..., :h, :]).flatten(-2)
        return torch.cat([quad, xc[..., : d // 2] * xc[..., d // 2 :]], -1) if d % 2 == 0 else quad
    h = d // 2 + 1
    torch.mul(xc.unsqueeze(-2), doubled.unfold(-1, d, 1)[..., :h, :], out=out[..., : h * d].unflatten(-1, (h, d)))
    return out


def _full_features(xc: Tensor, with_linear: bool, workspace: dict | None = None) -> Tensor:
    """Quadratic features, followed by ``xc`` itself when ``with_linear``, in one buffer."""
    d = xc.shape[-1]
    q = _quadratic_width(d)
    lead = xc.shape[:-1]
    if xc.requires_grad or workspace is None or not with_linear:
        quad = _products(xc, torch.cat([xc, xc], dim=-1))
        return torch.cat([quad, xc], dim=-1) if with_linear else quad
    # Without autograd, every piece is written straight into preallocated buffers: copies
    # and concatenations of chunk-sized tensors cost as much as the GEMMs on CPU.
    doubled = buffer(workspace, "doubled", (*lead, 2 * d), xc)
    doubled[..., :d] = xc
    doubled[..., d:] = xc
    z = buffer(workspace, "z", (*lead, q + d), xc)
    _products(xc, doubled, z)
    z[..., q:] = xc  # after the products (see _products)
    return z


def symmetric_from_pairs(pairs: Tensor, d: int) -> Tensor:
    """``[..., D, D]`` symmetric matrices from sums laid out as :func:`quadratic_features`."""
    flat, flat_t, _ = _pairs(d, pairs.device)
    out = pairs.new_zeros(*pairs.shape[:-1], d * d)
    out = out.index_copy(-1, flat_t, pairs).index_copy(-1, flat, pairs)
    return out.unflatten(-1, (d, d))


def _variances_cancelled(
    stats: dict[str, Tensor], second: Tensor, mean_c: Tensor, eps: float, tolerance: float
) -> bool:
    """Whether ``second - mean_c^2`` (per component and feature) lost more than
    ``tolerance`` of itself to rounding ``eps`` of ``second``, on live components."""
    variance = second - mean_c.square()
    live = stats["nk"] > 0
    bad = (eps * second > tolerance * variance.abs()) & live.unsqueeze(-1)
    return bool(bad.any())


# --------------------------------------------------------------------------------------------
# The strategies
# --------------------------------------------------------------------------------------------


class CovarianceType(ABC):
    """What one covariance type declares. Entries are stateless singletons: look them up in
    :data:`COVARIANCE_TYPES`.

    Attributes:
        name: the ``covariance_type`` string.
        event_ndim: dimensions of one problem's factor (``len(factor_shape(K, D))``).
        precision_requirement: what a user's ``precisions_init`` must be, in scikit-learn's
            words.
    """

    #: One covariance pooled over the components (``tied``): its second moment is a scatter
    #: summed over the components, not one per component.
    pooled: bool = False
    #: The factor is a matrix (``full``, ``tied``): features are correlated, so a missing
    #: entry's conditional moments need the precision's block of the missing coordinates.
    dense: bool = False

    name: ClassVar[str]
    event_ndim: ClassVar[int]
    precision_requirement: ClassVar[str]

    def __repr__(self) -> str:
        return f"<covariance type {self.name!r}>"

    # ---- shapes and counts ---------------------------------------------------------------

    @abstractmethod
    def factor_shape(self, k: int, d: int) -> tuple[int, ...]:
        """Shape of one problem's precision factor (and covariances, and precisions)."""

    @abstractmethod
    def n_covariance_parameters(self, k: int, d: int) -> int:
        """Free parameters of the covariances (the means and weights come on top)."""

    @abstractmethod
    def expansion_width(self, d: int) -> int:
        """Width ``F`` of the per-sample features :meth:`features` (the E-step's GEMM)."""

    @abstractmethod
    def workspace_width(self, d: int) -> int:
        """Elements per sample and restart of the feature work, for the chunk-size estimate."""

    @abstractmethod
    def flops_per_iter(self, n: int, d: int, k: int) -> int:
        """Operations of one EM iteration (see :func:`torchem.bench.flops_per_iter`)."""

    # ---- the factor ----------------------------------------------------------------------

    @abstractmethod
    def identity_factor(self, lead: tuple[int, ...], k: int, d: int, device, dtype) -> Tensor:
        """The factor of unit covariances, ``[*lead, *factor_shape(k, d)]``."""

    @abstractmethod
    def log_det(self, prec_chol: Tensor, d: int) -> Tensor:
        """``log det U`` (half the log-determinant of the precision), one per factor."""

    def component_log_det(self, prec_chol: Tensor, d: int) -> Tensor:
        """:meth:`log_det` broadcastable against ``[..., K]``."""
        return self.log_det(prec_chol, d)

    def per_problem(self, failed: Tensor) -> Tensor:
        """One flag per problem from one per factor: whether any factor failed."""
        return failed.any(-1)

    @abstractmethod
    def expand_to_factor(self, t: Tensor) -> Tensor:
        """A per-factor tensor ``[...]`` viewed so it broadcasts against the factors' entries."""

    @abstractmethod
    def factor_from_covariances(self, covariances: Tensor) -> tuple[Tensor, Tensor]:
        """``(prec_chol, failed)``: factors of ``covariances`` without forming an inverse, and
        a per-factor mask of covariances that were not positive definite (whose factor is an
        arbitrary finite one)."""

    @abstractmethod
    def factor_from_precisions(self, precisions: Tensor) -> tuple[Tensor, Tensor]:
        """``(prec_chol, failed)`` with ``U U^T = precisions``."""

    @abstractmethod
    def covariances(self, prec_chol: Tensor) -> Tensor:
        """``(U U^T)^{-1}``."""

    @abstractmethod
    def precisions(self, prec_chol: Tensor) -> Tensor:
        """``U U^T``."""

    def is_symmetric(self, precisions: Tensor) -> bool:
        """Whether user-given ``precisions`` are symmetric (up to rounding)."""
        return True

    @abstractmethod
    def jitter_scale(self, cov: Tensor) -> Tensor:
        """The mean variance of each factor's covariance, ``[...]``, non-negative: the unit
        of the jitter that rescues a covariance that is not positive definite."""

    @abstractmethod
    def unresolved(self, cov: Tensor, resolution: Tensor) -> Tensor:
        """Which factors' covariances (``[...]``, as :meth:`jitter_scale`) have a variance at or
        below ``resolution [..., K, D]`` (what float64 resolves about each component's mean,
        feature by feature) along some feature; over the features, for a variance they share."""

    @abstractmethod
    def add_to_diagonal(self, cov: Tensor, add: Tensor) -> Tensor:
        """``cov + add I`` with ``add`` one value per factor."""

    @abstractmethod
    def to_unconstrained(self, prec_chol: Tensor) -> Tensor:
        """An unconstrained tensor of the factor's shape (what the ``nn.Module`` stores)."""

    @abstractmethod
    def from_unconstrained(self, raw: Tensor) -> Tensor:
        """Inverse of :meth:`to_unconstrained`; differentiable, and any tensor gives a valid
        factor."""

    # ---- E-step ----------------------------------------------------------------------------

    @abstractmethod
    def expansion_terms(self, mc: Tensor, prec_chol: Tensor) -> Tensor:
        """``[..., K]``: the size ``S`` of the terms that cancel when a Mahalanobis distance
        is expanded, from ``|mu - c|`` and the factor (both float64); see
        :func:`torchem.functional.gaussian.expansion_error_bound`."""

    @abstractmethod
    def features(self, xc: Tensor, workspace: dict | None = None) -> Tensor:
        """``[..., n, F]`` per-sample features of the centred data whose products with
        per-component weights give the expanded Mahalanobis distances, and whose
        responsibility-weighted sums are the statistics. With a ``workspace`` dict the
        result is a view of a buffer that the next call reuses."""

    def offset_features(self, X: Tensor, c: Tensor, workspace: dict) -> Tensor:
        """``[..., n, F + 1]``: :meth:`features` of ``X - c`` followed by a column of ones (the
        offsets of the E-step's GEMM), written into a buffer of ``workspace`` that the next call
        reuses. The fused E-step (:func:`~torchem.functional.gaussian.gaussian_e_step_stats`)
        reads all of it, the statistics' GEMM the first ``F`` columns."""
        z = self.features(X - c)
        out = _offset_buffer(workspace, z.shape[:-1], z.shape[-1], z)
        out[..., :-1] = z
        return out

    @abstractmethod
    def expansion(self, mc: Tensor, prec_chol: Tensor) -> tuple[Tensor, Tensor]:
        """``(w [..., K, F], b [..., K])`` with ``(x-mu)^T P (x-mu) = features(x-c) . w + b``,
        from the centred means ``mc = mu - c`` and the factor."""

    @abstractmethod
    def mahalanobis(self, diff: Tensor, prec_chol: Tensor) -> Tensor:
        """``[..., n, K]`` squared Mahalanobis distances ``|U^T (x - mu_k)|^2`` from the
        differences ``diff = x - mu_k [..., n, K, D]`` themselves, without expansion: the
        precise E-step of :func:`~torchem.functional.gaussian.gaussian_log_prob_prepared`
        when the expansion's rounding would matter even in float64."""

    def log_prob_from_features(self, xc: Tensor, z: Tensor, prep: dict, workspace: dict | None) -> Tensor:
        """``[..., n, K]`` log-densities (before the cap at the peak) from the features ``z``
        of ``xc`` and :func:`~torchem.functional.gaussian.gaussian_prepare`'s ``w`` and ``b``:
        one GEMM."""
        w, b = prep["w"], prep["b"]
        if workspace is None or z.requires_grad or w.requires_grad:
            return z @ w + b
        lead = broadcast_shape(z.shape[:-2], w.shape[:-2])
        if z.dtype == torch.float64:  # as it always was: float64 fits keep their last bits
            return torch.matmul(z, w, out=buffer(workspace, "log_prob", (*lead, z.shape[-2], w.shape[-1]), z)).add_(b)
        # Written as [..., K, n] and returned as its transposed view: the E-step's reductions
        # over the K components then run along contiguous rows of n samples (an order of
        # magnitude faster on CPU than over rows of K), and the statistics' GEMM reads the
        # responsibilities as a contiguous [K, n] operand.
        out = torch.matmul(w.mT, z.mT, out=buffer(workspace, "log_prob", (*lead, w.shape[-1], z.shape[-2]), z)).mT
        return out.add_(b)

    # ---- statistics and M-step -------------------------------------------------------------

    @abstractmethod
    def moment_stats(self, rz: Tensor, r: Tensor, z: Tensor, d: int) -> dict[str, Tensor]:
        """``{"sx", "sxx"}`` from ``rz = (r^T z)`` in float64 (``[..., K, F]``), the
        weighted responsibilities ``r`` and the features ``z``; see
        :func:`~torchem.functional.gaussian.gaussian_stats`."""

    @abstractmethod
    def second_moment_stats(self, second: Tensor) -> Tensor:
        """The ``sxx`` of :meth:`moment_stats` from summed second moments per component: the
        matrices ``[..., K, D, D]`` for a :attr:`dense` type, their diagonals ``[..., K, D]``
        otherwise (the expected moments of data with missing entries, see
        :mod:`torchem.functional.missing`)."""

    @abstractmethod
    def variances_cancelled(
        self, stats: dict[str, Tensor], nk: Tensor, mean_c: Tensor, eps: float, tolerance: float
    ) -> bool:
        """Whether a variance ``E[(x-c)^2] - mean^2`` lost more than ``tolerance`` of itself
        to rounding ``eps`` of the second moments; see
        :func:`~torchem.functional.gaussian.stats_need_float64`."""

    @abstractmethod
    def covariances_from_stats(
        self, stats: dict[str, Tensor], nk: Tensor, mean_c: Tensor, d: int, reg_covar: float
    ) -> Tensor:
        """The M-step's covariances (``reg_covar`` added) from the statistics, the
        (regularised) counts ``nk`` and the means about the centre ``mean_c``."""

    # ---- sampling, moments and torch.distributions ----------------------------------------

    @abstractmethod
    def draw_noise(self, z: Tensor, prec_chol: Tensor, labels: Tensor) -> Tensor:
        """``[B, n, D]`` noise ``A_z eps`` (``A A^T = Sigma``) from standard normal ``z
        [B, n, D]`` for components ``labels [B, n]``; differentiable in ``prec_chol [B, ...]``."""

    @abstractmethod
    def dense_covariances(self, cov: Tensor, k: int, d: int) -> Tensor:
        """``[..., K, D, D]`` covariance matrices from covariances in this type's layout."""

    @abstractmethod
    def square_roots(self, cov: Tensor, shift: float, k: int, d: int) -> Tensor:
        """``[..., K, D, D]`` matrices whose columns ``a_i`` give ``sum_i a_i a_i^T =
        cov - shift I`` (negative eigenvalues clipped to 0)."""

    @abstractmethod
    def component_distribution(self, loc: Tensor, prec_chol: Tensor) -> D.Distribution:
        """The components as a ``torch.distributions`` object, batch shape ``[..., K]``."""

    def factor_from_scale_tril(self, scale_tril: Tensor) -> Tensor:
        """The factor of ``MultivariateNormal`` components' ``scale_tril [..., K, D, D]``."""
        raise ValueError(f"MultivariateNormal components give covariance_type 'full' or 'tied', not {self.name!r}.")

    def factor_from_scale(self, scale: Tensor) -> Tensor:
        """The factor of ``Independent(Normal, 1)`` components' ``scale [..., K, D]``."""
        raise ValueError(
            f"Independent(Normal) components give covariance_type 'diag' or 'spherical', not {self.name!r}."
        )


class _Triangular(CovarianceType):
    """Shared by ``full`` and ``tied``: the factor is an upper-triangular matrix."""

    precision_requirement = "symmetric, positive-definite"
    dense = True

    def identity_factor(self, lead, k, d, device, dtype):
        return torch.eye(d, device=device, dtype=dtype).expand(*lead, *self.factor_shape(k, d))

    def log_det(self, prec_chol, d):
        return torch.diagonal(prec_chol, dim1=-2, dim2=-1).log().sum(-1)

    def expand_to_factor(self, t):
        return t[..., None, None]

    def factor_from_covariances(self, covariances):
        # cov = L L^T (lower) gives U = L^{-T}, so U U^T = cov^{-1}
        chol, info = torch.linalg.cholesky_ex(covariances)
        failed = info > 0
        d = covariances.shape[-1]
        eye = _eye_like(covariances, d)
        chol = torch.where(failed[..., None, None], eye, chol)
        prec_chol = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False).mT
        return prec_chol, failed

    def factor_from_precisions(self, precisions):
        # scikit-learn's flip trick: the lower Cholesky factor of the flipped matrix,
        # flipped back, is upper triangular
        flipped = precisions.flip(-2, -1)
        chol, info = torch.linalg.cholesky_ex(flipped)
        return chol.flip(-2, -1), info > 0

    def covariances(self, prec_chol):
        d = prec_chol.shape[-1]
        inv = torch.linalg.solve_triangular(prec_chol, _eye_like(prec_chol, d).expand_as(prec_chol), upper=True)
        return inv.mT @ inv

    def precisions(self, prec_chol):
        return prec_chol @ prec_chol.mT

    def is_symmetric(self, precisions):
        return bool(torch.allclose(precisions, precisions.mT, rtol=1e-6,
                                   atol=1e-8 * float(precisions.abs().max().clamp_min(1.0))))

    def jitter_scale(self, cov):
        return torch.diagonal(cov, dim1=-2, dim2=-1).mean(-1).clamp_min(0.0)

    def unresolved(self, cov, resolution):
        if self.pooled:  # one covariance for the components: the coarsest resolution of theirs
            resolution = resolution.amax(-2)
        return (torch.diagonal(cov, dim1=-2, dim2=-1) <= resolution).any(-1)

    def add_to_diagonal(self, cov, add):
        return cov + self.expand_to_factor(add) * _eye_like(cov, cov.shape[-1])

    def to_unconstrained(self, prec_chol):
        # the strict upper triangle as it is, the (positive) diagonal by its log
        diag = torch.diagonal(prec_chol, dim1=-2, dim2=-1)
        return prec_chol.triu(1) + torch.diag_embed(diag.log())

    def from_unconstrained(self, raw):
        diag = torch.diagonal(raw, dim1=-2, dim2=-1)
        return raw.triu(1) + torch.diag_embed(diag.exp())

    def _roots_and_sigmas(self, prec_chol: Tensor) -> tuple[Tensor, Tensor]:
        """``sqrt(P_ii)`` and ``sqrt(Sigma_ii)`` per factor."""
        prec = self.precisions(prec_chol)
        root = torch.diagonal(prec, dim1=-2, dim2=-1).sqrt()  # [..., K, D] or [..., D]
        sigma = self.covariances(prec_chol).diagonal(dim1=-2, dim2=-1).sqrt()
        return root, sigma

    def square_roots(self, cov, shift, k, d):
        vals, vecs = torch.linalg.eigh(self.dense_covariances(cov, k, d) - shift * _eye_like(cov, d))
        return vecs * vals.clamp_min(0.0).sqrt().unsqueeze(-2)  # columns a_i

    def _scale_tril(self, loc: Tensor, prec_chol: Tensor) -> Tensor:
        """``U^{-T}``, the lower Cholesky factor of the covariance."""
        eye = torch.eye(loc.shape[-1], dtype=loc.dtype, device=loc.device)
        return torch.linalg.solve_triangular(prec_chol, eye.expand_as(prec_chol), upper=True).mT

    def _factors_of_scale_tril(self, scale_tril: Tensor) -> Tensor:
        """``U = L^{-T}`` for every ``L``."""
        eye = torch.eye(scale_tril.shape[-1], dtype=scale_tril.dtype, device=scale_tril.device)
        return torch.linalg.solve_triangular(scale_tril, eye.expand_as(scale_tril), upper=False).mT


class _Full(_Triangular):
    name = "full"
    event_ndim = 3

    def factor_shape(self, k, d):
        return (k, d, d)

    def n_covariance_parameters(self, k, d):
        return k * d * (d + 1) // 2

    def expansion_width(self, d):
        return _quadratic_width(d) + d  # the products x_i x_j in the shifted layout, then x

    def workspace_width(self, d):
        # the features, and the outer product they are cut from
        return d * d + d * (d + 1) // 2 + d

    def flops_per_iter(self, n, d, k):
        q = _quadratic_width(d)
        return n * (d + q) + 4 * n * k * self.expansion_width(d) + 9 * n * k + k * d**3

    def expansion_terms(self, mc, prec_chol):
        root, sigma = self._roots_and_sigmas(prec_chol)
        return (root * (mc + sigma)).square().sum(-1)

    def features(self, xc, workspace=None):
        return _full_features(xc, True, workspace)  # [..., n, D (D + 1) / 2 + D]

    def offset_features(self, X, c, workspace):
        d = X.shape[-1]
        q = _quadratic_width(d)
        lead = broadcast_shape(X.shape, c.shape)[:-1]
        doubled = buffer(workspace, "doubled", (*lead, 2 * d), X)
        xc = torch.sub(X, c, out=doubled[..., :d])
        doubled[..., d:] = xc
        z = _offset_buffer(workspace, lead, q + d, X)
        _products(xc, doubled, z)
        z[..., q:-1] = xc  # after the products (see _products)
        return z

    def expansion(self, mc, prec_chol):
        d = mc.shape[-1]
        prec = self.precisions(prec_chol)  # [..., K, D, D]
        flat, _, mult = _pairs(d, prec.device)
        quad = prec.flatten(-2).index_select(-1, flat) * mult.to(prec.dtype)  # [..., K, D (D + 1) / 2]
        pm = (prec @ mc.unsqueeze(-1)).squeeze(-1)  # [..., K, D]
        w = torch.cat([quad, -2.0 * pm], dim=-1)
        b = (mc * pm).sum(-1)
        return w, b

    def mahalanobis(self, diff, prec_chol):
        # [..., K, n, D] @ [..., K, D, D]: one small GEMM per component
        return (diff.transpose(-2, -3) @ prec_chol).square().sum(-1).transpose(-1, -2)

    def moment_stats(self, rz, r, z, d):
        return {"sx": rz[..., -d:], "sxx": rz[..., :-d]}

    def second_moment_stats(self, second):
        flat, _, _ = _pairs(second.shape[-1], second.device)
        return second.flatten(-2).index_select(-1, flat)

    def variances_cancelled(self, stats, nk, mean_c, eps, tolerance):
        d = mean_c.shape[-1]
        second = stats["sxx"][..., :d] / nk.unsqueeze(-1)  # shift 0: the squares
        return _variances_cancelled(stats, second, mean_c, eps, tolerance)

    def covariances_from_stats(self, stats, nk, mean_c, d, reg_covar):
        second = symmetric_from_pairs(stats["sxx"], d) / nk[..., None, None]
        cov = second - mean_c.unsqueeze(-1) * mean_c.unsqueeze(-2)
        return cov + reg_covar * torch.eye(d, dtype=cov.dtype, device=cov.device)

    def draw_noise(self, z, prec_chol, labels):
        b, n, d = z.shape
        u_inv = torch.linalg.solve_triangular(prec_chol, _eye_like(prec_chol, d).expand_as(prec_chol), upper=True)
        gathered = torch.gather(u_inv, 1, labels[:, :, None, None].expand(b, n, d, d))  # [B, n, D, D]
        return (z.unsqueeze(-2) @ gathered).squeeze(-2)

    def dense_covariances(self, cov, k, d):
        return cov

    def component_distribution(self, loc, prec_chol):
        return D.MultivariateNormal(loc, scale_tril=self._scale_tril(loc, prec_chol))

    def factor_from_scale_tril(self, scale_tril):
        return self._factors_of_scale_tril(scale_tril)


class _Tied(_Triangular):
    name = "tied"
    pooled = True
    event_ndim = 2

    def factor_shape(self, k, d):
        return (d, d)

    def n_covariance_parameters(self, k, d):
        return d * (d + 1) // 2

    def expansion_width(self, d):
        return d  # the whitened x

    def workspace_width(self, d):
        return 2 * d

    def flops_per_iter(self, n, d, k):
        return 3 * n * d + 4 * n * d * d + 4 * n * k * d + 9 * n * k + d**3

    def component_log_det(self, prec_chol, d):
        return self.log_det(prec_chol, d).unsqueeze(-1)

    def per_problem(self, failed):
        return failed  # one factor per problem already

    def expansion_terms(self, mc, prec_chol):
        root, sigma = self._roots_and_sigmas(prec_chol)
        root, sigma = root.unsqueeze(-2), sigma.unsqueeze(-2)
        return (root * (mc + sigma)).square().sum(-1)

    def features(self, xc, workspace=None):
        return xc

    def expansion(self, mc, prec_chol):
        zm = mc @ prec_chol  # [..., K, D]: whitened means
        return -2.0 * zm, zm.square().sum(-1)

    def mahalanobis(self, diff, prec_chol):
        return (diff @ prec_chol.unsqueeze(-3)).square().sum(-1)

    def log_prob_from_features(self, xc, z, prep, workspace):
        # whiten the data (x U) rather than expand: the distance is |x U - mu U|^2
        zx = xc @ prep["prec_chol"]
        return zx @ prep["w"] + prep["b"] - 0.5 * zx.square().sum(-1, keepdim=True)

    def moment_stats(self, rz, r, z, d):
        # the total scatter about c does not depend on the responsibilities
        total = r.sum(-1, keepdim=True)  # per-sample weight (1, or the sample weight)
        return {"sx": rz, "sxx": (z.mT @ (z * total)).double()}

    def second_moment_stats(self, second):
        return second.sum(-3)  # the scatter of every component, pooled

    def variances_cancelled(self, stats, nk, mean_c, eps, tolerance):
        n = nk.sum(-1, keepdim=True)
        second = torch.diagonal(stats["sxx"], dim1=-2, dim2=-1) / n
        mean_sq = (mean_c.square() * nk.unsqueeze(-1)).sum(-2) / n
        return bool((eps * second > tolerance * (second - mean_sq).abs()).any())

    def covariances_from_stats(self, stats, nk, mean_c, d, reg_covar):
        outer = (mean_c * nk.unsqueeze(-1)).mT @ mean_c
        cov = (stats["sxx"] - outer) / nk.sum(-1)[..., None, None]
        return 0.5 * (cov + cov.mT) + reg_covar * torch.eye(d, dtype=cov.dtype, device=cov.device)

    def draw_noise(self, z, prec_chol, labels):
        d = z.shape[-1]
        u_inv = torch.linalg.solve_triangular(prec_chol, _eye_like(prec_chol, d).expand_as(prec_chol), upper=True)
        return z @ u_inv  # rows z^T U^{-1} ~ N(0, U^{-T} U^{-1}) = N(0, Sigma)

    def dense_covariances(self, cov, k, d):
        return cov.unsqueeze(-3).expand(*cov.shape[:-2], k, d, d)

    def component_distribution(self, loc, prec_chol):
        scale_tril = self._scale_tril(loc, prec_chol)
        scale_tril = scale_tril.unsqueeze(-3).expand(*loc.shape, loc.shape[-1])
        return D.MultivariateNormal(loc, scale_tril=scale_tril)

    def factor_from_scale_tril(self, scale_tril):
        prec_chol = self._factors_of_scale_tril(scale_tril)
        if not bool(torch.allclose(scale_tril, scale_tril[..., :1, :, :].expand_as(scale_tril))):
            raise ValueError("covariance_type='tied' needs every component to have the same covariance.")
        return prec_chol[..., 0, :, :]


class _Elementwise(CovarianceType):
    """Shared by ``diag`` and ``spherical``: the factor is ``1 / sqrt(variance)`` entrywise."""

    precision_requirement = "positive"

    def _per_factor(self, failed: Tensor) -> Tensor:
        """One flag per factor from one per entry."""
        return failed

    def identity_factor(self, lead, k, d, device, dtype):
        return torch.ones(*lead, *self.factor_shape(k, d), device=device, dtype=dtype)

    def factor_from_covariances(self, covariances):
        failed = self._per_factor(~(covariances > 0))
        safe = torch.where(covariances > 0, covariances, torch.ones_like(covariances))
        return safe.rsqrt(), failed

    def factor_from_precisions(self, precisions):
        failed = self._per_factor(~(precisions > 0))
        safe = torch.where(precisions > 0, precisions, torch.ones_like(precisions))
        return safe.sqrt(), failed

    def covariances(self, prec_chol):
        return prec_chol.square().reciprocal()

    def precisions(self, prec_chol):
        return prec_chol.square()

    def add_to_diagonal(self, cov, add):
        return cov + self.expand_to_factor(add)

    def to_unconstrained(self, prec_chol):
        return prec_chol.log()

    def from_unconstrained(self, raw):
        return raw.exp()

    @abstractmethod
    def _squares(self, xc: Tensor, out: Tensor | None = None) -> Tensor:
        """The quadratic part of :meth:`features` (into ``out`` when given)."""

    def features(self, xc, workspace=None):
        if xc.requires_grad or workspace is None:
            return torch.cat([self._squares(xc), xc], dim=-1)  # [..., n, F]
        d = xc.shape[-1]
        first = self.expansion_width(d) - d
        z = buffer(workspace, "z", (*xc.shape[:-1], first + d), xc)
        self._squares(xc, out=z[..., :first])
        z[..., first:] = xc
        return z

    def offset_features(self, X, c, workspace):
        d = X.shape[-1]
        first = self.expansion_width(d) - d
        z = _offset_buffer(workspace, broadcast_shape(X.shape, c.shape)[:-1], first + d, X)
        xc = torch.sub(X, c, out=z[..., first:-1])
        self._squares(xc, out=z[..., :first])
        return z


class _Diag(_Elementwise):
    name = "diag"
    event_ndim = 2

    def _per_factor(self, failed):
        return failed.any(-1)

    def factor_shape(self, k, d):
        return (k, d)

    def n_covariance_parameters(self, k, d):
        return k * d

    def expansion_width(self, d):
        return 2 * d  # x^2 and x

    def workspace_width(self, d):
        return 2 * d

    def flops_per_iter(self, n, d, k):
        return 2 * n * d + 4 * n * k * self.expansion_width(d) + 9 * n * k + 4 * k * d

    def log_det(self, prec_chol, d):
        return prec_chol.log().sum(-1)

    def expand_to_factor(self, t):
        return t[..., None]

    def jitter_scale(self, cov):
        return cov.mean(-1).clamp_min(0.0)

    def unresolved(self, cov, resolution):
        return (cov <= resolution).any(-1)

    def expansion_terms(self, mc, prec_chol):
        return (prec_chol * mc + 1.0).square().sum(-1)

    def _squares(self, xc, out=None):
        return torch.mul(xc, xc, out=out)

    def expansion(self, mc, prec_chol):
        prec = prec_chol.square()
        w = torch.cat([prec, -2.0 * mc * prec], dim=-1)  # [..., K, 2D]
        b = (mc * mc * prec).sum(-1)
        return w, b

    def mahalanobis(self, diff, prec_chol):
        return (diff * prec_chol.unsqueeze(-3)).square().sum(-1)

    def moment_stats(self, rz, r, z, d):
        return {"sx": rz[..., d:], "sxx": rz[..., :d]}

    def second_moment_stats(self, second):
        return second

    def variances_cancelled(self, stats, nk, mean_c, eps, tolerance):
        second = stats["sxx"] / nk.unsqueeze(-1)
        return _variances_cancelled(stats, second, mean_c, eps, tolerance)

    def covariances_from_stats(self, stats, nk, mean_c, d, reg_covar):
        return stats["sxx"] / nk.unsqueeze(-1) - mean_c.square() + reg_covar

    def draw_noise(self, z, prec_chol, labels):
        b, n, d = z.shape
        return z / torch.gather(prec_chol, 1, labels.unsqueeze(-1).expand(b, n, d))

    def dense_covariances(self, cov, k, d):
        return torch.diag_embed(cov)

    def square_roots(self, cov, shift, k, d):
        return torch.diag_embed((cov - shift).clamp_min(0.0).sqrt())

    def component_distribution(self, loc, prec_chol):
        return D.Independent(D.Normal(loc, 1.0 / prec_chol), 1)

    def factor_from_scale(self, scale):
        return 1.0 / scale


class _Spherical(_Elementwise):
    name = "spherical"
    event_ndim = 1

    def factor_shape(self, k, d):
        return (k,)

    def n_covariance_parameters(self, k, d):
        return k

    def expansion_width(self, d):
        return 1 + d  # |x|^2 and x

    def workspace_width(self, d):
        return d + 1

    def flops_per_iter(self, n, d, k):
        return 3 * n * d + 4 * n * k * self.expansion_width(d) + 9 * n * k + 4 * k * d

    def log_det(self, prec_chol, d):
        return d * prec_chol.log()

    def expand_to_factor(self, t):
        return t

    def jitter_scale(self, cov):
        return cov.clamp_min(0.0)

    def unresolved(self, cov, resolution):
        return cov <= resolution.mean(-1)

    def expansion_terms(self, mc, prec_chol):
        return (prec_chol.unsqueeze(-1) * mc + 1.0).square().sum(-1)

    def _squares(self, xc, out=None):
        return torch.sum(xc * xc, dim=-1, keepdim=True, out=out)

    def expansion(self, mc, prec_chol):
        prec = prec_chol.square().unsqueeze(-1)
        w = torch.cat([prec, -2.0 * mc * prec], dim=-1)  # [..., K, 1 + D]
        b = (mc * mc).sum(-1) * prec.squeeze(-1)
        return w, b

    def mahalanobis(self, diff, prec_chol):
        return diff.square().sum(-1) * prec_chol.square().unsqueeze(-2)

    def moment_stats(self, rz, r, z, d):
        return {"sx": rz[..., 1:], "sxx": rz[..., 0]}

    def second_moment_stats(self, second):
        return second.sum(-1)

    def variances_cancelled(self, stats, nk, mean_c, eps, tolerance):
        second = (stats["sxx"] / nk).unsqueeze(-1)
        mean_sq = mean_c.square().sum(-1, keepdim=True)
        variance = second - mean_sq
        return bool((eps * second > tolerance * variance.abs()).any())

    def covariances_from_stats(self, stats, nk, mean_c, d, reg_covar):
        return (stats["sxx"] / nk - mean_c.square().sum(-1)) / d + reg_covar

    def draw_noise(self, z, prec_chol, labels):
        return z / torch.gather(prec_chol, 1, labels).unsqueeze(-1)

    def dense_covariances(self, cov, k, d):
        return cov[..., None, None] * _eye_like(cov, d)

    def square_roots(self, cov, shift, k, d):
        return (cov - shift).clamp_min(0.0).sqrt()[..., None, None] * _eye_like(cov, d)

    def component_distribution(self, loc, prec_chol):
        return D.Independent(D.Normal(loc, 1.0 / prec_chol.unsqueeze(-1).expand_as(loc)), 1)

    def factor_from_scale(self, scale):
        prec_chol = 1.0 / scale
        if not bool(torch.allclose(scale, scale[..., :1].expand_as(scale))):
            raise ValueError("covariance_type='spherical' needs equal scales across features in each component.")
        return prec_chol[..., 0]


#: ``covariance_type`` -> its strategy, in scikit-learn's order.
COVARIANCE_TYPES: dict[str, CovarianceType] = {t.name: t for t in (_Full(), _Tied(), _Diag(), _Spherical())}


def lookup(name: str) -> CovarianceType:
    """The table's entry for ``name``; a ``ValueError`` that lists the types otherwise."""
    try:
        return COVARIANCE_TYPES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown covariance_type {name!r}; expected one of {tuple(COVARIANCE_TYPES)}") from None
