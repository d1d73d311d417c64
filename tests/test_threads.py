"""Chunk-parallel CPU passes (torchem._threads): a fit whose chunks run side by side on three
threads is the fit on one thread, bit for bit (the same chunks, summed in the same order);
the workers run on one intra-op thread each and the caller gets its thread count back;
errors reach the caller and stop the pass; two callers do not wait for each other."""

import threading
import warnings

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans

from torchem import (BernoulliMixture, BinomialMixture, CategoricalMixture, ConvergenceWarning, GaussianMixture, KMeans,
                     PoissonMixture, _threads, em)
from torchem.cluster import kmeans as kmeans_module


def _one_thread_and_three(monkeypatch, fit, attributes):
    """``fit()`` on one thread, then on three (the chunks shared out), asserting that the
    passes did run on three threads and that the fits are the same to the bit."""
    ran = []
    real = _threads.run_ordered

    def counting(items, work, take):
        ran.append(_threads.workers())
        return real(items, work, take)

    monkeypatch.setattr(em, "run_ordered", counting)
    monkeypatch.setattr(kmeans_module, "run_ordered", counting)
    monkeypatch.setattr(_threads, "MIN_ROWS", 100)  # small data shared out too
    own = torch.get_num_threads()
    monkeypatch.setattr(_threads, "enabled", False)
    torch.set_num_threads(1)
    try:
        alone = fit()
    finally:
        torch.set_num_threads(own)
    monkeypatch.setattr(_threads, "enabled", True)
    monkeypatch.setattr(_threads, "workers", lambda: 3)
    monkeypatch.setattr(kmeans_module, "workers", lambda: 3)
    ran.clear()
    shared = fit()
    assert ran and set(ran) == {3}  # every pass of the fit shared among three threads
    for name in attributes:
        np.testing.assert_array_equal(getattr(shared, name), getattr(alone, name), err_msg=name)
    return shared


def _quiet(make):
    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return make()
    return fit


def _blobs(n=900, d=3, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, d))
    return centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))


GAUSSIAN = ["weights_", "means_", "covariances_", "lower_bound_", "n_iter_"]


@pytest.mark.parametrize("covariance_type, options", [
    ("full", "plain"), ("tied", "plain"), ("spherical", "plain"), ("full", "weighted"), ("diag", "labels"),
    ("diag", "hard"), ("full", "missing"), ("full", "float32"),
])
def test_gaussian_fit_on_three_threads_is_the_one_thread_fit(monkeypatch, covariance_type, options):
    X = _blobs()
    kwargs, fit_kwargs = {}, {}
    if options == "weighted":
        fit_kwargs["sample_weight"] = np.random.default_rng(1).uniform(0.0, 2.0, len(X))
    elif options == "labels":
        labels = np.full(len(X), -1)
        labels[::10] = np.random.default_rng(2).integers(0, 3, len(labels[::10]))
        fit_kwargs["labels"] = labels
    elif options == "hard":
        kwargs["hard"] = True
    elif options == "missing":
        X = X.copy()
        X[np.random.default_rng(3).random(X.shape) < 0.05] = np.nan
        kwargs["nan_policy"] = "marginalize"
    elif options == "float32":  # the fused E-step: each thread keeps its GEMM weights and buffers
        X = X.astype(np.float32)
    make = _quiet(lambda: GaussianMixture(3, covariance_type=covariance_type, max_iter=8, tol=0.0, chunk_size=50,
                                          random_state=0, **kwargs).fit(X, **fit_kwargs))
    _one_thread_and_three(monkeypatch, make, GAUSSIAN)


