"""The CUDA path's host side, proven on the CPU: streaming copies, the working dtype of
integer input, K-means' dense pass, the distributed collectives' device (CUDA-marked
tests in tests/test_cuda.py run the same on a GPU)."""

import tracemalloc

import numpy as np
import pytest
import torch

import torchem
from torchem import BernoulliMixture, GaussianMixture, KMeans
from torchem.data import HostStreamSource, describe, working_dtype


def _memmap(tmp_path, X):
    np.save(tmp_path / "X.npy", X)
    return np.load(tmp_path / "X.npy", mmap_mode="r")  # read-only


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_read_only_memmap_chunks_are_copied_once(tmp_path, dtype):
    """A chunk of a read-only memmap goes straight into the chunk tensor: numpy allocates no
    copy of its own (tracemalloc sees numpy's buffers, not torch's), and the values are the
    memmap's."""
    rng = np.random.default_rng(0)
    X = (rng.random((4096, 64)) * 2).astype(dtype)
    mm = _memmap(tmp_path, X)
    source = HostStreamSource(mm, device=torch.device("cpu"), dtype=torch.float32, chunk_size=1024)
    chunk_bytes = 1024 * 64 * np.dtype(dtype).itemsize
    tracemalloc.start()
    try:
        got = [X_chunk.clone() for _, X_chunk, _ in source.chunks()]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < chunk_bytes / 4, peak  # the old np.array(part) made a whole chunk each time
    np.testing.assert_array_equal(torch.cat(got, 1)[0].numpy(), X.astype(np.float32))


def test_writable_memmap_in_the_compute_dtype_is_read_in_place(tmp_path):
    X = np.arange(600, dtype=np.float64).reshape(200, 3)
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r+")
    source = HostStreamSource(mm, device=torch.device("cpu"), dtype=torch.float64, chunk_size=64)
    chunks = [c for _, c, _ in source.chunks()]
    assert chunks[1].data_ptr() == mm[64:].ctypes.data  # a view: no copy at all
    np.testing.assert_array_equal(torch.cat(chunks, 1)[0].numpy(), X)


def test_weighted_memmap_stream_equals_in_memory(tmp_path):
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + 6])
    w = rng.random(600) + 0.5
    with pytest.warns(UserWarning, match="did not converge"):  # tol=0: all 5 iterations
        ref = GaussianMixture(2, random_state=0, tol=0, max_iter=5).fit(X, sample_weight=w)
    with pytest.warns(UserWarning, match="did not converge"):
        ours = GaussianMixture(2, random_state=0, tol=0, max_iter=5, chunk_size=128).fit(_memmap(tmp_path, X), sample_weight=w)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-10)
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-12)


# ------------------------------------------------------------------------------------------
# The working dtype of integer and boolean input
# ------------------------------------------------------------------------------------------

CUDA, CPU = torch.device("cuda"), torch.device("cpu")  # device objects only: no GPU needed


@pytest.mark.parametrize("make", [
    lambda tmp: np.ones((10, 3), dtype=np.uint8),
    lambda tmp: _memmap(tmp, np.ones((10, 3), dtype=np.uint8)),
    lambda tmp: np.ones((10, 3), dtype=bool),
    lambda tmp: torch.ones(10, 3, dtype=torch.int64),
    lambda tmp: torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(10, 3, dtype=torch.uint8)), batch_size=4),
])
def test_integer_input_works_in_the_models_dtype_on_cuda(tmp_path, make):
    info = describe(make(tmp_path))
    assert info.integral
    assert working_dtype(info, CUDA, torch.float32) == torch.float32  # not scikit-learn's float64
    assert working_dtype(info, CUDA, torch.float64) == torch.float64  # a model made float64
    # on the CPU: scikit-learn's float64 for numpy, torch's default dtype for tensors
    assert working_dtype(info, CPU, torch.float32) == info.dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_input_keeps_its_dtype_everywhere(dtype):
    info = describe(np.ones((10, 3), dtype=dtype))
    assert not info.integral
    for device in (CPU, CUDA):
        assert working_dtype(info, device, torch.float32) == torch.from_numpy(np.ones(1, dtype)).dtype
        assert working_dtype(info, device, torch.float64) == torch.float64


def test_integer_input_on_cpu_fits_as_scikit_learn(tmp_path):
    """The CPU keeps scikit-learn's float64 for integer numpy input, in fit and partial_fit."""
    rng = np.random.default_rng(0)
    X = (rng.random((300, 6)) < 0.3).astype(np.uint8)
    ref = BernoulliMixture(2, random_state=0).fit(X.astype(np.float64))
    ours = BernoulliMixture(2, random_state=0).fit(X)
    assert ours.probs_.dtype == np.float64
    np.testing.assert_array_equal(ours.probs_, ref.probs_)
    online = BernoulliMixture(2, random_state=0).partial_fit(X[:150]).partial_fit(X[150:])
    ref_online = BernoulliMixture(2, random_state=0).partial_fit(X[:150].astype(float)).partial_fit(X[150:].astype(float))
    assert online.probs_.dtype == np.float64
    np.testing.assert_array_equal(online.probs_, ref_online.probs_)


