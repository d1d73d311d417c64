"""What ``torchem bench`` runs: for each model, generated data, one shared starting point,
and a fit function per library.

Every library fits the same array from the same initial parameters with convergence checks
off (``tol=0``): scikit-learn through ``weights_init``/``means_init``/``precisions_init`` or
``init=centres`` (its Gaussian mixture also through the array API on torch tensors,
``sklearn-array-api``, on every benchmarked device), faiss through ``init_centroids`` (with every point used, not a subsample),
pomegranate through its distributions' parameters (``Normal`` means and covariances for
``full``, ``diag`` and ``spherical``, which it calls ``sphere``; ``Bernoulli`` probabilities)
and the mixture's ``priors``. The variational mixture (``bgmm-full``, scikit-learn's
``BayesianGaussianMixture`` as the peer) has no initial parameters to give: both libraries
start from the same responsibilities (each sample wholly in the component of the nearest of
the shared initial means), given through each one's initialisation hook.

Each fit function takes an :class:`~torchem.bench._timing.IterationClock` and ticks it at
every iteration boundary from inside the fit: torchem through the driver's iteration hook,
scikit-learn's mixtures as each E-step starts (the final E-step ends the last iteration),
its K-means around its Lloyd iteration kernel, pomegranate after each M-step, and faiss hands
over the cumulative times it records per iteration.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ._counts import CATEGORIES
from ._timing import IterationClock

__all__ = ["MODELS", "ON_DEVICE", "REFERENCES", "RUNNERS", "ModelSpec", "Problem", "installed_references", "make_problem"]


@dataclass(frozen=True)
class ModelSpec:
    """A benchmarked model: its family, default and ``--quick`` sizes ``(N, D, K)``, and the
    libraries it is compared with (on the CPU)."""

    name: str
    family: str
    covariance_type: str | None
    default: tuple[int, int, int]
    quick: tuple[int, int, int]
    references: tuple[str, ...]


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("gmm-full", "gmm", "full", (200_000, 16, 16), (20_000, 8, 8), ("sklearn", "pomegranate", "sklearn-array-api")),
        ModelSpec("gmm-diag", "gmm", "diag", (200_000, 16, 16), (20_000, 8, 8), ("sklearn", "pomegranate", "sklearn-array-api")),
        ModelSpec("gmm-spherical", "gmm", "spherical", (200_000, 16, 16), (20_000, 8, 8), ("sklearn", "pomegranate", "sklearn-array-api")),
        ModelSpec("gmm-tied", "gmm", "tied", (200_000, 16, 16), (20_000, 8, 8), ("sklearn", "sklearn-array-api")),
        ModelSpec("bgmm-full", "bgmm", "full", (200_000, 16, 16), (20_000, 8, 8), ("sklearn",)),
        # the grid of n_components 1..K x the four covariance types (GaussianMixtureIC), against
        # scikit-learn's loop of the same fits: one iteration = one iteration of every model
        ModelSpec("gmm-ic", "gmm-ic", None, (200_000, 8, 8), (20_000, 6, 8), ("sklearn",)),
        ModelSpec("kmeans", "kmeans", None, (500_000, 32, 64), (50_000, 16, 16), ("sklearn", "faiss")),
        ModelSpec("bernoulli", "bernoulli", None, (20_000, 784, 10), (10_000, 100, 8), ("pomegranate",)),
        ModelSpec("poisson", "poisson", None, (20_000, 784, 10), (10_000, 100, 8), ()),
        ModelSpec("categorical", "categorical", None, (200_000, 32, 10), (20_000, 16, 8), ()),
    ]
}

#: the reference libraries (their import names; ``sklearn-array-api``: scikit-learn's
#: GaussianMixture on torch tensors through the array API)
REFERENCES = ("sklearn", "faiss", "pomegranate", "sklearn-array-api")
#: references that run on each of torchem's benchmarked devices (the others on the CPU)
ON_DEVICE = ("sklearn-array-api",)


def _array_api_version() -> str:
    """scikit-learn's version when its array API dispatch works on torch tensors here."""
    os.environ.setdefault("SCIPY_ARRAY_API", "1")  # read by scipy when it is first imported
    from scipy._lib import _array_api

    if not getattr(_array_api, "SCIPY_ARRAY_API", False):
        raise RuntimeError("needs SCIPY_ARRAY_API=1 in the environment (scipy reads it when first imported, "
                           "which importing torchem does): SCIPY_ARRAY_API=1 torchem bench ...")
    import sklearn
    from sklearn.utils._array_api import get_namespace

    with sklearn.config_context(array_api_dispatch=True):
        get_namespace(torch.zeros(1))  # raises where array-api-compat (or its vendored copy) is missing
    return sklearn.__version__


