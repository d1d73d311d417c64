"""KMeans against scikit-learn and faiss-cpu: a thin wrapper around ``torchem bench`` (the
logic lives in :mod:`torchem.bench`), with the configuration of
``benchmarks/results/cpu-2core-kmeans-*``.

    python benchmarks/bench_kmeans.py                       # N=500,000, D=32, K=64, 20 iterations

Any ``torchem bench`` option may follow and overrides the defaults here.
"""

import sys

from torchem.bench import main

DEFAULTS = ["--models", "kmeans", "--n", "500000", "--d", "32", "--k", "64", "--iters", "20", "--repeat", "3"]

if __name__ == "__main__":
    sys.exit(main(DEFAULTS + sys.argv[1:]))
