"""The EM loop stays free of per-chunk host-device synchronisations.

On a GPU every ``bool(tensor)``, ``.item()``, ``nonzero``, ``unique`` or boolean-mask index waits
for the device; one per chunk would serialise the loop. Counted here on the CPU, through the
dispatcher: the operators that synchronise on CUDA, during fits of ``max_iter`` 2 and 4 (the
difference, halved, is the count of one iteration, free of the set-up and the final pass),
with chunk sizes giving 2 and 8 chunks. The count per iteration must not depend on the
number of chunks, and stays at most what was measured when this test was written.
"""

import collections
import warnings

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import torchem

aten = torch.ops.aten
#: operators that wait for the device on CUDA (``item``, ``bool`` and ``is_nonzero`` reach
#: ``_local_scalar_dense``; ``nonzero`` and friends need the output's size on the host)
SYNCING = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
           aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
           aten.repeat_interleave.Tensor}


class CountSyncs(TorchDispatchMode):
    """Counts, by operator, the calls that synchronise with a CUDA device."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNCING:
            self.counts[func.name()] += 1
        elif func is aten.index.Tensor and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None
        ):
            self.counts["index(bool mask)"] += 1
        return func(*args, **kwargs)


N = 2048
_rng = np.random.default_rng(0)
_gauss = _rng.normal(size=(N, 4))
_gauss[: N // 2] += 3.0
DATA = {
    "gaussian": _gauss,
    "bernoulli": (_rng.random((N, 6)) < 0.3).astype(float),
    "binomial": _rng.integers(0, 6, (N, 6)).astype(float),
    "poisson": _rng.poisson(3.0, (N, 6)).astype(float),
    "categorical": _rng.integers(0, 4, (N, 5)).astype(float),
    "kmeans": _rng.random((N, 4)),
}

# name: (make(max_iter, chunk_size), data, streamed, the most syncs per iteration measured)
# Gaussians: 4 when this test was written, 5 since float64 data too checks whether the
# moments about the means' centre cancelled (components far apart), 6 since it also checks,
# once per pass as float32 data does, whether the E-step's expansion would round
# (FLOAT64_EXPANSION_TOLERANCE): both are what exactness needs.
CASES = {
    **{f"gaussian-{ct}": (lambda kw, ct=ct: torchem.GaussianMixture(3, covariance_type=ct, **kw), "gaussian", False, 6)
       for ct in ("full", "tied", "diag", "spherical")},
    "gaussian-diag-streamed": (lambda kw: torchem.GaussianMixture(3, covariance_type="diag", **kw), "gaussian", True, 6),
    "bernoulli": (lambda kw: torchem.BernoulliMixture(3, **kw), "bernoulli", False, 3),
    "binomial": (lambda kw: torchem.BinomialMixture(3, n_trials=5, **kw), "binomial", False, 3),
    "poisson": (lambda kw: torchem.PoissonMixture(3, **kw), "poisson", False, 3),
    "categorical": (lambda kw: torchem.CategoricalMixture(3, **kw), "categorical", False, 3),
    # the bounded (Hamerly) pass of in-memory K-means on the CPU: 5 item-like and 4 nonzero (one
    # finds the near-ties the GEMM cannot settle) per iteration here, per 16k-row block of its
    # own (not per chunk); CUDA takes the dense pass (test_dense_kmeans_pass_is_sync_free below)
    "kmeans": (lambda kw: torchem.KMeans(3, n_init=1, **kw), "kmeans", False, 10),
    "kmeans-streamed": (lambda kw: torchem.KMeans(3, n_init=1, **kw), "kmeans", True, 4),
}


@pytest.fixture(scope="module")
def memmaps(tmp_path_factory):
    out = {}
    for name, X in DATA.items():
        path = tmp_path_factory.mktemp("sync") / f"{name}.npy"
        np.save(path, X)
        out[name] = np.load(path, mmap_mode="r")  # a memmap is streamed chunk by chunk
    return out


def _syncs(make, X, max_iter, chunk_size) -> collections.Counter:
    model = make(dict(max_iter=max_iter, tol=0.0, chunk_size=chunk_size, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: not converged
        with CountSyncs() as counter:
            model.fit(X)
    assert int(np.max(model.n_iter_)) == max_iter  # every iteration ran
    return counter.counts


def _per_iteration(make, X, chunk_size) -> dict:
    short, long_ = _syncs(make, X, 2, chunk_size), _syncs(make, X, 4, chunk_size)
    return {op: (long_[op] - short[op]) / 2 for op in set(short) | set(long_) if long_[op] != short[op]}


@pytest.mark.parametrize("name", list(CASES))
def test_syncs_per_iteration_do_not_grow_with_the_chunks(name, memmaps):
    make, data, streamed, most = CASES[name]
    X = memmaps[data] if streamed else DATA[data]
    two, eight = (_per_iteration(make, X, N // chunks) for chunks in (2, 8))
    assert two == eight, f"{name}: syncs per iteration with 2 chunks {two}, with 8 chunks {eight}"
    assert sum(two.values()) <= most, f"{name}: {two} syncs per iteration, at most {most} expected"


@pytest.mark.parametrize("n_init, stacked", [(1, False), (3, True)])
def test_dense_kmeans_pass_is_sync_free(monkeypatch, n_init, stacked):
    """K-means' dense pass (what CUDA devices take), forced on the CPU: a constant number of
    synchronisations per iteration (the driver's own), however many chunks, restarts and
    problems; the bounded pass's per-problem loop over ``unique(...).tolist()`` is gone."""
    monkeypatch.setattr(torchem.cluster.kmeans._KMeansFamily, "dense", True)
    X = DATA["kmeans"] if not stacked else np.stack([DATA["kmeans"], DATA["kmeans"][::-1] * 2])
    make = lambda kw: torchem.KMeans(3, init="random", n_init=n_init, **kw)  # noqa: E731
    two, eight = (_per_iteration(make, X, N // chunks) for chunks in (2, 8))
    assert two == eight, f"syncs per iteration with 2 chunks {two}, with 8 chunks {eight}"
    assert sum(two.values()) <= 4, two
