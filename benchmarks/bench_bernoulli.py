"""torchem.BernoulliMixture against pomegranate's GeneralMixtureModel of Bernoulli
distributions (when installed): same binary float32 data, same initial parameters.

Each library fits with 1 and with 1+ITERS EM iterations from the same start; the difference
divided by ITERS is the time of one EM iteration (median of ``--repeat`` alternating runs).

    python benchmarks/bench_bernoulli.py                # N=100,000, D=784, K=10, 20 iterations
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
    probs = rng.beta(0.5, 0.5, size=(k, d))
    X = (rng.random((n, d), dtype=np.float32) < probs[rng.integers(0, k, n)]).astype(np.float32)
    p0 = rng.uniform(0.25, 0.75, size=(k, d))
    w0 = np.full(k, 1.0 / k)
    return X, w0, p0


def run_torchem(X, w0, p0, iters):
    gm = torchem.BernoulliMixture(len(w0), weights_init=w0, probs_init=p0, max_iter=iters, tol=0.0).fit(X)
    return float(gm.lower_bound_)


def run_pomegranate(X, w0, p0, iters):
    from pomegranate.distributions import Bernoulli
    from pomegranate.gmm import GeneralMixtureModel

    dists = [Bernoulli(probs=torch.tensor(p, dtype=torch.float32)) for p in p0]
    model = GeneralMixtureModel(dists, priors=torch.tensor(w0, dtype=torch.float32), max_iter=iters, tol=-np.inf)
    model.fit(torch.from_numpy(X))
    return float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=784)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    X, w0, p0 = make_data(args.n, args.d, args.k)
    runners = {"torchem": run_torchem}
    try:
        import pomegranate  # noqa: F401

        runners["pomegranate"] = run_pomegranate
    except ImportError:
        print("pomegranate is not installed: timing torchem only")
    print(f"BernoulliMixture N={args.n} D={args.d} K={args.k}, {args.iters} EM iterations, float32, "
          f"torch threads={torch.get_num_threads()}")
    times = {name: {1: [], 1 + args.iters: []} for name in runners}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_torchem(X[:1000], w0, p0, 1)
        for _ in range(args.repeat):
            for name, run in runners.items():
                for iters in (1, 1 + args.iters):
                    start = time.perf_counter()
                    run(X, w0, p0, iters)
                    times[name][iters].append(time.perf_counter() - start)
    per = {name: (statistics.median(t[1 + args.iters]) - statistics.median(t[1])) / args.iters * 1e3
           for name, t in times.items()}
    for name in runners:
        print(f"{name:>12}: {per[name]:9.2f} ms/iter")
    if "pomegranate" in per:
        print(f"torchem is x{per['pomegranate'] / per['torchem']:.1f} faster than pomegranate")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n": args.n, "d": args.d, "k": args.k, "iters": args.iters, "ms_per_iter": per,
                       "threads": torch.get_num_threads(), "torch": torch.__version__}, fh, indent=2)


if __name__ == "__main__":
    main()
