"""Missing values (nan_policy): the marginalised fit equals an independent NumPy EM for data
missing at random, beats mean imputation, and behaves alike in memory, streamed, batched and
online; "omit" leaves rows out with a counted warning; bad input gets clear errors."""


import numpy as np
import pytest
import torch
from scipy.special import gammaln, logsumexp
from scipy.stats import multivariate_normal

from torchem import BernoulliMixture, CategoricalMixture, GaussianMixture, KMeans, PoissonMixture

pytestmark = pytest.mark.filterwarnings("ignore::torchem.ConvergenceWarning")


def _with_holes(X, fraction, rng):
    """``X`` with ``fraction`` of its entries NaN, missing completely at random, every row
    keeping at least one observed entry."""
    X = X.astype(float).copy()
    holes = rng.random(X.shape) < fraction
    holes[holes.all(1), 0] = False
    X[holes] = np.nan
    return X


def _gaussian_data(rng, n=150):
    cov = np.array([[[1.0, 0.6, 0.2], [0.6, 1.5, -0.4], [0.2, -0.4, 0.8]], [[0.7, -0.3, 0.0], [-0.3, 1.0, 0.5], [0.0, 0.5, 1.2]]])
    means = np.array([[0.0, 0.0, 0.0], [3.0, 2.0, -2.0]])
    X = np.concatenate([rng.multivariate_normal(m, c, n // 2) for m, c in zip(means, cov)])
    return X[rng.permutation(n)], means, cov


# --------------------------------------------------------------------------------------------
# Independent NumPy references (one missingness pattern at a time)
# --------------------------------------------------------------------------------------------


def _np_gaussian_e_step(X, weights, means, covs):
    """``(log p(x_o) [N], resp [N, K], xhat [N, K, D], ccov [N, K, D, D])``."""
    n, d = X.shape
    k = len(weights)
    log_joint = np.zeros((n, k))
    xhat = np.zeros((n, k, d))
    ccov = np.zeros((n, k, d, d))
    observed = ~np.isnan(X)
    patterns, which = np.unique(observed, axis=0, return_inverse=True)
    for p, o in enumerate(patterns):
        rows = np.flatnonzero(which.ravel() == p)
        m = ~o
        for j in range(k):
            s_oo = covs[j][np.ix_(o, o)]
            log_joint[rows, j] = np.log(weights[j]) + multivariate_normal(means[j][o], s_oo).logpdf(X[np.ix_(rows, o)])
            gain = np.linalg.solve(s_oo, covs[j][np.ix_(o, m)]).T  # Sigma_mo Sigma_oo^-1
            xhat[rows, j] = np.where(o, X[rows], means[j])
            xhat[np.ix_(rows, [j], m)] = (means[j][m] + (X[np.ix_(rows, o)] - means[j][o]) @ gain.T)[:, None, :]
            ccov[np.ix_(rows, [j], m, m)] = covs[j][np.ix_(m, m)] - gain @ covs[j][np.ix_(o, m)]
    ll = logsumexp(log_joint, axis=1)
    return ll, np.exp(log_joint - ll[:, None]), xhat, ccov


def _np_gaussian_em(X, weights, means, covs, n_iter, reg, covariance_type):
    n, d = X.shape
    history = []
    for _ in range(n_iter):
        ll, resp, xhat, ccov = _np_gaussian_e_step(X, weights, means, covs)
        history.append(ll.mean())
        nk = resp.sum(0)
        weights = nk / nk.sum()
        means = np.einsum("nk,nkd->kd", resp, xhat) / nk[:, None]
        dev = xhat - means[None]
        scatter = np.einsum("nk,nkd,nke->kde", resp, dev, dev) + np.einsum("nk,nkde->kde", resp, ccov)  # E[...] given x_o
        covs = {
            "full": scatter / nk[:, None, None],
            "tied": np.broadcast_to(scatter.sum(0) / n, scatter.shape),
            "diag": np.array([np.diag(np.diag(c)) for c in scatter / nk[:, None, None]]),
            "spherical": np.array([np.trace(c) / d * np.eye(d) for c in scatter / nk[:, None, None]]),
        }[covariance_type] + reg * np.eye(d)
    return weights, means, covs, np.array(history)


def _dense(covariances, covariance_type, k=2, d=3):
    c = np.asarray(covariances)
    return {"full": lambda: c, "tied": lambda: np.broadcast_to(c, (k, d, d)),
            "diag": lambda: np.array([np.diag(v) for v in c]),
            "spherical": lambda: c[:, None, None] * np.eye(d)}[covariance_type]()


def _np_discrete_em(X, weights, params, n_iter, log_terms, expected):
    """EM of a mixture of independent features: ``log_terms(X0, params) [N, K, D]`` gives each
    entry's log-probability, ``expected(params) [K, D]`` a missing entry's expected value; the
    M-step divides the expected sums by the counts."""
    observed = ~np.isnan(X)
    X0 = np.where(observed, X, 0.0)
    history = []
    for _ in range(n_iter):
        log_joint = np.log(weights) + (log_terms(X0, params) * observed[:, None, :]).sum(-1)
        ll = logsumexp(log_joint, axis=1)
        history.append(ll.mean())
        resp = np.exp(log_joint - ll[:, None])
        nk = resp.sum(0)
        weights = nk / nk.sum()
        params = (resp.T @ X0 + (resp.T @ (~observed)) * expected(params)) / nk[:, None]
    return weights, params, np.array(history)


# --------------------------------------------------------------------------------------------
# Equal to the references
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gaussian_fit_equals_numpy_em_with_missing_at_random(covariance_type):
    rng = np.random.default_rng(0)
    X, _, _ = _gaussian_data(rng)
    X = _with_holes(X, 0.3, rng)
    w0, m0 = np.array([0.4, 0.6]), np.array([[0.5, 0.5, 0.5], [2.0, 1.0, -1.0]])
    scale = np.array([2.0, 1.5]) if covariance_type != "tied" else np.array([2.0, 2.0])
    c0 = scale[:, None, None] * np.eye(3)
    precisions = {"full": np.linalg.inv(c0), "tied": np.eye(3) / 2.0, "diag": 1.0 / scale[:, None] * np.ones(3),
                  "spherical": 1.0 / scale}[covariance_type]
    gm = GaussianMixture(2, covariance_type=covariance_type, nan_policy="marginalize", tol=0, max_iter=30,
                         weights_init=w0, means_init=m0, precisions_init=precisions).fit(X)
    w, m, c, history = _np_gaussian_em(X, w0, m0, c0, 30, 1e-6, covariance_type)
    np.testing.assert_allclose(gm.weights_, w, rtol=0, atol=1e-8)
    np.testing.assert_allclose(gm.means_, m, rtol=0, atol=1e-8)
    cov = _dense(gm.covariances_, covariance_type)
    np.testing.assert_allclose(cov, c, rtol=0, atol=1e-8)
    np.testing.assert_allclose(gm.lower_bounds_, history, rtol=0, atol=1e-8)
    assert np.diff(history).min() > -1e-12  # EM never lowers the observed-data likelihood
    # inference reads the same marginal likelihood of the observed entries
    ll, resp, _, _ = _np_gaussian_e_step(X, gm.weights_, gm.means_, cov)
    np.testing.assert_allclose(gm.score_samples(X), ll, rtol=0, atol=1e-8)
    np.testing.assert_allclose(gm.predict_proba(X), resp, rtol=0, atol=1e-8)
    np.testing.assert_array_equal(gm.predict(X), resp.argmax(1))
    np.testing.assert_allclose(gm.score(X), ll.mean(), rtol=0, atol=1e-8)
    n_parameters = {"full": 2 * 6, "tied": 6, "diag": 2 * 3, "spherical": 2}[covariance_type] + 2 * 3 + 1
    np.testing.assert_allclose(gm.bic(X), -2 * ll.sum() + n_parameters * np.log(len(X)), rtol=1e-12)


def test_bernoulli_and_poisson_fits_equal_numpy_em_with_missing_at_random():
    rng = np.random.default_rng(1)
    probs = np.array([[0.8, 0.7, 0.2, 0.9], [0.1, 0.3, 0.7, 0.2]])
    z = rng.integers(0, 2, 200)
    X = _with_holes((rng.random((200, 4)) < probs[z]).astype(float), 0.3, rng)
    w0, p0 = np.array([0.5, 0.5]), np.array([[0.6, 0.6, 0.4, 0.6], [0.4, 0.4, 0.6, 0.3]])
    bm = BernoulliMixture(2, nan_policy="marginalize", tol=0, max_iter=30, weights_init=w0, probs_init=p0).fit(X)
    w, p, history = _np_discrete_em(
        X, w0, p0, 30, lambda X0, p: X0[:, None] * np.log(p) + (1 - X0[:, None]) * np.log1p(-p), lambda p: p
    )
    np.testing.assert_allclose(bm.weights_, w, rtol=0, atol=1e-8)
    np.testing.assert_allclose(bm.probs_, p, rtol=0, atol=1e-8)
    np.testing.assert_allclose(bm.lower_bounds_, history, rtol=0, atol=1e-8)
    assert np.diff(history).min() > -1e-12

    rates = np.array([[1.0, 4.0, 0.5], [6.0, 1.0, 3.0]])
    X = _with_holes(rng.poisson(rates[z]).astype(float), 0.3, rng)
    r0 = np.array([[2.0, 2.0, 1.0], [4.0, 1.5, 2.0]])
    pm = PoissonMixture(2, nan_policy="marginalize", tol=0, max_iter=30, weights_init=w0, rates_init=r0).fit(X)
    w, r, history = _np_discrete_em(
        X, w0, r0, 30, lambda X0, lam: X0[:, None] * np.log(lam) - lam - gammaln(X0[:, None] + 1), lambda lam: lam
    )
    np.testing.assert_allclose(pm.weights_, w, rtol=0, atol=1e-8)
    np.testing.assert_allclose(pm.rates_, r, rtol=0, atol=1e-8)
    np.testing.assert_allclose(pm.lower_bounds_, history, rtol=0, atol=1e-8)


def test_categorical_marginal_likelihood_sums_observed_features():
    rng = np.random.default_rng(2)
    X = _with_holes(rng.integers(0, 3, (120, 4)), 0.3, rng)
    cm = CategoricalMixture(2, nan_policy="marginalize", random_state=0, max_iter=20).fit(X)
    logp = np.log(cm.probs_)  # [K, D, C]
    observed = ~np.isnan(X)
    codes = np.where(observed, X, 0).astype(int)
    terms = logp[:, np.arange(4), codes].transpose(1, 0, 2) * observed[:, None, :]  # [N, K, D]
    ll = logsumexp(np.log(cm.weights_) + terms.sum(-1), axis=1)
    np.testing.assert_allclose(cm.score_samples(X), ll, rtol=0, atol=1e-10)
    assert np.diff(cm.lower_bounds_).min() > -1e-12


# --------------------------------------------------------------------------------------------
# What it buys, and that nothing changes for complete data
# --------------------------------------------------------------------------------------------


def _matched_error(model, means, cov):
    order = np.argsort(model.means_[:, 0])
    return np.abs(model.means_[order] - means).max(), np.abs(model.covariances_[order] - cov).max()


def test_marginalized_fit_is_closer_to_the_truth_than_mean_imputation():
    rng = np.random.default_rng(3)
    X, means, cov = _gaussian_data(rng, n=1200)
    Xm = _with_holes(X, 0.3, rng)
    imputed = np.where(np.isnan(Xm), np.nanmean(Xm, 0), Xm)
    ours = GaussianMixture(2, nan_policy="marginalize", random_state=0).fit(Xm)
    naive = GaussianMixture(2, random_state=0).fit(imputed)
    mean_err, cov_err = _matched_error(ours, means, cov)
    naive_mean_err, naive_cov_err = _matched_error(naive, means, cov)
    assert mean_err < naive_mean_err and cov_err < naive_cov_err
    assert cov_err < 0.5 * naive_cov_err  # imputation at the mean shrinks the covariances


@pytest.mark.parametrize("policy", ["omit", "marginalize"])
@pytest.mark.parametrize("make", [lambda p: GaussianMixture(2, random_state=0, nan_policy=p),
                                  lambda p: GaussianMixture(2, covariance_type="diag", random_state=0, nan_policy=p),
                                  lambda p: BernoulliMixture(2, random_state=0, nan_policy=p)])
def test_without_nan_the_fit_is_bitwise_the_plain_fit(make, policy):
    rng = np.random.default_rng(4)
    X = _gaussian_data(rng)[0]
    if isinstance(make("raise"), BernoulliMixture):
        X = (X > 0.5).astype(float)
    plain, other = make("raise").fit(X), make(policy).fit(X)
    for key, value in plain.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other.state_dict()[key]), key
    np.testing.assert_array_equal(plain.score_samples(X), other.score_samples(X))


# --------------------------------------------------------------------------------------------
# Streams, batches, partial_fit
# --------------------------------------------------------------------------------------------


class _Batches:
    """A re-iterable of numpy batches (a DataLoader stand-in)."""

    def __init__(self, X, size):
        self.X, self.size = X, size

    def __iter__(self):
        return (self.X[s : s + self.size] for s in range(0, len(self.X), self.size))


def _start(covariance_type):
    """A complete starting point (so B problems at once start as each alone)."""
    shape = {"full": (2, 3, 3), "tied": (3, 3), "diag": (2, 3), "spherical": (2,)}[covariance_type]
    precisions = np.broadcast_to(np.eye(3), shape).copy() if len(shape) > 1 and shape[-1] == shape[-2] else np.ones(shape)
    return {"weights_init": np.array([0.5, 0.5]), "means_init": np.array([[0.5, 0.5, 0.5], [2.0, 1.0, -1.0]]),
            "precisions_init": precisions}


def _gm(**kw):
    return GaussianMixture(2, random_state=0, nan_policy="marginalize", **kw)


@pytest.mark.parametrize("covariance_type", ["tied", "spherical"])
def test_streamed_batched_and_in_memory_fits_agree(covariance_type, tmp_path):
    rng = np.random.default_rng(5)
    X = _with_holes(_gaussian_data(rng)[0], 0.3, rng)
    ref = _gm(covariance_type=covariance_type).fit(X)
    streamed = _gm(covariance_type=covariance_type, chunk_size=40).fit(_Batches(X, 25))
    path = tmp_path / "x.npy"
    np.save(path, X)
    mapped = _gm(covariance_type=covariance_type, chunk_size=33).fit(np.load(path, mmap_mode="r"))
    for other in (streamed, mapped):
        np.testing.assert_allclose(other.means_, ref.means_, rtol=0, atol=1e-10)
        np.testing.assert_allclose(other.covariances_, ref.covariances_, rtol=0, atol=1e-10)
        assert other.n_iter_ == ref.n_iter_
    # B problems at once: each as fitted alone (from the same start)
    X2 = _with_holes(_gaussian_data(rng)[0], 0.3, rng)
    start = _start(covariance_type)
    both = _gm(covariance_type=covariance_type, **{k: np.stack([v, v]) for k, v in start.items()}).fit(np.stack([X, X2]))
    first = _gm(covariance_type=covariance_type, **start).fit(X)
    second = _gm(covariance_type=covariance_type, **start).fit(X2)
    np.testing.assert_allclose(both.means_[0], first.means_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(both.means_[1], second.means_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(both.covariances_[1], second.covariances_, rtol=0, atol=1e-10)


@pytest.mark.parametrize("make", [lambda: _gm(covariance_type="full"),
                                  lambda: BernoulliMixture(2, random_state=0, nan_policy="marginalize")])
def test_partial_fit_first_step_is_one_em_iteration(make):
    """The first partial_fit step (step size 1) takes the statistics of its batch about the
    initial parameters, with the missing entries expected under them: one EM iteration."""
    rng = np.random.default_rng(6)
    X = _gaussian_data(rng)[0]
    if isinstance(make(), BernoulliMixture):
        X = (X > 0.5).astype(float)
    X = _with_holes(X, 0.3, rng)
    online = make().partial_fit(X)
    batch = make().set_params(max_iter=1).fit(X)
    for key, value in batch.state_dict().items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            torch.testing.assert_close(online.state_dict()[key], value, rtol=0, atol=1e-10)
    online.partial_fit(X[:50])  # a later step moves on, finite
    assert np.isfinite(online.score(X))


def test_stepwise_em_expects_missing_entries_under_the_current_parameters():
    """Two partial_fit steps equal a NumPy stepwise EM whose second batch's missing entries are
    expected under the parameters after the first step (not under the stream's reference)."""
    rng = np.random.default_rng(11)
    probs = np.array([[0.8, 0.7, 0.2], [0.1, 0.3, 0.7]])
    X = _with_holes((rng.random((160, 3)) < probs[rng.integers(0, 2, 160)]).astype(float), 0.3, rng)
    w, p = np.array([0.5, 0.5]), np.array([[0.6, 0.6, 0.4], [0.4, 0.4, 0.6]])
    model = BernoulliMixture(2, nan_policy="marginalize", weights_init=w, probs_init=p)
    running, eta = None, [1.0, (2 + 2.0) ** -0.6]  # the default schedule (t0, kappa) = (2, 0.6)
    for step, batch in enumerate((X[:80], X[80:])):
        model.partial_fit(batch)
        observed = ~np.isnan(batch)
        X0 = np.where(observed, batch, 0.0)
        log_joint = np.log(w) + ((X0[:, None] * np.log(p) + (1 - X0[:, None]) * np.log1p(-p)) * observed[:, None]).sum(-1)
        resp = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
        stats = [resp.sum(0) / len(batch), (resp.T @ X0 + (resp.T @ ~observed) * p) / len(batch)]
        running = stats if running is None else [(1 - eta[step]) * a + eta[step] * b for a, b in zip(running, stats)]
        w, p = running[0] / running[0].sum(), running[1] / running[0][:, None]
        np.testing.assert_allclose(model.probs_, p, rtol=0, atol=1e-10)
        np.testing.assert_allclose(model.weights_, w, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------
# nan_policy="omit"
# --------------------------------------------------------------------------------------------


def test_omit_leaves_rows_out_with_a_counted_warning():
    rng = np.random.default_rng(7)
    X = _gaussian_data(rng)[0]
    X[[3, 10, 11, 50, 51, 52, 140], 1] = np.nan
    with pytest.warns(UserWarning, match=r"^7 row\(s\) of X hold NaN and were left out"):
        omitted = GaussianMixture(2, random_state=0, nan_policy="omit").fit(X)
    complete = GaussianMixture(2, random_state=0).fit(X[~np.isnan(X).any(1)])
    np.testing.assert_array_equal(omitted.means_, complete.means_)
    with pytest.warns(UserWarning, match=r"^7 row\(s\)"):  # a stream: counted over the whole pass
        streamed = GaussianMixture(2, random_state=0, nan_policy="omit").fit(_Batches(X, 20))
    np.testing.assert_allclose(streamed.means_, complete.means_, rtol=0, atol=1e-10)
    # [B, N, D]: the rows of each problem that hold NaN weigh nothing
    stacked = np.stack([X, X[::-1]])
    start = _start("full")
    with pytest.warns(UserWarning, match=r"^14 row\(s\)"):
        both = GaussianMixture(2, nan_policy="omit", **{k: np.stack([v, v]) for k, v in start.items()}).fit(stacked)
    weighted = GaussianMixture(2, **start).fit(np.nan_to_num(X), sample_weight=(~np.isnan(X).any(1)).astype(float))
    np.testing.assert_allclose(both.means_[0], weighted.means_, rtol=0, atol=1e-8)
    # inference keeps every row: rows with NaN get the likelihood of their observed entries
    assert omitted.predict(X).shape == (len(X),) and np.isfinite(omitted.score_samples(X)).all()


# --------------------------------------------------------------------------------------------
# Clear errors and the scikit-learn protocol
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["omit", "marginalize"])
def test_infinity_is_refused_under_every_policy(policy):
    X = np.random.default_rng(8).normal(size=(30, 2))
    X[0, 1] = np.nan
    X[4, 0] = np.inf
    with pytest.raises(ValueError, match="Input X contains NaN or infinity"):
        GaussianMixture(2, nan_policy=policy).fit(X)
    fitted = GaussianMixture(2, nan_policy=policy, random_state=0).fit(np.nan_to_num(X, posinf=0.0))
    with pytest.raises(ValueError, match="Input X contains NaN or infinity"):
        fitted.score_samples(X)


def test_row_without_observed_entry_is_a_clear_error():
    X = np.random.default_rng(9).normal(size=(30, 2))
    X[5] = np.nan
    with pytest.raises(ValueError, match="no observed entry"):
        GaussianMixture(2, nan_policy="marginalize").fit(X)
    fitted = GaussianMixture(2, nan_policy="marginalize", random_state=0).fit(X[:5])
    with pytest.raises(ValueError, match="no observed entry"):
        fitted.predict(X)
    with pytest.raises(ValueError, match="Every row of X holds NaN"):
        GaussianMixture(1, nan_policy="omit").fit(np.full((4, 2), np.nan))


@pytest.mark.parametrize("policy", ["omit", "marginalize"])
def test_kmeans_refuses_nan_policies(policy):
    with pytest.raises(ValueError, match="KMeans supports nan_policy='raise' only"):
        KMeans(2, nan_policy=policy).fit(np.random.default_rng(10).normal(size=(20, 2)))


def test_nan_policy_is_a_hyperparameter():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.utils import get_tags

    gm = GaussianMixture(2, nan_policy="marginalize")
    assert gm.get_params()["nan_policy"] == "marginalize" and clone(gm).nan_policy == "marginalize"
    assert "nan_policy='marginalize'" in repr(gm)
    assert get_tags(gm).input_tags.allow_nan and not get_tags(GaussianMixture(2)).input_tags.allow_nan
    assert sklearn is not None
    with pytest.raises(ValueError, match="nan_policy must be one of"):
        GaussianMixture(2, nan_policy="ignore").fit(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="Input X contains NaN"):  # the default is unchanged
        GaussianMixture(2).fit(np.where(np.eye(5, 2) > 0, np.nan, 1.0))


def test_omit_drops_the_labels_of_the_rows_it_leaves_out_and_marginalize_takes_labels():
    rng = np.random.default_rng(13)
    X = _gaussian_data(rng)[0]
    X[[2, 9, 30], 0] = np.nan
    labels = np.full(len(X), -1)
    labels[[1, 2, 5]] = [0, 1, 1]  # row 2 holds NaN: its label goes with it
    keep = ~np.isnan(X).any(1)
    with pytest.warns(UserWarning, match=r"^3 row\(s\)"):
        omitted = GaussianMixture(2, random_state=0, nan_policy="omit").fit(X, labels=labels)
    complete = GaussianMixture(2, random_state=0).fit(X[keep], labels=labels[keep])
    np.testing.assert_array_equal(omitted.means_, complete.means_)
    class Batches:  # a stream that carries its labels
        def __iter__(self):
            return ({"X": X[s : s + 40], "labels": labels[s : s + 40]} for s in range(0, len(X), 40))

    with pytest.warns(UserWarning, match=r"^3 row\(s\)"):
        streamed = GaussianMixture(2, random_state=0, nan_policy="omit").fit(Batches())
    np.testing.assert_allclose(streamed.means_, complete.means_, rtol=0, atol=1e-10)
    # labels name the components, rows with missing entries among them
    low, high = np.flatnonzero(X[:, 0] < -1.0)[:2], np.flatnonzero(X[:, 0] > 4.0)[:2]
    X[high, 2] = np.nan
    named = np.full(len(X), -1)
    named[low], named[high] = 1, 0  # the component at the origin is named 1
    marginal = GaussianMixture(2, random_state=0, nan_policy="marginalize").fit(X, labels=named)
    assert marginal.means_[1, 0] < 1.0 < marginal.means_[0, 0]


def test_pandas_nullable_columns_hold_missing_values_as_nan():
    """Found by fuzzing: a DataFrame of pandas' nullable dtypes (``Float64``, ``Int64``) with
    ``pd.NA`` failed with "float() argument must be ... not 'NAType'", whatever the nan_policy.
    Now ``pd.NA`` reads as NaN (as scikit-learn reads it): the same fits as the NumPy array."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(7)
    X = np.concatenate([rng.normal(size=(40, 2)), rng.normal(size=(40, 2)) + 5])
    X[[3, 50], [1, 0]] = np.nan
    frame = pd.DataFrame(X, columns=["a", "b"]).astype("Float64")
    for policy in ("omit", "marginalize"):
        model = GaussianMixture(2, nan_policy=policy, random_state=0).fit(frame)
        np.testing.assert_allclose(model.means_, GaussianMixture(2, nan_policy=policy, random_state=0).fit(X).means_, rtol=1e-12)
        assert list(model.feature_names_in_) == ["a", "b"]
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixture(2).fit(frame)
    counts = pd.DataFrame(rng.poisson(3.0, size=(80, 2)), columns=["a", "b"]).astype("Int64")
    np.testing.assert_array_equal(PoissonMixture(2, random_state=0).fit(counts).predict(counts),
                                  PoissonMixture(2, random_state=0).fit(counts.to_numpy(dtype=float)).predict(counts.to_numpy(dtype=float)))
