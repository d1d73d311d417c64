"""The tutorial's claims about K-means as the hard limit of a Gaussian mixture, shown with
torchem's own kernels, and the hard (classification) EM mode of the estimators."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans

from torchem import BernoulliMixture, ConvergenceWarning, GaussianMixture, KMeans
from torchem.em import hard_responsibilities
from torchem.functional.estep import log_responsibilities
from torchem.functional.gaussian import gaussian_log_prob


def _data():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [3.0, 0.5], [1.0, 3.0], [4.0, 4.0]])
    X = centres[rng.integers(0, 4, 400)] + rng.normal(scale=0.9, size=(400, 2))
    init = X[rng.choice(400, 4, replace=False)]
    return X, init


def _em_fixed_isotropic(X, means, eps, n_iter, hard=False):
    """EM for a mixture with equal weights and every covariance fixed at eps * I: only the
    means are updated."""
    X = torch.from_numpy(X)
    means = torch.from_numpy(means.copy())
    k = means.shape[0]
    prec_chol = torch.full((k,), eps ** -0.5, dtype=torch.float64)
    log_w = torch.full((k,), -np.log(k), dtype=torch.float64)
    for _ in range(n_iter):
        lp = gaussian_log_prob(X, means, prec_chol, "spherical")
        if hard:
            _, resp = hard_responsibilities(lp, log_w)
        else:
            resp = log_responsibilities(lp, log_w)[1].exp()
        nk = resp.sum(0)
        means = torch.where(nk[:, None] > 0, resp.T @ X / nk.clamp_min(1e-300)[:, None], means)
    labels = gaussian_log_prob(X, means, prec_chol, "spherical").argmax(1)
    return means.numpy(), labels.numpy()


def test_soft_em_with_vanishing_isotropic_covariance_reaches_kmeans():
    X, init = _data()
    ref = SkKMeans(4, init=init, n_init=1, algorithm="lloyd", tol=0.0, max_iter=100).fit(X)
    gaps = []
    for eps in [1.0, 0.3, 0.1, 0.01, 1e-4]:
        means, labels = _em_fixed_isotropic(X, init, eps, 100)
        gaps.append(np.abs(means - ref.cluster_centers_).max())
    assert all(a >= b - 1e-12 for a, b in zip(gaps, gaps[1:])), gaps  # closer as eps shrinks
    assert gaps[0] > 1e-2  # a broad covariance is a different model
    means, labels = _em_fixed_isotropic(X, init, 1e-4, 100)
    np.testing.assert_allclose(means, ref.cluster_centers_, atol=1e-10)
    np.testing.assert_array_equal(labels, ref.labels_)


@pytest.mark.parametrize("n_iter", [1, 2, 3, 5])
def test_hard_em_with_isotropic_covariance_is_lloyd(n_iter):
    """Hard EM with equal weights and covariance eps * I is Lloyd's algorithm, step by step,
    whatever eps."""
    X, init = _data()
    ref = SkKMeans(4, init=init, n_init=1, algorithm="lloyd", tol=0.0, max_iter=n_iter).fit(X)
    for eps in [10.0, 1.0, 1e-3]:
        means, _ = _em_fixed_isotropic(X, init, eps, n_iter, hard=True)
        np.testing.assert_allclose(means, ref.cluster_centers_, rtol=1e-12, atol=1e-12)
    ours = KMeans(4, init=init, tol=0.0, max_iter=n_iter).fit(X)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", [
    lambda: GaussianMixture(4, covariance_type="full", hard=True, tol=0.0, max_iter=30, random_state=0),
    lambda: GaussianMixture(4, covariance_type="spherical", hard=True, tol=0.0, max_iter=30, random_state=0),
    lambda: BernoulliMixture(3, hard=True, tol=0.0, max_iter=30, random_state=0, init_params="random"),
])
def test_hard_em_never_decreases_the_classification_likelihood(make):
    X, _ = _data()
    est = make()
    if isinstance(est, BernoulliMixture):
        X = (X > np.median(X, 0)).astype(float)
        X = np.hstack([X, 1 - X[:, ::-1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    hist = np.asarray(est.lower_bounds_)
    assert np.all(np.diff(hist) >= -1e-9)
    # the classification likelihood is at most the mixture likelihood of the same model
    assert est.score(X) >= hist[-1] - 1e-9


def test_hard_gaussian_mixture_labels_are_its_predictions():
    X, _ = _data()
    gm = GaussianMixture(4, hard=True, random_state=0).fit(X)
    assert gm.converged_
    np.testing.assert_array_equal(gm.fit_predict(X), gm.predict(X))
