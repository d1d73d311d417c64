"""Choosing K and the covariance type: ``GaussianMixtureIC`` (the whole grid as one batch)
against the same 32 models fitted one by one with torchem and with scikit-learn.

    python benchmarks/bench_model_selection.py                  # N=20,000, D=6, K=1..8, 4 types, float32
    python benchmarks/bench_model_selection.py --device cuda --repeat 5

The three are timed in turn, ``--repeat`` times (grid, torchem loop, scikit-learn loop, then
again), so a machine whose speed drifts (a shared one) slows all three alike; the medians and
the ratios of the medians are written to ``benchmarks/results/model_selection.json`` (the
docs page on model selection renders them from there). Every fit starts from the same
``random_state``; the chosen model and the largest difference between the grid's BIC and the
single torchem fits' ``bic(X)`` are recorded too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

RESULT = Path(__file__).resolve().parent / "results" / "model_selection.json"
TYPES = ("full", "tied", "diag", "spherical")


def data(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Five Gaussian clusters of random shapes (float32)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, d)) * 4
    scales = rng.uniform(0.5, 1.5, size=(5, d))
    z = rng.integers(0, 5, n)
    return (rng.normal(size=(n, d)) * scales[z] + centres[z]).astype(np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=6)
    parser.add_argument("--k-max", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repeats (the median is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads for every library")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-sklearn", action="store_true")
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args(argv)

    from torchem import GaussianMixture, GaussianMixtureIC

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # convergence warnings of the largest models
    X = data(args.n, args.d)
    Xd = torch.from_numpy(X).to(args.device) if args.device != "cpu" else X
    ks = range(1, args.k_max + 1)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def grid():
        ic = GaussianMixtureIC(ks, covariance_type=TYPES, random_state=0).to(args.device).fit(Xd)
        sync()
        return ic

    def torchem_loop():
        bic = np.array([[GaussianMixture(k, covariance_type=t, random_state=0).to(args.device).fit(Xd).bic(Xd)
                         for k in ks] for t in TYPES], dtype=np.float64)
        sync()
        return bic

    def sklearn_loop():
        from sklearn.mixture import GaussianMixture as SkGaussianMixture
        from threadpoolctl import threadpool_limits

        with threadpool_limits(args.threads):
            return np.array([[SkGaussianMixture(k, covariance_type=t, random_state=0).fit(X).bic(X) for k in ks]
                             for t in TYPES])

    runs = {"grid": grid, "torchem_loop": torchem_loop}
    if not args.no_sklearn:
        runs["sklearn_loop"] = sklearn_loop
    grid()  # warm-up (imports, first kernels)
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs = {}
    for _ in range(args.repeat):
        for name, fn in runs.items():
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    ic = outputs["grid"]
    bic_loop = outputs["torchem_loop"]
    result = {
        "benchmark": "bench_model_selection",
        "command": "python benchmarks/bench_model_selection.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "n": args.n, "d": args.d, "n_components": list(ks), "covariance_types": list(TYPES), "dtype": "float32",
        "models": len(ks) * len(TYPES), "device": args.device, "threads": args.threads, "repeat": args.repeat,
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "date": datetime.date.today().isoformat(),
        "seconds": times, "median_seconds": medians,
        "ratio_grid_vs_torchem_loop": medians["grid"] / medians["torchem_loop"],
        "chosen": {"n_components": ic.n_components_, "covariance_type": ic.covariance_type_},
        "max_relative_bic_difference_vs_torchem_loop": float(np.max(np.abs(ic.bic_ - bic_loop) / np.abs(bic_loop))),
        "note": "interleaved repeats (grid, torchem loop, scikit-learn loop, in turn) on a machine shared with other "
                "jobs; medians of the repeats",
    }
    if "sklearn_loop" in medians:
        result["ratio_grid_vs_sklearn_loop"] = medians["grid"] / medians["sklearn_loop"]
    print(json.dumps({k: result[k] for k in ("median_seconds", "ratio_grid_vs_torchem_loop", "chosen",
                                             "max_relative_bic_difference_vs_torchem_loop")
                      + (("ratio_grid_vs_sklearn_loop",) if "sklearn_loop" in medians else ())}, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
