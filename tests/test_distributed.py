"""torch.distributed: two gloo processes on CPU, each with half the data, end with identical
parameters equal to the single-process fit on the concatenation; disagreeing ranks raise
the same clear error; a rank that dies mid-fit makes the other fail instead of hanging."""

import datetime
import os
import re
import time
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from torchem import BayesianGaussianMixture, BernoulliMixture, GaussianMixture, GaussianMixtureIC, KMeans
from torchem.distributed import consistent_count

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")


def _data():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [0.0, 5.0, 5.0]])
    X = rng.normal(size=(600, 3)) + centres[rng.integers(0, 3, 600)]
    B = (rng.random((600, 5)) < np.array([0.2, 0.8, 0.5, 0.1, 0.9])[None] * (1 + (np.arange(600) % 2)[:, None]) / 2).astype(float)
    return X, B


def _models():
    return {
        "gmm": lambda: GaussianMixture(3, covariance_type="full", n_init=2, random_state=0, chunk_size=64),
        "kmeans": lambda: KMeans(3, n_init=2, init="random", random_state=0, chunk_size=64),
        "bernoulli": lambda: BernoulliMixture(2, random_state=0, chunk_size=64),
        # its priors come from the data: one more pass, summed over the ranks
        "bgmm": lambda: BayesianGaussianMixture(4, weight_concentration_prior=0.01, n_init=2, random_state=0, chunk_size=64),
    }


def _stream_models():
    return {"gmm": GaussianMixture(3, covariance_type="diag", random_state=0), "kmeans": KMeans(3, random_state=0),
            "bgmm": BayesianGaussianMixture(3, covariance_type="tied", random_state=0)}


def _with_nan(X):
    """``X`` with 20% of its entries missing at random (every row keeps one)."""
    holes = np.random.default_rng(12).random(X.shape) < 0.2
    holes[holes.all(1), 0] = False
    return np.where(holes, np.nan, X)


def _missing_model():
    return GaussianMixture(3, covariance_type="full", random_state=0, chunk_size=64, nan_policy="marginalize")


def _weights():
    return np.random.default_rng(11).integers(0, 4, 600).astype(np.float64)


def _weighted_model():
    return GaussianMixture(3, covariance_type="full", n_init=2, random_state=0, chunk_size=64)


def _ic_model():
    return GaussianMixtureIC((1, 2, 3), covariance_type=("full", "diag"), random_state=0, chunk_size=64)


def _ic_params(ic):
    return {"bic": ic.bic_, "n_iter": ic.n_iter_, "means": ic.best_estimator_.means_}


def _labels():
    """Partial labels of the first half (rank 0's shard) only: rank 1 passes none."""
    labels = np.full(600, -1)
    labels[:300:10] = np.random.default_rng(3).integers(0, 3, 30)
    return labels


def _empty_cluster_kmeans(max_iter):
    init = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [0.0, 5.0, 5.0], [1e3, 1e3, 1e3]])  # the last owns no point
    return KMeans(4, init=init, n_init=1, max_iter=max_iter, chunk_size=64)


def _batches(X):
    rng = np.random.default_rng(7)
    return [X[rng.permutation(len(X))[:200]] for _ in range(5)]


