"""Micro-benchmarks of torchem's kernels (pytest-benchmark), kept out of the test suite:

    python -m pytest benchmarks/micro --benchmark-only
    python -m pytest benchmarks/micro --benchmark-only -k "log_prob and full"   # a subset
    python -m pytest benchmarks/micro --benchmark-only --benchmark-json=micro.json

Each kernel runs on a chunk of N=65,536 float32 samples with D=16 features and K=16
components (the shape of one chunk of an EM pass), on the CPU and, when present, on CUDA.
"""

import pytest
import torch

from torchem.functional import estep, gaussian, kmeans
from torchem.functional import bernoulli

N, D, K = 65_536, 16, 16
COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def _params(covariance_type, device, gen):
    means = torch.randn(K, D, generator=gen).mul_(3.0).to(device)
    if covariance_type == "full":
        a = torch.randn(K, D, D, generator=gen) / D**0.5
        cov = a @ a.mT + torch.eye(D)
    elif covariance_type == "tied":
        a = torch.randn(D, D, generator=gen) / D**0.5
        cov = a @ a.mT + torch.eye(D)
    elif covariance_type == "diag":
        cov = torch.rand(K, D, generator=gen) + 0.5
    else:
        cov = torch.rand(K, generator=gen) + 0.5
    prec_chol, _ = gaussian.precision_cholesky_from_covariances(cov.double(), covariance_type)
    return means, prec_chol.float().to(device)


@pytest.fixture
def data(device):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=gen).mul_(3.0).to(device)
    return X, gen


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_log_prob(bench, data, device, covariance_type):
    """Gaussian component log-densities ``[N, K]`` from prepared parameters (one GEMM)."""
    X, gen = data
    means, prec_chol = _params(covariance_type, device, gen)
    prep = gaussian.gaussian_prepare(means, prec_chol, covariance_type, data_dtype=X.dtype)
    out = bench(gaussian.gaussian_log_prob_prepared, X, prep)
    assert out.shape == (N, K)


def test_responsibilities(bench, data, device):
    """E-step: log-sum-exp normalisation of ``[N, K]`` log-densities into responsibilities."""
    X, gen = data
    log_prob = torch.randn(N, K, generator=gen).mul_(10.0).to(device)
    log_weights = torch.full((K,), -float(torch.log(torch.tensor(K))), device=device)
    log_norm, resp = bench(estep.responsibilities, log_prob, log_weights)
    assert resp.shape == (N, K)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_m_step_statistics(bench, data, device, covariance_type):
    """Responsibility-weighted sufficient statistics of a chunk (one more GEMM)."""
    X, gen = data
    means, prec_chol = _params(covariance_type, device, gen)
    resp = torch.softmax(torch.randn(N, K, generator=gen), -1).to(device)
    _, aux = gaussian.gaussian_log_prob(X, means, prec_chol, covariance_type, return_aux=True)
    stats = bench(gaussian.gaussian_stats, X, resp, means, prec_chol, covariance_type, aux=aux)
    assert stats["nk"].shape == (K,)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_m_step(bench, data, device, covariance_type):
    """Closed-form M-step from summed statistics (Cholesky factors of the new covariances)."""
    X, gen = data
    means, prec_chol = _params(covariance_type, device, gen)
    resp = torch.softmax(torch.randn(N, K, generator=gen), -1).to(device)
    stats = gaussian.gaussian_stats(X, resp, means, prec_chol, covariance_type)
    log_weights, new_means, _, _ = bench(gaussian.gaussian_m_step, stats, means, covariance_type, 1e-6)
    assert new_means.shape == (K, D)


def test_kmeans_assign(bench, data, device):
    """Nearest centre of every sample, with the exact winning distance."""
    X, gen = data
    centres = X[torch.randperm(N, generator=gen)[:K].to(device)]
    labels, d2 = bench(kmeans.assign, X, centres)
    assert labels.shape == (N,)


def test_kmeans_statistics(bench, data, device):
    """Per-cluster counts and sums of the samples (Lloyd's M-step statistics)."""
    X, gen = data
    labels = torch.randint(0, K, (N,), generator=gen).to(device)
    counts, sums = bench(kmeans.lloyd_stats, X, labels, K)
    assert sums.shape == (K, D)


def test_bernoulli_log_prob(bench, data, device):
    """Bernoulli component log-probabilities of binary vectors (one GEMM with the logits)."""
    X, gen = data
    B = (X > 0).float()
    logits = torch.randn(K, D, generator=gen).to(device)
    out = bench(bernoulli.bernoulli_log_prob, B, logits)
    assert out.shape == (N, K)