def installed_references(names=None, skipped: dict | None = None) -> dict[str, str]:
    """Version of each reference library in ``names`` (default: all) that can be used; the
    reason each other one cannot is put in ``skipped``."""
    found = {}
    for module in REFERENCES if names is None else names:
        try:
            if module == "sklearn-array-api":
                found[module] = _array_api_version()
                continue
            mod = importlib.import_module(module)
        except Exception as exc:  # ImportError, or a library broken by its own dependencies
            if skipped is not None:
                skipped[module] = f"{type(exc).__name__}: {exc}"
            continue
        found[module] = str(getattr(mod, "__version__", "unknown"))
    return found


@dataclass
class Problem:
    """Data ``X [N, D]`` (numpy, in the benchmark dtype) and the shared initial parameters."""

    X: np.ndarray
    init: dict[str, np.ndarray]


_BLOCK = 1 << 18  # samples generated at a time, so large N needs no float64 copy of the data


def _blocked(rng, n: int, d: int, dtype, draw) -> np.ndarray:
    """``X [n, d]`` in ``dtype``, filled block by block with ``draw(rng, m)`` (``[m, d]``)."""
    X = np.empty((n, d), dtype=dtype)
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        X[start:stop] = draw(rng, stop - start)
    return X


def _gmm_data(rng, n, d, k, dtype):
    """Well-separated Gaussian blobs: means with standard deviation 4, per-feature scales in
    [0.5, 1.5]."""
    centres = rng.normal(scale=4.0, size=(k, d))
    scales = rng.uniform(0.5, 1.5, size=(k, d))

    def draw(rng, m):
        labels = rng.integers(0, k, size=m)
        return centres[labels] + rng.normal(size=(m, d)) * scales[labels]

    return _blocked(rng, n, d, dtype, draw)


def _gmm_init(rng, X, k, covariance_type):
    """k distinct data points as means, the inverse variance of the data as precisions,
    equal weights."""
    d = X.shape[1]
    means = X[rng.choice(X.shape[0], k, replace=False)].astype(np.float64)
    var = X.var(0, dtype=np.float64)
    prec = {
        "full": np.broadcast_to(np.diag(1.0 / var), (k, d, d)).copy(),
        "tied": np.diag(1.0 / var),
        "diag": np.broadcast_to(1.0 / var, (k, d)).copy(),
        "spherical": np.full(k, 1.0 / var.mean()),
    }[covariance_type]
    # in the data's dtype: scikit-learn keeps its parameters in the dtype of the starting
    # values, so float64 starting values would make it compute in float64 on float32 data
    return {key: np.asarray(v, dtype=X.dtype) for key, v in
            {"weights_init": np.full(k, 1.0 / k), "means_init": means, "precisions_init": prec}.items()}


