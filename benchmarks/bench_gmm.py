"""GaussianMixture against scikit-learn: a thin wrapper around ``torchem bench`` (the logic
lives in :mod:`torchem.bench`), with the configuration of ``benchmarks/results/cpu-2core-gmm-*``.

    python benchmarks/bench_gmm.py                          # N=200,000, D=16, K=16, full and diag
    python benchmarks/bench_gmm.py --devices cuda --n 1000000 --d 64 --k 64 --no-reference

Any ``torchem bench`` option may follow and overrides the defaults here.
"""

import sys

from torchem.bench import main

DEFAULTS = ["--models", "gmm-full,gmm-diag", "--references", "sklearn", "--n", "200000", "--d", "16", "--k", "16",
            "--iters", "20", "--repeat", "5"]

if __name__ == "__main__":
    sys.exit(main(DEFAULTS + sys.argv[1:]))
