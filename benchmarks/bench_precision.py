"""TF32 against float32: what the user's matmul-precision setting does to torchem's results.

torchem runs its own float32 matrix products at full float32 precision whatever the user set
(``torchem._utils.full_float32_matmul``, docs/scale.md). This script records, on one device:

* ``fits``: GaussianMixture (diag and full) and KMeans fitted under the user's setting
  ``"highest"``, ``"high"`` and ``"medium"``: the largest difference of the fitted means and
  lower bound from the ``"highest"`` fit (expected 0), and whether the setting was restored;
* ``forward``: the per-sample log-likelihood of the fitted full-covariance model through
  ``forward`` (which is left to the caller's setting, for ``torch.compile``) under
  ``"highest"`` and ``"high"``, against a float64 reference: the largest and mean absolute
  error in nats, and the time of one call, i.e. what the guard costs and what it protects.

    python benchmarks/bench_precision.py --device cuda --n 1000000 --d 64 --k 64 --json gpu-precision.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings

import numpy as np
import torch

from torchem import GaussianMixture, KMeans
from torchem.bench._cases import MODELS, make_problem
from torchem.bench._timing import device_name, timed

SETTINGS = ("highest", "high", "medium")


def _fit(kind, X, init, max_iter):
    k = len(next(iter(init.values())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "kmeans":
            return KMeans(k, init=init["means_init"], max_iter=max_iter, tol=0.0).to(X.device).fit(X)
        return GaussianMixture(k, covariance_type=kind, tol=0.0, max_iter=max_iter, **init).to(X.device).fit(X)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--max-iter", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    report = {"benchmark": "precision", "torch": torch.__version__, "python": platform.python_version(),
              "device": args.device, "device_name": device_name(args.device), "n": args.n, "d": args.d, "k": args.k,
              "max_iter": args.max_iter, "fits": [], "forward": []}
    original = torch.get_float32_matmul_precision()
    ok = True
    try:
        for kind in ("diag", "full", "kmeans"):
            spec = MODELS["gmm-full" if kind in ("full", "kmeans") else "gmm-diag"]
            problem = make_problem(spec, args.n, args.d, args.k, np.float32, 0)
            X = torch.from_numpy(problem.X).to(args.device)
            init = {key: torch.from_numpy(np.ascontiguousarray(v)) for key, v in problem.init.items()}
            ref = None
            for setting in SETTINGS:
                torch.set_float32_matmul_precision(setting)
                seconds, model = timed(lambda: _fit(kind, X, init, args.max_iter), args.device)
                restored = torch.get_float32_matmul_precision() == setting
                means = (model.cluster_centers_ if kind == "kmeans" else model.means_).double().cpu()
                bound = float(model.inertia_ if kind == "kmeans" else model.lower_bound_)
                if ref is None:
                    ref = (means, bound)
                row = {"model": kind, "setting": setting, "restored": restored, "fit_seconds": seconds,
                       "max_abs_diff_means": float((means - ref[0]).abs().max()),
                       "abs_diff_bound": abs(bound - ref[1])}
                ok &= restored and row["max_abs_diff_means"] == 0.0
                report["fits"].append(row)
                print(f"{kind:6s} under {setting:8s}: restored {restored}, |means - highest| {row['max_abs_diff_means']:.3g}, "
                      f"|bound - highest| {row['abs_diff_bound']:.3g}, fit {seconds:.3f}s", flush=True)
            if kind == "full":
                with torch.no_grad():
                    exact = model.double()(X.double())
                    model.float()
                    for setting in ("highest", "high"):
                        torch.set_float32_matmul_precision(setting)
                        model(X)  # warm-up
                        seconds, out = timed(lambda: model(X), args.device)
                        err = (out.double() - exact).abs()
                        row = {"setting": setting, "max_abs_err_nats": float(err.max()),
                               "mean_abs_err_nats": float(err.mean()), "seconds": seconds}
                        report["forward"].append(row)
                        print(f"forward under {setting:8s}: max |err| {row['max_abs_err_nats']:.3g} nats, "
                              f"mean {row['mean_abs_err_nats']:.3g}, {seconds * 1e3:.2f} ms", flush=True)
            del X
    finally:
        torch.set_float32_matmul_precision(original)
    report["ok"] = bool(ok)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
