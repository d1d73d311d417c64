"""Out-of-core fits: np.memmap and re-iterable (DataLoader) sources give the in-memory result;
initialisation from a reservoir sample; progress bar and callbacks; bad streamed input."""

import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import torchem.data
from torchem import BernoulliMixture, BinomialMixture, GaussianMixture, KMeans
from torchem.data import HostStreamSource, IterableSource, TensorSource, reservoir_sample

rng0 = np.random.default_rng(0)
CENTRES = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [0.0, 5.0, 5.0]])


def _gauss(n, rng=rng0):
    return rng.normal(size=(n, 3)) + CENTRES[rng.integers(0, 3, n)]


def _counts(n, trials, rng=rng0):
    probs = np.array([[0.1, 0.8, 0.3, 0.6, 0.2], [0.7, 0.2, 0.9, 0.4, 0.5], [0.4, 0.5, 0.1, 0.9, 0.8]])
    return rng.binomial(trials, probs[rng.integers(0, 3, n)]).astype(np.float64)


X_GAUSS = _gauss(600)
X_BIN = _counts(600, 1)
X_COUNTS = _counts(600, 4)

# (factory, data, attribute compared)
MODELS = {
    "gmm-full-kmeans": (lambda: GaussianMixture(3, covariance_type="full", random_state=0, chunk_size=128), X_GAUSS, "means_"),
    "gmm-diag-random": (lambda: GaussianMixture(3, covariance_type="diag", init_params="random", random_state=1, chunk_size=128), X_GAUSS, "covariances_"),
    "gmm-tied-kmeans++": (lambda: GaussianMixture(3, covariance_type="tied", init_params="k-means++", random_state=2, chunk_size=128), X_GAUSS, "covariances_"),
    "kmeans": (lambda: KMeans(3, random_state=0, chunk_size=128), X_GAUSS, "cluster_centers_"),
    "kmeans-random-restarts": (lambda: KMeans(3, init="random", n_init=3, random_state=0, chunk_size=128), X_GAUSS, "cluster_centers_"),
    "bernoulli": (lambda: BernoulliMixture(3, random_state=0, chunk_size=128), X_BIN, "probs_"),
    "binomial-from-data": (lambda: BinomialMixture(3, n_trials=4, init_params="random_from_data", random_state=0, chunk_size=128), X_COUNTS, "probs_"),
}


def _memmap(tmp_path, X):
    path = tmp_path / "X.npy"
    np.save(path, X)
    return np.load(path, mmap_mode="r")


class _Weighted(torch.utils.data.Dataset):
    """Rows with their weights as mapping batches, the one way a stream carries weights."""

    def __init__(self, X, w):
        self.X, self.w = X, w

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return {"X": self.X[i], "sample_weight": self.w[i]}


def _loader(X, batch_size=50, weights=None):
    if weights is not None:
        return DataLoader(_Weighted(torch.from_numpy(X), torch.from_numpy(weights)), batch_size=batch_size)
    return DataLoader(TensorDataset(torch.from_numpy(X)), batch_size=batch_size)


def _value(model, attr):
    v = getattr(model, attr)
    return v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("kind", ["memmap", "dataloader"])
def test_streamed_fit_equals_in_memory_fit(name, kind, tmp_path):
    """Data no larger than the initialisation sample is sampled whole, so the streamed fit
    starts where the in-memory one does and, reading the same chunks, ends identically."""
    make, X, attr = MODELS[name]
    ref = make().fit(X)
    data = _memmap(tmp_path, X) if kind == "memmap" else _loader(X)
    ours = make().fit(data)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(_value(ours, attr), _value(ref, attr), rtol=1e-10, atol=1e-12)
    if isinstance(ref, KMeans):
        np.testing.assert_array_equal(np.asarray(ours.labels_), ref.labels_)
        assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-12)
    else:
        assert ours.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-12)
    # memmap (numpy) in -> numpy out; tensors from a DataLoader -> tensors out
    assert isinstance(getattr(ours, attr), np.ndarray if kind == "memmap" else torch.Tensor)


def test_uint8_memmap_fits_like_the_float64_array(tmp_path):
    """Binary data stored compactly: converted chunk by chunk, to the dtype in-memory uint8
    input gets (float64)."""
    ref = BernoulliMixture(3, random_state=0, chunk_size=128).fit(X_BIN)
    ours = BernoulliMixture(3, random_state=0, chunk_size=128).fit(_memmap(tmp_path, X_BIN.astype(np.uint8)))
    assert ours.probs_.dtype == np.float64
    np.testing.assert_allclose(ours.probs_, ref.probs_, rtol=1e-12)