def make_problem(spec: ModelSpec, n: int, d: int, k: int, dtype: np.dtype, seed: int = 0) -> Problem:
    """Generated data for ``spec`` and its starting point (deterministic in ``seed``)."""
    if n < k:
        raise ValueError(f"N={n} is smaller than K={k}: give each component at least one sample (raise --n).")
    rng = np.random.default_rng(seed)
    if spec.family == "gmm":
        X = _gmm_data(rng, n, d, k, dtype)
        return Problem(X, _gmm_init(np.random.default_rng(seed + 1), X, k, spec.covariance_type))
    if spec.family == "gmm-ic":  # each model starts from data points drawn with the same seed
        return Problem(_gmm_data(rng, n, d, k, dtype), {"n_components": np.arange(1, k + 1)})
    if spec.family == "bgmm":
        X = _gmm_data(rng, n, d, k, dtype)
        means = _gmm_init(np.random.default_rng(seed + 1), X, k, spec.covariance_type)["means_init"].astype(np.float64)
        labels = np.concatenate([((X[i : i + _BLOCK, None, :] - means) ** 2).sum(-1).argmin(-1)
                                 for i in range(0, n, _BLOCK)])
        return Problem(X, {"means": means, "labels": labels})
    if spec.family == "kmeans":
        centres = rng.normal(scale=3.0, size=(k, d))
        X = _blocked(rng, n, d, dtype, lambda rng, m: centres[rng.integers(0, k, m)] + rng.normal(size=(m, d)))
        return Problem(X, {"centers": X[rng.choice(n, k, replace=False)].copy()})
    if spec.family == "poisson":
        rates = rng.gamma(2.0, 2.0, size=(k, d))  # mean 4, some rates near 0
        X = _blocked(rng, n, d, dtype, lambda rng, m: rng.poisson(rates[rng.integers(0, k, m)]))
        return Problem(X, {"weights": np.full(k, 1.0 / k), "rates": rng.uniform(1.0, 8.0, size=(k, d))})
    if spec.family == "categorical":
        # survey-like answers: CATEGORIES per question, sharp class profiles
        cum = rng.dirichlet(np.full(CATEGORIES, 0.5), size=(k, d)).cumsum(-1)
        X = _blocked(rng, n, d, dtype, lambda rng, m: (rng.random((m, d, 1)) > cum[rng.integers(0, k, m)]).sum(-1))
        probs = rng.dirichlet(np.full(CATEGORIES, 5.0), size=(k, d))
        return Problem(X, {"weights": np.full(k, 1.0 / k), "probs": probs})
    probs = rng.beta(0.5, 0.5, size=(k, d))
    X = _blocked(rng, n, d, dtype, lambda rng, m: rng.random((m, d)) < probs[rng.integers(0, k, m)])
    return Problem(X, {"weights": np.full(k, 1.0 / k), "probs": rng.uniform(0.25, 0.75, size=(k, d))})


# --------------------------------------------------------------------------------------------
# Fit functions: (spec, data, init, max_iter, clock) -> fitted object; the clock is ticked at
# every iteration boundary; iterations and quality are read afterwards, outside the fit.
# --------------------------------------------------------------------------------------------