@pytest.mark.parametrize("model", ["bernoulli", "binomial", "poisson", "categorical"])
def test_other_families_on_three_threads_are_the_one_thread_fit(monkeypatch, model):
    rng = np.random.default_rng(4)
    z = rng.integers(0, 2, 600)
    if model == "bernoulli":
        X = (rng.random((600, 6)) < np.where(z[:, None] == 1, 0.8, 0.2)).astype(float)
        make, names = (lambda: BernoulliMixture(2, max_iter=8, tol=0.0, chunk_size=50, random_state=0).fit(X)), ["probs_"]
    elif model == "binomial":
        X = rng.binomial(5, np.where(z[:, None] == 1, 0.7, 0.3), size=(600, 4)).astype(float)
        make, names = (lambda: BinomialMixture(2, n_trials=5, max_iter=8, tol=0.0, chunk_size=50, random_state=0).fit(X)), ["probs_"]
    elif model == "poisson":
        X = rng.poisson(np.where(z[:, None] == 1, 6.0, 1.5), size=(600, 4)).astype(float)
        make, names = (lambda: PoissonMixture(2, max_iter=8, tol=0.0, chunk_size=50, random_state=0).fit(X)), ["rates_"]
    else:
        X = np.where(z[:, None] == 1, rng.integers(0, 2, (600, 5)), rng.integers(1, 4, (600, 5)))
        make, names = (lambda: CategoricalMixture(2, max_iter=8, tol=0.0, chunk_size=50, random_state=0).fit(X)), ["probs_"]
    _one_thread_and_three(monkeypatch, _quiet(make), ["weights_", "lower_bound_", *names])


@pytest.mark.parametrize("dtype, options", [
    (np.float64, "plain"), (np.float32, "plain"), (np.float64, "weighted"), (np.float64, "labels"),
    (np.float64, "restarts"), (np.float32, "stacked"),
])
def test_kmeans_on_three_threads_is_the_one_thread_fit_and_lloyds(monkeypatch, dtype, options):
    """Each thread moves the points of its chunk in sums of its own, added in the chunks'
    order: the same fit, and scikit-learn's Lloyd from the same start."""
    monkeypatch.setattr(kmeans_module._KMeansFamily, "pass_entries", 500)  # chunks of 100 rows
    X = _blobs(n=700, d=4, k=5, seed=5).astype(dtype)
    init = X[np.random.default_rng(6).choice(len(X), 5, replace=False)]
    kwargs, fit_kwargs = {"init": init}, {}
    if options == "weighted":
        fit_kwargs["sample_weight"] = np.random.default_rng(7).uniform(0.1, 3.0, len(X))
    elif options == "labels":
        labels = np.full(len(X), -1)
        labels[:40] = np.arange(40) % 5
        fit_kwargs["labels"] = labels
    elif options == "restarts":
        kwargs = {"init": "k-means++", "n_init": 3, "random_state": 0}
    elif options == "stacked":
        X = np.stack([X, X[::-1] * 0.5 + 1.0])
        kwargs = {"init": "random", "n_init": 2, "random_state": 0}
    make = lambda: KMeans(5, max_iter=30, tol=0.0, chunk_size=100, **kwargs).fit(X, **fit_kwargs)
    fit = _one_thread_and_three(monkeypatch, make, ["labels_", "cluster_centers_", "inertia_", "n_iter_"])
    if options in ("plain", "weighted"):
        ref = SkKMeans(5, init=init.astype(np.float64), n_init=1, algorithm="lloyd", max_iter=30, tol=0.0).fit(
            X.astype(np.float64), **fit_kwargs)
        np.testing.assert_array_equal(fit.labels_, ref.labels_)
        np.testing.assert_allclose(fit.inertia_, ref.inertia_, rtol=1e-6 if dtype == np.float32 else 1e-10)


def test_one_chunk_small_and_streamed_data_run_in_the_caller(monkeypatch, tmp_path):
    ran = []
    real = _threads.run_ordered
    monkeypatch.setattr(em, "run_ordered", lambda *a: ran.append(1) or real(*a))
    monkeypatch.setattr(_threads, "workers", lambda: 3)
    X = _blobs()
    GaussianMixture(3, max_iter=2, tol=0.0, chunk_size=100, random_state=0).fit(X)  # 900 rows: under MIN_ROWS
    monkeypatch.setattr(_threads, "MIN_ROWS", 100)
    GaussianMixture(3, max_iter=2, tol=0.0, random_state=0).fit(X)  # one chunk
    path = tmp_path / "X.npy"
    np.save(path, X)
    GaussianMixture(3, max_iter=2, tol=0.0, chunk_size=100, random_state=0).fit(np.load(path, mmap_mode="r"))
    assert ran == []
    GaussianMixture(3, max_iter=2, tol=0.0, chunk_size=100, random_state=0).fit(X)
    assert ran


