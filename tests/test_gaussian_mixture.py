"""GaussianMixture against scikit-learn, and the estimator's own guarantees."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import torchem
from torchem import ConvergenceWarning, GaussianMixture

TYPES = ["full", "tied", "diag", "spherical"]


def _sklearn_start(X, k, covariance_type, seed=0):
    """Initial parameters from a one-iteration scikit-learn fit (so both start identically)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkGaussianMixture(k, covariance_type=covariance_type, max_iter=1, random_state=seed).fit(X)
    return {"weights_init": sk.weights_, "means_init": sk.means_, "precisions_init": sk.precisions_}


@pytest.mark.parametrize("covariance_type", TYPES)
def test_matches_sklearn_from_same_start(blobs, covariance_type):
    init = _sklearn_start(blobs, 3, covariance_type)
    kw = dict(covariance_type=covariance_type, tol=0.0, max_iter=15, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SkGaussianMixture(3, **kw).fit(blobs)
        ours = GaussianMixture(3, **kw).fit(blobs)
    assert ours.n_iter_ == ref.n_iter_ == 15
    assert isinstance(ours.means_, np.ndarray) and ours.means_.dtype == np.float64
    np.testing.assert_allclose(ours.weights_, ref.weights_, rtol=1e-6)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.precisions_, ref.precisions_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.precisions_cholesky_, ref.precisions_cholesky_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-6)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-6)
    np.testing.assert_allclose(ours.score_samples(blobs), ref.score_samples(blobs), rtol=1e-6)
    np.testing.assert_allclose(ours.predict_proba(blobs), ref.predict_proba(blobs), atol=1e-6)
    np.testing.assert_array_equal(ours.predict(blobs), ref.predict(blobs))
    np.testing.assert_allclose(ours.score(blobs), ref.score(blobs), rtol=1e-6)
    np.testing.assert_allclose(ours.bic(blobs), ref.bic(blobs), rtol=1e-6)
    np.testing.assert_allclose(ours.aic(blobs), ref.aic(blobs), rtol=1e-6)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_converges_like_sklearn(blobs, covariance_type):
    """With the default tol, both stop at the same iteration with the same answer."""
    init = _sklearn_start(blobs, 3, covariance_type, seed=1)
    ref = SkGaussianMixture(3, covariance_type=covariance_type, **init).fit(blobs)
    ours = GaussianMixture(3, covariance_type=covariance_type, **init).fit(blobs)
    assert ours.converged_ and ref.converged_
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-6)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_log_likelihood_never_decreases(covariance_type):
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(size=(150, 4)) * s + c for c, s in [(0, 1), (3, 0.5), (-3, 2.0), (6, 1.5)]])
    gm = GaussianMixture(5, covariance_type=covariance_type, tol=0.0, max_iter=60, init_params="random", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)
    history = np.asarray(gm.lower_bounds_)
    assert len(history) == 60
    assert np.all(np.diff(history) >= -1e-10), np.diff(history).min()


