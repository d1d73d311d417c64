"""partial_fit: stepwise (online) EM approaches the batch fit on a stationary stream."""

import numpy as np
import pytest
import torch

from torchem import BernoulliMixture, BinomialMixture, ConvergenceWarning, GaussianMixture, KMeans
from torchem.em import STEPWISE_SCHEDULE, step_size

CENTRES = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 4.0, 4.0]])
PROBS = np.array([[0.1, 0.8, 0.3, 0.6, 0.2, 0.9], [0.7, 0.2, 0.9, 0.4, 0.5, 0.1], [0.4, 0.5, 0.1, 0.9, 0.8, 0.6]])


def _gauss(rng, n):
    scales = np.array([1.0, 0.5, 1.5])
    z = rng.integers(0, 3, n)
    return rng.normal(size=(n, 3)) * scales[z, None] + CENTRES[z]


def _counts(trials):
    return lambda rng, n: rng.binomial(trials, PROBS[rng.integers(0, 3, n)]).astype(np.float64)


CASES = {
    "gmm-full": (lambda: GaussianMixture(3, covariance_type="full", random_state=0), _gauss),
    "gmm-diag": (lambda: GaussianMixture(3, covariance_type="diag", random_state=0), _gauss),
    "gmm-tied": (lambda: GaussianMixture(3, covariance_type="tied", random_state=0), _gauss),
    "bernoulli": (lambda: BernoulliMixture(3, random_state=0), _counts(1)),
    "binomial": (lambda: BinomialMixture(3, n_trials=5, random_state=0), _counts(5)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_stepwise_em_approaches_the_batch_fit(name):
    make, draw = CASES[name]
    rng = np.random.default_rng(0)
    test = draw(rng, 20000)
    batch_ll = make().set_params(tol=1e-7, max_iter=500).fit(test).score(test)
    online = make()
    lls = []
    for t in range(120):
        online.partial_fit(draw(rng, 1000 if t == 0 else 250))  # a larger first batch to initialise
        if t in (2, 119):
            lls.append(online.score(test))
    assert online.n_iter_ == 120 and not online.converged_
    # far from the start after a few batches, within a small margin of the batch optimum at the end
    assert lls[1] > lls[0] - 1e-3
    assert lls[1] == pytest.approx(batch_ll, abs=0.01)
    assert lls[1] <= batch_ll + 1e-3  # the batch fit maximises the likelihood of `test`


def test_minibatch_kmeans_approaches_the_batch_inertia():
    rng = np.random.default_rng(2)
    test = _gauss(rng, 20000)
    batch = KMeans(3, random_state=0).fit(test)
    online = KMeans(3, random_state=0)
    for _ in range(60):
        online.partial_fit(_gauss(rng, 200))
    assert online.n_iter_ == 60
    assert -online.score(test) == pytest.approx(batch.inertia_, rel=0.01)
    # every centre is the running mean of the samples it received: one batch, from given centres
    init = CENTRES + 0.5
    one = KMeans(3, init=init).partial_fit(test[:500])
    labels = ((test[:500, None, :] - init[None]) ** 2).sum(-1).argmin(1)
    expect = np.stack([test[:500][labels == j].mean(0) for j in range(3)])
    np.testing.assert_allclose(one.cluster_centers_, expect, rtol=1e-12)
    assert one.inertia_ == pytest.approx(((test[:500] - init[labels]) ** 2).sum(), rel=1e-12)


def test_first_step_is_an_em_step_from_the_initialisation():
    """With eta_1 = 1 the first partial_fit is one EM iteration on its batch: the same as
    fit(max_iter=1) from the same initialisation."""
    rng = np.random.default_rng(3)
    X = _gauss(rng, 400)
    a = GaussianMixture(3, covariance_type="full", random_state=0).partial_fit(X)
    with pytest.warns(ConvergenceWarning):
        b = GaussianMixture(3, covariance_type="full", random_state=0, max_iter=1).fit(X)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-9)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-9)
    assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=1e-12)


def test_step_size_schedule():
    t0, kappa = STEPWISE_SCHEDULE
    assert step_size(1) == 1.0
    assert step_size(5) == pytest.approx((5 + t0) ** -kappa)
    assert step_size(3, (0.0, 1.0)) == pytest.approx(1 / 3)  # kappa = 1, t0 = 0: a running mean
    with pytest.raises(ValueError, match="kappa"):
        step_size(2, (2.0, 0.5))
    m = GaussianMixture(2, random_state=0)
    m.stepwise_schedule = (1.0, 2.0)
    with pytest.raises(ValueError, match="kappa"):
        m.partial_fit(np.random.default_rng(1).normal(size=(50, 2)))


def test_partial_fit_continues_a_fit_and_checks_layout():
    rng = np.random.default_rng(4)
    X = _gauss(rng, 1000)
    g = GaussianMixture(3, random_state=0).fit(X)
    before = g.means_.copy()
    g.partial_fit(_gauss(rng, 500))
    assert g.n_iter_ == 1
    assert np.abs(g.means_ - before).max() < 0.3  # continued from the fit, not re-initialised
    with pytest.raises(ValueError, match="same layout"):
        g.partial_fit(X[:, :2])
    with pytest.raises(ValueError, match="at least n_components"):
        GaussianMixture(5).partial_fit(X[:3])
    with pytest.raises(ValueError, match="at least n_clusters"):
        KMeans(5).partial_fit(X[:3])
    with pytest.raises(ValueError, match="binary"):
        BernoulliMixture(2).partial_fit(X)
    km = KMeans(3, random_state=0).fit(X)
    km.partial_fit(torch.from_numpy(X[:100]))
    assert km.n_iter_ == 1 and isinstance(km.cluster_centers_, torch.Tensor)
    with pytest.raises(ValueError, match="same layout"):
        km.partial_fit(X[:, :2])
