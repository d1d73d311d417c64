"""Property-based tests (issue 12, item 2): every model family, from the same start, equals an
independent float64 reference EM (``tests/reference_em.py``, NumPy, moments about each
component's own mean) whatever the data's offset, scale, sample order, chunking, stacking or
streaming; posteriors are distributions and the lower bound never decreases.

Hypothesis draws the seeds and transformations; the profile of ``tests/conftest.py`` makes the
examples the same on every run and bounds their number.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from torchem import BernoulliMixture, BinomialMixture, CategoricalMixture, GaussianMixture, KMeans, PoissonMixture

from . import reference_em as R

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

N, K, D, ITERS = 48, 3, 2, 6
#: examples per property: as written on CI; ten times as many, drawn at random, under
#: TORCHEM_HYPOTHESIS=deep (tests/conftest.py's "deep" profile), for a search off CI
DEPTH = 10 if os.environ.get("TORCHEM_HYPOTHESIS") == "deep" else 1
EPS64 = np.finfo(np.float64).eps

seeds = st.integers(0, 2**16)
powers_of_two = st.integers(-8, 8).map(lambda e: 2.0**e)  # scaling by them is exact


def _quiet():
    warnings.simplefilter("ignore")  # ConvergenceWarning: the fits stop after ITERS on purpose


def _np(a):
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _stream(X, batch, dtype=np.float64):
    return DataLoader(TensorDataset(torch.from_numpy(np.ascontiguousarray(X, dtype=dtype))), batch_size=batch)


def _blobs(seed, n=N, d=D):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (K, d))
    return centres[rng.integers(0, K, n)] + rng.normal(0, 1, (n, d)), rng


# --------------------------------------------------------------------------------------------
# The families: data, a start, the model from that start, its fitted values, the reference
# --------------------------------------------------------------------------------------------

def _precisions(cov, covariance_type):
    return np.linalg.inv(cov) if covariance_type in ("full", "tied") else 1.0 / cov


def _gaussian_start(X, covariance_type, rng):
    means = X[rng.choice(len(X), K, replace=False)] + rng.normal(0, 0.1, (K, X.shape[1]))
    d = X.shape[1]
    cov = {"full": np.stack([np.eye(d) * (1 + j) for j in range(K)]), "tied": 1.5 * np.eye(d),
           "diag": np.ones((K, d)) * np.arange(1, K + 1)[:, None], "spherical": np.arange(1.0, K + 1)}[covariance_type]
    return np.full(K, 1.0 / K), means, cov


def _gaussian(start, covariance_type, shift=0.0, scale=1.0, reg_covar=1e-6, **kw):
    weights, means, cov = start
    return GaussianMixture(K, covariance_type=covariance_type, weights_init=weights, means_init=means * scale + shift,
                           precisions_init=_precisions(cov * scale**2, covariance_type), reg_covar=reg_covar * scale**2,
                           tol=0.0, max_iter=ITERS, **kw)


def _discrete_case(name, seed):
    """Data, start, model factory and reference for a discrete family."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, N)
    if name == "categorical":
        probs = rng.dirichlet(np.ones(4), (K, D + 1))  # [K, D, C]
        X = np.stack([[rng.choice(4, p=probs[k, j]) for j in range(D + 1)] for k in labels]).astype(np.int64)
        X[0] = 3  # every category shows up
        start = rng.dirichlet(np.ones(4) * 5, (K, D + 1))
        make = lambda **kw: CategoricalMixture(K, weights_init=np.full(K, 1 / K), probs_init=start, tol=0.0, max_iter=ITERS, **kw)  # noqa: E731
        return X, start, make, lambda X, it=ITERS, w=None: R.discrete_em("categorical", X, np.full(K, 1 / K), start, n_iter=it, sample_weight=w)
    if name == "poisson":
        rates = rng.uniform(0.5, 30, (K, D + 1))
        X = rng.poisson(rates[labels]).astype(np.float64)
        start = rng.uniform(1, 20, (K, D + 1))
        make = lambda **kw: PoissonMixture(K, weights_init=np.full(K, 1 / K), rates_init=start, tol=0.0, max_iter=ITERS, **kw)  # noqa: E731
        return X, start, make, lambda X, it=ITERS, w=None: R.discrete_em("poisson", X, np.full(K, 1 / K), start, n_iter=it, sample_weight=w)
    trials = 1 if name == "bernoulli" else 7
    probs = rng.uniform(0.05, 0.95, (K, D + 3))
    X = rng.binomial(trials, probs[labels]).astype(np.float64)
    start = rng.uniform(0.2, 0.8, (K, D + 3))
    cls = BernoulliMixture if name == "bernoulli" else BinomialMixture
    extra = {} if name == "bernoulli" else {"n_trials": trials}
    make = lambda **kw: cls(K, weights_init=np.full(K, 1 / K), probs_init=start, tol=0.0, max_iter=ITERS, **extra, **kw)  # noqa: E731
    return X, start, make, lambda X, it=ITERS, w=None: R.discrete_em("binomial", X, np.full(K, 1 / K), start, n_iter=it, n_trials=trials, sample_weight=w)


