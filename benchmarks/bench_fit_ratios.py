"""Whole fits of torchem against scikit-learn (and faiss, when installed) on the workloads of
the speed goals: the same float32 data and starting values, in one process, interleaved
(torchem, peer, torchem, peer, ...), so a slow spell of a shared machine hits both; each
repeat gives one torchem/peer ratio and the median ratio is reported, of the wall time and of
the process's CPU time (on a machine shared with other work, run with ``OMP_NUM_THREADS=1``:
the CPU time of a single-threaded fit does not count the time other processes held the core,
so its ratio is the load-robust figure).

Workloads (``--workloads``, default all):

* ``kmeans-large``: KMeans 500k x 32, K=64, 20 iterations; the peer is the faster of
  scikit-learn (Lloyd) and faiss-cpu.
* ``kmeans-small``: KMeans 50k x 16, K=16, 20 iterations; scikit-learn.
* ``gmm-full`` / ``gmm-diag``: GaussianMixture 200k x 16, K=16, 20 iterations, with
  scikit-learn run first in the process (its large frees change the allocator's state).
* ``gmm-full-self``: torchem's full fit before anything else ran in the process, then after
  scikit-learn's fits, alternated with them: the ratio after / before.

    python benchmarks/bench_fit_ratios.py --repeat 3 --json benchmarks/results/cpu-2core-fit-ratios.json

The data and starting values are ``torchem bench``'s (:func:`torchem.bench._cases.make_problem`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
import torch

import torchem
from torchem.bench._cases import MODELS, make_problem
from torchem.bench._timing import wait_until_idle

WORKLOADS = {
    "kmeans-large": ("kmeans", 500_000, 32, 64),
    "kmeans-small": ("kmeans", 50_000, 16, 16),
    "gmm-full": ("gmm-full", 200_000, 16, 16),
    "gmm-diag": ("gmm-diag", 200_000, 16, 16),
    "gmm-full-self": ("gmm-full", 200_000, 16, 16),
}
ITERS = 20


def _torchem(model, X, init):
    k = len(next(iter(init.values())))
    if model == "kmeans":
        return torchem.KMeans(k, init=init["centers"], max_iter=ITERS, tol=0.0).fit(X)
    return torchem.GaussianMixture(k, covariance_type=MODELS[model].covariance_type, tol=0.0, max_iter=ITERS, **init).fit(X)


def _sklearn(model, X, init):
    k = len(next(iter(init.values())))
    if model == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(k, init=init["centers"], n_init=1, max_iter=ITERS, tol=0.0, algorithm="lloyd").fit(X)
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(k, covariance_type=MODELS[model].covariance_type, tol=0.0, max_iter=ITERS,
                           init_params="random_from_data", random_state=0, **init).fit(X)


def _faiss(model, X, init):
    import faiss

    c = np.ascontiguousarray(init["centers"], dtype=np.float32)
    km = faiss.Kmeans(X.shape[1], len(c), niter=ITERS, max_points_per_centroid=10**9, seed=0)
    km.train(X, init_centroids=c)
    return km


def _seconds(fn, *args) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of ``fn(*args)``, started once the previous fit's thread pools
    stopped spinning (NumPy's OpenBLAS spins ~0.1 s after scikit-learn's mixtures, holding a
    core that the next fit's threads then wait for)."""
    wait_until_idle()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: convergence warnings
        start, cpu = time.perf_counter(), time.process_time()
        fn(*args)
        return time.perf_counter() - start, time.process_time() - cpu


def _ratio(num: list, den: list, which: int) -> float:
    return statistics.median([a[which] / b[which] for a, b in zip(num, den)])


def _peers(model):
    peers = {"sklearn": _sklearn}
    if model == "kmeans":
        try:
            import faiss  # noqa: F401

            peers["faiss"] = _faiss
        except ImportError:
            pass
    return peers


def run(name: str, repeat: int) -> dict:
    model, n, d, k = WORKLOADS[name]
    problem = make_problem(MODELS[model], n, d, k, np.float32, 0)
    X, init = problem.X, problem.init
    out = {"workload": name, "model": model, "n": n, "d": d, "k": k, "iters": ITERS}
    if name == "gmm-full-self":
        before = [_seconds(_torchem, model, X, init) for _ in range(repeat)]  # nothing else ran yet
        after = []
        for _ in range(repeat):
            _seconds(_sklearn, model, X, init)
            after.append(_seconds(_torchem, model, X, init))
        med = lambda ts, i: statistics.median(t[i] for t in ts)  # noqa: E731
        out.update(before_s=before, after_s=after, ratio=med(after, 0) / med(before, 0),
                   ratio_cpu=med(after, 1) / med(before, 1), ratio_name="torchem after scikit-learn / before")
        return out
    peers = _peers(model)
    if model != "kmeans":
        _seconds(_sklearn, model, X, init)  # scikit-learn first in the process
    _seconds(_torchem, model, X, init)  # warm-up (first use of the kernels)
    times = {"torchem": [], **{p: [] for p in peers}}
    for _ in range(repeat):
        for lib, fn in [("torchem", _torchem), *peers.items()]:
            times[lib].append(_seconds(fn, model, X, init))
    peer_median = {p: statistics.median(t[1] for t in ts) for p, ts in times.items() if p != "torchem"}
    fastest = min(peer_median, key=peer_median.get)
    out.update(times_s=times, peer=fastest, ratio=_ratio(times["torchem"], times[fastest], 0),
               ratio_cpu=_ratio(times["torchem"], times[fastest], 1), ratio_name=f"torchem / {fastest} (whole fit)")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "-C", os.path.dirname(torchem.__file__), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    results = {"benchmark": "bench_fit_ratios", "torchem_path": os.path.dirname(torchem.__file__), "commit": commit, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg()[0],
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "repeat": args.repeat, "command": "python benchmarks/bench_fit_ratios.py " + " ".join(argv or []),
               "runs": []}
    names = args.workloads.split(",")
    # the self ratio's "before" must come before anything else ran in the process
    names = sorted(names, key=lambda name: name != "gmm-full-self")
    for name in names:
        row = run(name, args.repeat)
        results["runs"].append(row)
        print(f"{name:14s} {row['ratio_name']}: wall {row['ratio']:.2f}, CPU {row['ratio_cpu']:.2f}", flush=True)
    results["load_average_after"] = os.getloadavg()[0]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
