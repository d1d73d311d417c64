"""scikit-learn's GaussianMixture through the array API, on torch tensors of a device (a GPU
peer for ``torchem bench``), timed as the bench times every library.

The problem and its starting point are the bench's (:func:`torchem.bench._cases.make_problem`),
moved to the device as torch tensors; scikit-learn fits them under
``sklearn.config_context(array_api_dispatch=True)`` (which needs ``SCIPY_ARRAY_API=1`` before
scipy is imported: set here). One iteration's time is the difference of the medians of fits
with ``max_iter=1`` and ``max_iter=1+iters`` over ``repeat`` runs, divided by the difference of
their iterations, with CUDA events on a GPU (:func:`torchem.bench._timing.timed`).

Where the installed scikit-learn (or scipy) has no array-API GaussianMixture, or the device is
absent, the run is recorded as skipped with the reason and the script exits 0.

    python benchmarks/bench_sklearn_array_api.py --device cuda --models gmm-diag,gmm-full \\
        --n 1000000 --d 64 --k 64 --iters 5 --json gpu-sklearn-array-api.json
"""

from __future__ import annotations

import os

os.environ.setdefault("SCIPY_ARRAY_API", "1")  # before scipy or scikit-learn is imported

import argparse
import json
import platform
import statistics
import sys
import warnings

import numpy as np
import torch

from torchem.bench._cases import MODELS, make_problem
from torchem.bench._timing import device_name, timed


def _array_api():
    import sklearn

    return sklearn.config_context(array_api_dispatch=True)


def _fit(spec, X, init, max_iter):
    from sklearn.mixture import GaussianMixture

    k = int(init["weights_init"].shape[0])
    with _array_api(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: every fit warns about convergence
        return GaussianMixture(k, covariance_type=spec.covariance_type, tol=0.0, max_iter=max_iter,
                               init_params="random_from_data", random_state=0, **init).fit(X)


def _case(spec, n, d, k, device, iters, repeat) -> dict:
    row = {"model": spec.name, "n": n, "d": d, "k": k, "library": "sklearn-array-api", "device": device,
           "ms_per_iter": None, "error": None}
    problem = make_problem(spec, n, d, k, np.float32, 0)
    X = torch.from_numpy(problem.X).to(device)
    init = {key: torch.from_numpy(np.ascontiguousarray(v)).to(device) for key, v in problem.init.items()}
    try:
        fitted = _fit(spec, X, init, 1)  # warm-up (and the check that it is supported at all)
    except Exception as exc:  # noqa: BLE001 - an unsupported library is a result, not a failure
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    short, long_ = [], []
    for _ in range(repeat):
        for max_iter, bucket in ((1, short), (1 + iters, long_)):
            seconds, fitted = timed(lambda: _fit(spec, X, init, max_iter), device)
            bucket.append(seconds)
            row[f"iters_{'short' if bucket is short else 'long'}"] = int(fitted.n_iter_)
    row.update(times_short_s=short, times_long_s=long_, means_device=str(getattr(fitted.means_, "device", "numpy")))
    it = row["iters_long"] - row["iters_short"]
    if it > 0:
        row["ms_per_iter"] = (statistics.median(long_) - statistics.median(short)) / it * 1e3
    with _array_api():
        row["quality"] = float(fitted.score(X))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", default="gmm-diag,gmm-full")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    report = {"benchmark": "sklearn-array-api", "torch": torch.__version__, "python": platform.python_version(),
              "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "runs": [], "skipped": None}
    try:
        import sklearn

        report["sklearn"] = sklearn.__version__
    except ImportError:
        report["skipped"] = "scikit-learn is not installed"
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        report["skipped"] = "CUDA is not available"
    if report["skipped"] is None:
        report["device_name"] = device_name(args.device)
        for name in args.models.split(","):
            spec = MODELS[name]
            if spec.family != "gmm":
                continue
            row = _case(spec, args.n, args.d, args.k, args.device, args.iters, args.repeat)
            report["runs"].append(row)
            ms = row["ms_per_iter"]
            print(f"{name:14s} N={args.n:,} D={args.d} K={args.k} {args.device}: "
                  + (f"{ms:.2f} ms/iter" if ms is not None else f"not timed ({row['error'] or 'no iterations'})"),
                  flush=True)
        if report["runs"] and all(r["error"] for r in report["runs"]):
            report["skipped"] = "this scikit-learn has no array-API GaussianMixture here: " + report["runs"][0]["error"]
    if report["skipped"]:
        print(f"sklearn array API: skipped: {report['skipped']}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