def test_weighted_dataloader_and_memmap_match_weighted_kmeans(tmp_path):
    w = rng0.uniform(0.1, 3.0, len(X_GAUSS))
    ref = KMeans(3, random_state=0, chunk_size=100).fit(X_GAUSS, sample_weight=w)
    a = KMeans(3, random_state=0, chunk_size=100).fit(_loader(X_GAUSS, 64, w))
    b = KMeans(3, random_state=0, chunk_size=100).fit(_memmap(tmp_path, X_GAUSS), sample_weight=w)
    for ours in (a, b):
        np.testing.assert_allclose(_value(ours, "cluster_centers_"), ref.cluster_centers_, rtol=1e-10)
        assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-12)


def test_streamed_kmeans_reseeds_empty_clusters_like_in_memory():
    init = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [1e3, 1e3, 1e3]])  # the last owns no point
    ref = KMeans(3, init=init, chunk_size=100).fit(X_GAUSS)
    ours = KMeans(3, init=init, chunk_size=100).fit(_loader(X_GAUSS, 70))
    np.testing.assert_allclose(ours.cluster_centers_.numpy(), ref.cluster_centers_, rtol=1e-10)
    assert len(np.unique(ours.labels_.numpy())) == 3


def test_large_stream_is_initialised_from_a_sample(monkeypatch):
    """Beyond INIT_SAMPLE_SIZE samples the initialisation sees a uniform sample; from the
    same initial parameters the streamed EM still equals the in-memory EM."""
    X = _gauss(3000, np.random.default_rng(5))
    monkeypatch.setattr(torchem.data, "INIT_SAMPLE_SIZE", 300)
    streamed = GaussianMixture(3, random_state=0, chunk_size=256).fit(_loader(X, 100))
    full = GaussianMixture(3, random_state=0, chunk_size=256).fit(X)
    assert streamed.lower_bound_ == pytest.approx(full.lower_bound_, abs=1e-3)  # same optimum
    start = GaussianMixture(3, random_state=0, chunk_size=256, max_iter=0).fit(_loader(X, 100))
    kw = dict(weights_init=start.weights_.numpy(), means_init=start.means_.numpy(), precisions_init=start.precisions_.numpy())
    a = GaussianMixture(3, chunk_size=256, **kw).fit(_loader(X, 100))
    b = GaussianMixture(3, chunk_size=256, **kw).fit(X)
    np.testing.assert_allclose(a.means_.numpy(), b.means_, rtol=1e-10)
    km = KMeans(3, random_state=0, chunk_size=256).fit(_loader(X, 100))
    assert km.inertia_ == pytest.approx(KMeans(3, random_state=0).fit(X).inertia_, rel=1e-4)  # same optimum


@pytest.mark.parametrize("name", ["gmm-full-kmeans", "gmm-diag-random", "kmeans", "bernoulli"])
def test_large_in_memory_data_is_initialised_from_the_same_sample(name, tmp_path, monkeypatch):
    """In-memory data larger than INIT_SAMPLE_SIZE is initialised from the same uniform
    sample as streamed data, so the in-memory, memmap and DataLoader fits are identical."""
    make, X, attr = MODELS[name]
    X = np.concatenate([X] * 5)  # 3000 samples
    monkeypatch.setattr(torchem.data, "INIT_SAMPLE_SIZE", 400)
    ref = make().fit(X)
    for data in (_memmap(tmp_path, X), _loader(X, 100)):
        ours = make().fit(data)
        assert ours.n_iter_ == ref.n_iter_
        np.testing.assert_allclose(_value(ours, attr), _value(ref, attr), rtol=1e-10, atol=1e-12)


def test_reservoir_sample_is_uniform_and_keeps_order():
    X = torch.arange(200, dtype=torch.float64).reshape(1, 200, 1)
    source = TensorSource(X, device=torch.device("cpu"), dtype=torch.float64)
    source.chunk_size = 37
    hits = torch.zeros(200)
    for seed in range(300):
        sample, w = reservoir_sample(source, 50, torch.Generator().manual_seed(seed))
        rows = sample[0, :, 0].long()
        assert w is None and rows.shape == (50,)
        assert bool((rows.diff() > 0).all())  # distinct, in the data's order
        hits[rows] += 1
    # each sample is kept with probability 1/4: 300 draws give 75 +- 7.5 (5 sigma: +- 38)
    assert float((hits - 75).abs().max()) < 38
    small, _ = reservoir_sample(source, 500, torch.Generator().manual_seed(0))
    assert torch.equal(small, X)  # fewer samples than the size: the data itself


