"""The same guarantees on a CUDA device (skipped without one): every family, K-means' dense
pass, streamed and weighted sources, stacked problems, partial_fit, integer input's working
dtype, inference on host data, and a one-process NCCL group."""

import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
from sklearn.mixture import GaussianMixture as SkGaussianMixture
import torchem
from torchem import BernoulliMixture, BinomialMixture, GaussianMixture, KMeans

from .test_streaming import _loader

pytestmark = pytest.mark.cuda

TYPES = ["full", "tied", "diag", "spherical"]


@pytest.mark.parametrize("covariance_type", TYPES)
def test_parity_with_sklearn_on_cuda(blobs, covariance_type):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = SkGaussianMixture(3, covariance_type=covariance_type, max_iter=1, random_state=0).fit(blobs)
        init = {"weights_init": start.weights_, "means_init": start.means_, "precisions_init": start.precisions_}
        ref = SkGaussianMixture(3, covariance_type=covariance_type, tol=0.0, max_iter=15, **init).fit(blobs)
        X = torch.from_numpy(blobs).cuda()
        ours = GaussianMixture(3, covariance_type=covariance_type, tol=0.0, max_iter=15, **init).fit(X)
    assert ours.means_.device.type == "cuda"
    np.testing.assert_allclose(ours.means_.cpu().numpy(), ref.means_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.covariances_.cpu().numpy(), ref.covariances_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-6)
    labels = ours.predict(X)
    assert labels.device.type == "cuda"
    np.testing.assert_array_equal(labels.cpu().numpy(), ref.predict(blobs))


def test_module_to_cuda_fits_numpy_on_gpu(blobs):
    gm = GaussianMixture(3, random_state=0).to("cuda")
    gm.fit(blobs)
    assert gm.loc.device.type == "cuda"
    assert isinstance(gm.predict(blobs), np.ndarray)
    cpu = GaussianMixture(3, random_state=0).fit(blobs)
    np.testing.assert_allclose(np.sort(gm.means_[:, 0]), np.sort(cpu.means_[:, 0]), rtol=1e-6)
    gm.cpu()
    assert gm.loc.device.type == "cpu"
    assert gm.predict(blobs).shape == (len(blobs),)


def test_float32_stacked_problems_on_cuda():
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.normal(size=(4, 2000, 8)).astype(np.float32)).cuda()
    gm = GaussianMixture(5, n_init=3, random_state=0).fit(X)
    assert gm.means_.shape == (4, 5, 8)
    assert torch.isfinite(gm.lower_bound_).all()


# ------------------------------------------------------------------------------------------
# K-means: the dense pass CUDA takes equals the CPU's bounded pass
# ------------------------------------------------------------------------------------------

def _blobs(seed=0, n=3000, d=5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) + rng.normal(size=(6, d))[rng.integers(0, 6, n)] * 3


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kmeans_on_cuda_equals_the_cpu_fit(dtype):
    X = _blobs().astype(dtype)
    start = X[:6].copy()
    cpu = KMeans(6, init=start, chunk_size=700).fit(X)
    gpu = KMeans(6, init=start, chunk_size=700).fit(torch.from_numpy(X).cuda())
    assert gpu.cluster_centers_.device.type == "cuda"
    np.testing.assert_array_equal(gpu.labels_.cpu().numpy(), cpu.labels_)
    assert gpu.n_iter_ == cpu.n_iter_
    np.testing.assert_allclose(gpu.inertia_, cpu.inertia_, rtol=1e-5 if dtype == np.float32 else 1e-10)
    np.testing.assert_allclose(gpu.cluster_centers_.cpu().numpy(), cpu.cluster_centers_, rtol=1e-5, atol=1e-5)


