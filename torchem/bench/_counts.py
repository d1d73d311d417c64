"""Floating-point operations and bytes of memory traffic counted for one EM iteration.

The counts are those of the model's iteration as torchem computes it (the expanded-GEMM
formulation of :mod:`torchem.functional`), so the achieved rates they give are comparable
across devices and libraries: every library is charged the same work for the same model and
sizes, and a library that does less (K-means with bounds that skip distances) shows an
*effective* rate above what it actually computes.

Notation: ``N`` samples, ``D`` features, ``K`` components, ``s`` bytes per element of the
benchmark dtype. One multiply-add counts as two operations; an ``exp`` or ``log`` as one.
Terms that do not grow with ``N`` (the M-step) are included, with the costs of dense
factorisations taken as ``D^3`` per matrix.

Bytes count the data read once per iteration (the traffic no implementation avoids; the
chunk-sized temporaries stay in cache), so the GB/s figure is the rate at which the iteration
streams its data. The FLOPs of K-means are those of a dense Lloyd iteration: an
implementation that skips distances with bounds (torchem's Hamerly pass) does less, so its
rate is not a fraction of the peak and ``torchem bench`` reports none for it.
"""

from __future__ import annotations

from ..functional.covariance import COVARIANCE_TYPES

__all__ = ["CATEGORIES", "FAMILIES", "bytes_per_iter", "flops_per_iter", "n_features_of_expansion"]

#: model name -> (family, covariance type)
FAMILIES = {
    "gmm-full": ("gmm", "full"),
    "gmm-diag": ("gmm", "diag"),
    "gmm-spherical": ("gmm", "spherical"),
    "gmm-tied": ("gmm", "tied"),
    # a variational iteration is charged as the Gaussian one of its covariance type: what it
    # adds is per component (digammas, the posterior update) or 2NK (the entropy r log r)
    "bgmm-full": ("gmm", "full"),
    # the model-selection grid (GaussianMixtureIC): K = 1..K for each of the four covariance
    # types, one iteration of every model
    "gmm-ic": ("gmm-ic", None),
    "kmeans": ("kmeans", None),
    "bernoulli": ("bernoulli", None),
    "poisson": ("poisson", None),
    "categorical": ("categorical", None),
}

#: categories of every feature in the benchmarked categorical mixture (``C``)
CATEGORIES = 5


def _family(model: str) -> tuple[str, str | None]:
    try:
        return FAMILIES[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; expected one of {sorted(FAMILIES)}") from None


def n_features_of_expansion(covariance_type: str, d: int) -> int:
    """Width ``F`` of the per-sample features whose GEMM with per-component weights gives the
    Mahalanobis distances: ``D (D + 1) / 2 + D`` for ``full`` (the products ``x_i x_j`` in
    torchem's shifted layout, then ``x``), ``2D`` for ``diag`` (``x^2`` and ``x``), ``1 + D``
    for ``spherical`` (``|x|^2`` and ``x``) and ``D`` for ``tied`` (the whitened ``x``)."""
    return COVARIANCE_TYPES[covariance_type].expansion_width(d)


def flops_per_iter(model: str, n: int, d: int, k: int) -> int:
    """Operations of one EM iteration (E-step, statistics and M-step).

    Gaussian mixtures, with ``F`` from :func:`n_features_of_expansion` and
    ``Q = D (D + 1) / 2`` quadratic products for ``full``:

    * ``full``: ``N(D + Q) + 4NKF + 9NK + K D^3`` — centring, the products, the
      log-density GEMM and the statistics GEMM (``2NKF`` each), then per ``[n, K]`` entry the
      bias and cap (2), the E-step's add-weight, max, subtract, exp, sum and divide (6) and
      the responsibility sum (1); the M-step's Cholesky factorisations, triangular inverses
      and products (``D^3`` per component).
    * ``diag``: ``2ND + 4NKF + 9NK + 4KD`` (centring and squares).
    * ``spherical``: ``3ND + 4NKF + 9NK + 4KD`` (centring, squares and their sum).
    * ``tied``: ``3ND + 4ND^2 + 4NKD + 9NK + D^3`` — centring and squared norms, whitening
      ``x U`` and the scatter ``x^T x`` (``2ND^2`` each), the GEMMs with the whitened means and
      of the responsibilities with ``x`` (``2NKD`` each), one factorisation.

    K-means (a dense Lloyd iteration): ``4ND + 2NKD + 3NK + KD`` — centring, squared norms,
    the distance GEMM, combining and the argmin, the per-cluster sums and the division.

    Bernoulli mixture: ``4NKD + 8NK + 4KD`` — the log-probability GEMM ``X logits^T`` and the
    statistics GEMM ``r^T X``, the ``[n, K]`` work as for Gaussians less the cap, the logits
    from the new probabilities.

    Poisson mixture: ``4NKD + 3ND + 9NK + 5KD`` — the two GEMMs as for Bernoulli, the
    per-sample ``sum_d lgamma(x_d + 1)`` (add, lgamma, sum), the ``[n, K]`` work as for
    Bernoulli plus the per-sample term, and per rate the division, floor, log, exp and sum.
    The model-selection grid (``gmm-ic``): the sum of the Gaussian counts of its models, ``K``
    from 1 to ``K`` for each covariance type.

    Categorical mixture (``C`` = :data:`CATEGORIES` per feature): ``4NKDC + 8NK + 4KDC`` — the
    Bernoulli count on the ``[N, DC]`` one-hot codes.
    """
    family, ct = _family(model)
    if family == "gmm-ic":
        return sum(t.flops_per_iter(n, d, kk) for t in COVARIANCE_TYPES.values() for kk in range(1, k + 1))
    if family == "kmeans":
        return 4 * n * d + 2 * n * k * d + 3 * n * k + k * d
    if family == "bernoulli":
        return 4 * n * k * d + 8 * n * k + 4 * k * d
    if family == "poisson":
        return 4 * n * k * d + 3 * n * d + 9 * n * k + 5 * k * d
    if family == "categorical":
        return 4 * n * k * d * CATEGORIES + 8 * n * k + 4 * k * d * CATEGORIES
    return COVARIANCE_TYPES[ct].flops_per_iter(n, d, k)


def bytes_per_iter(model: str, n: int, d: int, k: int, itemsize: int) -> int:
    """Bytes one EM iteration must move from memory: the data read once, ``s N D``, for
    every model (the codes of a categorical mixture too).

    Only this compulsory traffic is counted. The ``[n, K]`` blocks, features and distances of
    a chunk are reused from cache by torchem (chunk-sized temporaries) and by scikit-learn
    and faiss (blocks of rows); charging them as memory traffic against a measured memory
    bandwidth read up to 139 % of the peak. Parameters, which stay in cache, are left out.
    Against the copy bandwidth of :func:`~torchem.bench._timing.measure_peak` the figure is
    the fraction of the memory bandwidth the iteration would need if it were limited by
    reading the data (100 %: memory-bound).
    """
    _family(model)
    return int(itemsize) * n * d