def test_host_stream_source_reads_chunks_without_copying_the_whole(tmp_path):
    mm = _memmap(tmp_path, X_GAUSS.astype(np.float32))
    source = HostStreamSource(mm, device=torch.device("cpu"), dtype=torch.float64)
    source.chunk_size = 128
    chunks = list(source.chunks())
    assert [s for s, _, _ in chunks] == [0, 128, 256, 384, 512]
    assert all(X.dtype == torch.float64 and X.shape[0] == 1 for _, X, _ in chunks)
    np.testing.assert_array_equal(torch.cat([X for _, X, _ in chunks], 1)[0].numpy(), mm)


def test_callback_sees_each_iteration_and_can_stop():
    seen = []

    def callback(it, lower_bound, model):
        seen.append((it, lower_bound, model.score(X_GAUSS)))
        return it == 3

    gm = GaussianMixture(3, init_params="random", random_state=0, tol=1e-12, max_iter=50).fit(X_GAUSS, callback=callback)
    assert gm.n_iter_ == 3 and [s[0] for s in seen] == [1, 2, 3]
    np.testing.assert_allclose([s[1] for s in seen], gm.lower_bounds_, rtol=1e-12)
    # the model passed holds the parameters after each update: its score is the next lower bound
    np.testing.assert_allclose([s[2] for s in seen[:-1]], gm.lower_bounds_[1:], rtol=1e-10)

    stops = []
    km = KMeans(3, random_state=0, tol=0.0).fit(_loader(X_GAUSS), callback=lambda it, lb, m: stops.append((it, lb, m.predict(X_GAUSS[:5]))) or it == 2)
    assert km.n_iter_ == 2 and [s[0] for s in stops] == [1, 2]
    assert stops[-1][1] == pytest.approx(-km.inertia_ / len(X_GAUSS), rel=0.05)
    with pytest.raises(TypeError, match="callback must be callable"):
        GaussianMixture(3).fit(X_GAUSS, callback=3)


def test_verbose_shows_a_progress_bar(capsys):
    pytest.importorskip("tqdm")
    GaussianMixture(3, random_state=0, verbose=1).fit(_loader(X_GAUSS))
    captured = capsys.readouterr()
    assert "lower_bound=" in captured.err and "points_per_s=" in captured.err
    assert "EM finished" in captured.out