def test_kmeans_restarts_of_stacked_weighted_problems_on_cuda():
    """Random restarts of two weighted problems at once on the device: a Lloyd fixed point
    (each centre the weighted mean of its points), labels_ = predict, inertia_ = -score."""
    X = np.stack([_blobs(0), _blobs(1)])
    w = np.random.default_rng(2).uniform(0.2, 3.0, X.shape[:2])
    Xc, wc = torch.from_numpy(X).cuda(), torch.from_numpy(w).cuda()
    km = KMeans(6, init="random", n_init=3, random_state=0, tol=0.0, chunk_size=1000).fit(Xc, sample_weight=wc)
    labels = km.labels_.cpu().numpy()
    centres = km.cluster_centers_.cpu().numpy()
    np.testing.assert_array_equal(labels, km.predict(Xc).cpu().numpy())
    np.testing.assert_allclose(km.inertia_.cpu().numpy(), -km.score(Xc, sample_weight=wc).cpu().numpy(), rtol=1e-10)
    for b in range(2):
        for j in range(6):
            mask = labels[b] == j
            if mask.any():
                np.testing.assert_allclose(centres[b, j], np.average(X[b, mask], axis=0, weights=w[b, mask]), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------
# Bernoulli and Binomial mixtures; integer input works in float32 on CUDA
# ------------------------------------------------------------------------------------------

def _binary(family):
    rng = np.random.default_rng(0)
    p = rng.uniform(0.1, 0.9, (3, 12))
    z = rng.integers(0, 3, 2000)
    if family == "bernoulli":
        return (rng.random((2000, 12)) < p[z]).astype(np.uint8), p
    return rng.binomial(5, p[z]).astype(np.int64), p


@pytest.mark.parametrize("family", ["bernoulli", "binomial"])
@pytest.mark.parametrize("where", ["memory", "memmap"])
def test_bernoulli_and_binomial_on_cuda_equal_the_cpu_fit(tmp_path, family, where):
    X, p = _binary(family)
    init = {"weights_init": np.full(3, 1 / 3), "probs_init": np.clip(p + 0.05, 0.05, 0.95)}
    cls = BernoulliMixture if family == "bernoulli" else BinomialMixture
    extra = {} if family == "bernoulli" else {"n_trials": 5}
    make = lambda: cls(3, tol=0.0, max_iter=20, chunk_size=500, **init, **extra)  # noqa: E731
    data = X
    if where == "memmap":
        np.save(tmp_path / "X.npy", X)
        data = np.load(tmp_path / "X.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = make().fit(X.astype(np.float64))
        gpu = make().to("cuda").fit(data)
    assert gpu.logits.device.type == "cuda"
    assert gpu.logits.dtype == torch.float32  # integer input: the model's dtype on CUDA (data.working_dtype)
    # float32 E-steps against float64 ones, 20 iterations from the same start (1e-6 apart on a CPU)
    np.testing.assert_allclose(gpu.probs_, cpu.probs_, atol=1e-4)
    np.testing.assert_allclose(gpu.weights_, cpu.weights_, atol=1e-4)
    assert isinstance(gpu.predict(data), np.ndarray)


# ------------------------------------------------------------------------------------------
# Streamed sources: DataLoaders, weights, stacked memmaps
# ------------------------------------------------------------------------------------------

def test_weighted_dataloader_and_memmap_on_cuda_equal_the_in_memory_fit(tmp_path):
    X = _blobs()
    w = np.random.default_rng(3).uniform(0.2, 3.0, len(X))
    start = X[:6].copy()
    ref = KMeans(6, init=start).fit(X, sample_weight=w)
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    loader = _loader(X, 256, weights=w)
    for data, weights in ((mm, w), (loader, None)):
        gpu = KMeans(6, init=start, chunk_size=500).to("cuda").fit(data, sample_weight=weights)
        centres = gpu.cluster_centers_
        centres = centres.cpu().numpy() if isinstance(centres, torch.Tensor) else centres
        np.testing.assert_allclose(centres, ref.cluster_centers_, rtol=1e-10, atol=1e-10)
        labels = gpu.labels_
        np.testing.assert_array_equal(labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels, ref.labels_)
        assert gpu.n_iter_ == ref.n_iter_


def _start(means, covariance_type="full"):
    """Every initial parameter given, so a fit starts alike on any device (given means alone
    leave the weights and precisions to a seeded k-means, whose draws differ on CUDA)."""
    k, d = means.shape[-2:]
    lead = means.shape[:-2]
    prec = {"full": np.broadcast_to(np.eye(d), (*lead, k, d, d)), "diag": np.ones((*lead, k, d))}[covariance_type]
    return {"means_init": means, "weights_init": np.full((*lead, k), 1 / k), "precisions_init": np.ascontiguousarray(prec)}


def test_stacked_weighted_memmap_streams_to_cuda(tmp_path):
    X = np.stack([_blobs(0), _blobs(1)])
    w = np.random.default_rng(4).uniform(0.2, 3.0, X.shape[:2])
    start = _start(X[:, :6].copy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = GaussianMixture(6, tol=0.0, max_iter=10, **start).fit(X, sample_weight=w)
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gpu = GaussianMixture(6, tol=0.0, max_iter=10, chunk_size=700, **start).to("cuda").fit(mm, sample_weight=w)
    np.testing.assert_allclose(gpu.means_, ref.means_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(gpu.lower_bound_, ref.lower_bound_, rtol=1e-10)


def test_host_input_inference_returns_outputs_block_by_block():
    """predict_proba of a host array on a CUDA model: the [N, K] output is moved to the host
    chunk by chunk, so the device never holds it whole."""
    X = np.random.default_rng(5).normal(size=(200_000, 4)).astype(np.float32)
    gm = GaussianMixture(32, max_iter=2, random_state=0, chunk_size=10_000).to("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(X[:20_000])
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    proba = gm.predict_proba(X)
    assert isinstance(proba, np.ndarray) and proba.shape == (200_000, 32)
    whole = 200_000 * 32 * 4
    assert torch.cuda.max_memory_allocated() - before < whole / 2


# ------------------------------------------------------------------------------------------
# partial_fit and a one-process NCCL group
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["gmm", "kmeans"])
def test_partial_fit_on_cuda_equals_the_cpu(model):
    X = _blobs()
    start = X[:6].copy()
    make = {"gmm": lambda: GaussianMixture(6, covariance_type="diag", **_start(start, "diag")),
            "kmeans": lambda: KMeans(6, init=start)}[model]
    cpu, gpu = make(), make().to("cuda")
    for s in range(0, 3000, 1000):
        cpu.partial_fit(X[s : s + 1000])
        gpu.partial_fit(X[s : s + 1000])
    attr = "means_" if model == "gmm" else "cluster_centers_"
    np.testing.assert_allclose(getattr(gpu, attr), getattr(cpu, attr), rtol=1e-9, atol=1e-9)


@pytest.mark.skipif(not dist.is_available() or not dist.is_nccl_available(), reason="needs NCCL")
def test_one_process_nccl_group_runs_every_collective(tmp_path, monkeypatch):
    """A one-rank NCCL group, with torchem told it is distributed, runs every collective of
    fit and partial_fit on the device (the handshake's object exchange included) and gives
    the single-process result."""
    X = _blobs()
    start = X[:6].copy()
    ref_fit = GaussianMixture(6, **_start(start)).fit(X)
    ref_online = KMeans(6, init=start)
    for s in range(0, 3000, 1000):
        ref_online.partial_fit(X[s : s + 1000])
    dist.init_process_group("nccl", init_method=f"file://{tmp_path}/init", rank=0, world_size=1)
    try:
        for module in (torchem.distributed, torchem.em, torchem.data, torchem.estimator):
            monkeypatch.setattr(module, "is_distributed", lambda: True)
        Xc = torch.from_numpy(X).cuda()
        fitted = GaussianMixture(6, **_start(start)).fit(Xc)
        online = KMeans(6, init=start).to("cuda")
        for s in range(0, 3000, 1000):
            online.partial_fit(Xc[s : s + 1000])
        torch.cuda.synchronize()
    finally:
        dist.destroy_process_group()
    np.testing.assert_allclose(fitted.means_.cpu().numpy(), ref_fit.means_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(online.cluster_centers_.cpu().numpy(), ref_online.cluster_centers_, rtol=1e-9, atol=1e-9)


def test_bayesian_mixture_on_cuda_equals_cpu(blobs):
    """From the same variational posterior (a CPU fit moved to the device; seeded draws differ
    between CPU and CUDA generators), warm-started iterations on CUDA equal the CPU's."""
    import copy

    from torchem import BayesianGaussianMixture

    X = np.stack([blobs, 2.0 * blobs[::-1] + 1.0])  # B = 2 problems
    kwargs = dict(n_components=5, weight_concentration_prior=0.01, n_init=2, random_state=0, tol=0.0, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = BayesianGaussianMixture(**kwargs).fit(torch.from_numpy(X))
        gpu = copy.deepcopy(cpu).to("cuda")
        cpu.set_params(warm_start=True).fit(torch.from_numpy(X))
        gpu.set_params(warm_start=True).fit(torch.from_numpy(X).cuda())
    assert gpu.means_.device.type == "cuda" and gpu.covariance_prior_.device.type == "cuda"
    for name in ("weights_", "means_", "covariances_", "mean_precision_", "covariance_prior_"):
        np.testing.assert_allclose(getattr(gpu, name).cpu().numpy(), getattr(cpu, name).numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gpu.lower_bound_.cpu().numpy(), cpu.lower_bound_.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(gpu.predict(torch.from_numpy(X).cuda()).cpu().numpy(), cpu.predict(torch.from_numpy(X)).numpy())