# ------------------------------------------------------------------------------------------
# K-means' dense pass (the CUDA default), forced on the CPU
# ------------------------------------------------------------------------------------------

def _blobs(n=2000, d=4, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) + rng.normal(size=(6, d))[rng.integers(0, 6, n)] * 3 + offset


@pytest.mark.parametrize("case", ["float64", "float32", "restarts-stacked-weighted", "offset-1e8", "partial-labels"])
def test_dense_pass_equals_the_bounded_pass(monkeypatch, case):
    """The dense GEMM + argmin pass that CUDA takes gives Hamerly's bounded pass's labels,
    n_iter_ and inertia: for float32 data, for restarts of stacked problems with weights, and
    far from the origin (the two best candidates are settled on exact differences)."""
    X, kw, w = _blobs(), {}, None
    if case == "float32":
        X = X.astype(np.float32)
    if case == "restarts-stacked-weighted":
        X = np.stack([X, _blobs(seed=1)])
        w = np.random.default_rng(2).uniform(0.2, 3.0, (2, X.shape[1]))
        kw = dict(init="random", n_init=3)
    if case == "offset-1e8":
        X = _blobs(offset=1e8)
    fit_kw = {}
    if case == "partial-labels":  # seeded k-means: a fifth of the rows keep a given cluster
        y = np.random.default_rng(3).integers(0, 6, len(X))
        fit_kw["labels"] = np.where(np.arange(len(X)) % 5 == 0, y, -1)
    fits = []
    for dense in (False, True):
        monkeypatch.setattr(torchem.cluster.kmeans._KMeansFamily, "dense", dense)
        fits.append(KMeans(6, random_state=0, chunk_size=500, **kw).fit(X, sample_weight=w, **fit_kw))
    bounded, ours = fits
    np.testing.assert_array_equal(ours.labels_, bounded.labels_)
    np.testing.assert_array_equal(ours.n_iter_, bounded.n_iter_)
    np.testing.assert_allclose(ours.inertia_, bounded.inertia_, rtol=1e-11)
    scale = 1e-6 if case == "offset-1e8" else 1e-12  # running float64 sums of values ~1e8 round at ~1e-8 a step
    np.testing.assert_allclose(ours.cluster_centers_, bounded.cluster_centers_, rtol=0, atol=scale)


def test_dense_iterations_are_numpy_lloyd_steps(monkeypatch):
    """Three dense iterations from given centres on float32 data equal a NumPy Lloyd on
    exact float64 differences (centres and the exact inertia)."""
    monkeypatch.setattr(torchem.cluster.kmeans._KMeansFamily, "dense", True)
    X = _blobs(d=3).astype(np.float32)
    start = X[:6].copy()
    c, X64 = start.astype(np.float64), X.astype(np.float64)
    for _ in range(3):
        lab = ((X64[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        c = np.array([X64[lab == j].mean(0) if (lab == j).any() else c[j] for j in range(6)])
    km = KMeans(6, init=start, max_iter=3, tol=0.0, chunk_size=300).fit(X)
    np.testing.assert_allclose(km.cluster_centers_, c, rtol=1e-6, atol=1e-6)  # stored in float32
    d = ((X64[:, None] - km.cluster_centers_.astype(np.float64)[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(km.labels_, d.argmin(1))
    assert km.inertia_ == pytest.approx(d.min(1).sum(), rel=1e-6)  # final distances in float32


@pytest.mark.parametrize("stream", [False, True])
def test_kmeans_keeps_only_the_best_restarts_labels_as_int32(tmp_path, stream):
    """The labels kept after a fit of 4 restarts are the best one's, [1, N] int32 (a stream's
    on the host: device memory does not grow with N); labels_ is int32, as scikit-learn's."""
    X = _blobs()
    data = _memmap(tmp_path, X) if stream else X
    km = KMeans(6, init="random", n_init=4, random_state=0, chunk_size=500).fit(data)
    kept = km.state_dict()["_extra_state"]["model"]["labels"]
    assert kept.dtype == torch.int32 and tuple(kept.shape) == (1, len(X)) and kept.device.type == "cpu"
    assert km.labels_.dtype == np.int32
    np.testing.assert_array_equal(km.labels_, km.predict(X))


def test_lloyd_stats_scatter_adds_equal_the_one_hot_product():
    """The K-means statistics (scatter-adds, no float64 one-hot GEMM) equal a NumPy one-hot
    reference, with weights and restarts broadcast against shared samples."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(2, 1, 50, 3)).astype(np.float32)
    labels = rng.integers(0, 4, (2, 3, 50))
    w = rng.uniform(0.1, 2.0, (2, 1, 50))
    counts, sums = torchem.functional.kmeans.lloyd_stats(torch.from_numpy(X), torch.from_numpy(labels), 4, torch.from_numpy(w))
    onehot = np.eye(4)[labels] * w[..., None]  # [2, 3, 50, 4]
    np.testing.assert_allclose(counts.numpy(), onehot.sum(-2), rtol=1e-13)
    np.testing.assert_allclose(sums.numpy(), np.swapaxes(onehot, -1, -2) @ X.astype(np.float64), rtol=1e-12, atol=1e-12)
    assert counts.dtype == sums.dtype == torch.float64
