"""The same guarantees on a CUDA device (skipped without one)."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from torchem import GaussianMixture

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


def test_bayesian_mixture_on_cuda_equals_cpu(blobs):
    from torchem import BayesianGaussianMixture

    X = np.stack([blobs, 2.0 * blobs[::-1] + 1.0])  # B = 2 problems, 2 restarts each
    kwargs = dict(n_components=5, weight_concentration_prior=0.01, n_init=2, random_state=0, tol=0.0, max_iter=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = BayesianGaussianMixture(**kwargs).fit(torch.from_numpy(X))
        gpu = BayesianGaussianMixture(**kwargs).fit(torch.from_numpy(X).cuda())
    assert gpu.means_.device.type == "cuda" and gpu.covariance_prior_.device.type == "cuda"
    for name in ("weights_", "means_", "covariances_", "mean_precision_", "covariance_prior_"):
        np.testing.assert_allclose(getattr(gpu, name).cpu().numpy(), getattr(cpu, name).numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gpu.lower_bound_.cpu().numpy(), cpu.lower_bound_.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(gpu.predict(torch.from_numpy(X).cuda()).cpu().numpy(), cpu.predict(torch.from_numpy(X)).numpy())