@pytest.mark.parametrize("covariance_type", TYPES)
def test_stacked_problems_equal_separate_fits(covariance_type):
    rng = np.random.default_rng(4)
    B, N, D, K = 3, 240, 3, 3
    X = np.stack([
        np.concatenate([rng.normal(size=(N // K, D)) + 4 * rng.normal(size=D) for _ in range(K)]) for _ in range(B)
    ])
    kw = dict(covariance_type=covariance_type, tol=0.0, max_iter=10, init_params="random_from_data")
    starts = [_sklearn_start(X[b], K, covariance_type, seed=b) for b in range(B)]
    init = {key: np.stack([s[key] for s in starts]) for key in starts[0]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        batched = GaussianMixture(K, **kw, **init).fit(X)
        assert batched.means_.shape == (B, K, D)
        assert batched.weights_.shape == (B, K)
        assert batched.lower_bound_.shape == (B,)
        labels = batched.predict(X)
        assert labels.shape == (B, N)
        for b in range(B):
            single = GaussianMixture(K, **kw, **starts[b]).fit(X[b])
            np.testing.assert_allclose(batched.means_[b], single.means_, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(batched.covariances_[b], single.covariances_, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(batched.weights_[b], single.weights_, rtol=1e-9)
            np.testing.assert_allclose(batched.lower_bound_[b], single.lower_bound_, rtol=1e-12)
            np.testing.assert_array_equal(labels[b], single.predict(X[b]))


def test_n_init_keeps_the_best_restart():
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(size=(100, 2)) + c for c in ([0, 0], [6, 0], [0, 6], [6, 6], [3, 3])])
    kw = dict(covariance_type="full", init_params="random_from_data", max_iter=200)
    best = GaussianMixture(5, n_init=6, random_state=7, **kw).fit(X)
    # Restart 0 of a batch draws the same starting point as a single fit with the same seed,
    # so the best of the batch can be no worse.
    single = GaussianMixture(5, n_init=1, random_state=7, **kw).fit(X)
    assert best.lower_bound_ >= single.lower_bound_ - 1e-12


def test_n_init_restarts_are_independent_and_best_is_selected():
    """Restarts run as one batch do not interact: restarts that all start from the same given
    parameters end exactly where one fit from them ends; and the driver keeps, per problem,
    the restart with the highest lower bound (the first on ties)."""
    from torchem.em import EMResult, select_best

    rng = np.random.default_rng(6)
    X = np.concatenate([rng.normal(size=(80, 2)) + c for c in ([0, 0], [5, 0], [0, 5])])
    start = dict(weights_init=[0.2, 0.3, 0.5], means_init=X[[0, 100, 200]] + 0.5, precisions_init=np.stack([np.eye(2)] * 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one = GaussianMixture(3, tol=0.0, max_iter=20, **start).fit(X)
        four = GaussianMixture(3, n_init=4, tol=0.0, max_iter=20, **start).fit(X)
    np.testing.assert_array_equal(four.means_, one.means_)
    np.testing.assert_array_equal(four.covariances_, one.covariances_)
    assert four.lower_bound_ == one.lower_bound_
    lb = torch.tensor([[-3.0, -1.0, -2.0, -1.0], [-5.0, -6.0, -4.0, -7.0]], dtype=torch.float64)
    params = {"means": torch.arange(8.0).reshape(2, 4, 1)}
    result = EMResult(params, lb, torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]]), torch.zeros(2, 4, dtype=torch.bool),
                      [lb - 1, lb])
    best, best_lb, n_iter, _, history = select_best(result)
    torch.testing.assert_close(best["means"], torch.tensor([[1.0], [6.0]]))
    torch.testing.assert_close(best_lb, torch.tensor([-1.0, -4.0], dtype=torch.float64))
    assert n_iter.tolist() == [2, 7] and torch.equal(history[1], best_lb)


def test_fit_predict_equals_fit_then_predict(blobs):
    for ct in TYPES:
        gm = GaussianMixture(3, covariance_type=ct, random_state=0)
        labels = gm.fit_predict(blobs)
        np.testing.assert_array_equal(labels, gm.predict(blobs))


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_init_method_fits_and_is_reproducible(blobs, init_params):
    a = GaussianMixture(3, init_params=init_params, random_state=11, max_iter=300).fit(blobs)
    b = GaussianMixture(3, init_params=init_params, random_state=11, max_iter=300).fit(blobs)
    np.testing.assert_array_equal(a.means_, b.means_)
    g = GaussianMixture(3, init_params=init_params, random_state=torch.Generator().manual_seed(11), max_iter=300)
    g.fit(blobs)
    assert np.isfinite(g.lower_bound_)
    # The blobs are well separated: every method finds them (ARI-free check: the means).
    ref = SkGaussianMixture(3, random_state=0).fit(blobs)
    if init_params != "random":  # random responsibilities may land in a local optimum
        np.testing.assert_allclose(np.sort(a.means_[:, 0]), np.sort(ref.means_[:, 0]), atol=0.05)


def test_kmeans_init_is_close_to_sklearn_kmeans_init(blobs):
    ours = GaussianMixture(3, max_iter=0, random_state=0).fit(blobs)
    assert ours.n_iter_ == 0 and ours.lower_bound_ == -np.inf
    from sklearn.cluster import KMeans

    centres = KMeans(3, n_init=1, random_state=0).fit(blobs).cluster_centers_
    order = lambda m: m[np.lexsort(m.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(ours.means_), order(centres), atol=1e-6)


def test_warm_start_continues():
    rng = np.random.default_rng(8)
    X = np.concatenate([rng.normal(size=(200, 2)) + c for c in ([0, 0], [3, 0], [0, 3])])
    kw = dict(tol=0.0, init_params="random_from_data", random_state=2)
    full = GaussianMixture(3, max_iter=10, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        full.fit(X)
        warm = GaussianMixture(3, max_iter=5, warm_start=True, **kw)
        warm.fit(X)
        first = warm.lower_bound_
        warm.fit(X)
    assert warm.n_iter_ == 5
    assert warm.lower_bound_ >= first
    np.testing.assert_allclose(warm.means_, full.means_, rtol=1e-10)
    np.testing.assert_allclose(warm.lower_bound_, full.lower_bound_, rtol=1e-12)


def test_convergence_warning_and_attributes(blobs):
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        gm = GaussianMixture(3, max_iter=2, tol=0.0, random_state=0).fit(blobs)
    assert gm.converged_ is False and gm.n_iter_ == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        gm = GaussianMixture(3, random_state=0).fit(blobs)
    assert gm.converged_ is True


def test_float32_far_from_origin_matches_float64():
    rng = np.random.default_rng(9)
    X = np.concatenate([rng.normal(size=(400, 3)) * s + c for c, s in [(0, 1.0), (4, 0.5), (-4, 1.5)]]) + 1e4
    init = _sklearn_start(X, 3, "full")
    for ct in TYPES:
        init = _sklearn_start(X, 3, ct)
        f64 = GaussianMixture(3, covariance_type=ct, **init).fit(X)
        f32 = GaussianMixture(3, covariance_type=ct, **init).fit(X.astype(np.float32))
        assert f32.means_.dtype == np.float32
        assert abs(f32.lower_bound_ / f64.lower_bound_ - 1) < 1e-3
        np.testing.assert_allclose(f32.score(X.astype(np.float32)), f64.score(X), rtol=1e-3)


def test_float32_tight_components_far_apart_match_float64():
    """float32 second moments of tight, distant clusters cancel; the driver recomputes them
    in float64, so the float32 fit still matches."""
    rng = np.random.default_rng(10)
    centres = np.array([[-300.0, 0.0], [300.0, 0.0], [0.0, 300.0]])
    X = np.concatenate([rng.normal(size=(300, 2)) * 0.05 + c for c in centres])
    means = centres + 0.01
    kw = dict(means_init=means, weights_init=np.full(3, 1 / 3), precisions_init=np.full((3, 2), 100.0))
    f64 = GaussianMixture(3, covariance_type="diag", **kw).fit(X)
    f32 = GaussianMixture(3, covariance_type="diag", **kw).fit(X.astype(np.float32))
    np.testing.assert_allclose(f32.covariances_, f64.covariances_, rtol=1e-3)


def test_state_dict_round_trip(blobs, tmp_path):
    gm = GaussianMixture(3, covariance_type="full", random_state=0).fit(blobs)
    path = tmp_path / "gm.pt"
    torch.save(gm.state_dict(), path)
    fresh = GaussianMixture(3, covariance_type="full")
    fresh.load_state_dict(torch.load(path))
    for name in ["weights_", "means_", "covariances_", "precisions_cholesky_"]:
        np.testing.assert_array_equal(getattr(fresh, name), getattr(gm, name))
    assert fresh.n_iter_ == gm.n_iter_ and fresh.converged_ == gm.converged_
    np.testing.assert_array_equal(fresh.predict(blobs), gm.predict(blobs))
    np.testing.assert_allclose(fresh.score_samples(blobs), gm.score_samples(blobs))
    wrong = GaussianMixture(3, covariance_type="diag")
    with pytest.raises(ValueError, match="covariance_type"):
        wrong.load_state_dict(gm.state_dict())
    restored = pickle.loads(pickle.dumps(gm))
    np.testing.assert_array_equal(restored.means_, gm.means_)


def test_parameters_are_registered_and_unconstrained(blobs):
    gm = GaussianMixture(3, random_state=0).fit(blobs)
    names = {n for n, _ in gm.named_parameters()}
    assert names == {"logits", "loc", "precision_cholesky_unconstrained"}
    torch.testing.assert_close(torch.softmax(gm.logits, -1).numpy(), gm.weights_)
    gm32 = gm.float()
    assert gm32.loc.dtype == torch.float32
    assert gm32.predict(blobs.astype(np.float32)).dtype == np.int64
    gm64 = gm.double()
    assert gm64.loc.dtype == torch.float64


def test_tensor_in_tensor_out(blobs):
    X = torch.from_numpy(blobs).float()
    gm = GaussianMixture(3, random_state=0).fit(X)
    assert isinstance(gm.means_, torch.Tensor) and gm.means_.dtype == torch.float32
    for out in (gm.predict(X), gm.predict_proba(X), gm.score_samples(X)):
        assert isinstance(out, torch.Tensor)
    assert isinstance(gm.predict(blobs), np.ndarray)  # numpy in, numpy out
    assert isinstance(gm.score(blobs), float)
    ll = gm(X)  # forward = per-sample log-likelihood
    torch.testing.assert_close(ll, gm.score_samples(X))
    samples, labels = gm.sample(50)
    assert samples.shape == (50, 3) and labels.shape == (50,)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_sample_follows_the_model(blobs, covariance_type):
    """Sample moments of every component against the model's (dense) ones, within five
    standard errors at this fixed seed: a sampler drawing with the wrong factor (the
    precision's instead of the covariance's, a transposed one) fails."""
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(blobs)
    X, y = gm.sample(20000)
    assert np.all(np.diff(y) >= 0)  # sorted by component, as in scikit-learn
    cov = gm.covariances_
    dense = {"full": lambda: cov, "tied": lambda: np.broadcast_to(cov, (3, 3, 3)),
             "diag": lambda: np.stack([np.diag(c) for c in cov]),
             "spherical": lambda: np.stack([c * np.eye(3) for c in cov])}[covariance_type]()
    for k in range(3):
        xk = X[y == k]
        n = len(xk)
        w = gm.weights_[k]
        assert abs(n / len(X) - w) < 5 * np.sqrt(w * (1 - w) / len(X))
        sd = np.sqrt(np.diag(dense[k]))
        assert np.all(np.abs(xk.mean(0) - gm.means_[k]) < 5 * sd / np.sqrt(n))
        # the standard error of a sample covariance entry: sqrt((s_ii s_jj + s_ij^2) / n)
        se = np.sqrt((np.outer(sd**2, sd**2) + dense[k] ** 2) / n)
        assert np.all(np.abs(np.cov(xk.T) - dense[k]) < 5 * se)


def test_sklearn_api_compatibility(blobs):
    from sklearn.base import clone

    gm = GaussianMixture(4, covariance_type="diag", reg_covar=1e-4)
    params = gm.get_params()
    assert params["n_components"] == 4 and params["covariance_type"] == "diag"
    copy = clone(gm)
    assert copy.get_params() == params
    gm.set_params(n_components=3)
    assert gm.n_components == 3
    with pytest.raises(ValueError, match="Invalid parameter"):
        gm.set_params(bogus=1)
    assert "n_components=3" in repr(gm)


def test_empty_component_does_not_produce_nan():
    """A component that owns no point keeps finite parameters (sklearn's tiny-weight rule)."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(100, 2))
    means = np.array([[0.0, 0.0], [1e3, 1e3]])
    gm = GaussianMixture(2, means_init=means, random_state=0, max_iter=5, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)
    for name in ["weights_", "means_", "covariances_", "precisions_cholesky_"]:
        assert np.isfinite(getattr(gm, name)).all(), name
    assert gm.weights_[1] < 1e-10
    assert np.isfinite(gm.score_samples(X)).all()


def test_duplicate_points_recover_with_a_warning_or_fail_clearly():
    X = np.concatenate([np.zeros((20, 2)), np.random.default_rng(0).normal(size=(20, 2)) + 5])
    # reg_covar=0 and a component on 20 identical points: the jitter rescues nothing (its
    # scale is zero), so the fit fails with scikit-learn's advice.
    with pytest.raises(ValueError, match="increase reg_covar"):
        GaussianMixture(2, reg_covar=0.0, init_params="kmeans", random_state=0).fit(X)
    # With the default regulariser the same data fits.
    gm = GaussianMixture(2, random_state=0).fit(X)
    assert np.isfinite(gm.covariances_).all()


def test_cholesky_failure_recovers_with_warning():
    """A component whose covariance is singular (two points in 3-D, reg_covar=0) is rescued
    by a small jitter on its diagonal, with a warning."""
    rng = np.random.default_rng(12)
    X = np.concatenate([rng.normal(size=(100, 3)), [[50.0, 50.0, 50.0], [51.0, 52.0, 50.5]]])
    kw = dict(means_init=[[0.0, 0.0, 0.0], [50.5, 51.0, 50.25]], reg_covar=0.0, max_iter=2, tol=0.0)
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        gm = GaussianMixture(2, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(X)
    assert np.isfinite(gm.covariances_).all()
    assert np.linalg.eigvalsh(gm.covariances_[1]).min() > 0


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_a_singular_covariance_gets_the_smallest_jitter_that_rescues_it(covariance_type):
    """Through fit: points on a line (no reg_covar) give a singular covariance; the M-step adds
    1e-10 times its mean variance to the diagonal, warns, and stores exactly that covariance.
    Diagonal and spherical covariances of a line are not singular: nothing is added."""
    t = np.linspace(-1.0, 1.0, 41)
    X = np.stack([t, 2 * t, -t], 1) + np.array([1.0, 2.0, 3.0])
    emp = np.cov(X.T, bias=True)
    expected = {"full": emp[None], "tied": emp, "diag": np.diag(emp)[None], "spherical": np.trace(emp)[None] / 3}[covariance_type]
    gm = GaussianMixture(1, covariance_type=covariance_type, reg_covar=0.0, max_iter=1, tol=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gm.fit(X)
    jittered = [w for w in caught if "added up to 1e-10 x its mean variance" in str(w.message)]
    if covariance_type in ("full", "tied"):
        expected = expected + 1e-10 * np.trace(emp) / 3 * np.eye(3)
        assert len(jittered) >= 1 and all(w.category is RuntimeWarning for w in jittered)
    else:
        assert not jittered
    np.testing.assert_allclose(gm.covariances_, expected, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(gm.means_, X.mean(0)[None], rtol=1e-12)


def test_public_api():
    assert torchem.__version__
    assert issubclass(torchem.NotFittedError, ValueError)
    assert issubclass(torchem.NotFittedError, AttributeError)
    assert issubclass(ConvergenceWarning, UserWarning)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_chunking_does_not_change_the_fit(blobs, covariance_type):
    kw = dict(covariance_type=covariance_type, tol=0.0, max_iter=8, random_state=0, init_params="random")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        whole = GaussianMixture(3, **kw).fit(blobs)
        chunked = GaussianMixture(3, chunk_size=37, **kw).fit(blobs)
    np.testing.assert_allclose(chunked.means_, whole.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(chunked.covariances_, whole.covariances_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(chunked.lower_bound_, whole.lower_bound_, rtol=1e-12)
    np.testing.assert_allclose(chunked.score_samples(blobs), whole.score_samples(blobs), rtol=1e-12)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_reg_covar_is_added_to_the_diagonal(blobs):
    init = _sklearn_start(blobs, 3, "diag")
    kw = dict(covariance_type="diag", tol=0.0, max_iter=1, **init)
    a = GaussianMixture(3, reg_covar=0.0, **kw).fit(blobs)
    b = GaussianMixture(3, reg_covar=0.5, **kw).fit(blobs)
    np.testing.assert_allclose(b.covariances_ - a.covariances_, 0.5, rtol=1e-9)


def test_tol_and_verbose(blobs, capsys):
    loose = GaussianMixture(3, tol=10.0, random_state=0, init_params="random").fit(blobs)
    tight = GaussianMixture(3, tol=1e-8, random_state=0, init_params="random", max_iter=500).fit(blobs)
    assert loose.n_iter_ < tight.n_iter_
    GaussianMixture(3, random_state=0, verbose=2, verbose_interval=1, init_params="random").fit(blobs)
    out = capsys.readouterr().out
    assert "Iteration 1" in out and "EM finished" in out
    GaussianMixture(3, random_state=0).fit(blobs)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_restart_zero_of_n_init_is_the_single_fit(init_params):
    """Same random_state: restart 0 of n_init=5 starts exactly where n_init=1 starts (an
    initialisation keeps restart 0 when no EM iteration ranks them), so the best of five is
    never worse than the single fit; K-means likewise."""
    rng = np.random.default_rng(12)
    X = np.concatenate([rng.normal(size=(60, 2)) + c for c in ([0, 0], [3, 0], [0, 3], [3, 3])])
    start1 = GaussianMixture(4, init_params=init_params, random_state=7).initialize(X)
    start5 = GaussianMixture(4, init_params=init_params, random_state=7, n_init=5).initialize(X)
    np.testing.assert_array_equal(start5.means_, start1.means_)
    np.testing.assert_array_equal(start5.covariances_, start1.covariances_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one = GaussianMixture(4, init_params=init_params, random_state=7, max_iter=5, tol=0.0).fit(X)
        five = GaussianMixture(4, init_params=init_params, random_state=7, max_iter=5, tol=0.0, n_init=5).fit(X)
    assert five.lower_bound_ >= one.lower_bound_
    for seed in range(5):
        km1 = torchem.KMeans(4, init="random", n_init=1, random_state=seed).fit(X)
        km5 = torchem.KMeans(4, init="random", n_init=5, random_state=seed).fit(X)
        assert km5.inertia_ <= km1.inertia_ * (1 + 1e-12)


def test_state_dict_saved_by_torchem_0_1_loads():
    """0.1 saved the layout of B problems as "batched"/"batch_size": such a state dict loads."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 2))
    gm = GaussianMixture(2, random_state=0).fit(X)
    state = gm.state_dict()
    extra = dict(state["_extra_state"])
    extra["batched"], extra["batch_size"] = extra.pop("stacked"), extra.pop("n_problems")
    extra["version"] = 1
    extra.pop("model")
    state["_extra_state"] = extra
    old = GaussianMixture(2)
    old.load_state_dict(state)
    np.testing.assert_array_equal(old.score_samples(X), gm.score_samples(X))
    assert old.n_iter_ == gm.n_iter_


def test_warnings_point_at_the_callers_line():
    """ConvergenceWarning names the user's file and line, not torchem's or torch's wrappers."""
    X = np.random.default_rng(0).normal(size=(100, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GaussianMixture(3, max_iter=1, random_state=0).fit(X)
    assert caught and all(w.filename == __file__ for w in caught), [(w.filename, w.lineno) for w in caught]


@pytest.mark.parametrize("separation", [1e3, 1e4, 1e5, 1e6, 1e7])
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_float64_components_far_apart_are_exact(covariance_type, separation):
    """Two clusters (variances 1 and 4) far apart, fitted from the true start: the covariances
    equal a centred-difference reference to 1e-8 of their scale at every separation (the moments about the
    means' common centre cancel even in float64, by eps * separation^2 of a variance; beyond
    1e-8 of it the precise pass takes them about each component's mean)."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(500, 2)), rng.normal(size=(500, 2)) * 2.0 + separation])
    means = np.array([[0.1, 0.1], [separation + 0.1, separation]])
    prec = {"full": np.stack([np.eye(2)] * 2), "tied": np.eye(2), "diag": np.ones((2, 2)), "spherical": np.ones(2)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(2, covariance_type=covariance_type, tol=0.0, max_iter=5, weights_init=[0.5, 0.5],
                             means_init=means, precisions_init=prec[covariance_type]).fit(X)
    parts = [X[:500] - X[:500].mean(0), X[500:] - X[500:].mean(0)]  # exact differences
    full = [p.T @ p / 500 for p in parts]
    expected = {"full": np.stack(full), "tied": (full[0] + full[1]) / 2, "diag": np.stack([np.diag(f) for f in full]),
                "spherical": np.array([np.trace(f) / 2 for f in full])}[covariance_type]
    reg = {"full": np.eye(2), "tied": np.eye(2), "diag": np.ones((2, 2)), "spherical": np.ones(2)}[covariance_type]
    np.testing.assert_allclose(gm.covariances_, expected + 1e-6 * reg, rtol=1e-8, atol=4e-8)
    np.testing.assert_allclose(gm.means_, [X[:500].mean(0), X[500:].mean(0)], rtol=1e-12, atol=1e-14 * separation)


def test_a_single_row_far_away_fits_where_scikit_learn_fits():
    from sklearn.mixture import GaussianMixture as SkGMM

    rng = np.random.default_rng(0)
    Y = np.concatenate([rng.normal(size=(300, 2)), [[1e8, 1e8]]])
    assert SkGMM(2, random_state=0).fit(Y).converged_
    gm = GaussianMixture(2, random_state=0).fit(Y)
    assert gm.converged_ and np.isfinite(gm.score(Y))
    np.testing.assert_allclose(np.sort(gm.weights_), [1 / 301, 300 / 301], rtol=1e-9)


def test_random_init_is_the_m_step_of_uniform_normalised_responsibilities(blobs):
    """``init_params="random"`` starts from responsibilities drawn uniformly and normalised per
    sample (scikit-learn's rule): every weight near 1/K, every mean near the data's mean and
    every covariance near the data's (a spread of (1/3) / sqrt(N) relative per component, here
    600 samples); the same start whatever the chunk size."""
    X = blobs
    k = 3
    start = GaussianMixture(k, init_params="random", random_state=5).initialize(X)
    chunked = GaussianMixture(k, init_params="random", random_state=5, chunk_size=7).initialize(X)
    np.testing.assert_allclose(chunked.means_, start.means_, rtol=1e-12)
    np.testing.assert_allclose(start.weights_, 1.0 / k, atol=0.03)
    sd = X.std(0)
    assert np.all(np.abs(start.means_ - X.mean(0)) < 0.15 * sd)
    assert np.ptp(start.means_[:, 0]) > 1e-3 * sd[0]  # the components differ
    np.testing.assert_allclose(start.covariances_, np.broadcast_to(np.cov(X.T, bias=True), (k, 3, 3)), atol=0.1 * sd.max() ** 2)