def test_verbose_without_tqdm_prints_lines(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # "from tqdm.auto import tqdm" fails
    GaussianMixture(3, random_state=0, verbose=2, verbose_interval=1).fit(X_GAUSS)
    captured = capsys.readouterr()
    assert "Iteration 1" in captured.out and "EM finished" in captured.out
    assert captured.err == ""


def test_array_likes_that_iterate_are_not_streams():
    """A pandas DataFrame iterates over its column names: it is an array (``__array__``)."""

    class Frame:
        def __init__(self, values):
            self.values = values

        def __array__(self, dtype=None, copy=None):
            return self.values

        def __iter__(self):
            return iter(["a", "b", "c"])

    ref = GaussianMixture(3, random_state=0).fit(X_GAUSS)
    np.testing.assert_array_equal(GaussianMixture(3, random_state=0).fit(Frame(X_GAUSS)).means_, ref.means_)
    np.testing.assert_array_equal(KMeans(3, random_state=0).fit(Frame(X_GAUSS)).labels_, KMeans(3, random_state=0).fit(X_GAUSS).labels_)


class _OncePerPass:
    """A re-iterable whose passes are given as lists of batches (to build faulty streams)."""

    def __init__(self, *passes):
        self.passes = list(passes)
        self.count = 0

    def __iter__(self):
        batches = self.passes[min(self.count, len(self.passes) - 1)]
        self.count += 1
        return iter(batches)


@pytest.mark.parametrize(
    "data, error, match",
    [
        (_OncePerPass([np.ones((5, 3)), np.ones((5, 2))]), ValueError, "inconsistent width"),
        (_OncePerPass([]), ValueError, "yielded no samples"),
        (_OncePerPass([np.zeros((0, 3))]), ValueError, "yielded no samples"),
        ((b for b in [X_GAUSS[:300], X_GAUSS[300:]]), TypeError, "partial_fit"),
        (iter([X_GAUSS]), TypeError, "partial_fit"),
        (_OncePerPass([np.ones((5, 3, 1))]), ValueError, "2-D"),
        (_OncePerPass([("a", "b", "c")]), ValueError, "must be X, \\(X,\\) or a mapping"),
        (_OncePerPass([np.array([["a"]])]), ValueError, "must contain numbers"),
        (_OncePerPass([X_GAUSS[:300], np.full((5, 3), np.nan)]), ValueError, "NaN or infinity"),
        (_OncePerPass([X_GAUSS[:300]], [X_GAUSS[:300]], [X_GAUSS[:200]]), ValueError, "same data on every pass"),
        (_OncePerPass([{"X": X_GAUSS[:300], "sample_weight": np.ones(7)}]), ValueError, "one weight per sample"),
    ],
)
def test_bad_streams(data, error, match):
    for model in (GaussianMixture(3, random_state=0), KMeans(3, random_state=0)):
        if isinstance(data, _OncePerPass):
            data.count = 0
        with pytest.raises(error, match=match):
            model.fit(data)
        if not isinstance(data, _OncePerPass):
            break  # a one-shot iterator is spent


def test_bad_streamed_values_and_arguments(tmp_path):
    with pytest.raises(ValueError, match="binary"):
        BernoulliMixture(2).fit(_loader(X_COUNTS))
    with pytest.raises(ValueError, match="NaN"):
        bad = X_GAUSS.copy()
        bad[450, 1] = np.inf
        GaussianMixture(2, chunk_size=100).fit(_memmap(tmp_path, bad))
    with pytest.raises(ValueError, match="sample_weight cannot be combined"):
        KMeans(2).fit(_loader(X_GAUSS), sample_weight=np.ones(600))
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(5).fit(_loader(X_GAUSS[:3]))
    with pytest.raises(ValueError, match="3 features"):
        g = GaussianMixture(2, warm_start=True, random_state=0).fit(X_GAUSS)
        g.fit(_loader(X_GAUSS[:, :2]))
    source = IterableSource(_loader(X_GAUSS), device=torch.device("cpu"))
    with pytest.raises(RuntimeError, match="first pass"):
        source.n_samples


@pytest.mark.cuda
def test_host_data_streams_to_the_gpu(tmp_path):
    mm = _memmap(tmp_path, X_GAUSS)
    # from the same initial parameters (CUDA's generator differs from the CPU's, so a seed
    # alone may start, and end, elsewhere)
    init = {"means_init": X_GAUSS[[0, 200, 400]], "weights_init": np.full(3, 1 / 3), "precisions_init": np.stack([np.eye(3)] * 3)}
    ref = GaussianMixture(3, chunk_size=128, **init).fit(X_GAUSS)
    ours = GaussianMixture(3, chunk_size=128, **init).to("cuda").fit(mm)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-9, atol=1e-9)
    source = HostStreamSource(mm, device=torch.device("cuda"), dtype=torch.float64)
    source.chunk_size = 100
    got = torch.cat([X for _, X, _ in source.chunks()], 1)
    assert got.device.type == "cuda"
    np.testing.assert_array_equal(got[0].cpu().numpy(), mm)


class _NumpyBatches:
    """A re-iterable of numpy batches (each pass starts afresh)."""

    def __init__(self, X, size):
        self.X, self.size = X, size

    def __iter__(self):
        return (self.X[s : s + self.size] for s in range(0, len(self.X), self.size))


