"""partial_fit: stepwise (online) EM approaches the batch fit on a stationary stream."""

import pickle

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
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3 features"):
        g.partial_fit(X[:, :2])
    with pytest.raises(ValueError, match="same layout"):
        g.partial_fit(np.stack([X[:10], X[:10]]))
    # one stacked problem is not 2-D data: the message names the difference (it read "a model of 1
    # problem(s) with 3 features; X has 1 problem(s) with 3 features", found by fuzzing)
    with pytest.raises(ValueError, match=r"fitted on 2-D data \(N, D\) of 3 features; X is stacked data \(B, N, D\) of 1 problem"):
        g.partial_fit(X[None, :10])
    with pytest.raises(ValueError, match="at least n_components"):
        GaussianMixture(5).partial_fit(X[:3])
    with pytest.raises(ValueError, match="at least n_clusters"):
        KMeans(5).partial_fit(X[:3])
    with pytest.raises(ValueError, match="binary"):
        BernoulliMixture(2).partial_fit(X)
    km = KMeans(3, random_state=0).fit(X)
    km.partial_fit(torch.from_numpy(X[:100]))
    assert km.n_iter_ == 1 and isinstance(km.cluster_centers_, torch.Tensor)
    with pytest.raises(ValueError, match="X has 2 features, but KMeans is expecting 3 features"):
        km.partial_fit(X[:, :2])


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_a_small_batch_barely_moves_a_model_fitted_on_much_data(covariance_type):
    """partial_fit after fit continues the fit: its statistics start the running average,
    weighted as N_fit / n batches, so two samples cannot undo a fit on 20,000."""
    rng = np.random.default_rng(7)
    X = _gauss(rng, 20_000)
    g = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    before, cov_before, score = g.means_.copy(), g.covariances_.copy(), g.score(X)
    g.partial_fit(X[:2])
    assert g.n_iter_ == 1
    assert np.abs(g.means_ - before).max() < 0.01
    np.testing.assert_allclose(g.covariances_, cov_before, rtol=0.03, atol=0.01)
    assert g.score(X) > score - 1e-3
    # the step itself, in closed form: the fit's own statistics weighted as 10,000 batches
    expected = _one_step_after_fit(GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X), X[:2], 10_000)
    np.testing.assert_allclose(g.weights_, expected[0], rtol=1e-10)
    np.testing.assert_allclose(g.means_, expected[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.covariances_, expected[2], rtol=1e-9, atol=1e-12)
    b = BinomialMixture(2, n_trials=4, random_state=0).fit(rng.binomial(4, [[0.2, 0.7]], size=(5000, 2)).astype(float))
    x = np.array([[1.0, 3.0], [4.0, 0.0]])
    w, p, resp = b.weights_.copy(), b.probs_.copy(), b.predict_proba(x)
    eta = step_size(2500 + 1)
    nk = (1 - eta) * w + eta * resp.sum(0) / 2
    sx = (1 - eta) * (w * 4)[:, None] * p + eta * resp.T @ x / 2
    b.partial_fit(x)
    np.testing.assert_allclose(b.probs_, sx / (4 * nk[:, None]), rtol=1e-10)
    np.testing.assert_allclose(b.weights_, nk / nk.sum(), rtol=1e-10)


def _one_step_after_fit(g, x, batches, sample_weight=None):
    """Weights, means and covariances after one partial_fit of batch ``x`` (with
    ``sample_weight``) on the fitted ``g``, in closed form: the fit's weights, means and
    scatters (less reg_covar) count as ``batches`` earlier batches, and the two groups combine
    as the update ``(1 - eta) old + eta batch`` of normalised statistics does (their means'
    difference enters as a positive term)."""
    ct, k, d = g.covariance_type, g.n_components, x.shape[1]
    eta = step_size(batches + 1)
    cov, mu, w = (np.asarray(v, dtype=np.float64) for v in (g.covariances_, g.means_, g.weights_))
    dense = {"full": lambda: cov, "tied": lambda: np.broadcast_to(cov, (k, d, d)),
             "diag": lambda: np.stack([np.diag(c) for c in cov]), "spherical": lambda: np.stack([c * np.eye(d) for c in cov])}[ct]()
    resp = np.asarray(g.predict_proba(x), dtype=np.float64)
    n = len(x)
    if sample_weight is not None:  # a weight w counts as w samples
        resp, n = resp * sample_weight[:, None], float(np.sum(sample_weight))
    a, bk = (1 - eta) * w, eta * resp.sum(0) / n
    tot = a + bk
    m = resp.T @ x / np.maximum(resp.sum(0), 1e-300)[:, None]
    scatter = np.stack([(resp[:, j, None] * (x - m[j])).T @ (x - m[j]) / n for j in range(k)])
    delta = m - mu
    old = dense - g.reg_covar * np.eye(d)  # tied: sum_k w_k (Sigma - reg) is the pooled scatter
    total = a[:, None, None] * old + eta * scatter + (a * bk / tot)[:, None, None] * delta[:, :, None] * delta[:, None, :]
    means = mu + (bk / tot)[:, None] * delta
    if ct == "full":
        new = total / tot[:, None, None]
    elif ct == "tied":
        new = total.sum(0) / tot.sum()
    elif ct == "diag":
        new = np.diagonal(total, axis1=1, axis2=2) / tot[:, None]
    else:
        new = np.trace(total, axis1=1, axis2=2) / (d * tot)
    eye = np.eye(d) if ct in ("full", "tied") else 1.0
    return tot / tot.sum(), means, new + g.reg_covar * eye


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_partial_fit_after_a_weighted_fit_counts_the_weight(covariance_type):
    """The fit's statistics count as ceil(W_fit / w) batches, with W_fit the fit's total sample
    weight and w the batch's (a weight w counts as w samples, as in KMeans's cluster sizes and
    the variational model), not their numbers of rows; per problem when B are stacked."""
    rng = np.random.default_rng(11)
    X = _gauss(rng, 3000)
    w = rng.uniform(0.5, 4.0, len(X))  # total weight about 6,750 over 3,000 rows
    x, wx = X[:40] + 0.5, rng.uniform(0.0, 2.0, 40)

    def fitted(weight):
        return GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X, sample_weight=weight)

    g = fitted(w)
    g.partial_fit(x)
    expected = _one_step_after_fit(fitted(w), x, int(np.ceil(w.sum() / len(x))))
    np.testing.assert_allclose(g.means_, expected[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.covariances_, expected[2], rtol=1e-9, atol=1e-12)
    # a weighted batch: its weight, not its rows
    g = fitted(w)
    g.partial_fit(x, sample_weight=wx)
    expected = _one_step_after_fit(fitted(w), x, int(np.ceil(w.sum() / wx.sum())), sample_weight=wx)
    np.testing.assert_allclose(g.means_, expected[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.covariances_, expected[2], rtol=1e-9, atol=1e-12)
    # a second batch continues the count (t + 1), and the weight seen survives a reload
    fresh = GaussianMixture(3, covariance_type=covariance_type)
    fresh.load_state_dict(g.state_dict())
    expected = _one_step_after_fit(g, x, int(np.ceil((w.sum() + wx.sum()) / len(x))))
    fresh.partial_fit(x)
    np.testing.assert_allclose(fresh.means_, expected[1], rtol=1e-10, atol=1e-12)
    # stacked problems of different total weights (the same data and start): each takes its
    # own step, as when alone (a step shared by the two would move both alike)
    def started():
        precisions = np.stack([np.eye(3)] * 3) if covariance_type == "full" else np.ones((3, 3))
        return GaussianMixture(3, covariance_type=covariance_type, weights_init=np.full(3, 1 / 3), means_init=CENTRES,
                               precisions_init=precisions, tol=1e-10, max_iter=100)

    stacked = started().fit(np.stack([X, X]), sample_weight=np.stack([w, 40.0 * w]))
    stacked.partial_fit(np.stack([x, x]))
    for b, scale in enumerate([1.0, 40.0]):
        alone = started().fit(X, sample_weight=scale * w)
        alone.partial_fit(x)
        np.testing.assert_allclose(stacked.means_[b], alone.means_, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stacked.covariances_[b], alone.covariances_, rtol=1e-5, atol=1e-5)
    assert abs(stacked.means_[1] - stacked.means_[0]).max() > 1e-2  # the two steps differ


def test_the_weight_seen_starts_afresh_with_the_model_and_survives_older_pickles():
    """A model made unfitted by loading an unfitted state counts only its new stream; a model
    pickled by a torchem that kept only the number of samples (no weight, one step count for
    all problems) continues as its state dict would."""
    rng = np.random.default_rng(12)
    X = _gauss(rng, 600)
    g = GaussianMixture(3, random_state=0).fit(np.stack([X, X, X]))
    g.load_state_dict(GaussianMixture(3).state_dict(), strict=False)  # unfitted now
    g.partial_fit(np.stack([X[:50], X[50:100]]))  # a fresh stream of 2 problems
    np.testing.assert_array_equal(g._fit_weight, [50.0, 50.0])
    assert g._fit_samples == 50
    g = GaussianMixture(3, random_state=0).fit(X)
    g.partial_fit(X[:30])
    old = pickle.loads(pickle.dumps(g))
    del old.__dict__["_fit_weight"]  # as pickled before the weight was kept
    old._online["t"] = old._online["t"][0]
    reloaded = GaussianMixture(3)
    reloaded.load_state_dict(g.state_dict())
    for m in (g, old, reloaded):
        m.partial_fit(X[30:60])
    np.testing.assert_array_equal(old.means_, g.means_)
    np.testing.assert_array_equal(reloaded.means_, g.means_)


def test_a_fit_that_outweighs_the_batch_past_float_range_takes_a_tiny_step():
    """W_fit / w overflows (weights 1e300 then 1e-10): the step count is capped instead of an
    OverflowError, and the model barely moves."""
    rng = np.random.default_rng(13)
    X = _gauss(rng, 600)
    g = GaussianMixture(3, random_state=0).fit(X, sample_weight=np.full(len(X), 1e300))
    before = g.means_.copy()
    g.partial_fit(X[:10] + 3.0, sample_weight=np.full(10, 1e-10))
    assert np.abs(g.means_ - before).max() < 1e-9


def test_kmeans_partial_fit_after_fit_keeps_the_cluster_sizes():
    """As MiniBatchKMeans after fit: a centre that received c samples in the fit moves by
    (x - centre) / (c + 1) for one new sample x."""
    rng = np.random.default_rng(8)
    X = _gauss(rng, 3000)
    km = KMeans(3, random_state=0).fit(X)
    centres = km.cluster_centers_.copy()
    sizes = np.bincount(km.labels_, minlength=3)
    x = X[:1] + 1.0
    j = int(km.predict(x)[0])
    km.partial_fit(x)
    expected = centres.copy()
    expected[j] += (x[0] - centres[j]) / (sizes[j] + 1)
    np.testing.assert_allclose(km.cluster_centers_, expected, rtol=1e-10, atol=1e-12)
    # and the sizes survive a state-dict round trip
    fresh = KMeans(3)
    fresh.load_state_dict(km.state_dict())
    fresh.partial_fit(x)
    km.partial_fit(x)
    np.testing.assert_allclose(fresh.cluster_centers_, km.cluster_centers_, rtol=1e-12)


def test_initialised_model_is_not_counted_as_a_fit_and_streams_survive_reloads():
    rng = np.random.default_rng(9)
    X = _gauss(rng, 2000)
    m = GaussianMixture(3, init_params="random", random_state=0).initialize(X)
    # the initial parameters count as one step, not as a fit on 2000 samples
    expected = _one_step_after_fit(GaussianMixture(3, init_params="random", random_state=0).initialize(X), X[:200], 1)
    m.partial_fit(X[:200])
    np.testing.assert_allclose(m.means_, expected[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.covariances_, expected[2], rtol=1e-9, atol=1e-12)
    for i in range(1, 5):
        m.partial_fit(X[200 * i : 200 * (i + 1)])
    # a reloaded model continues as the 6th batch of a 1000-sample stream: its fit's
    # statistics weigh as 5 batches of this size
    fresh = GaussianMixture(3, init_params="random")
    fresh.load_state_dict(m.state_dict())
    expected = _one_step_after_fit(m, X[1000:1200], 1000 // 200)
    fresh.partial_fit(X[1000:1200])
    np.testing.assert_allclose(fresh.means_, expected[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fresh.covariances_, expected[2], rtol=1e-9, atol=1e-12)


def test_implied_statistics_of_a_wide_full_model_are_summed_in_blocks():
    """D=100: the sigma points' quadratic features are computed in several blocks; the first
    partial_fit step of a model made from a distribution is the closed form."""
    gen = torch.Generator().manual_seed(0)
    k, d = 4, 100
    a = torch.randn(k, d, d, generator=gen, dtype=torch.float64) / d**0.5
    dist = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=torch.randn(k, generator=gen, dtype=torch.float64)),
        torch.distributions.MultivariateNormal(torch.randn(k, d, generator=gen, dtype=torch.float64),
                                               covariance_matrix=a @ a.mT + 0.5 * torch.eye(d, dtype=torch.float64)),
    )
    g = GaussianMixture.from_distribution(dist)
    x = dist.sample((5,)).numpy()
    expected = _one_step_after_fit(GaussianMixture.from_distribution(dist), x, 1)  # the model counts as one batch
    g.partial_fit(x)
    np.testing.assert_allclose(g.weights_, expected[0], rtol=1e-9)
    np.testing.assert_allclose(g.means_, expected[1], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(g.covariances_, expected[2], rtol=1e-8, atol=1e-9)


def test_partial_fit_continues_stacked_problems_with_components_far_apart():
    """Stacked problems whose components lie 1e7 apart: partial_fit after fit continues from
    statistics taken about each component's mean (the precise pass), for B problems at once."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2, 400, 2)) + np.array([0, 1e7])[None, rng.integers(0, 2, 400), None]
    for ct in ("full", "tied", "diag", "spherical"):
        g = GaussianMixture(2, covariance_type=ct, random_state=0).fit(X)
        before = np.sort(np.asarray(g.means_)[..., 0], -1)
        g.partial_fit(X[:, :50])
        assert list(g.n_iter_) == [1, 1] and np.isfinite(g.covariances_).all()
        np.testing.assert_allclose(np.sort(np.asarray(g.means_)[..., 0], -1), before, atol=0.5)
