"""BayesianGaussianMixture: scikit-learn's variational mixture from the same start, its lower
bound, components switched off by a Dirichlet-process prior, priors, and the driver's
features (streaming, B problems, sample weights, partial_fit, state dict)."""

import warnings

import numpy as np
import pytest
import torch

sklearn = pytest.importorskip("sklearn")
from sklearn.mixture import BayesianGaussianMixture as SkBGMM  # noqa: E402

from torchem import BayesianGaussianMixture  # noqa: E402

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
CENTRES = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 5.0, 5.0]])


def _blobs(n, seed=0, scales=(1.0, 0.6, 1.4)):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    return rng.normal(size=(n, 3)) * np.asarray(scales)[labels, None] + CENTRES[labels]


def _resp(n, k, seed):
    return np.random.default_rng(seed).dirichlet(np.ones(k), size=n)


class _GivenStart(BayesianGaussianMixture):
    """Starts from given responsibilities ``[N, K]`` (``[B, N, K]``) through the mixture's
    initialisation hook, as scikit-learn's ``_initialize(X, resp)`` does below."""

    resp = None

    def _init_responsibilities(self, source, n_init, generator):
        given = torch.as_tensor(self.resp, dtype=torch.float64, device=source.device)
        if given.ndim == 2:
            given = given.expand(source.n_problems, *given.shape)

        def resp_fn(start, X):
            return given[:, None, start : start + X.shape[-2]].expand(-1, n_init, -1, -1)

        return resp_fn


def _given_start(resp, **kwargs):
    model = _GivenStart(**kwargs)
    model.resp = resp
    return model


class _SkGivenStart(SkBGMM):
    resp = None

    def _initialize_parameters(self, X, random_state, xp=None):
        self._initialize(X, self.resp)


ATTRIBUTES = ("weights_", "means_", "covariances_", "precisions_cholesky_", "mean_precision_", "degrees_of_freedom_")


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_matches_sklearn_from_the_same_responsibilities(covariance_type, prior_type):
    X = _blobs(150)
    resp = _resp(len(X), 5, seed=1)
    kwargs = dict(n_components=5, covariance_type=covariance_type, weight_concentration_prior_type=prior_type,
                  weight_concentration_prior=0.1, max_iter=40, tol=1e-6)
    ours = _given_start(resp, **kwargs).fit(X)
    ref = _SkGivenStart(**kwargs)
    ref.resp = resp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's ConvergenceWarning when max_iter ends it
        ref.fit(X)
    assert ours.n_iter_ == ref.n_iter_
    assert ours.converged_ == ref.converged_
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-6)
    for name in ATTRIBUTES:
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-6, atol=1e-9, err_msg=name)
    for mine, theirs in zip(np.atleast_2d(ours.weight_concentration_), np.atleast_2d(ref.weight_concentration_)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6)
    np.testing.assert_allclose(ours.covariance_prior_, ref.covariance_prior_, rtol=1e-10)
    np.testing.assert_allclose(ours.mean_prior_, ref.mean_prior_, rtol=1e-10)
    assert ours.degrees_of_freedom_prior_ == ref.degrees_of_freedom_prior_
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-6)
