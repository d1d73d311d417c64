"""torchem.KMeans against scikit-learn and faiss-cpu (when installed): same float32 data,
same initial centres, Lloyd iterations on all the points.

Each library fits with 1 and with 1+ITERS iterations from the same centres; the difference
divided by ITERS is the time of one Lloyd iteration. The libraries alternate and the median of
``--repeat`` runs is kept. faiss subsamples 256 points per centroid by default; here it is
told to use every point, like the others.

    python benchmarks/bench_kmeans.py                   # N=500,000, D=32, K=64, 20 iterations
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import torch

import torchem


def make_data(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(k, d))
    X = (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)
    init = X[rng.choice(n, k, replace=False)].copy()
    return X, init


def run_torchem(X, init, iters):
    return torchem.KMeans(len(init), init=init, max_iter=iters, tol=0.0).fit(X).inertia_


def run_sklearn(X, init, iters):
    from sklearn.cluster import KMeans

    return KMeans(len(init), init=init, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd").fit(X).inertia_


def run_faiss(X, init, iters):
    import faiss

    km = faiss.Kmeans(X.shape[1], len(init), niter=iters, max_points_per_centroid=10**9, seed=0)
    km.train(X, init_centroids=init)
    return float(km.index.search(X, 1)[0].sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500_000)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    X, init = make_data(args.n, args.d, args.k)
    runners = {"torchem": run_torchem, "sklearn": run_sklearn}
    try:
        import faiss  # noqa: F401

        runners["faiss"] = run_faiss
    except ImportError:
        print("faiss-cpu is not installed: skipping it")
    print(f"KMeans N={args.n} D={args.d} K={args.k}, {args.iters} Lloyd iterations, float32, "
          f"torch threads={torch.get_num_threads()}")
    times = {name: {1: [], 1 + args.iters: []} for name in runners}
    inertia = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_torchem(X[:10000], init, 1)  # warm-up
        for _ in range(args.repeat):
            for name, run in runners.items():
                for iters in (1, 1 + args.iters):
                    start = time.perf_counter()
                    inertia[name] = run(X, init, iters)
                    times[name][iters].append(time.perf_counter() - start)
                time.sleep(0.3)
    per = {name: (statistics.median(t[1 + args.iters]) - statistics.median(t[1])) / args.iters * 1e3
           for name, t in times.items()}
    for name in runners:
        print(f"{name:>8}: {per[name]:8.2f} ms/iter   inertia after {1 + args.iters} iterations {inertia[name]:.6e}")
    others = {k: v for k, v in per.items() if k != "torchem"}
    fastest = min(others, key=others.get)
    print(f"torchem is x{others[fastest] / per['torchem']:.2f} faster than the faster other library ({fastest})")
    for name in others:
        print(f"  vs {name}: x{others[name] / per['torchem']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n": args.n, "d": args.d, "k": args.k, "iters": args.iters, "ms_per_iter": per,
                       "inertia": inertia, "threads": torch.get_num_threads(), "torch": torch.__version__}, fh, indent=2)


if __name__ == "__main__":
    main()
