"""KMeans against scikit-learn's Lloyd K-means from the same initial centres."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans

from torchem import GaussianMixture, KMeans, NotFittedError


def _data(seed=0, n=1500, d=4, k=5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(k, d))
    X = centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))
    init = X[rng.choice(n, k, replace=False)]
    return X, init


@pytest.mark.parametrize("chunk_size, block_entries", [(None, None), (97, None), (None, 1)])
def test_matches_sklearn_lloyd(chunk_size, block_entries, monkeypatch):
    """Also with the bounded pass's distance blocks at their floor of 256 rows (six blocks,
    the last one short), as fits of more rows than one block take them."""
    if block_entries is not None:
        from torchem.cluster.kmeans import _KMeansFamily

        monkeypatch.setattr(_KMeansFamily, "block_entries", block_entries)
    X, init = _data()
    ref = SkKMeans(5, init=init, n_init=1, algorithm="lloyd", tol=1e-4).fit(X)
    ours = KMeans(5, init=init, tol=1e-4, chunk_size=chunk_size).fit(X)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.inertia_, ref.inertia_, rtol=1e-10)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.score(X), ref.score(X), rtol=1e-10)


def test_sample_weight_matches_sklearn():
    X, init = _data(1)
    w = np.random.default_rng(1).uniform(0.1, 3.0, len(X))
    ref = SkKMeans(5, init=init, n_init=1, algorithm="lloyd").fit(X, sample_weight=w)
    ours = KMeans(5, init=init).fit(X, sample_weight=w)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.inertia_, ref.inertia_, rtol=1e-10)
    np.testing.assert_allclose(ours.score(X, sample_weight=w), ref.score(X, sample_weight=w), rtol=1e-10)


@pytest.mark.parametrize("max_iter", [1, 2, 300])
def test_empty_cluster_is_reseeded_like_sklearn(max_iter):
    """Compared after the re-seeding iteration itself, not only at convergence (where a re-seed
    that leaves the moved point in its old cluster too ends at the same centres)."""
    X, init = _data(2)
    init = init.copy()
    init[0] = 1e3  # owns no point in the first iteration
    ref = SkKMeans(5, init=init, n_init=1, algorithm="lloyd", max_iter=max_iter).fit(X)
    ours = KMeans(5, init=init, max_iter=max_iter).fit(X)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert len(np.unique(ours.labels_)) == 5


def test_max_iter_and_tol_match_sklearn():
    X, init = _data(3)
    for max_iter, tol in [(2, 0.0), (5, 0.0), (300, 1e-2)]:
        ref = SkKMeans(5, init=init, n_init=1, algorithm="lloyd", max_iter=max_iter, tol=tol).fit(X)
        ours = KMeans(5, init=init, max_iter=max_iter, tol=tol).fit(X)
        assert ours.n_iter_ == ref.n_iter_
        np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.inertia_, ref.inertia_, rtol=1e-10)


def test_stacked_problems_equal_separate_fits():
    data = [_data(seed) for seed in range(3)]
    X = np.stack([x for x, _ in data])
    init = np.stack([i for _, i in data])
    batched = KMeans(5, init=init).fit(X)
    assert batched.cluster_centers_.shape == (3, 5, 4)
    assert batched.labels_.shape == (3, 1500)
    for b, (x, i) in enumerate(data):
        single = KMeans(5, init=i).fit(x)
        np.testing.assert_allclose(batched.cluster_centers_[b], single.cluster_centers_, rtol=1e-12)
        np.testing.assert_array_equal(batched.labels_[b], single.labels_)
        np.testing.assert_allclose(batched.inertia_[b], single.inertia_, rtol=1e-12)
        assert batched.n_iter_[b] == single.n_iter_
    np.testing.assert_array_equal(batched.predict(X), batched.labels_)


def test_n_init_keeps_lowest_inertia_and_is_reproducible():
    X, _ = _data(4, k=8)
    many = KMeans(8, n_init=6, random_state=0).fit(X)
    one = KMeans(8, n_init=1, random_state=0).fit(X)
    assert many.inertia_ <= one.inertia_ + 1e-9  # restart 0 is the single run's start
    again = KMeans(8, n_init=6, random_state=0).fit(X)
    np.testing.assert_array_equal(many.cluster_centers_, again.cluster_centers_)
    rand = KMeans(8, init="random", random_state=1).fit(X)  # n_init="auto" -> 10 restarts
    rand_one = KMeans(8, init="random", n_init=1, random_state=1).fit(X)
    assert rand.inertia_ <= rand_one.inertia_ + 1e-9


def test_float32_far_from_origin():
    X, init = _data(5)
    X = X + 1e4
    init = init + 1e4
    f64 = KMeans(5, init=init).fit(X)
    f32 = KMeans(5, init=init.astype(np.float32)).fit(X.astype(np.float32))
    np.testing.assert_array_equal(f32.labels_, f64.labels_)
    np.testing.assert_allclose(f32.inertia_, f64.inertia_, rtol=1e-3)


def test_tensor_in_tensor_out_and_state_dict(tmp_path):
    X, init = _data(6)
    t = torch.from_numpy(X).float()
    km = KMeans(5, init=init, random_state=0).fit(t)
    assert isinstance(km.cluster_centers_, torch.Tensor) and isinstance(km.predict(t), torch.Tensor)
    assert isinstance(km.predict(X), np.ndarray)
    path = tmp_path / "km.pt"
    torch.save(km.state_dict(), path)
    fresh = KMeans(5)
    fresh.load_state_dict(torch.load(path))
    torch.testing.assert_close(fresh.cluster_centers_, km.cluster_centers_)
    assert fresh.inertia_ == km.inertia_
    np.testing.assert_array_equal(fresh.predict(X), km.predict(X))


@pytest.mark.parametrize(
    "kwargs, data, match",
    [
        ({"n_clusters": 0}, None, "n_clusters must be"),
        ({"n_clusters": 50}, None, "should be >= n_clusters"),
        ({"init": "banana"}, None, "init must be"),
        ({"init": lambda X, k, random_state: X[:k]}, None, "init as a callable is not supported.*pass the centres"),
        ({"init": np.zeros((3, 3))}, None, "initial centers"),
        ({"n_init": 0}, None, "n_init must be"),
        ({"max_iter": 0}, None, "max_iter must be"),
        ({"tol": -1}, None, "tol must be"),
        ({}, np.array([[np.nan, 0.0]] * 10), "NaN"),
        ({}, np.zeros(10), "1-D"),
    ],
)
def test_bad_input(kwargs, data, match):
    X = np.random.default_rng(0).normal(size=(20, 2)) if data is None else data
    with pytest.raises(ValueError, match=match):
        KMeans(**{"n_clusters": 2, **kwargs}).fit(X)


def test_given_centres_need_no_distinct_points_and_warn_as_sklearn(monkeypatch):
    """Given centres fit data with fewer distinct points than clusters, as scikit-learn's do:
    its labels and inertia, and its ConvergenceWarning (drawn starts too:
    test_drawn_starts_on_too_few_distinct_points_fit_and_warn_as_sklearn). Where every point sits on its centre no point is moved into the empty
    cluster (scikit-learn's rule), which keeps its given centre, so the bounded pass, the dense
    pass (CUDA's) and a stream agree; data with enough distinct points does not warn."""
    from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning

    from torch.utils.data import DataLoader, TensorDataset

    from torchem.cluster.kmeans import _KMeansFamily

    X = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    centres = np.array([[5.0, 5.0], [1.0, 1.0], [0.0, 0.0]])
    match = r"distinct clusters \(2\) found smaller than n_clusters \(3\)"
    with pytest.warns(SkConvergenceWarning, match=match):
        sk = SkKMeans(3, init=centres, n_init=1).fit(X)
    stream = DataLoader(TensorDataset(torch.from_numpy(X)), batch_size=3)
    for dense, data in [(None, X), (True, X), (None, stream)]:
        monkeypatch.setattr(_KMeansFamily, "dense", dense)
        with pytest.warns(SkConvergenceWarning, match=match):
            km = KMeans(3, init=centres).fit(data)
        np.testing.assert_array_equal(np.asarray(km.labels_), sk.labels_)
        np.testing.assert_array_equal(np.asarray(km.cluster_centers_), centres)  # the points' own, and the empty one's
        assert float(km.inertia_) == sk.inertia_ == 0.0
    monkeypatch.setattr(_KMeansFamily, "dense", None)
    # B problems: the count of each, and only when one of them falls short
    spread = X + np.arange(7.0)[:, None]
    with pytest.warns(SkConvergenceWarning, match=r"\(2, 3 in the problems\)"):
        KMeans(3, init=np.stack([centres, centres])).fit(np.stack([X, spread]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        KMeans(3, init=centres).fit(spread)
        KMeans(3, init=np.stack([centres, centres])).fit(np.stack([spread, spread[::-1]]))


def test_tolerance_is_sklearns_and_combines_the_ranks_exactly(monkeypatch):
    """tol's scale, the mean over features of the data's variance, from one float64 pass about
    a reference (the first rows, here far from the rest), equals NumPy's variance in one
    process, and over ranks combines each rank's count, mean and scatter exactly (Chan's
    rule): two shards give the variance of their union."""
    from torchem.cluster import kmeans as km
    from torchem.data import TensorSource

    rng = np.random.default_rng(5)
    X = rng.normal(size=(2, 3000, 5)) * [1.0, 2.0, 3.0, 4.0, 5.0] + 1e4
    X[:, :100] += 40.0
    expected = np.var(X, axis=1).mean(-1) * 1e-4

    def source(rows):
        return TensorSource(torch.from_numpy(rows), device=torch.device("cpu"), dtype=torch.float64, chunk_size=700)

    tol, ref, spread = km._scales(source(X), 1e-4)
    np.testing.assert_allclose(tol.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(spread.numpy(), ((X - ref.numpy()[:, None]) ** 2).sum((1, 2)), rtol=1e-12)
    # weights weigh the inertia's spread, not the tolerance (scikit-learn's is unweighted)
    w = rng.uniform(0.0, 3.0, size=X.shape[:2])
    weighted = TensorSource(torch.from_numpy(X), device=torch.device("cpu"), dtype=torch.float64, chunk_size=700,
                            sample_weight=torch.from_numpy(w))
    tol, ref, spread = km._scales(weighted, 1e-4)
    np.testing.assert_allclose(tol.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(spread.numpy(), (w * ((X - ref.numpy()[:, None]) ** 2).sum(-1)).sum(1), rtol=1e-12)
    shards = [X[:, :1000], X[:, 1000:]]
    local = []
    monkeypatch.setattr(km, "all_gather", lambda t: local.append(t) or [t])
    for shard in shards:
        km._scales(source(shard), 1e-4)
    monkeypatch.setattr(km, "all_gather", lambda t: local)
    tol, _, _ = km._scales(source(shards[0]), 1e-4)
    np.testing.assert_allclose(tol.numpy(), expected, rtol=1e-12)


def test_bad_sample_weight_and_unfitted_use():
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match="sample_weight"):
        KMeans(2).fit(X, sample_weight=-np.ones(20))
    with pytest.raises(ValueError, match="sample_weight"):
        KMeans(2).fit(X, sample_weight=np.ones(5))
    with pytest.raises(NotFittedError):
        KMeans(2).predict(X)
    assert not hasattr(KMeans(2), "cluster_centers_")
    km = KMeans(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="features"):
        km.predict(np.zeros((3, 5)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_large_fit_dense_and_bounded_passes_match_sklearn(dtype):
    """Enough points for several cache blocks in the dense passes and many bounded passes
    after them, with weights: every pass kind must keep Lloyd's exact assignment."""
    X, init = _data(7, n=70_000, d=6, k=40)
    w = np.random.default_rng(7).uniform(0.5, 2.0, len(X))
    X, init = X.astype(dtype), init.astype(dtype)
    ref = SkKMeans(40, init=init.astype(np.float64), n_init=1, algorithm="lloyd", tol=0, max_iter=30)
    ref.fit(X.astype(np.float64), sample_weight=w)
    ours = KMeans(40, init=init, tol=0, max_iter=30).fit(X, sample_weight=w)
    if dtype == np.float64:
        np.testing.assert_array_equal(ours.labels_, ref.labels_)
        np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(ours.inertia_, ref.inertia_, rtol=1e-10)
    else:  # float32 rounding may flip a near-tie or two
        assert (ours.labels_ != ref.labels_).mean() < 1e-3
        np.testing.assert_allclose(ours.inertia_, ref.inertia_, rtol=1e-4)


def test_state_dict_saved_by_torchem_0_1_loads():
    """torchem 0.1 saved K-means' extra state as its own flat dict (no version): it still loads,
    predicts the same and continues with partial_fit."""
    X = np.random.default_rng(0).normal(size=(300, 2))
    km = KMeans(3, random_state=0).fit(X)
    state = km.state_dict()
    state["_extra_state"] = {
        "fitted": True, "batched": False, "batch_size": 1, "output_numpy": True, "n_features_in": 2,
        "labels": torch.as_tensor(km.labels_)[None], "inertia": torch.tensor([km.inertia_], dtype=torch.float64),
        "n_iter": torch.tensor([km.n_iter_]), "n_clusters": 3, "counts": None,
    }
    old = KMeans(3)
    old.load_state_dict(state)
    np.testing.assert_array_equal(old.predict(X), km.predict(X))
    assert old.inertia_ == km.inertia_ and old.n_iter_ == km.n_iter_
    old.partial_fit(X[:10])
    with pytest.raises(ValueError, match="n_clusters=3"):
        KMeans(4).load_state_dict(state)


def test_lower_bound_given_to_callbacks_is_the_exact_mean_squared_distance():
    """In memory (Hamerly's bounded passes) the lower bound of every iteration is minus the
    exact mean squared distance of the assignment, as a streamed fit (the driver's pass)
    computes it: the bounds are not the distances."""
    from torch.utils.data import DataLoader, TensorDataset

    rng = np.random.default_rng(5)
    X = (rng.normal(size=(3000, 2)) + 3.0 * rng.normal(size=(5, 2))[rng.integers(0, 5, 3000)]).astype(np.float32)
    start = X[:5].copy()
    seen = {"memory": [], "stream": []}
    KMeans(5, init=start, max_iter=6, tol=0.0).fit(X, callback=lambda it, lb, m: seen["memory"].append(lb) and False)
    loader = DataLoader(TensorDataset(torch.from_numpy(X)), batch_size=500)
    KMeans(5, init=start, max_iter=6, tol=0.0).fit(loader, callback=lambda it, lb, m: seen["stream"].append(lb) and False)
    first = -(((X[:, None, :].astype(np.float64) - start[None].astype(np.float64)) ** 2).sum(-1).min(1)).mean()
    assert seen["memory"][0] == pytest.approx(first, rel=1e-6)
    np.testing.assert_allclose(seen["memory"], seen["stream"], rtol=1e-6)
    assert all(b >= a - 1e-9 for a, b in zip(seen["memory"], seen["memory"][1:]))  # Lloyd never increases the inertia


@pytest.mark.parametrize("offset", [0.0, 1e8, 1e10])
def test_float64_far_from_the_origin_equals_lloyd(offset):
    """From the same centres, K-means on float64 data at any offset is Lloyd's algorithm (labels,
    inertia, n_iter_) as a NumPy reference computes it on exact differences: the bounded pass
    expands distances about the centres' mean and widens its bounds by the rounding bound."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 2)) + rng.normal(size=(8, 2))[rng.integers(0, 8, 2000)] * 3 + offset
    start = X[rng.choice(2000, 8, replace=False)]
    c, tol = start.copy(), 1e-4 * X.var(0).mean()
    for it in range(1, 101):  # the reference: Lloyd on the given float64 data, exact differences
        lab = ((X[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        new = np.array([X[lab == j].mean(0) if (lab == j).any() else c[j] for j in range(8)])
        shift, c = ((new - c) ** 2).sum(), new
        if shift <= tol:
            break
    d = ((X[:, None] - c[None]) ** 2).sum(-1)
    km = KMeans(8, init=start, n_init=1, max_iter=100, tol=1e-4).fit(X)
    np.testing.assert_array_equal(km.labels_, d.argmin(1))
    assert km.n_iter_ == it
    # what float64 data at this offset can carry: each coordinate is known to eps * offset
    carried = 4 * np.finfo(np.float64).eps * offset
    assert km.inertia_ == pytest.approx(d.min(1).sum(), rel=1e-8 + carried / X.std(0).min())
    # centres: running sums of ~250 points moved in and out, each step rounding at the sum's scale
    np.testing.assert_allclose(km.cluster_centers_, c, rtol=0, atol=1e-9 + 25 * carried)


def test_kmeans_plus_plus_draws_in_proportion_to_the_squared_distance():
    """98 points at 0, then one at -1 and one at 10: after a first centre at 0, k-means++ draws
    10 with probability 100/101 (its squared distance over the total), -1 otherwise. Over 20
    seeds the second centre (seen through a Gaussian mixture's k-means++ start, whose means are
    the chosen points) is 10 nearly always; a draw not scaled by the total mass takes -1."""
    X = np.concatenate([np.zeros((98, 1)), [[-1.0], [10.0]]])
    picks = []
    for seed in range(20):
        start = GaussianMixture(2, init_params="k-means++", random_state=seed).initialize(X)
        picks.append(tuple(np.sort(np.round(start.means_[:, 0], 9))))
    assert sum(p == (0.0, 10.0) for p in picks) >= 18, picks


@pytest.mark.parametrize("k", [3, 11])
def test_float32_fit_is_lloyd_in_float64_from_the_float32_centres(k):
    """Float32 data over several cache blocks, with a number of centres that is not a power of
    two: every assignment is the nearest float32 centre by the exact float64 distance (the
    bounded pass reads the winner from index bits written into the float32 GEMM's entries and
    settles what their rounding cannot), as a NumPy Lloyd that stores its float64 means in
    float32 after each step computes it."""
    rng = np.random.default_rng(k)
    means = rng.normal(size=(k, 5)) * 2.0
    X = (rng.normal(size=(30_000, 5)) + means[rng.integers(0, k, 30_000)]).astype(np.float32)
    start = X[rng.choice(len(X), k, replace=False)]
    X64, c = X.astype(np.float64), start.copy()
    for _ in range(12):  # the reference: exact float64 distances to the float32 centres
        lab = ((X64[:, None] - c.astype(np.float64)[None]) ** 2).sum(-1).argmin(1)
        c = np.stack([X64[lab == j].mean(0) for j in range(k)]).astype(np.float32)
    lab = ((X64[:, None] - c.astype(np.float64)[None]) ** 2).sum(-1).argmin(1)
    km = KMeans(k, init=start, max_iter=12, tol=0.0).fit(X)
    np.testing.assert_array_equal(km.labels_, lab)
    np.testing.assert_allclose(km.cluster_centers_, c, rtol=1e-6, atol=1e-6)
    d = ((X64[:, None] - c.astype(np.float64)[None]) ** 2).sum(-1).min(1)
    assert km.inertia_ == pytest.approx(d.sum(), rel=1e-6)




def test_float32_inertia_is_exact_where_one_squared_distance_overflows_float32():
    """Found by fuzzing: float32 data at 1e20 (each squared distance past float32's range, the
    sum far inside float64's) gave ``inertia_ = inf`` with no warning; the distances of such a
    fit are now taken in float64: scikit-learn's Lloyd on the same data in float64 from the same
    start gives the same inertia."""
    X = (np.random.default_rng(0).normal(size=(20, 2)) * 1e20).astype(np.float32)
    model = KMeans(3, init=X[:3], n_init=1).fit(X)
    X64 = X.astype(np.float64)
    exact = ((X64 - model.cluster_centers_.astype(np.float64)[model.labels_]) ** 2).sum()
    assert np.isfinite(model.inertia_) and model.inertia_ == pytest.approx(exact, rel=1e-12)


def test_data_whose_squares_overflow_float64_is_refused_in_k_means_terms():
    """The refusal speaks of K-means (its inertia, squared distances, how to scale), not of a
    log-likelihood and M-step it does not have."""
    X = np.random.default_rng(0).normal(size=(60, 2)) * 1e200
    with pytest.raises(ValueError, match=r"inertia became NaN.*squared distances of X overflow.*fit X / s"):
        KMeans(2, random_state=0).fit(X)


def test_labels_follow_argmin_on_exact_ties_as_predict_does():
    """Found by fuzzing: with two final centres at the same place, ``labels_`` (and
    ``fit_predict``) kept the higher index where the iterations had left the points, while
    ``predict(X)`` gives the lowest (argmin's rule); the final assignment now sends exact ties to
    the lowest index too, so ``labels_ == predict(X)``."""
    X = np.array([[1.0], [5.0], [1.0], [3.0], [2.0], [4.0], [5.0], [1.0], [1.0], [5.0], [5.0]])
    init = np.array([[4.0], [3.0], [5.0], [5.5], [5.5], [1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer distinct clusters than n_clusters
        model = KMeans(6, init=init, n_init=1).fit(X)
        assert model.cluster_centers_[4, 0] == model.cluster_centers_[5, 0] == 1.0
        np.testing.assert_array_equal(model.labels_, model.predict(X))
        np.testing.assert_array_equal(KMeans(6, init=init, n_init=1).fit_predict(X), model.predict(X))
        assert model.inertia_ == pytest.approx(((X - model.cluster_centers_[model.labels_]) ** 2).sum(), rel=1e-12)


def test_predict_gives_labels_of_labels_dtype():
    """scikit-learn's KMeans gives int32 from labels_, fit_predict and predict alike; predict
    gave int64 here (found by fuzzing)."""
    X = np.random.default_rng(1).normal(size=(60, 2))
    model = KMeans(2, random_state=0).fit(X)
    ref = SkKMeans(2, n_init=1, random_state=0).fit(X)
    assert model.predict(X).dtype == model.labels_.dtype == model.fit_predict(X).dtype == ref.predict(X).dtype == np.int32
    assert KMeans(2, random_state=0).fit(torch.tensor(X)).predict(torch.tensor(X)).dtype == torch.int32


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_drawn_starts_on_too_few_distinct_points_fit_and_warn_as_sklearn(init):
    """scikit-learn fits data with fewer distinct points than n_clusters, its draws repeating
    points, and warns; torchem refused it (so a grid search over n_clusters on rounded data got
    failed fits, and scikit-learn's checks failed on the default KMeans). Now the same: every
    point on a centre (inertia 0), every distinct point a centre, and the warning."""
    from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
    from sklearn.utils.estimator_checks import check_sample_weights_not_overwritten, check_sample_weights_shape

    X = np.repeat([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], [5, 5, 2], axis=0)
    match = r"distinct clusters \(3\) found smaller than n_clusters \(4\)"
    with pytest.warns(SkConvergenceWarning, match=match):
        SkKMeans(4, init=init, n_init=1, random_state=0).fit(X)
    with pytest.warns(SkConvergenceWarning, match=match):
        model = KMeans(4, init=init, random_state=0).fit(X)
    assert model.inertia_ == 0.0
    assert {tuple(c) for c in model.cluster_centers_} == {(0.0, 1.0), (2.0, 3.0), (4.0, 5.0)}
    np.testing.assert_array_equal(model.cluster_centers_[model.labels_], X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_sample_weights_shape("KMeans", KMeans(init=init))  # the default 8 clusters on the check's 12 rows
        check_sample_weights_not_overwritten("KMeans", KMeans(init=init))