def test_inference_methods_read_streams_and_memmaps_in_blocks(tmp_path, monkeypatch):
    X = X_GAUSS
    mm = _memmap(tmp_path, X)
    monkeypatch.setattr(torchem.data, "INFERENCE_BLOCK", 128)  # several blocks of the memmap
    g = GaussianMixture(3, random_state=0).fit(X)
    for data in (mm, _NumpyBatches(X, 97)):
        np.testing.assert_array_equal(g.predict(data), g.predict(X))
    np.testing.assert_allclose(g.predict_proba(_NumpyBatches(X, 97)), g.predict_proba(X), rtol=1e-12)
    np.testing.assert_allclose(g.score_samples(mm), g.score_samples(X), rtol=1e-12)
    assert isinstance(g.score(mm), float) and g.score(mm) == pytest.approx(g.score(X), rel=1e-12)
    assert g.bic(_NumpyBatches(X, 97)) == pytest.approx(g.bic(X), rel=1e-12)
    assert g.aic(mm) == pytest.approx(g.aic(X), rel=1e-12)
    np.testing.assert_array_equal(g.predict((X[s : s + 50] for s in range(0, 600, 50))), g.predict(X))  # one pass suffices
    loader = _loader(X, 64)
    labels = GaussianMixture(3, random_state=0).fit_predict(loader)
    assert isinstance(labels, torch.Tensor)
    np.testing.assert_array_equal(labels.numpy(), g.predict(X))
    km = KMeans(3, random_state=0).fit(X)
    np.testing.assert_array_equal(km.predict(mm), km.predict(X))
    np.testing.assert_allclose(km.transform(_NumpyBatches(X, 97)), km.transform(X), rtol=1e-10)
    w = np.linspace(0.5, 2.0, 600)
    assert float(km.score(_loader(X, 64, w))) == pytest.approx(km.score(X, sample_weight=w), rel=1e-12)
    np.testing.assert_allclose(km.fit_transform(loader).numpy(), KMeans(3, random_state=0).fit_transform(X), rtol=1e-10)
    with pytest.raises(ValueError, match="no samples"):
        g.predict(iter([]))


def test_numpy_batches_give_numpy_attributes_and_labels_are_not_weights():
    g = GaussianMixture(3, random_state=0).fit(_NumpyBatches(X_GAUSS, 100))
    assert isinstance(g.means_, np.ndarray)
    np.testing.assert_allclose(g.means_, GaussianMixture(3, random_state=0).fit(X_GAUSS).means_, rtol=1e-10)
    y = torch.from_numpy(np.arange(600) % 3)
    with pytest.raises(ValueError, match=r"labels \(as in TensorDataset\(X, y\)\) are not used"):
        GaussianMixture(3).fit(DataLoader(TensorDataset(torch.from_numpy(X_GAUSS), y), batch_size=100))
    with pytest.raises(TypeError, match="partial_fit") as err:
        GaussianMixture(3).fit(b for b in _NumpyBatches(X_GAUSS, 100))
    assert "list of batches" not in str(err.value)


def test_memmap_inference_sums_in_float64_and_takes_kmeans_weights(tmp_path):
    X = X_GAUSS.astype(np.float32)
    mm = _memmap(tmp_path, X)
    g = GaussianMixture(3, random_state=0).fit(X)
    assert g.score(mm) == g.score(X)
    assert g.bic(mm) == pytest.approx(g.bic(X), rel=1e-12)
    km = KMeans(3, random_state=0).fit(X)
    w = np.linspace(0.5, 2.0, len(X))
    assert km.score(mm, sample_weight=w) == pytest.approx(km.score(X, sample_weight=w), rel=1e-6)
    with pytest.raises(ValueError, match="one weight per sample"):
        km.score(mm, sample_weight=w[:10])


def test_tensor_hyperparameters_of_any_dtype_are_compared():
    means = torch.tensor([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [0.0, 5.0, 5.0]], dtype=torch.bfloat16)
    g = GaussianMixture(3, means_init=means, random_state=0).fit(X_GAUSS)
    assert g.n_iter_ >= 1
    from torchem.distributed import signature

    a = signature(GaussianMixture(3, means_init=means), 3, torch.float64, 1, False)
    b = signature(GaussianMixture(3, means_init=means + 1), 3, torch.float64, 1, False)
    assert a["means_init"] != b["means_init"]


def test_cpu_chunk_budget_is_the_same_on_any_number_of_threads():
    """On CPU the default chunk holds 8 MiB of working memory whatever torch's thread count
    (the same chunks, so the same sums: see test_threads), never fewer than 256 samples nor
    more than there are."""
    from torchem import data

    cpu = torch.device("cpu")
    own = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            assert data.auto_chunk_size(1024, cpu, 2**40) == 8 * 2**20 // 1024
            assert data.auto_chunk_size(1024, cpu, 5000) == 5000
            assert data.auto_chunk_size(2**30, cpu, 2**40) == 256
    finally:
        torch.set_num_threads(own)


