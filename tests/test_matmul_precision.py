"""The library's float32 products run at full float32 precision whatever the user's TF32 or
matmul-precision setting, and that setting is the user's again afterwards (docs/scale.md)."""

import warnings

import numpy as np
import pytest
import torch

import torchem
from torchem._utils import full_float32_matmul


@pytest.fixture
def precision():
    """Restores the process's setting after a test that changes it."""
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(1500, 6)).astype(np.float32)
    X[:500] += 4.0
    return X


def _fit_all(X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = [torchem.GaussianMixture(3, covariance_type=ct, max_iter=8, tol=0.0, random_state=0).fit(X)
                  for ct in ("full", "diag")]
        models.append(torchem.KMeans(3, n_init=2, max_iter=8, random_state=0).fit(X))
    return models


@pytest.mark.parametrize("setting", ["high", "medium"])
def test_fits_under_reduced_precision_equal_fits_at_highest(setting, precision):
    X = _data()
    torch.set_float32_matmul_precision("highest")
    exact = _fit_all(X)
    torch.set_float32_matmul_precision(setting)
    got = _fit_all(X)
    assert torch.get_float32_matmul_precision() == setting
    for a, b in zip(exact, got):
        for name in ("means_", "covariances_", "cluster_centers_"):
            if hasattr(a, name):
                np.testing.assert_array_equal(getattr(b, name), getattr(a, name))
        np.testing.assert_array_equal(b.predict(X), a.predict(X))
    np.testing.assert_array_equal(got[0].score_samples(X), exact[0].score_samples(X))
    assert torch.get_float32_matmul_precision() == setting


@pytest.mark.parametrize("legacy", [True, False], ids=["set_float32_matmul_precision", "fp32_precision"])
def test_user_setting_restored_after_fit_predict_and_errors(legacy, precision):
    cuda, mkldnn = torch.backends.cuda.matmul, torch.backends.mkldnn.matmul
    saved = (cuda.fp32_precision, mkldnn.fp32_precision)
    try:
        if legacy:
            torch.backends.cuda.matmul.allow_tf32 = True  # what many training scripts do
            state = lambda: (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32)  # noqa: E731
        else:
            cuda.fp32_precision, mkldnn.fp32_precision = "tf32", "bf16"
            state = lambda: (cuda.fp32_precision, mkldnn.fp32_precision)  # noqa: E731
        before = state()
        X = _data()
        gm = torchem.GaussianMixture(2, max_iter=3, random_state=0).fit(X)
        assert state() == before
        gm.predict(X), gm.predict_proba(X), gm.score(X)
        gm.partial_fit(X)
        assert state() == before
        with pytest.raises(ValueError):
            torchem.GaussianMixture(5000).fit(X)  # more components than samples: raised inside the fit
        assert state() == before

        with pytest.raises(RuntimeError, match="inside"):
            with full_float32_matmul():
                assert torch.backends.cuda.matmul.fp32_precision == "ieee"
                assert torch.backends.mkldnn.matmul.fp32_precision == "ieee"
                raise RuntimeError("inside")
        assert state() == before
    finally:
        cuda.fp32_precision, mkldnn.fp32_precision = saved


def test_compiled_forward_still_one_graph_under_tf32_setting(precision):
    """``forward`` is left to the caller (and to torch.compile): the guard sits on fit and the
    inference methods only, so a whole-graph compile still works, before and after a fit."""
    torch.set_float32_matmul_precision("high")
    # float64: a float32 Gaussian forward reads its float64 fall-back bound on the host (a
    # data-dependent branch), which fullgraph=True refuses, with or without this guard
    X = _data().astype(np.float64)
    gm = torchem.GaussianMixture(3, covariance_type="full", max_iter=5, random_state=0).fit(X)
    x = torch.from_numpy(X)
    compiled = torch.compile(gm, fullgraph=True, backend="eager")
    out = compiled(x)
    torch.testing.assert_close(out, gm(x))
    gm.fit(X)  # refitting while a compiled forward exists
    torch.testing.assert_close(compiled(x), gm(x))
    assert torch.get_float32_matmul_precision() == "high"

    @torch.compile(fullgraph=True, backend="eager")
    def guarded(x):  # the guard itself is a no-op while torch.compile traces
        with full_float32_matmul():
            return x @ x.T

    torch.testing.assert_close(guarded(x[:10]), x[:10] @ x[:10].T)
    assert torch.get_float32_matmul_precision() == "high"