def _discrete_params(model):
    name = "rates_" if isinstance(model, PoissonMixture) else "probs_"
    return _np(model.weights_), _np(getattr(model, name))


COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
DISCRETE = ["bernoulli", "binomial", "poisson", "categorical"]


# --------------------------------------------------------------------------------------------
# Gaussian mixtures: translation, scale and permutation equivariance against the reference
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@settings(max_examples=6 * DEPTH)
@given(seed=seeds, power=st.integers(0, 8), sign=st.sampled_from([-1.0, 1.0]), scale=powers_of_two,
       chunk=st.integers(5, N))
@example(seed=0, power=8, sign=1.0, scale=1.0, chunk=N)  # the offset the issue names
def test_gaussian_is_the_reference_at_any_offset_scale_order_and_chunking(covariance_type, seed, power, sign, scale, chunk):
    """``fit(s X[perm] + c)`` (float64, |c| up to 1e8, chunks of any size) from the moved start
    is ``c + s * reference(X)``: means to what float64 at ``c`` carries, covariances ``s^2``
    times the reference's to 1e-8 relative."""
    _quiet()
    X, rng = _blobs(seed)
    start = _gaussian_start(X, covariance_type, rng)
    shift = sign * 10.0**power if power else 0.0
    perm = rng.permutation(N)
    moved = X[perm] * scale + shift
    # the reference reads exactly the data torchem reads: the rounded points, moved back
    # (exact: a power-of-two scale, and differences of nearby floats)
    back = ((moved - shift) / scale)[np.argsort(perm)]
    weights, means, cov, bounds = R.gaussian_em(back, *start, covariance_type, n_iter=ITERS)
    model = _gaussian(start, covariance_type, shift, scale, chunk_size=chunk).fit(moved)
    # what float64 carries: the parameters themselves are stored at the offset, to eps * |c|,
    # which is this much of the clusters' unit spread (times the scale)
    carried = 16 * EPS64 * abs(shift) / scale
    rel = 1e-8 + carried
    np.testing.assert_allclose(model.weights_, weights, rtol=rel, atol=1e-10)
    np.testing.assert_allclose(model.means_, means * scale + shift, rtol=0, atol=(4 * carried + 1e-8) * scale)
    assert np.abs(model.covariances_ / scale**2 - cov).max() <= rel * np.abs(cov).max()
    np.testing.assert_allclose(model.lower_bounds_ + np.log(scale) * D, bounds, rtol=rel, atol=rel)
    assert np.all(np.diff(model.lower_bounds_) >= -1e-9 * np.abs(model.lower_bounds_[1:]))
    proba = _np(model.predict_proba(moved))
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@settings(max_examples=4 * DEPTH)
@given(seed=seeds, power=st.integers(0, 4), sign=st.sampled_from([-1.0, 1.0]))
@example(seed=0, power=4, sign=1.0)
@example(seed=315, power=0, sign=1.0)  # a start whose trajectory amplifies rounding ~3x an iteration
def test_gaussian_float32_is_the_reference_as_far_as_float32_carries(covariance_type, seed, power, sign):
    """float32 data at offsets up to 1e4: every EM step is the reference's step (in float64 on
    the same rounded points, from the same parameters) to a few float32 steps at the offset;
    moments about the origin would be off by eps32 * c^2, 100 % at 1e4. Step by step, from the
    reference's own trajectory: over several iterations EM itself can amplify any rounding
    (about 3x an iteration on some of these starts, float64 from a float32-rounded start too),
    which says nothing about the arithmetic."""
    _quiet()
    X, rng = _blobs(seed)
    start = _gaussian_start(X, covariance_type, rng)
    shift = sign * 10.0**power if power else 0.0
    moved = (X + shift).astype(np.float32)
    # float32 parameters at the offset are known to eps32 * |c| (a 1e-3 step at 1e4, of unit
    # clusters): the E-step's responsibilities, hence every estimate, move by that much
    step = np.finfo(np.float32).eps * (abs(shift) + 16)
    for _ in range(ITERS):
        weights, means, cov, _ = R.gaussian_em(moved.astype(np.float64) - shift, *start, covariance_type, n_iter=1)
        model = _gaussian(start, covariance_type, shift).set_params(max_iter=1).fit(moved)
        np.testing.assert_allclose(model.weights_, weights, rtol=0, atol=1e-5 + 2 * step)
        np.testing.assert_allclose(model.means_, means + shift, rtol=0, atol=8 * step)
        assert np.abs(model.covariances_ - cov).max() <= (1e-5 + 4 * step) * np.abs(cov).max()
        start = (weights, means, cov)
    np.testing.assert_allclose(_np(model.predict_proba(moved)).sum(1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# K-means: Lloyd's algorithm at any offset, scale and order
# --------------------------------------------------------------------------------------------

@settings(max_examples=8 * DEPTH)
@given(seed=seeds, power=st.integers(0, 8), sign=st.sampled_from([-1.0, 1.0]), scale=powers_of_two,
       chunk=st.integers(5, N), streamed=st.booleans())
@example(seed=0, power=8, sign=1.0, scale=1.0, chunk=N, streamed=False)
def test_kmeans_is_lloyd_at_any_offset_scale_order_and_chunking(seed, power, sign, scale, chunk, streamed):
    _quiet()
    X, rng = _blobs(seed)
    init = X[rng.choice(N, K, replace=False)]
    shift = sign * 10.0**power if power else 0.0
    perm = rng.permutation(N)
    moved = X[perm] * scale + shift
    back = (moved - shift) / scale
    centres, labels, inertia = R.lloyd(back, init, n_iter=ITERS)
    km = KMeans(K, init=init * scale + shift, n_init=1, max_iter=ITERS, tol=0.0, chunk_size=chunk)
    km.fit(_stream(moved, chunk) if streamed else moved)
    np.testing.assert_array_equal(_np(km.labels_), labels)
    np.testing.assert_allclose(_np(km.cluster_centers_), centres * scale + shift, rtol=0, atol=64 * EPS64 * abs(shift) + 1e-9 * scale)
    np.testing.assert_allclose(float(km.inertia_) / scale**2, inertia, rtol=1e-8 + 64 * EPS64 * abs(shift) / scale)


@settings(max_examples=6 * DEPTH)
@given(seed=seeds, power=st.integers(0, 4), sign=st.sampled_from([-1.0, 1.0]))
@example(seed=0, power=4, sign=1.0)
def test_kmeans_float32_is_lloyd_as_far_as_float32_carries(seed, power, sign):
    _quiet()
    X, rng = _blobs(seed)
    init = X[rng.choice(N, K, replace=False)]
    shift = sign * 10.0**power if power else 0.0
    moved = (X + shift).astype(np.float32)
    centres, labels, _ = R.lloyd(moved.astype(np.float64) - shift, init, n_iter=ITERS)
    km = KMeans(K, init=(init + shift).astype(np.float32), n_init=1, max_iter=ITERS, tol=0.0).fit(moved)
    np.testing.assert_array_equal(_np(km.labels_), labels)
    np.testing.assert_allclose(_np(km.cluster_centers_), centres + shift, rtol=0, atol=8 * np.finfo(np.float32).eps * (abs(shift) + 16))


# --------------------------------------------------------------------------------------------
# Discrete families: the reference, whatever the order, chunking, stacking or streaming
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DISCRETE)
@settings(max_examples=5 * DEPTH)
@given(seed=seeds, chunk=st.integers(5, N), weighted=st.booleans())
def test_discrete_family_is_the_reference_in_any_order_and_chunking(name, seed, chunk, weighted):
    _quiet()
    X, _, make, reference = _discrete_case(name, seed)
    rng = np.random.default_rng(seed + 1)
    w = rng.uniform(0.2, 3.0, N) if weighted else None
    weights, params, bounds = reference(X, w=w)
    perm = rng.permutation(N)
    model = make(chunk_size=chunk).fit(X[perm], sample_weight=None if w is None else w[perm])
    got_w, got = _discrete_params(model)
    np.testing.assert_allclose(got_w, weights, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got, params, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(model.lower_bounds_, bounds, rtol=1e-9)
    assert np.all(np.diff(model.lower_bounds_) >= -1e-9 * np.abs(model.lower_bounds_[1:]))
    proba = _np(model.predict_proba(X))
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(_np(model.score_samples(X)), R._logsumexp(_reference_log_prob(name, X, weights, params, model)), rtol=1e-9)


def _reference_log_prob(name, X, weights, params, model):
    if name == "categorical":
        lp = R.categorical_log_prob(X, params)
    elif name == "poisson":
        lp = R.poisson_log_prob(X, params)
    else:
        lp = R.binomial_log_prob(X, params, getattr(model, "n_trials", 1))
    return lp + np.log(weights)


# --------------------------------------------------------------------------------------------
# Every family: a stacked fit is the separate fits; a stream is the in-memory fit
# --------------------------------------------------------------------------------------------

def _every_family():
    cases = [(f"gaussian-{ct}", ct) for ct in COVARIANCE_TYPES] + [(name, name) for name in DISCRETE] + [("kmeans", "kmeans")]
    return [pytest.param(kind, id=label) for label, kind in cases]


def _problem(kind, seed):
    """``(X, make(**kw) -> unfitted model, read(model) -> list of fitted arrays)``."""
    if kind in COVARIANCE_TYPES:
        X, rng = _blobs(seed)
        start = _gaussian_start(X, kind, rng)
        return X, lambda **kw: _gaussian(start, kind, **kw), lambda m: [_np(m.weights_), _np(m.means_), _np(m.covariances_)]
    if kind == "kmeans":
        X, rng = _blobs(seed)
        init = X[:K]
        return X, lambda **kw: KMeans(K, init=init, n_init=1, max_iter=ITERS, tol=0.0, **kw), \
            lambda m: [_np(m.cluster_centers_), _np(m.labels_)]
    X, _, make, _ = _discrete_case(kind, seed)
    return X, make, lambda m: list(_discrete_params(m))


@pytest.mark.parametrize("kind", _every_family())
@settings(max_examples=2 * DEPTH)
@given(seed=seeds, chunk=st.integers(4, N))
def test_stacked_and_streamed_fits_are_the_separate_in_memory_fits(kind, seed, chunk):
    _quiet()
    X1, make, read = _problem(kind, seed)
    X2, _, _ = _problem(kind, seed)  # the same start, fitted on a second problem drawn below
    X2 = np.random.default_rng(seed + 7).permutation(X1) if kind == "kmeans" else X2
    X2 = X2[::-1].copy()
    if kind in COVARIANCE_TYPES or kind == "kmeans":
        X2 = X2 * 1.5 - 2.0
    separate = [read(make().fit(X)) for X in (X1, X2)]
    stacked = make(chunk_size=chunk).fit(np.stack([X1, X2]))
    streamed = read(make(chunk_size=chunk).fit(_stream(X1, chunk)))
    for b, alone in enumerate(separate):
        for got, want in zip(read(stacked), alone):
            np.testing.assert_allclose(got[b], want, rtol=1e-9, atol=1e-12)
    for got, want in zip(streamed, separate[0]):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Discrete families at extreme parameters: "exact" is the float64 reference from the same start
# (offsets do not apply to counts); float32 data as far as float32 parameters carry them
# --------------------------------------------------------------------------------------------

def _extreme_case(name, power, rng):
    """Data and a start whose fitted parameters sit at the edges: probabilities within 1e-9
    of 0 and 1 (constant columns), ``n_trials = 10**power``, rates ``~10**power``, categories
    seen once."""
    labels = rng.integers(0, 2, 120)
    if name == "bernoulli":
        probs = np.array([[1e-9, 1 - 1e-9, 0.5, 1e-3], [1 - 1e-9, 1e-9, 0.5, 0.999]])
        X = (rng.random((120, 4)) < probs[labels]).astype(float)
        X[:, 0], X[:, 1] = 0.0, 1.0
        return X, rng.uniform(0.2, 0.8, (2, 4)), {}
    if name == "binomial":
        trials = 10**power
        X = rng.binomial(trials, np.array([[0.3, 1e-6], [0.3001, 0.5]])[labels]).astype(float)
        return X, np.array([[0.29, 0.1], [0.31, 0.2]]), {"n_trials": trials}
    if name == "poisson":
        rates = np.array([[1.0, 3.0], [1.2, 2.0]]) * 10.0**power
        return rng.poisson(rates[labels]).astype(float), rates * rng.uniform(0.8, 1.2, rates.shape), {}
    probs = np.full((2, 3, 6), 0.2)
    probs[0] = [1 - 5e-9] + [1e-9] * 5
    probs[1, :, 5] = 0.0
    X = np.stack([[rng.choice(6, p=probs[k, j] / probs[k, j].sum()) for j in range(3)] for k in labels])
    X[0] = 5  # the last category once
    return X, rng.dirichlet(np.ones(6) * 5, (2, 3)), {}


@pytest.mark.parametrize("name", DISCRETE)
@settings(max_examples=3 * DEPTH)
@given(seed=seeds, power=st.integers(1, 9))
@example(seed=0, power=9)
def test_discrete_family_is_the_reference_at_extreme_parameters(name, seed, power):
    _quiet()
    rng = np.random.default_rng(seed)
    power = min(power, 6) if name == "binomial" else power
    X, start, extra = _extreme_case(name, power, rng)
    cls = {"bernoulli": BernoulliMixture, "binomial": BinomialMixture, "poisson": PoissonMixture,
           "categorical": CategoricalMixture}[name]
    key = "rates_init" if name == "poisson" else "probs_init"
    family = "binomial" if name in ("bernoulli", "binomial") else name
    weights, params, bounds = R.discrete_em(family, X, [0.5, 0.5], start, n_iter=ITERS, n_trials=extra.get("n_trials", 1))
    model = cls(2, weights_init=[0.5, 0.5], **{key: start}, tol=0.0, max_iter=ITERS, **extra).fit(X)
    got_w, got = _discrete_params(model)
    np.testing.assert_allclose(got_w, weights, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(got, params, rtol=1e-9, atol=1e-15)
    # log C(n, x) of n = 1e6 trials is a difference of lgamma values near 1.3e7: both sides
    # carry eps * 1.3e7 of it
    np.testing.assert_allclose(model.lower_bounds_, bounds, rtol=1e-9, atol=1e-9 * 10.0**power)
    np.testing.assert_allclose(_np(model.predict_proba(X)).sum(1), 1.0, rtol=1e-12)
    if name == "poisson":  # float32 counts up to 1e9: passes in float64 when float32 would lose a nat
        X32 = X.astype(np.float32)
        w32, p32, _ = R.discrete_em("poisson", X32.astype(np.float64), [0.5, 0.5], start, n_iter=ITERS)
        m32 = cls(2, weights_init=[0.5, 0.5], rates_init=start, tol=0.0, max_iter=ITERS).fit(X32)
        np.testing.assert_allclose(m32.rates_, p32, rtol=4e-6)
        np.testing.assert_allclose(m32.weights_, w32, rtol=1e-5, atol=1e-6)
        own = R._logsumexp(R.poisson_log_prob(X32, m32.rates_.astype(np.float64)) + np.log(m32.weights_.astype(np.float64)))
        # rates_ = exp(float32 log-rates) rounds each rate by eps32: (x - rate) * eps32 ~ sqrt(rate) * eps32
        slack = 4 * np.finfo(np.float32).eps * np.sqrt(m32.rates_.astype(np.float64)).sum(1).max()
        np.testing.assert_allclose(m32.score_samples(X32), own, rtol=0, atol=1e-3 + slack)


# --------------------------------------------------------------------------------------------
# partial_fit and streams at any offset: Gaussian mixtures and K-means
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@settings(max_examples=3 * DEPTH)
@given(seed=seeds, power=st.integers(0, 8), sign=st.sampled_from([-1.0, 1.0]), float32=st.booleans())
@example(seed=0, power=8, sign=1.0, float32=False)
@example(seed=0, power=4, sign=-1.0, float32=True)
def test_gaussian_partial_fit_and_streams_are_the_reference_at_any_offset(covariance_type, seed, power, sign, float32):
    """partial_fit over four batches is the reference stepwise EM, and a DataLoader fit the
    reference EM, on data at offsets up to 1e8 (float64) or 1e4 (float32)."""
    _quiet()
    X, rng = _blobs(seed, n=2 * N)
    start = _gaussian_start(X, covariance_type, rng)
    dtype = np.float32 if float32 else np.float64
    power = min(power, 4) if float32 else power
    shift = sign * 10.0**power if power else 0.0
    moved = (X + shift).astype(dtype)
    back = moved.astype(np.float64) - shift
    batches = np.array_split(back, 4)
    weights, means, cov = R.gaussian_stepwise(batches, *start, covariance_type)
    online = _gaussian(start, covariance_type, shift)
    for part in np.array_split(moved, 4):
        online.partial_fit(part)
    w_em, m_em, c_em, _ = R.gaussian_em(back, *start, covariance_type, n_iter=ITERS)
    streamed = _gaussian(start, covariance_type, shift).fit(_stream(moved, 17, dtype))
    eps = np.finfo(dtype).eps
    carried = 16 * eps * abs(shift) + (1e-8 if dtype == np.float64 else 1e-4)
    for model, (w, m, c) in ((online, (weights, means, cov)), (streamed, (w_em, m_em, c_em))):
        got_w, got_m, got_c = (_np(v).astype(np.float64) for v in (model.weights_, model.means_, model.covariances_))
        np.testing.assert_allclose(got_w, w, rtol=0, atol=carried)
        np.testing.assert_allclose(got_m, m + shift, rtol=0, atol=4 * carried)
        assert np.abs(got_c - c).max() <= 4 * carried * np.abs(c).max()


@settings(max_examples=6 * DEPTH)
@given(seed=seeds, power=st.integers(0, 10), sign=st.sampled_from([-1.0, 1.0]))
@example(seed=0, power=10, sign=1.0)
def test_kmeans_partial_fit_is_the_running_mean_at_any_offset(seed, power, sign):
    """Each partial_fit moves a centre to the running mean of the points it has been given
    (MiniBatchKMeans' counts), computed here about the unshifted data: float64 at 1e10."""
    _quiet()
    X, rng = _blobs(seed, n=2 * N)
    shift = sign * 10.0**power if power else 0.0
    moved = X + shift
    back = moved - shift
    init = back[:K].copy()
    km = KMeans(K, init=init + shift, n_init=1)
    centres, counts = init.copy(), np.zeros(K)
    for part, part_back in zip(np.array_split(moved, 4), np.array_split(back, 4)):
        labels = ((part_back[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        km.partial_fit(part)
        for j in range(K):
            mine = part_back[labels == j]
            if len(mine):
                centres[j] = (centres[j] * counts[j] + mine.sum(0)) / (counts[j] + len(mine))
                counts[j] += len(mine)
    np.testing.assert_allclose(_np(km.cluster_centers_), centres + shift, rtol=0, atol=16 * EPS64 * abs(shift) + 1e-12)