def test_free_device_memory_counts_the_allocators_cache(monkeypatch):
    """Memory PyTorch holds reserved but unallocated is free for the next fit: it counts in the
    chunk size and in the decision to stream (checked with the CUDA queries stubbed)."""
    from torchem import data

    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * gib, 140 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 70 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 10 * gib)
    cuda = torch.device("cuda")
    assert data._free_device_memory(cuda) == 70 * gib
    assert data.auto_chunk_size(1024, cuda, 2**40) == 2 * gib // 1024  # capped at 2 GiB, not 10/8 GiB
    info = data.describe(np.zeros((1000, 4), dtype=np.float32))
    # 20 GiB of host data: under half of 70 GiB free, so moved to the device, not streamed
    monkeypatch.setattr(data, "_host_nbytes", lambda X, itemsize: 20 * gib)
    monkeypatch.setattr(data, "TensorSource", lambda X, **kw: ("in memory", kw["device"]))
    assert data.open_source(info, device=cuda, dtype=torch.float32, chunk_size=100) == ("in memory", cuda)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 10 * gib)  # nothing cached
    assert isinstance(data.open_source(info, device=cuda, dtype=torch.float32, chunk_size=100), data.HostStreamSource)


def test_stream_batches_weights_are_checked_when_scoring():
    """Found by fuzzing: ``score``/``bic`` of a stream of ``{"X", "sample_weight"}`` batches
    read the batches' weights unchecked (NaN or -inf for weights that sum to zero, negative
    weights accepted, a bare torch size error for a short one), where ``fit`` and in-memory
    weights give clear errors. A batch that weighs nothing beside others still counts as it
    should."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(60, 3))
    model = GaussianMixture(2, random_state=0).fit(X)
    batch = lambda w: iter([{"X": X[:5], "sample_weight": w}])  # noqa: E731 (a one-shot stream)
    for weights, match in [(np.zeros(5), "sum to zero"), (-np.ones(5), "finite, non-negative"),
                           (np.full(5, np.nan), "finite, non-negative"), (np.ones(4), r"shape \(5,\).*got \(4,\)")]:
        for method in (model.score, model.bic, model.aic):
            with pytest.raises(ValueError, match=match):
                method(batch(weights))
    mixed = lambda: iter([{"X": X[:5], "sample_weight": np.zeros(5)}, {"X": X[5:], "sample_weight": np.ones(55)}])  # noqa: E731
    assert model.score(mixed()) == pytest.approx(model.score(X[5:]), rel=1e-12)
    assert model.score(batch(np.full(5, 2.0))) == pytest.approx(model.score(X[:5]), rel=1e-12)
    km = KMeans(2, random_state=0).fit(X)  # the same rules for K-means's score (a batch weighing nothing counts nothing)
    assert float(km.score(mixed())) == pytest.approx(float(km.score(X[5:])), rel=1e-12)
    for weights, match in [(np.zeros(5), "sum to zero"), (-np.ones(5), "finite, non-negative"), (np.ones(4), r"got \(4,\)")]:
        with pytest.raises(ValueError, match=match):
            km.score(batch(weights))


def test_inference_skips_empty_batches_as_fit_does():
    """Found by fuzzing: fit skipped a stream's empty batches but predict and score failed on
    them ("Found array with 0 sample(s)")."""
    rng = np.random.default_rng(12)
    X = rng.normal(size=(60, 3))
    for model in (GaussianMixture(2, random_state=0).fit(X), KMeans(2, random_state=0).fit(X)):
        stream = lambda: iter([X[:0], X[:5], np.zeros((0, 3)), X[5:9]])  # noqa: E731
        np.testing.assert_array_equal(model.predict(stream()), model.predict(X[:9]))
        assert float(model.score(stream())) == pytest.approx(float(model.score(X[:9])), rel=1e-12)
        with pytest.raises(ValueError, match="yielded no samples"):
            model.predict(iter([X[:0]]))


def test_kmeans_score_of_a_stream_says_which_is_wrong():
    """An empty stream (or one of empty batches) yielded no samples; a stream whose weights
    are all zero weighs nothing: two messages, not one for both."""
    X = np.random.default_rng(13).normal(size=(60, 2))
    km = KMeans(2, random_state=0).fit(X)
    for stream in (iter([X[:0]]), iter([])):
        with pytest.raises(ValueError, match="yielded no samples"):
            km.score(stream)
    with pytest.raises(ValueError, match="sum to zero"):
        km.score(iter([{"X": X[:5], "sample_weight": np.zeros(5)}]))
