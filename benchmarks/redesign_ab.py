"""Before/after check of a refactor: time whole fits of one torchem checkout against another,
alternating A and B in fresh processes, same data and starting values, and compare the fitted
results. Run: python benchmarks/redesign_ab.py --a PATH_A --b PATH_B [--pairs 5]
(each PATH is a checkout whose torchem package is imported by putting it on PYTHONPATH)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CASES = {
    "gmm-full 200000x16 K=16": ("gmm", "full", 200_000, 16, 16),
    "gmm-diag 200000x16 K=16": ("gmm", "diag", 200_000, 16, 16),
    "kmeans 500000x32 K=64": ("kmeans", None, 500_000, 32, 64),
    "kmeans 50000x16 K=16": ("kmeans", None, 50_000, 16, 16),
    "bernoulli 100000x100 K=8": ("bernoulli", None, 100_000, 100, 8),
}

CHILD = r"""
import json, sys, time, warnings
import numpy as np, torch
import torchem
torch.set_num_threads(2)
warnings.simplefilter("ignore")
kind, ct, n, d, k, iters = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
if kind == "bernoulli":
    p = rng.uniform(0.05, 0.95, size=(k, d))
    X = (rng.random((n, d)) < p[rng.integers(0, k, n)]).astype(np.float32)
else:
    X = (rng.normal(size=(n, d)) + 4.0 * rng.normal(size=(k, d))[rng.integers(0, k, n)]).astype(np.float32)
start = X[rng.choice(n, k, replace=False)]
def make():
    if kind == "gmm":
        prec = np.ones((k, d), np.float32) if ct == "diag" else np.broadcast_to(np.eye(d, dtype=np.float32), (k, d, d)).copy()
        return torchem.GaussianMixture(k, covariance_type=ct, max_iter=iters, tol=0.0, weights_init=np.full(k, 1.0 / k),
                                       means_init=start, precisions_init=prec)
    if kind == "kmeans":
        return torchem.KMeans(k, init=start, n_init=1, max_iter=iters, tol=0.0)
    return torchem.BernoulliMixture(k, max_iter=iters, tol=0.0, weights_init=np.full(k, 1.0 / k),
                                    probs_init=0.5 * (start + X.mean(0)))
make().fit(X[:5000])  # warm-up: imports, allocator
t = time.perf_counter()
m = make().fit(X)
elapsed = time.perf_counter() - t
out = {"seconds": elapsed}
if kind == "kmeans":
    out.update(inertia=float(m.inertia_), centers=np.asarray(m.cluster_centers_).tolist())
else:
    out.update(lower_bound=float(m.lower_bound_), weights=np.asarray(m.weights_).tolist())
print(json.dumps(out))
"""


def run(path, case, iters):
    env = dict(os.environ, PYTHONPATH=path)
    res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(list(case) + [iters])], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    report = {}
    for name, case in CASES.items():
        ratios, ta, tb = [], [], []
        for _ in range(args.pairs):
            a, b = run(args.a, case, args.iters), run(args.b, case, args.iters)
            ta.append(a["seconds"]), tb.append(b["seconds"]), ratios.append(b["seconds"] / a["seconds"])
        if "inertia" in a:
            diff = abs(a["inertia"] - b["inertia"]) / abs(a["inertia"])
        else:
            diff = abs(a["lower_bound"] - b["lower_bound"])
        report[name] = {"a_median_s": statistics.median(ta), "b_median_s": statistics.median(tb),
                        "b_over_a_median": statistics.median(ratios), "b_over_a_min": min(ratios),
                        "b_over_a_max": max(ratios), "result_difference": diff}
        r = report[name]
        print(f"{name:28s} A {r['a_median_s']:.3f}s  B {r['b_median_s']:.3f}s  B/A median {r['b_over_a_median']:.3f} "
              f"(min {r['b_over_a_min']:.3f}, max {r['b_over_a_max']:.3f})  result diff {diff:.2e}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"pairs": args.pairs, "iters": args.iters, "cases": report}, fh, indent=1)


if __name__ == "__main__":
    main()
