"""torchem.GaussianMixture against scikit-learn on the same float32 data and initial parameters.

Both libraries fit twice from the same starting point, with ``tol=0``: with ``max_iter=1``
(set-up, initialisation, one iteration and the final E-step) and with ``max_iter=1+N_ITER``
(the same plus exactly N_ITER more EM iterations). (scikit-learn cannot fit with
``max_iter=0`` when ``precisions_init`` is given.) The difference divided by N_ITER is the time of one EM
iteration, free of initialisation costs. The libraries alternate and the median of
``--repeat`` runs is kept.

    python benchmarks/bench_gmm.py                       # the issue's CPU configuration
    python benchmarks/bench_gmm.py --device cuda --n 1000000 --d 64 --k 64 --no-sklearn
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings

import numpy as np
import torch

import torchem


def make_data(n: int, d: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, d))
    labels = rng.integers(0, k, size=n)
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    return (centres[labels] + rng.normal(size=(n, d)) * scales[labels]).astype(np.float32)


def initial_parameters(X: np.ndarray, k: int, covariance_type: str, seed: int) -> dict:
    """Shared starting point: k random data points as means, the data's variance, equal weights."""
    rng = np.random.default_rng(seed)
    d = X.shape[1]
    means = X[rng.choice(X.shape[0], k, replace=False)].astype(np.float64)
    var = X.var(0).astype(np.float64)
    prec = {
        "full": np.broadcast_to(np.diag(1.0 / var), (k, d, d)).copy(),
        "tied": np.diag(1.0 / var),
        "diag": np.broadcast_to(1.0 / var, (k, d)).copy(),
        "spherical": np.full(k, 1.0 / var.mean()),
    }[covariance_type]
    return {"weights_init": np.full(k, 1.0 / k), "means_init": means, "precisions_init": prec}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fit(make_model, X, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_model().fit(X)
    _sync(device)
    elapsed = time.perf_counter() - start
    return elapsed, model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--covariance-types", default="full,diag")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-sklearn", action="store_true", help="time torchem only")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)

    X = make_data(args.n, args.d, args.k, seed=0)
    X_dev = torch.from_numpy(X).to(args.device)
    results = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "iters": args.iters,
        "runs": [],
    }
    print(f"N={args.n} D={args.d} K={args.k}, {args.iters} EM iterations, float32, device={args.device}, "
          f"torch threads={torch.get_num_threads()}")
    for ct in args.covariance_types.split(","):
        init = initial_parameters(X, args.k, ct, seed=1)
        ours = {}
        theirs = {}
        for max_iter in (1, 1 + args.iters):
            ours[max_iter] = []
            theirs[max_iter] = []

        def torchem_model(max_iter, ct=ct, init=init):
            return torchem.GaussianMixture(args.k, covariance_type=ct, tol=0.0, max_iter=max_iter, **init)

        def sklearn_model(max_iter, ct=ct, init=init):
            from sklearn.mixture import GaussianMixture

            return GaussianMixture(args.k, covariance_type=ct, tol=0.0, max_iter=max_iter,
                                   init_params="random_from_data", random_state=0, **init)

        # The libraries alternate, with a pause between them (so OpenBLAS's spinning worker
        # threads, used by scikit-learn through numpy, have gone idle before torch runs), and
        # the medians are compared: slow spells of a shared machine then hit both alike.
        time_fit(lambda: torchem_model(1), X_dev, args.device)  # warm-up
        for _ in range(args.repeat):
            for max_iter in (1, 1 + args.iters):
                t, m_ours = time_fit(lambda: torchem_model(max_iter), X_dev, args.device)
                ours[max_iter].append(t)
            if not args.no_sklearn:
                time.sleep(0.3)
                for max_iter in (1, 1 + args.iters):
                    t, m_theirs = time_fit(lambda: sklearn_model(max_iter), X, args.device)
                    theirs[max_iter].append(t)
                time.sleep(0.3)
        per_ours = (statistics.median(ours[1 + args.iters]) - statistics.median(ours[1])) / args.iters * 1e3
        run = {"covariance_type": ct, "torchem_ms_per_iter": per_ours,
               "torchem_fit_s": statistics.median(ours[1 + args.iters])}
        line = f"{ct:>9}: torchem {per_ours:8.2f} ms/iter"
        if not args.no_sklearn:
            per_theirs = (statistics.median(theirs[1 + args.iters]) - statistics.median(theirs[1])) / args.iters * 1e3
            lb_ours = float(m_ours.lower_bound_)
            lb_theirs = float(m_theirs.lower_bound_)
            run.update(sklearn_ms_per_iter=per_theirs, sklearn_fit_s=statistics.median(theirs[1 + args.iters]),
                       speedup=per_theirs / per_ours, lower_bound_torchem=lb_ours, lower_bound_sklearn=lb_theirs)
            line += (f" | sklearn {per_theirs:8.2f} ms/iter | speed-up x{per_theirs / per_ours:.1f}"
                     f" | lower bound {lb_ours:.6f} vs {lb_theirs:.6f}")
        print(line, flush=True)
        results["runs"].append(run)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
