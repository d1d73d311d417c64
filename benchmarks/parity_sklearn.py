"""Parity with scikit-learn from the same start: GaussianMixture (4 covariance types) and
KMeans fitted by torchem and scikit-learn in float64 from the same initial parameters, the
largest relative difference of their fitted parameters printed per model.
Run: python benchmarks/parity_sklearn.py [--json FILE]"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json")
    args = ap.parse_args()
    from sklearn.cluster import KMeans as SkKMeans
    from sklearn.mixture import GaussianMixture as SkGMM

    import torchem

    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    k, d, n = 4, 3, 4000
    X = rng.normal(size=(n, d)) + 3.0 * rng.normal(size=(k, d))[rng.integers(0, k, n)]
    start = X[rng.choice(n, k, replace=False)]
    out = {}
    for ct in ("full", "tied", "diag", "spherical"):
        prec = {"full": np.stack([np.eye(d)] * k), "tied": np.eye(d), "diag": np.ones((k, d)), "spherical": np.ones(k)}[ct]
        kw = dict(covariance_type=ct, tol=0.0, max_iter=30, weights_init=np.full(k, 1 / k), means_init=start,
                  precisions_init=prec)
        a = torchem.GaussianMixture(k, **kw).fit(X)
        b = SkGMM(k, **kw).fit(X)
        diff = max(np.max(np.abs(getattr(a, f) - getattr(b, f)) / (np.abs(getattr(b, f)) + 1e-12))
                   for f in ("weights_", "means_", "covariances_"))
        out[f"gmm-{ct}"] = {"max_rel_diff": float(diff), "lower_bound_diff": abs(a.lower_bound_ - b.lower_bound_)}
    a = torchem.KMeans(k, init=start, n_init=1, max_iter=50).fit(X)
    b = SkKMeans(k, init=start, n_init=1, max_iter=50, algorithm="lloyd").fit(X)
    out["kmeans"] = {"max_rel_diff": float(np.max(np.abs(a.cluster_centers_ - b.cluster_centers_) / np.abs(b.cluster_centers_))),
                     "labels_equal": bool((a.labels_ == b.labels_).all()), "inertia_rel_diff": abs(a.inertia_ - b.inertia_) / b.inertia_}
    for name, r in out.items():
        print(name, " ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}" for key, value in r.items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