def _params(model):
    if isinstance(model, KMeans):
        return {"centers": np.asarray(model.cluster_centers_), "inertia": np.asarray(model.inertia_)}
    if isinstance(model, BernoulliMixture):
        return {"probs": np.asarray(model.probs_), "weights": np.asarray(model.weights_), "lb": np.asarray(model.lower_bound_)}
    return {"means": model.means_, "cov": model.covariances_, "weights": model.weights_, "lb": np.asarray(model.lower_bound_)}


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=20))
    X, B = _data()
    half = slice(rank * 300, (rank + 1) * 300)
    results = {}
    for name, make in _models().items():
        data = X[half] if name != "bernoulli" else DataLoader(TensorDataset(torch.from_numpy(B[half])), batch_size=40)
        results[name] = _params(make().fit(data))
    # one rank streams its shard from a memmap, the other holds it in memory
    shard = X[half]
    if rank == 1:
        mm = np.lib.format.open_memmap(f"{out_dir}/shard{rank}.npy", mode="w+", dtype=shard.dtype, shape=shard.shape)
        mm[:] = shard
        mm.flush()
        shard = np.load(f"{out_dir}/shard{rank}.npy", mmap_mode="r")
    results["mixed-sources"] = _params(_models()["gmm"]().fit(shard))
    # the model-selection grid: each rank holds its half
    results["ic"] = _ic_params(_ic_model().fit(X[half]))
    # sample weights: each rank passes the weights of its half
    results["weighted-gmm"] = _params(_weighted_model().fit(X[half], sample_weight=_weights()[half]))
    # missing values: each rank marginalises its half's NaN entries; omit counts every rank's rows
    results["missing-gmm"] = _params(_missing_model().fit(_with_nan(X)[half]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GaussianMixture(3, random_state=0, nan_policy="omit").fit(_with_nan(X)[half])
    results["omit-warnings"] = [str(w.message) for w in caught if "left out" in str(w.message)]
    # partial labels: rank 0 passes the labels of its half, rank 1 none
    for name in ("gmm", "kmeans"):
        results["labelled-" + name] = _params(_models()[name]().fit(X[half], labels=_labels()[half] if rank == 0 else None))
    # partial_fit: each rank passes its half of every batch
    for name, model in _stream_models().items():
        for batch in _batches(X):
            model.partial_fit(batch[rank * 100 : (rank + 1) * 100])
        results["partial-" + name] = _params(model)
    # an empty cluster re-seeded from the farthest point of all the ranks (not of each rank's own)
    for max_iter in (1, 300):
        results[f"kmeans-empty-{max_iter}"] = _params(_empty_cluster_kmeans(max_iter).fit(X[half]))
    # initial sampling that missed a rare distinct point (it lies on rank 0 only) still seeds
    # every cluster: the distinct rows of every rank's shard are gathered
    import torchem.data as data_module

    saved, data_module.INIT_SAMPLE_SIZE = data_module.INIT_SAMPLE_SIZE, 20
    try:
        rare = np.full((300, 2), float(rank))
        if rank == 0:
            rare[123] = 5.0
        results["distinct"] = sorted(map(tuple, np.round(KMeans(3, random_state=3, n_init=1).fit(rare).cluster_centers_, 9)))
    except ValueError as exc:
        results["distinct"] = str(exc)
    finally:
        data_module.INIT_SAMPLE_SIZE = saved
    # disagreeing ranks: every rank gets the same clear error
    for case in ("features", "dtype", "settings", "bad values"):
        Xr = X[half]
        model = GaussianMixture(3, random_state=0)
        if case == "features" and rank == 1:
            Xr = Xr[:, :2]
        if case == "dtype" and rank == 1:
            Xr = Xr.astype(np.float32)
        if case == "settings" and rank == 1:
            model.set_params(covariance_type="diag")
        if case == "bad values" and rank == 1:
            Xr = Xr.copy()
            Xr[3, 0] = np.nan
        try:
            model.fit(Xr)
            results[case] = "no error"
        except ValueError as exc:
            results[case] = str(exc)
    # a callback that stops the fit on one rank stops it on every rank
    def stop_on_rank0(it, lb, model):
        return rank == 0 and it == 3

    stopped = GaussianMixture(3, random_state=0, tol=0.0, max_iter=50).fit(X[half], callback=stop_on_rank0)
    results["callback-stop"] = {"n_iter": stopped.n_iter_, **_params(stopped)}
    # ranks in different states (one continues its fit, one starts afresh) are refused
    model = GaussianMixture(3, random_state=0, warm_start=True)
    if rank == 0:
        with no_process_group():
            model.fit(X[half])
    try:
        model.fit(X[half])
        results["state"] = "no error"
    except ValueError as exc:
        results["state"] = str(exc)
    # the sample count crosses the ranks exactly above 2**24 (float32 would round it)
    results["count"] = consistent_count({"same": 1}, None, 2**24 + 1 + rank, torch.device("cpu"))
    # partial_fit: the full (object) handshake on a stream's first batch only; a later batch
    # that one rank cannot read still raises the same error on every rank
    gathers = []
    real_gather = dist.all_gather_object
    dist.all_gather_object = lambda *a, **k: (gathers.append(1), real_gather(*a, **k))[1]
    try:
        model = KMeans(3, random_state=0)
        for i, batch in enumerate(_batches(X)):
            part = batch[rank * 100 : (rank + 1) * 100]
            if i == 4 and rank == 1:
                part = part.copy()
                part[5, 1] = np.inf
            try:
                model.partial_fit(part)
                results.setdefault("later-batches", []).append(len(gathers))
            except ValueError as exc:
                results["later-error"] = str(exc)
    finally:
        dist.all_gather_object = real_gather
    # a rank that fails mid-fit: the other must fail too (not hang)
    start = time.perf_counter()

    def die(it, lb, model):
        if rank == 1 and it == 2:
            raise RuntimeError("rank 1 died")

    try:
        GaussianMixture(3, random_state=0, tol=0.0, max_iter=50).fit(X[half], callback=die)
        results["failure"] = "no error"
    except Exception as exc:  # noqa: BLE001 (whatever the backend raises)
        results["failure"] = f"{type(exc).__name__}: {exc}"
    results["failure_seconds"] = time.perf_counter() - start
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    # leave at once: after the deliberate failure the process group is broken, and its
    # destructor may abort the process
    os._exit(0)


class no_process_group:
    """Make torchem see no process group for a while (a fit local to one rank)."""

    def __enter__(self):
        self._saved = dist.is_initialized
        dist.is_initialized = lambda: False

    def __exit__(self, *exc):
        dist.is_initialized = self._saved


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("name", ["gmm", "kmeans", "bernoulli", "bgmm"])
def test_ranks_agree_with_the_single_process_fit(ranks, name):
    X, B = _data()
    single = _params(_models()[name]().fit(X if name != "bernoulli" else B))
    for key, value in single.items():
        np.testing.assert_array_equal(ranks[0][name][key], ranks[1][name][key])  # identical on every rank
        np.testing.assert_allclose(ranks[0][name][key], value, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("max_iter", [1, 300])
def test_an_empty_cluster_is_reseeded_from_the_farthest_point_of_all_ranks(ranks, max_iter):
    """Each rank holds half the data; after the iteration that re-seeds the empty cluster (and at
    convergence) the ranks agree with each other and with the single-process fit."""
    X, _ = _data()
    single = _params(_empty_cluster_kmeans(max_iter).fit(X))
    name = f"kmeans-empty-{max_iter}"
    for key, value in single.items():
        np.testing.assert_array_equal(ranks[0][name][key], ranks[1][name][key])
        np.testing.assert_allclose(ranks[0][name][key], value, rtol=1e-9, atol=1e-12)


def test_initial_sampling_never_refuses_enough_distinct_points_over_the_ranks(ranks):
    assert ranks[0]["distinct"] == ranks[1]["distinct"] == [(0, 0), (1, 1), (5, 5)]


def test_ranks_streaming_and_in_memory_agree_with_the_single_process_fit(ranks):
    X, _ = _data()
    single = _params(_models()["gmm"]().fit(X))
    for key, value in single.items():
        np.testing.assert_array_equal(ranks[0]["mixed-sources"][key], ranks[1]["mixed-sources"][key])
        np.testing.assert_allclose(ranks[0]["mixed-sources"][key], value, rtol=1e-9, atol=1e-12)


def test_model_selection_grid_over_ranks_equals_the_single_process_grid(ranks):
    X, _ = _data()
    single = _ic_params(_ic_model().fit(X))
    for key, value in single.items():
        np.testing.assert_array_equal(ranks[0]["ic"][key], ranks[1]["ic"][key])
        np.testing.assert_allclose(ranks[0]["ic"][key], value, rtol=1e-9, atol=1e-12)


def test_weighted_fit_over_ranks_equals_the_single_process_fit(ranks):
    X, _ = _data()
    single = _params(_weighted_model().fit(X, sample_weight=_weights()))
    for key, value in single.items():
        np.testing.assert_array_equal(ranks[0]["weighted-gmm"][key], ranks[1]["weighted-gmm"][key])
        np.testing.assert_allclose(ranks[0]["weighted-gmm"][key], value, rtol=1e-9, atol=1e-12)


def test_missing_values_over_ranks_equal_the_single_process_fit(ranks):
    X = _with_nan(_data()[0])
    single = _params(_missing_model().fit(X))
    for key, value in single.items():
        np.testing.assert_array_equal(ranks[0]["missing-gmm"][key], ranks[1]["missing-gmm"][key])
        np.testing.assert_allclose(ranks[0]["missing-gmm"][key], value, rtol=1e-9, atol=1e-12)
    total = int(np.isnan(X).any(1).sum())  # every rank warns with the count over all ranks
    assert ranks[0]["omit-warnings"] == ranks[1]["omit-warnings"] == [
        f"{total} row(s) of X hold NaN and were left out of the fit (nan_policy='omit')."]


@pytest.mark.parametrize("name", ["gmm", "kmeans"])
def test_labelled_fit_over_ranks_equals_the_single_process_fit(ranks, name):
    X, _ = _data()
    single = _params(_models()[name]().fit(X, labels=_labels()))
    for key, value in single.items():
        np.testing.assert_array_equal(ranks[0]["labelled-" + name][key], ranks[1]["labelled-" + name][key])
        np.testing.assert_allclose(ranks[0]["labelled-" + name][key], value, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["gmm", "kmeans", "bgmm"])
def test_partial_fit_over_ranks_equals_partial_fit_on_whole_batches(ranks, name):
    X, _ = _data()
    model = _stream_models()[name]
    for batch in _batches(X):
        model.partial_fit(batch)
    for key, value in _params(model).items():
        np.testing.assert_array_equal(ranks[0]["partial-" + name][key], ranks[1]["partial-" + name][key])
        np.testing.assert_allclose(ranks[0]["partial-" + name][key], value, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "case, match",
    [
        ("features", "n_features: 3 on rank 0 but 2 on rank 1"),
        ("dtype", "dtype: 'torch.float64' on rank 0 but 'torch.float32' on rank 1"),
        ("settings", "covariance_type: \"'full'\" on rank 0 but \"'diag'\" on rank 1"),
        ("bad values", "rank 1: ValueError: .*NaN"),
    ],
)
def test_disagreeing_ranks_raise_the_same_error(ranks, case, match):
    assert ranks[0][case] == ranks[1][case]
    assert ranks[0][case] != "no error"
    assert re.search(match, ranks[0][case]), ranks[0][case]


def test_a_callback_stopping_one_rank_stops_all(ranks):
    assert ranks[0]["callback-stop"]["n_iter"] == ranks[1]["callback-stop"]["n_iter"] == 3
    for key in ("means", "cov", "weights"):
        np.testing.assert_array_equal(ranks[0]["callback-stop"][key], ranks[1]["callback-stop"][key])


def test_ranks_in_different_fitted_states_raise_the_same_error(ranks):
    assert ranks[0]["state"] == ranks[1]["state"]
    assert "continues_fit: False on rank 0 but True on rank 1" in ranks[0]["state"] or "continues_fit: True on rank 0 but False on rank 1" in ranks[0]["state"]


def test_a_rank_failing_mid_fit_fails_the_others(ranks):
    assert ranks[1]["failure"] == "RuntimeError: rank 1 died"
    assert ranks[0]["failure"] != "no error"  # the survivor raised instead of hanging
    assert ranks[0]["failure_seconds"] < 60


def test_the_sample_count_is_exact_above_float32s_integers(ranks):
    assert ranks[0]["count"] == ranks[1]["count"] == 2 * (2**24 + 1) + 1


def test_partial_fit_exchanges_objects_on_the_first_batch_only(ranks):
    # the first batch's handshake gathers objects once; the next three batches none
    assert ranks[0]["later-batches"] == ranks[1]["later-batches"] == [1, 1, 1, 1]
    # the fifth batch: rank 1 could not read its part, and both ranks say so
    assert ranks[0]["later-error"] == ranks[1]["later-error"]
    assert re.search("rank 1: ValueError: .*NaN or infinity", ranks[0]["later-error"]), ranks[0]["later-error"]