def _quiet(fn: Callable) -> Callable:
    def wrapped(*args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tol=0 makes every library warn about convergence
            return fn(*args)

    return wrapped


@_quiet
def _fit_torchem(spec, X, init, max_iter, clock=None):
    clock = clock or IterationClock()
    from ..em import _clock_iterations

    with _clock_iterations(clock.tick):
        return _fit_torchem_model(spec, X, init, max_iter)


def _fit_torchem_model(spec, X, init, max_iter):
    import torchem

    k = len(next(iter(init.values())))
    if spec.family == "gmm":
        return torchem.GaussianMixture(k, covariance_type=spec.covariance_type, tol=0.0, max_iter=max_iter, **init).fit(X)
    if spec.family == "bgmm":
        return _torchem_bgmm(spec, init["labels"], k, max_iter).fit(X)
    if spec.family == "gmm-ic":
        return torchem.GaussianMixtureIC(range(1, k + 1), tol=0.0, max_iter=max_iter, init_params="random_from_data",
                                         random_state=0).fit(X)
    if spec.family == "kmeans":
        return torchem.KMeans(k, init=init["centers"], max_iter=max_iter, tol=0.0).fit(X)
    if spec.family == "poisson":
        return torchem.PoissonMixture(k, weights_init=init["weights"], rates_init=init["rates"], max_iter=max_iter, tol=0.0).fit(X)
    if spec.family == "categorical":
        return torchem.CategoricalMixture(
            k, n_categories=CATEGORIES, weights_init=init["weights"], probs_init=init["probs"], max_iter=max_iter, tol=0.0
        ).fit(X)
    return torchem.BernoulliMixture(
        k, weights_init=init["weights"], probs_init=init["probs"], max_iter=max_iter, tol=0.0
    ).fit(X)


def _sklearn_gmm(spec, k, max_iter, init, clock):
    """scikit-learn's GaussianMixture whose every E-step ticks ``clock`` as it starts."""
    from sklearn.mixture import GaussianMixture

    class Timed(GaussianMixture):
        def _e_step(self, X, xp=None):
            clock.tick()
            return super()._e_step(X, xp=xp)

    return Timed(k, covariance_type=spec.covariance_type, tol=0.0, max_iter=max_iter,
                 init_params="random_from_data", random_state=0, **init)


@contextlib.contextmanager
def _timed_lloyd(clock):
    """scikit-learn's Lloyd kernel, for the length of a fit, ticking ``clock`` as the first
    iteration starts and as each updating call ends (the labels-only call after the loop is
    not an iteration)."""
    from sklearn.cluster import _kmeans

    kernel = _kmeans.lloyd_iter_chunked_dense

    def timed(*args, update_centers=True, **kwargs):
        if not clock.stamps:
            clock.tick()
        out = kernel(*args, update_centers=update_centers, **kwargs)
        if update_centers:
            clock.tick()
        return out

    _kmeans.lloyd_iter_chunked_dense = timed
    try:
        yield
    finally:
        _kmeans.lloyd_iter_chunked_dense = kernel


@_quiet
def _fit_sklearn(spec, X, init, max_iter, clock=None):
    clock = clock or IterationClock()
    k = len(next(iter(init.values())))
    if spec.family == "gmm":
        return _sklearn_gmm(spec, k, max_iter, init, clock).fit(X)
    if spec.family == "bgmm":
        return _sklearn_bgmm(spec, init["labels"], k, max_iter, clock).fit(X)
    if spec.family == "gmm-ic":
        return _sklearn_grid(X, k, max_iter, clock)
    from sklearn.cluster import KMeans

    with _timed_lloyd(clock):
        return KMeans(k, init=init["centers"], n_init=1, max_iter=max_iter, tol=0.0, algorithm="lloyd").fit(X)


def _torchem_bgmm(spec, labels: np.ndarray, k: int, max_iter: int):
    """torchem's BayesianGaussianMixture starting from one-hot responsibilities ``labels [N]``."""
    import torchem

    class StartFromLabels(torchem.BayesianGaussianMixture):
        def _init_responsibilities(self, source, n_init, generator):
            given = torch.as_tensor(labels, device=source.device)

            def resp_fn(start, X):
                r = torch.nn.functional.one_hot(given[start : start + X.shape[-2]], k).double()
                return r.expand(source.n_problems, n_init, *r.shape)

            return resp_fn

    return StartFromLabels(k, covariance_type=spec.covariance_type, tol=0.0, max_iter=max_iter)


def _sklearn_grid(X, k: int, max_iter: int, clock):
    """scikit-learn's loop over the grid (n_components 1..k x the four covariance types), as
    its model-selection example fits it; returns the model of least BIC. Each fit is timed per
    iteration from inside (its E-steps), and iteration ``i`` of the grid is charged the sum of
    every model's iteration ``i``: the time one iteration of all the models takes."""
    from sklearn.mixture import GaussianMixture

    from ..functional.covariance import COVARIANCE_TYPES

    class Timed(GaussianMixture):
        def _e_step(self, *args, **kwargs):
            self._clock.tick()
            return super()._e_step(*args, **kwargs)

    per_model, best = [], None
    for covariance_type in COVARIANCE_TYPES:
        for n_components in range(1, k + 1):
            model = Timed(n_components, covariance_type=covariance_type, tol=0.0, max_iter=max_iter,
                          init_params="random_from_data", random_state=0)
            model._clock = IterationClock()
            model.fit(X)
            per_model.append(model._clock.seconds())
            bic = model.bic(X)
            if best is None or bic < best[0]:
                best = (bic, model)
    steps = min(len(s) for s in per_model)
    clock.set(np.concatenate([[0.0], np.cumsum(np.sum([s[:steps] for s in per_model], axis=0))]))
    return best[1]


def _sklearn_bgmm(spec, labels: np.ndarray, k: int, max_iter: int, clock):
    """scikit-learn's BayesianGaussianMixture starting from the same responsibilities, whose
    every E-step ticks ``clock`` as it starts."""
    from sklearn.mixture import BayesianGaussianMixture

    class StartFromLabels(BayesianGaussianMixture):
        def _e_step(self, *args, **kwargs):
            clock.tick()
            return super()._e_step(*args, **kwargs)

        def _initialize_parameters(self, X, random_state, xp=None):
            resp = np.zeros((len(X), k), dtype=X.dtype)
            resp[np.arange(len(X)), labels] = 1.0
            self._initialize(X, resp)

    return StartFromLabels(n_components=k, covariance_type=spec.covariance_type, tol=0.0, max_iter=max_iter)


@_quiet
def _fit_sklearn_array_api(spec, X, init, max_iter, clock=None):
    clock = clock or IterationClock()
    import sklearn

    if spec.family != "gmm":
        raise ValueError("scikit-learn's array API reference covers Gaussian mixtures only")
    init = {key: torch.as_tensor(np.ascontiguousarray(v), device=X.device) for key, v in init.items()}
    k = len(init["weights_init"])
    # the array API GaussianMixture supports init_params "random" / "random_from_data" only
    with sklearn.config_context(array_api_dispatch=True):
        return _sklearn_gmm(spec, k, max_iter, init, clock).fit(X)


@_quiet
def _fit_faiss(spec, X, init, max_iter, clock=None):
    clock = clock or IterationClock()
    import faiss

    centers = np.ascontiguousarray(init["centers"], dtype=np.float32)
    km = faiss.Kmeans(X.shape[1], len(centers), niter=max_iter, max_points_per_centroid=10**9, seed=0)
    km.train(X, init_centroids=centers)
    # faiss records the time since training started at the end of every iteration
    clock.set([0.0] + [stats["time"] for stats in km.iteration_stats])
    return km


def _pomegranate_normals(init, covariance_type, dtype):
    """pomegranate's ``Normal`` components from the shared means and precisions."""
    from pomegranate.distributions import Normal

    means, prec = init["means_init"], init["precisions_init"]
    d = means.shape[1]
    covs = {
        "full": lambda: np.linalg.inv(prec),
        "diag": lambda: 1.0 / prec,
        "spherical": lambda: np.repeat((1.0 / prec)[:, None], d, axis=1),  # 'sphere': one variance, D copies
    }[covariance_type]()
    kind = {"full": "full", "diag": "diag", "spherical": "sphere"}[covariance_type]
    return [Normal(means=torch.tensor(m, dtype=dtype), covs=torch.tensor(c, dtype=dtype), covariance_type=kind)
            for m, c in zip(means, covs)]


@_quiet
def _fit_pomegranate(spec, X, init, max_iter, clock=None):
    clock = clock or IterationClock()
    from pomegranate.distributions import Bernoulli
    from pomegranate.gmm import GeneralMixtureModel

    class Timed(GeneralMixtureModel):
        def from_summaries(self):  # the end of an iteration
            super().from_summaries()
            clock.tick()

    if spec.family == "gmm":
        dists, weights = _pomegranate_normals(init, spec.covariance_type, X.dtype), init["weights_init"]
    else:
        dists, weights = [Bernoulli(probs=torch.tensor(p, dtype=X.dtype)) for p in init["probs"]], init["weights"]
    model = Timed(dists, priors=torch.tensor(weights, dtype=X.dtype), max_iter=max_iter, tol=-np.inf)
    clock.tick()  # the first iteration also holds pomegranate's set-up; the bench drops it
    return model.fit(X)


def _prepare_torchem(X: np.ndarray, device: str):
    return torch.from_numpy(X).to(device)


def _prepare_faiss(X: np.ndarray, device: str):
    if X.dtype != np.float32:
        raise ValueError("faiss clusters float32 data only (run with --dtype float32)")
    return np.ascontiguousarray(X)


def _n_iter(fitted, max_iter: int) -> int:
    n = getattr(fitted, "n_iter_", None)
    return int(np.max(n)) if n is not None else int(max_iter)  # faiss and pomegranate run every iteration


@torch.no_grad()
def _quality(spec, library, fitted, X) -> float:
    """Mean log-likelihood of the data under the fitted mixture, or the K-means inertia."""
    if library == "faiss":
        return float(fitted.index.search(X, 1)[0].astype(np.float64).sum())
    if library == "pomegranate":
        return float(fitted.log_probability(X).double().mean())
    if library == "sklearn-array-api":
        import sklearn

        with sklearn.config_context(array_api_dispatch=True):
            return float(fitted.score(X))
    if spec.family == "kmeans":
        return float(fitted.inertia_)
    return float(fitted.score(X))


@dataclass(frozen=True)
class Runner:
    prepare: Callable[[np.ndarray, str], Any]
    fit: Callable
    quality: Callable = _quality
    n_iter: Callable = _n_iter


RUNNERS: dict[str, Runner] = {
    "torchem": Runner(_prepare_torchem, _fit_torchem),
    "sklearn": Runner(lambda X, device: X, _fit_sklearn),
    "faiss": Runner(_prepare_faiss, _fit_faiss),
    "pomegranate": Runner(lambda X, device: torch.from_numpy(X), _fit_pomegranate),
    "sklearn-array-api": Runner(_prepare_torchem, _fit_sklearn_array_api),
}
