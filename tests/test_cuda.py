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
