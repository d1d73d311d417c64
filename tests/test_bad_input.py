"""Every kind of bad input gets a clear error that names the problem."""

import numpy as np
import pytest
import torch

from torchem import GaussianMixture, NotFittedError

X = np.random.default_rng(0).normal(size=(60, 3))


@pytest.fixture(scope="module")
def fitted():
    return GaussianMixture(2, random_state=0).fit(X)


@pytest.mark.parametrize(
    "data, match",
    [
        (np.array([[1.0, np.nan], [0.0, 1.0], [2.0, 2.0]]), "NaN or infinity"),
        (np.array([[1.0, np.inf], [0.0, 1.0], [2.0, 2.0]]), "NaN or infinity"),
        (np.arange(10.0), "1-D array"),
        (np.zeros((2, 2, 2, 2)), "4 dimensions"),
        (np.zeros((0, 3)), "0 sample"),
        (np.zeros((5, 0)), r"0 feature\(s\) \(shape=\(5, 0\)\) while a minimum of 1 is required"),
        (np.array([["a", "b"], ["c", "d"]]), "must contain numbers"),
        (np.array([[1 + 1j, 0], [0, 1]]), "real-valued"),
        ("not data", "array-like of numbers"),
    ],
)
def test_bad_data_in_fit(data, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(1).fit(data)


def test_object_arrays_of_numbers_are_numbers_and_anything_else_a_type_error():
    X = np.random.default_rng(0).normal(size=(20, 2))
    a = GaussianMixture(1).fit(X.astype(object))
    b = GaussianMixture(1).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    bad = X.astype(object)
    bad[0, 0] = {"a": 1}
    with pytest.raises(TypeError, match="X must contain numbers: float.. argument must be a string or a"):
        GaussianMixture(1).fit(bad)
    scipy_sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="X is a sparse csr_matrix, but torchem needs dense data"):
        GaussianMixture(1).fit(scipy_sparse.csr_matrix(X))


def test_nan_tensor():
    t = torch.tensor(X)
    t[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixture(2).fit(t)


def test_fewer_samples_than_components():
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(5).fit(X[:3])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_components": 0}, "n_components must be an integer >= 1"),
        ({"n_components": 2.5}, "n_components must be an integer"),
        ({"covariance_type": "banana"}, "covariance_type must be one of"),
        ({"init_params": "banana"}, "init_params must be one of"),
        ({"tol": -1.0}, "tol must be"),
        ({"reg_covar": -1e-3}, "reg_covar must be"),
        ({"max_iter": -1}, "max_iter must be"),
        ({"n_init": 0}, "n_init must be"),
        ({"random_state": "seed"}, "random_state must be"),
        ({"chunk_size": 0}, "chunk_size must be"),
        # found by fuzzing: any truthy string warm-started the next fit
        ({"warm_start": "False"}, r"warm_start must be True or False; got 'False'"),
        ({"hard": 1}, "hard must be True or False"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    params = {"n_components": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**params).fit(X)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weights_init": np.array([0.5, 0.6])}, "should be normalized"),
        ({"weights_init": np.array([1.5, -0.5])}, r"range \[0, 1\]"),
        ({"weights_init": np.array([0.2, 0.3, 0.5])}, r"The parameter 'weights' should have the shape of \(2,\), but got \(3,\)\. Pass weights_init"),
        ({"means_init": np.zeros((3, 3))}, r"The parameter 'means' should have the shape of \(2, 3\), but got \(3, 3\)"),
        ({"means_init": np.full((2, 3), np.nan)}, "means_init contains NaN"),
        ({"precisions_init": np.zeros((2, 3, 3))}, "'full precision' should be symmetric, positive-definite"),
        ({"precisions_init": np.stack([np.eye(3), -np.eye(3)])}, "positive-definite: check precisions_init"),
        ({"precisions_init": np.stack([np.eye(3), np.triu(np.ones((3, 3)))])}, "symmetric"),
        ({"precisions_init": np.ones((2, 3))}, r"The parameter 'precisions' should have the shape of \(2, 3, 3\)"),
    ],
)
def test_bad_initial_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(2, **kwargs).fit(X)


@pytest.mark.parametrize("covariance_type, bad", [("diag", -np.ones((2, 3))), ("spherical", np.array([1.0, 0.0]))])
def test_non_positive_diagonal_precisions(covariance_type, bad):
    with pytest.raises(ValueError, match="positive"):
        GaussianMixture(2, covariance_type=covariance_type, precisions_init=bad).fit(X)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score", "score_samples", "bic", "aic"])
def test_use_before_fit(method):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(GaussianMixture(2), method)(X)


def test_attributes_before_fit():
    gm = GaussianMixture(2)
    for name in ["weights_", "means_", "covariances_", "converged_", "n_iter_", "lower_bound_"]:
        assert not hasattr(gm, name)
        with pytest.raises(NotFittedError, match=name):
            getattr(gm, name)
    with pytest.raises(NotFittedError):
        gm.sample(3)


def test_feature_count_mismatch(fitted):
    for method in ["predict", "predict_proba", "score_samples", "score"]:
        with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3 features as input"):
            getattr(fitted, method)(np.zeros((4, 2)))


def test_batch_mismatch(fitted):
    with pytest.raises(ValueError, match="single 2-D problem"):
        fitted.predict(np.zeros((2, 4, 3)))


def test_bad_sample_count(fitted):
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample(0)


def test_nan_at_predict(fitted):
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict(bad)


def test_warm_start_with_other_layout(fitted):
    gm = GaussianMixture(2, warm_start=True, random_state=0).fit(X)
    with pytest.raises(ValueError, match="warm_start"):
        gm.fit(np.zeros((60, 4)) + np.arange(4))


def test_finiteness_check_neither_misses_a_bad_value_nor_refuses_large_finite_data():
    """Finiteness is checked by a sum per block: a NaN or infinity anywhere (here past the
    first block, and +inf with -inf, whose sum is NaN) is refused, and finite values whose sum
    overflows float32 are accepted (the exact check settles them)."""
    from torchem import KMeans

    rng = np.random.default_rng(0)
    X = rng.normal(size=(70_000, 2)).astype(np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        Y = X.copy()
        Y[69_000, 1] = bad
        with pytest.raises(ValueError, match="NaN or infinity"):
            KMeans(2, n_init=1, max_iter=2, random_state=0).fit(Y)
    Y = X.copy()
    Y[0, 0], Y[1, 0] = np.inf, -np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        KMeans(2, n_init=1, max_iter=2, random_state=0).fit(Y)
    big = np.full((6, 1), 3e38, dtype=np.float32)  # the sum overflows; every value is finite
    big[3:] = -3e38
    assert not bool(torch.isfinite(torch.from_numpy(big)[:4].sum()))  # a block sum that overflows
    labels = np.asarray(KMeans(2, n_init=1, max_iter=2, random_state=0).fit(big).labels_)
    assert sorted(np.bincount(labels).tolist()) == [3, 3] and len(set(labels[:3])) == 1
