"""``fit(X, sample_weight=w)`` with integer weights equals the fit of the rows repeated ``w``
times, for every mixture family, in memory, streamed and with every initialisation that draws
rows by weight; ``score``, ``bic`` and ``aic`` take weights the same way."""

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from torchem import BayesianGaussianMixture, BernoulliMixture, BinomialMixture, CategoricalMixture, ConvergenceWarning, GaussianMixture, PoissonMixture

RNG = np.random.default_rng(0)
N = 240
WEIGHTS = RNG.integers(0, 4, N).astype(np.float64)
WEIGHTS[:3] = 1.0  # at least some weight everywhere it matters


def _data(name):
    z = RNG.integers(0, 3, N)
    if name.startswith("gmm") or name == "bgmm":
        return RNG.normal(size=(N, 3)) + np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0]])[z]
    if name == "bernoulli":
        return (RNG.random((N, 5)) < np.array([0.2, 0.5, 0.8])[z, None]).astype(np.float64)
    if name == "binomial":
        return RNG.binomial(6, np.array([0.2, 0.5, 0.8])[z, None], size=(N, 4)).astype(np.float64)
    if name == "poisson":
        return RNG.poisson(np.array([1.0, 4.0, 9.0])[z, None], size=(N, 4)).astype(np.float64)
    return np.minimum(RNG.poisson(np.array([0.3, 1.0, 2.0])[z, None], size=(N, 4)), 3).astype(np.float64)


def _model(name, **kw):
    common = dict(max_iter=15, tol=0.0, random_state=0, **kw)
    if name.startswith("gmm"):
        return GaussianMixture(3, covariance_type=name.split("-")[1], **common)
    return {"bernoulli": lambda: BernoulliMixture(3, **common), "binomial": lambda: BinomialMixture(3, n_trials=6, **common),
            "poisson": lambda: PoissonMixture(3, **common),
            "categorical": lambda: CategoricalMixture(3, n_categories=4, **common),
            "bgmm": lambda: BayesianGaussianMixture(3, **common)}[name]()


def _params(model):
    out = {"weights": model.weights_, "lb": np.asarray(model.lower_bound_)}
    for attr in ("means_", "covariances_", "probs_", "rates_"):
        if hasattr(type(model), attr):
            out[attr] = getattr(model, attr)
    return out


def _assert_same(a, b, rtol):
    pa, pb = _params(a), _params(b)
    for key in pa:
        np.testing.assert_allclose(pa[key], pb[key], rtol=rtol, atol=1e-9, err_msg=key)


