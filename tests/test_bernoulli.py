"""Bernoulli and Binomial mixtures against the tutorial's update equations and known truths."""

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import binom

from torchem import BernoulliMixture, BinomialMixture, ConvergenceWarning, NotFittedError


def _binary_data(seed=0, n=600, d=12):
    rng = np.random.default_rng(seed)
    probs = np.array([np.r_[np.full(d // 2, 0.85), np.full(d - d // 2, 0.1)],
                      np.r_[np.full(d // 2, 0.15), np.full(d - d // 2, 0.8)],
                      np.full(d, 0.5)])
    z = rng.integers(0, 3, n)
    return (rng.random((n, d)) < probs[z]).astype(np.float64)


def _numpy_em(X, weights, probs, n_iter):
    """The tutorial's EM for a Bernoulli mixture, written directly in NumPy."""
    history = []
    for _ in range(n_iter):
        log_p = X @ np.log(probs).T + (1 - X) @ np.log(1 - probs).T + np.log(weights)
        m = log_p.max(1, keepdims=True)
        norm = m[:, 0] + np.log(np.exp(log_p - m).sum(1))
        history.append(norm.mean())
        resp = np.exp(log_p - norm[:, None])
        nk = resp.sum(0)
        weights = nk / len(X)
        probs = resp.T @ X / nk[:, None]
    return weights, probs, history


def test_bernoulli_matches_tutorial_iteration_by_iteration():
    X = _binary_data()
    rng = np.random.default_rng(1)
    w0 = np.array([0.3, 0.3, 0.4])
    p0 = rng.uniform(0.2, 0.8, size=(3, X.shape[1]))
    for n_iter in range(1, 7):
        ref_w, ref_p, ref_hist = _numpy_em(X, w0, p0, n_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ours = BernoulliMixture(3, weights_init=w0, probs_init=p0, tol=0.0, max_iter=n_iter).fit(X)
        np.testing.assert_allclose(ours.weights_, ref_w, rtol=1e-9)
        np.testing.assert_allclose(ours.probs_, ref_p, rtol=1e-9)
        np.testing.assert_allclose(ours.lower_bounds_, ref_hist, rtol=1e-12)
    # score_samples is the mixture log-likelihood of the fitted model
    log_p = X @ np.log(ours.probs_).T + (1 - X) @ np.log(1 - ours.probs_).T + np.log(ours.weights_)
    m = log_p.max(1, keepdims=True)
    np.testing.assert_allclose(ours.score_samples(X), m[:, 0] + np.log(np.exp(log_p - m).sum(1)), rtol=1e-12)


@pytest.mark.parametrize("model", ["bernoulli", "binomial"])
def test_log_likelihood_never_decreases(model):
    rng = np.random.default_rng(2)
    if model == "bernoulli":
        X, est = _binary_data(2), BernoulliMixture(4, init_params="random", tol=0.0, max_iter=40, random_state=0)
    else:
        X = rng.binomial(8, rng.choice([0.2, 0.5, 0.9], size=(500, 1)) * np.ones((1, 5)))
        est = BinomialMixture(3, n_trials=8, init_params="random", tol=0.0, max_iter=40, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    assert np.all(np.diff(est.lower_bounds_) >= -1e-12)


def test_two_coins():
    """Sets of 10 tosses of one of two coins (biases 0.8 and 0.35): EM recovers the biases
    and the mixing proportions within sampling error."""
    rng = np.random.default_rng(3)
    theta = np.array([0.8, 0.35])
    n_sets, n_toss = 2000, 10
    coin = rng.random(n_sets) < 0.4  # coin A with probability 0.4
    heads = rng.binomial(n_toss, np.where(coin, theta[0], theta[1]))[:, None]
    gm = BinomialMixture(2, n_trials=n_toss, random_state=0, tol=1e-8, max_iter=500).fit(heads)
    order = np.argsort(-gm.probs_[:, 0])
    se = np.sqrt(theta * (1 - theta) / (n_sets * n_toss * np.array([0.4, 0.6])))
    np.testing.assert_allclose(gm.probs_[order, 0], theta, atol=4 * se.max() + 0.01)
    np.testing.assert_allclose(gm.weights_[order], [0.4, 0.6], atol=0.05)
    # The log-likelihood includes the binomial coefficient: compare with scipy.
    want = np.log((gm.weights_ * binom.pmf(heads, n_toss, gm.probs_[:, 0])).sum(1))
    np.testing.assert_allclose(gm.score_samples(heads), want, rtol=1e-9)


def test_binomial_per_feature_trials_and_sampling():
    rng = np.random.default_rng(4)
    trials = np.array([5, 10, 20])
    p = np.array([[0.2, 0.5, 0.9], [0.7, 0.1, 0.4]])
    z = rng.integers(0, 2, 3000)
    X = rng.binomial(trials, p[z])
    gm = BinomialMixture(2, n_trials=trials, random_state=0).fit(X)
    order = np.argsort(gm.probs_[:, 0])
    np.testing.assert_allclose(gm.probs_[order], p, atol=0.03)
    S, y = gm.sample(20000)
    assert S.shape == (20000, 3) and np.all(S <= trials) and np.all(S == np.round(S))
    for k in range(2):  # Binomial(n_d, p_kd) moments, within five standard errors
        sk, pk = S[y == k], gm.probs_[k]
        mean, var = trials * pk, trials * pk * (1 - pk)
        assert np.all(np.abs(sk.mean(0) - mean) < 5 * np.sqrt(var / len(sk)))
        assert np.all(np.abs(sk.var(0) / var - 1) < 5 * np.sqrt(2 / len(sk)))
        assert abs(len(sk) / len(S) - gm.weights_[k]) < 0.02


def test_stacked_problems_equal_separate_and_init_methods():
    X = np.stack([_binary_data(s) for s in range(3)])
    kw = dict(tol=0.0, max_iter=10, init_params="random", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        w0 = np.full(3, 1 / 3)
        p0 = np.random.default_rng(5).uniform(0.2, 0.8, size=(3, 3, 12))
        batched = BernoulliMixture(3, weights_init=w0, probs_init=p0, **kw).fit(X)
        for b in range(3):
            single = BernoulliMixture(3, weights_init=w0, probs_init=p0[b], **kw).fit(X[b])
            np.testing.assert_allclose(batched.probs_[b], single.probs_, rtol=1e-10)
            np.testing.assert_allclose(batched.lower_bound_[b], single.lower_bound_, rtol=1e-12)
    for init in ["kmeans", "k-means++", "random", "random_from_data"]:
        gm = BernoulliMixture(3, init_params=init, random_state=0, n_init=2).fit(X[0])
        assert np.isfinite(gm.lower_bound_) and gm.probs_.shape == (3, 12)
        assert gm.probs_.min() > 0 and gm.probs_.max() < 1


def test_probabilities_stay_inside_zero_and_one():
    X = np.zeros((50, 4))
    X[:25, 0] = 1  # feature 0 is always 1 in half the data, the others always 0
    gm = BernoulliMixture(2, random_state=0).fit(X)
    assert np.all(gm.probs_ >= 0.99e-10) and np.all(gm.probs_ <= 1 - 0.99e-10)
    assert np.isfinite(gm.score_samples(X)).all()


def test_tensor_state_dict_and_bic():
    X = torch.from_numpy(_binary_data(6)).float()
    gm = BernoulliMixture(3, random_state=0).fit(X)
    assert isinstance(gm.probs_, torch.Tensor) and isinstance(gm.predict(X), torch.Tensor)
    fresh = BernoulliMixture(3)
    fresh.load_state_dict(gm.state_dict())
    torch.testing.assert_close(fresh.probs_, gm.probs_)
    n, d = X.shape
    ll = float(gm.score(X)) * n
    assert float(gm.bic(X)) == pytest.approx(-2 * ll + (3 * d + 2) * np.log(n), rel=1e-6)
    assert float(gm.aic(X)) == pytest.approx(-2 * ll + 2 * (3 * d + 2), rel=1e-6)


@pytest.mark.parametrize(
    "est, X, match",
    [
        (BernoulliMixture(2), np.full((10, 3), 0.5), "only 0 and 1"),
        (BernoulliMixture(2), np.array([[0.0, 2.0]] * 10), "only 0 and 1"),
        (BinomialMixture(2, n_trials=5), -np.ones((10, 3)), "negative counts"),
        (BinomialMixture(2, n_trials=5), np.full((10, 3), 2.5), "non-integer"),
        (BinomialMixture(2, n_trials=5), np.full((10, 3), 6.0), "above n_trials"),
        (BinomialMixture(2, n_trials=[5, 5]), np.ones((10, 3)), "one per feature"),
        (BinomialMixture(2, n_trials=0), np.zeros((10, 3)), "positive integers"),
        (BernoulliMixture(2), np.array([[np.nan, 1.0]] * 10), "NaN"),
        (BernoulliMixture(2), np.ones(10), "1-D"),
        (BernoulliMixture(2, probs_init=np.ones((3, 3))), np.ones((10, 3)), "should have the shape of \\(2, 3\\), but got \\(3, 3\\). Pass probs_init"),
        (BernoulliMixture(2, probs_init=np.full((2, 3), 1.5)), np.ones((10, 3)), r"probabilities in \[0, 1\]"),
        (BernoulliMixture(2, weights_init=[0.2, 0.2]), np.ones((10, 3)), "normalized"),
        (BernoulliMixture(20), np.ones((10, 3)), "n_samples >= n_components"),
    ],
)
def test_bad_input(est, X, match):
    with pytest.raises(ValueError, match=match):
        est.fit(X)


def test_unfitted_use():
    with pytest.raises(NotFittedError):
        BernoulliMixture(2).predict(np.ones((3, 2)))
    assert not hasattr(BinomialMixture(2), "probs_")


# --------------------------------------------------------------------------------------------
# binarize: a threshold applied wherever the model reads data
# --------------------------------------------------------------------------------------------


def _noisy_binary(seed=5):
    """Real values around -1 and 1 whose signs are :func:`_binary_data`'s bits."""
    rng = np.random.default_rng(seed)
    B = _binary_data(seed)
    return 2 * B - 1 + rng.normal(0, 0.5, size=B.shape)


@pytest.mark.parametrize("threshold", [0.0, -0.75])
def test_binarize_fits_and_scores_the_thresholded_data(threshold):
    R = _noisy_binary()
    before = R.copy()
    B = (R > threshold).astype(np.float64)
    ref = BernoulliMixture(3, n_init=2, random_state=0).fit(B)
    ours = BernoulliMixture(3, n_init=2, binarize=threshold, random_state=0).fit(R)
    np.testing.assert_array_equal(R, before)  # the caller's data is left as it was
    np.testing.assert_allclose(ours.probs_, ref.probs_, rtol=1e-12)
    np.testing.assert_allclose(ours.weights_, ref.weights_, rtol=1e-12)
    for method in ("predict", "predict_proba", "score_samples", "score", "bic", "aic"):
        np.testing.assert_allclose(getattr(ours, method)(R), getattr(ref, method)(B), rtol=1e-12, err_msg=method)
    torch.testing.assert_close(ours(torch.from_numpy(R)), ref(torch.from_numpy(B)))  # forward, for gradients
    with pytest.raises(ValueError, match="NaN"):
        ours.predict(np.where(np.eye(*R.shape) > 0, np.nan, R))


def test_binarize_applies_to_streams_and_partial_fit(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    R = _noisy_binary(6)
    B = (R > 0.0).astype(np.float64)
    np.save(tmp_path / "r.npy", R)
    memmap = np.load(tmp_path / "r.npy", mmap_mode="r")
    ref = BernoulliMixture(3, random_state=0, chunk_size=64).fit(B)
    streamed = BernoulliMixture(3, binarize=0.0, random_state=0, chunk_size=64).fit(memmap)
    np.testing.assert_allclose(streamed.probs_, ref.probs_, rtol=1e-9)
    np.testing.assert_array_equal(streamed.predict(memmap), ref.predict(B))
    np.testing.assert_allclose(ref.score(B), streamed.score(memmap), rtol=1e-12)
    loader = DataLoader(TensorDataset(torch.from_numpy(R)), batch_size=100)
    batches = BernoulliMixture(3, binarize=0.0, random_state=0, chunk_size=64).fit(loader)
    np.testing.assert_allclose(batches.probs_.numpy(), ref.probs_, rtol=1e-9)
    np.testing.assert_array_equal(batches.predict(loader).numpy(), ref.predict(B))
    online_ref, online = BernoulliMixture(3, random_state=0), BernoulliMixture(3, binarize=0.0, random_state=0)
    for start in range(0, len(R), 150):
        online_ref.partial_fit(B[start : start + 150])
        online.partial_fit(R[start : start + 150])
    np.testing.assert_allclose(online.probs_, online_ref.probs_, rtol=1e-12)
    # partial_fit after fit continues from the fitted model's statistics (not binarised again)
    ref.partial_fit(B[:150])
    continued = BernoulliMixture(3, binarize=0.0, random_state=0, chunk_size=64).fit(R).partial_fit(R[:150])
    np.testing.assert_allclose(continued.probs_, ref.probs_, rtol=1e-9)


@pytest.mark.parametrize("bad", ["0.5", True, np.nan, np.inf, [0.5]])
def test_binarize_must_be_none_or_a_finite_threshold(bad):
    with pytest.raises(ValueError, match="binarize must be None"):
        BernoulliMixture(2, binarize=bad).fit(_binary_data())


def test_binary_data_without_binarize_points_to_it():
    X = _binary_data()
    with pytest.raises(ValueError, match="only 0 and 1.*binarize=0.5"):
        BernoulliMixture(2).fit(X * 0.5)
    with pytest.raises(ValueError, match="Negative values in data passed to BernoulliMixture"):
        BernoulliMixture(2).fit(X - 1)
    with pytest.raises(ValueError, match="only 0 and 1"):
        BernoulliMixture(2, random_state=0).fit(X).predict(X + 0.5)


def test_binomial_takes_no_binarize():
    from sklearn.base import clone

    params = BinomialMixture(2, n_trials=5).get_params()
    assert "binarize" not in params and params["n_trials"] == 5
    assert clone(BinomialMixture(2, n_trials=5)).get_params() == params
    with pytest.raises(ValueError, match="Invalid parameter 'binarize'"):
        BinomialMixture(2).set_params(binarize=0.5)
    assert clone(BernoulliMixture(2, binarize=0.25)).get_params()["binarize"] == 0.25
    with pytest.raises(ValueError, match="non-integer"):  # counts are read as they are
        BinomialMixture(2, n_trials=5).fit(np.full((10, 3), 2.5))
