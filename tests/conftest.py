import numpy as np
import pytest
import torch

CUDA = torch.cuda.is_available()

try:  # property-based tests: the same examples on every run, a bounded number of them
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", derandomize=True, max_examples=25, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    # a deeper search, off CI: TORCHEM_HYPOTHESIS=deep python -m pytest tests/test_properties.py
    settings.register_profile("deep", max_examples=200, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    import os

    settings.load_profile(os.environ.get("TORCHEM_HYPOTHESIS", "ci"))
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not CUDA:
            item.add_marker(skip)


@pytest.fixture
def blobs():
    """Three well-separated Gaussian blobs in 3-D, float64."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 5.0, 5.0]])
    scales = np.array([1.0, 0.6, 1.4])
    X = np.concatenate([rng.normal(size=(200, 3)) * s + c for c, s in zip(centres, scales)])
    return X[rng.permutation(len(X))]


def random_spd(rng, k, d, scale=1.0):
    a = rng.normal(size=(k, d, d))
    return scale * (a @ a.transpose(0, 2, 1) / d + np.eye(d))