FAMILIES = ["gmm-full", "gmm-tied", "gmm-diag", "gmm-spherical", "bernoulli", "binomial", "poisson", "categorical", "bgmm"]


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("init", ["kmeans", "k-means++"])
def test_integer_weights_equal_repeated_rows(name, init):
    X = _data(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = _model(name, init_params=init).fit(X, sample_weight=WEIGHTS)
        repeated = _model(name, init_params=init).fit(np.repeat(X, WEIGHTS.astype(int), axis=0))
    _assert_same(weighted, repeated, rtol=1e-7)
    Xr = np.repeat(X, WEIGHTS.astype(int), axis=0)
    assert weighted.score(X, sample_weight=WEIGHTS) == pytest.approx(weighted.score(Xr), rel=1e-12)
    assert weighted.bic(X, sample_weight=WEIGHTS) == pytest.approx(weighted.bic(Xr), rel=1e-12)
    assert weighted.aic(X, sample_weight=WEIGHTS) == pytest.approx(weighted.aic(Xr), rel=1e-12)


@pytest.mark.parametrize("name", ["gmm-full", "bernoulli", "poisson"])
def test_weighted_streams_equal_weighted_memory(name, tmp_path):
    X = _data(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        memory = _model(name, chunk_size=50).fit(X, sample_weight=WEIGHTS)
        mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float64, shape=X.shape)
        mm[:] = X
        mm.flush()
        mapped = _model(name, chunk_size=50).fit(np.load(tmp_path / "x.npy", mmap_mode="r"), sample_weight=WEIGHTS)
        pairs = [{"X": torch.from_numpy(x), "sample_weight": torch.tensor(w)} for x, w in zip(X, WEIGHTS)]
        loader = DataLoader(pairs, batch_size=64)  # the default collate keeps the mapping
        streamed = _model(name, chunk_size=50).fit(loader)
    _assert_same(mapped, memory, rtol=1e-10)
    _assert_same(streamed, memory, rtol=1e-10)
    mm_score = memory.score(np.load(tmp_path / "x.npy", mmap_mode="r"), sample_weight=WEIGHTS)
    assert mm_score == pytest.approx(memory.score(X, sample_weight=WEIGHTS), rel=1e-12)
    assert float(memory.score(loader)) == pytest.approx(memory.score(X, sample_weight=WEIGHTS), rel=1e-12)


def test_bad_sample_weights():
    X = _data("gmm-full")
    for bad, match in [(np.ones(5), "shape"), (-np.ones(N), "non-negative"), (np.zeros(N), "at least one non-zero"),
                       (np.full(N, np.nan), "finite")]:
        with pytest.raises(ValueError, match=match):
            GaussianMixture(2).fit(X, sample_weight=bad)
    loader = DataLoader(TensorDataset(torch.from_numpy(X)), batch_size=50)
    with pytest.raises(ValueError, match="yield mappings {'X': X, 'sample_weight': w}"):
        GaussianMixture(2).fit(loader, sample_weight=np.ones(N))


def test_stacked_problems_name_both_accepted_shapes():
    """For stacked problems ``X (B, N, D)``, a per-sample argument of the wrong shape is told
    both shapes it may take, ``(N,)`` shared by all problems and ``(B, N)``; one problem's
    message stays ``(N,)``."""
    X = np.stack([_data("gmm-full"), _data("gmm-full")])  # (2, N, 3)
    both = rf"should have shape \({N},\) or \(2, {N}\) .*\(B, N\) gives each its own\); got \(3, {N}\)"
    with pytest.raises(ValueError, match="sample_weight " + both):
        GaussianMixture(2).fit(X, sample_weight=np.ones((3, N)))
    with pytest.raises(ValueError, match="labels " + both):
        GaussianMixture(2).fit(X, labels=np.zeros((3, N), dtype=int))
    with pytest.raises(ValueError, match=rf"sample_weight should have shape \({N},\) \(one weight per sample\); got \(5,\)"):
        GaussianMixture(2).fit(X[0], sample_weight=np.ones(5))
    for good in (np.ones(N), np.ones((2, N))):  # both accepted shapes fit
        assert (GaussianMixture(2, max_iter=2, tol=0.0, random_state=0).fit(X, sample_weight=good).n_iter_ == 2).all()


def test_a_scalar_weight_weighs_every_sample_and_read_only_weights_are_taken_quietly():
    """As scikit-learn's KMeans: ``sample_weight=2.0`` is a weight of 2 for every sample (the
    same fit; the inertia twice). A read-only weight array (a pandas 3 Series, a frozen array)
    no longer prints torch's "not writable" warning: it is copied."""
    from torchem import KMeans

    X = _data("gmm-full")
    for make in (lambda: GaussianMixture(3, random_state=0), lambda: KMeans(3, random_state=0)):
        scalar, full = make().fit(X, sample_weight=2.0), make().fit(X, sample_weight=np.full(N, 2.0))
        for name, p in scalar.named_parameters():
            torch.testing.assert_close(p, dict(full.named_parameters())[name], rtol=0, atol=0)
    assert KMeans(3, random_state=0).fit(X, sample_weight=2.0).inertia_ == 2 * KMeans(3, random_state=0).fit(X).inertia_
    frozen = np.ones(N)
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not writable")
        GaussianMixture(2, max_iter=2, tol=0.0, random_state=0).fit(X, sample_weight=frozen)
    with pytest.raises(ValueError, match="finite, non-negative"):
        GaussianMixture(2).fit(X, sample_weight=-1.0)