def test_workers_run_on_one_thread_and_leave_the_callers_settings(monkeypatch):
    monkeypatch.setattr(_threads, "enabled", True)
    own = torch.get_num_threads()
    torch.set_num_threads(2)  # the caller's count: two threads share the items
    try:
        together = threading.Barrier(2, timeout=30)  # broken unless two items run at once
        seen = []

        def work(item):
            if item < 2:
                together.wait()
            return torch.get_num_threads(), torch.is_grad_enabled(), _threads.workers()

        with torch.no_grad():
            _threads.run_ordered(range(6), work, seen.append)
        assert len(seen) == 6
        assert {t for t, _, _ in seen} == {1}  # every item on one intra-op thread
        assert {g for _, g, _ in seen} == {False}  # the caller's grad mode
        assert {w for _, _, w in seen} == {1}  # a pass started inside a pass runs where it is
        assert torch.get_num_threads() == 2 and torch.is_grad_enabled()
        later = []
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert later == [2]  # a thread started afterwards gets the process's count, not the workers' 1
    finally:
        torch.set_num_threads(own)


def test_results_are_taken_in_order_and_the_earliest_error_is_raised(monkeypatch):
    monkeypatch.setattr(_threads, "workers", lambda: 3)
    taken = []

    def work(i):
        threading.Event().wait(0.01 * ((7 * i) % 5))  # finish out of order
        return i

    _threads.run_ordered(range(20), work, taken.append)
    assert taken == list(range(20))

    def failing(i):
        if i in (5, 9):
            raise ValueError(f"chunk {i}")
        return i

    taken.clear()
    with pytest.raises(ValueError, match="chunk 5"):
        _threads.run_ordered(range(20), failing, taken.append)
    assert taken == list(range(len(taken))) and len(taken) <= 5  # in order, none past the error


def test_errors_reading_items_or_taking_results_stop_the_pass(monkeypatch):
    monkeypatch.setattr(_threads, "workers", lambda: 3)
    done = []

    def items():
        yield from range(5)
        raise ValueError("the source")

    with pytest.raises(ValueError, match="the source"):
        _threads.run_ordered(items(), lambda i: done.append(i) or i, lambda r: None)
    assert sorted(done) == list(range(5))

    done.clear()

    def take(r):
        if r == 3:
            raise RuntimeError("taking 3")

    with pytest.raises(RuntimeError, match="taking 3"):
        _threads.run_ordered(range(200), lambda i: done.append(i) or threading.Event().wait(0.002) or i, take)
    assert len(done) < 200  # no item started once the error was known, but those under way


def test_a_pass_does_not_wait_for_another_callers_pass(monkeypatch):
    """Two threads fitting at once share the workers; neither waits for the other's pass."""
    monkeypatch.setattr(_threads, "workers", lambda: 3)
    busy, finished = threading.Event(), []
    slow = threading.Thread(target=lambda: _threads.run_ordered(range(3), lambda i: busy.set() or threading.Event().wait(0.8),
                                                                  lambda r: None))
    slow.start()
    busy.wait(10)
    quick = threading.Thread(target=lambda: finished.append(_threads.run_ordered(range(4), lambda i: i, lambda r: None)))
    quick.start()
    quick.join(0.5)  # the slow pass takes 0.8 s
    done_early = not quick.is_alive()
    slow.join()
    quick.join()
    assert done_early and finished == [None]


def test_autocast_does_not_reach_the_passes(monkeypatch):
    """Autocast is a per-thread setting: the passes turn it off, so a fit under
    ``torch.autocast`` is the fit without it, on one thread and on three."""
    X = _blobs()
    make = _quiet(lambda: GaussianMixture(3, max_iter=5, tol=0.0, chunk_size=50, random_state=0).fit(X))
    plain = _one_thread_and_three(monkeypatch, make, GAUSSIAN)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = make()
    for name in GAUSSIAN:
        np.testing.assert_array_equal(getattr(under, name), getattr(plain, name), err_msg=name)


def test_a_forked_child_gets_fresh_workers(monkeypatch):
    first = _threads._pool(2)
    monkeypatch.setattr(_threads, "_pid", -1)  # as a child of fork() sees its parent's pools
    second = _threads._pool(2)
    assert second is not first
    assert second.submit(lambda: 3).result(timeout=10) == 3
