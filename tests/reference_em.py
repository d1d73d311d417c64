"""Independent float64 reference EMs, NumPy only, for the property tests (issue 12).

Written from the textbook updates, not from torchem's code: every moment is taken about the
component's own weighted mean (two passes over the data), so the references stay exact at any
offset and separation. Each function runs a fixed number of full EM iterations from given
parameters and returns the parameters and the mean log-likelihood before every M-step (the
lower bound scikit-learn and torchem record).
"""

from __future__ import annotations

import math

import numpy as np

_LOG_2PI = math.log(2 * math.pi)


def _logsumexp(a):
    m = a.max(1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return (m + np.log(np.exp(a - m).sum(1, keepdims=True)))[:, 0]


def _posterior(log_joint):
    norm = _logsumexp(log_joint)
    return norm, np.exp(log_joint - norm[:, None])


def _weights(w, n):
    return np.ones(n) if w is None else np.asarray(w, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Gaussian mixtures: densities from dense covariances, moments about each component's mean
# --------------------------------------------------------------------------------------------

def dense_covariances(cov, covariance_type, k, d):
    cov = np.asarray(cov)
    cov = cov if np.issubdtype(cov.dtype, np.floating) else cov.astype(np.float64)  # long double kept
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([c * np.eye(d) for c in cov])


def gaussian_log_prob(X, means, cov, covariance_type):
    """``[n, K]`` log-densities, from the Cholesky factor of each dense covariance, the
    differences ``x - mu_k`` taken first (no expansion about the origin)."""
    k, d = means.shape
    out = np.empty((len(X), k))
    for j, c in enumerate(dense_covariances(cov, covariance_type, k, d)):
        low = np.linalg.cholesky(c)
        z = np.linalg.solve(low, (X - means[j]).T)
        out[:, j] = -0.5 * (d * _LOG_2PI + (z * z).sum(0)) - np.log(np.diag(low)).sum()
    return out


def gaussian_m_step(X, resp, w, covariance_type, reg_covar):
    """Weights, means and covariances from responsibilities, each covariance summed about its
    component's own mean."""
    n, d = X.shape
    r = resp * w[:, None]
    nk = r.sum(0) + 10 * np.finfo(np.float64).eps
    means = (r.T @ X) / nk[:, None]
    scatter = []
    for j in range(len(nk)):
        diff = X - means[j]
        scatter.append((r[:, j, None] * diff).T @ diff)
    scatter = np.stack(scatter)  # [K, D, D], about each mean
    return nk / nk.sum(), means, covariances_from_scatter(scatter, nk, covariance_type, reg_covar)


def covariances_from_scatter(scatter, nk, covariance_type, reg_covar):
    """Covariances in ``covariance_type``'s layout from each component's scatter about its own
    mean ``[K, D, D]`` and its weight ``nk [K]`` (any float dtype, kept: long double too)."""
    d = scatter.shape[-1]
    eye = np.eye(d, dtype=scatter.dtype)
    if covariance_type == "full":
        return scatter / nk[:, None, None] + reg_covar * eye
    if covariance_type == "tied":
        return scatter.sum(0) / nk.sum() + reg_covar * eye
    if covariance_type == "diag":
        return np.diagonal(scatter, axis1=1, axis2=2) / nk[:, None] + reg_covar
    return np.trace(scatter, axis1=1, axis2=2) / (nk * d) + reg_covar


def gaussian_em(X, weights, means, cov, covariance_type, *, n_iter, reg_covar=1e-6, sample_weight=None):
    """``n_iter`` EM iterations of a Gaussian mixture from ``(weights, means, cov)``.
    Returns ``(weights, means, cov, lower_bounds)``."""
    X = np.asarray(X, dtype=np.float64)
    w = _weights(sample_weight, len(X))
    weights, means, cov = np.asarray(weights, float), np.asarray(means, float), np.asarray(cov, float)
    bounds = []
    for _ in range(n_iter):
        norm, resp = _posterior(gaussian_log_prob(X, means, cov, covariance_type) + np.log(weights))
        bounds.append((w * norm).sum() / w.sum())
        weights, means, cov = gaussian_m_step(X, resp, w, covariance_type, reg_covar)
    return weights, means, cov, np.array(bounds)


def gaussian_stepwise(batches, weights, means, cov, covariance_type, *, schedule=(2.0, 0.6), reg_covar=1e-6):
    """Stepwise EM (one update per batch, step ``1`` then ``(t + t0) ** -kappa``) from the given
    parameters, carrying each component's weight, mean and scatter about that mean, combined
    as two groups are (their means' difference enters as a positive term, nothing cancels)."""
    t0, kappa = schedule
    weights, means, cov = np.asarray(weights, float), np.asarray(means, float), np.asarray(cov, float)
    run = None
    for t, X in enumerate(batches, 1):
        X = np.asarray(X, dtype=np.float64)
        n, d = X.shape
        _, resp = _posterior(gaussian_log_prob(X, means, cov, covariance_type) + np.log(weights))
        nk = resp.sum(0) / n
        m = (resp.T @ X) / (resp.sum(0)[:, None])
        s = np.stack([(resp[:, j, None] * (X - m[j])).T @ (X - m[j]) / n for j in range(len(nk))])
        if run is None:
            run = (nk, m, s)
        else:
            eta = (t + t0) ** -kappa
            a, b = (1 - eta) * run[0], eta * nk
            tot = a + b
            delta = m - run[1]
            mean = run[1] + (b / tot)[:, None] * delta
            scatter = (1 - eta) * run[2] + eta * s + (a * b / tot)[:, None, None] * delta[:, :, None] * delta[:, None, :]
            run = (tot, mean, scatter)
        tot, means, scatter = run
        nk_reg = tot + 10 * np.finfo(np.float64).eps
        weights = nk_reg / nk_reg.sum()
        cov = covariances_from_scatter(scatter, nk_reg, covariance_type, reg_covar)
    return weights, means, cov


# --------------------------------------------------------------------------------------------
# Discrete families: closed-form log-pmfs and count-weighted M-steps
# --------------------------------------------------------------------------------------------

def _log_comb(n, x):
    lg = np.vectorize(math.lgamma)
    return lg(n + 1.0) - lg(x + 1.0) - lg(n - x + 1.0)


def binomial_log_prob(X, probs, n_trials=1):
    """``[n, K]`` log-pmfs of independent Binomial(n_trials, p) features (Bernoulli for 1)."""
    X = np.asarray(X, dtype=np.float64)
    logp, log1mp = np.log(probs), np.log1p(-probs)
    return X @ logp.T + (n_trials - X) @ log1mp.T + _log_comb(n_trials, X).sum(1, keepdims=True)


def poisson_log_prob(X, rates):
    X = np.asarray(X, dtype=np.float64)
    lg = np.vectorize(math.lgamma)
    return X @ np.log(rates).T - rates.sum(1) - lg(X + 1.0).sum(1, keepdims=True)


def categorical_log_prob(X, probs):
    """``X [n, D]`` integer codes; ``probs [K, D, C]``."""
    X = np.asarray(X, dtype=np.int64)
    d = X.shape[1]
    return np.stack([np.log(p[np.arange(d), X]).sum(1) for p in probs], 1)


def discrete_em(family, X, weights, params, *, n_iter, n_trials=1, sample_weight=None, clip=1e-10):
    """``n_iter`` EM iterations of a ``"binomial"`` (``n_trials=1``: Bernoulli), ``"poisson"``
    or ``"categorical"`` mixture from ``(weights, params)`` (probabilities ``[K, D]``, rates
    ``[K, D]`` or probabilities ``[K, D, C]``). Returns ``(weights, params, lower_bounds)``."""
    X = np.asarray(X, dtype=np.float64)
    w = _weights(sample_weight, len(X))
    weights, params = np.asarray(weights, float), np.asarray(params, float)
    bounds = []
    for _ in range(n_iter):
        if family == "binomial":
            lp = binomial_log_prob(X, params, n_trials)
        elif family == "poisson":
            lp = poisson_log_prob(X, params)
        else:
            lp = categorical_log_prob(X, params)
        norm, resp = _posterior(lp + np.log(weights))
        bounds.append((w * norm).sum() / w.sum())
        r = resp * w[:, None]
        nk = r.sum(0) + 10 * np.finfo(np.float64).eps
        weights = nk / nk.sum()
        if family == "binomial":
            params = np.clip((r.T @ X) / (nk[:, None] * n_trials), clip, 1 - clip)
        elif family == "poisson":
            params = np.maximum((r.T @ X) / nk[:, None], clip)
        else:
            c = params.shape[-1]
            onehot = np.eye(c)[X.astype(np.int64)]  # [n, D, C]
            counts = np.einsum("nk,ndc->kdc", r, onehot)
            params = np.clip(counts / nk[:, None, None], clip, None)
            params = params / params.sum(-1, keepdims=True)
    return weights, params, np.array(bounds)


# --------------------------------------------------------------------------------------------
# K-means: Lloyd's algorithm with exact differences
# --------------------------------------------------------------------------------------------

def lloyd(X, centres, *, n_iter, sample_weight=None):
    """``n_iter`` Lloyd iterations (an empty cluster keeps its centre). Returns
    ``(centres, labels, inertia)`` of the final centres."""
    X = np.asarray(X, dtype=np.float64)
    w = _weights(sample_weight, len(X))
    centres = np.asarray(centres, dtype=np.float64).copy()
    for _ in range(n_iter):
        dist = ((X[:, None, :] - centres[None]) ** 2).sum(-1)
        labels = dist.argmin(1)
        for j in range(len(centres)):
            mask = labels == j
            if w[mask].sum() > 0:
                centres[j] = centres[j] + (w[mask, None] * (X[mask] - centres[j])).sum(0) / w[mask].sum()
    dist = ((X[:, None, :] - centres[None]) ** 2).sum(-1)
    labels = dist.argmin(1)
    return centres, labels, float((w * dist[np.arange(len(X)), labels]).sum())
