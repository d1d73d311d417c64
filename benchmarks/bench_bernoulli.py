"""BernoulliMixture against pomegranate: a thin wrapper around ``torchem bench`` (the logic
lives in :mod:`torchem.bench`), with the configuration of
``benchmarks/results/cpu-2core-bernoulli-run1.json``.

    python benchmarks/bench_bernoulli.py                    # N=100,000, D=784, K=10, 20 iterations

Any ``torchem bench`` option may follow and overrides the defaults here.
"""

import sys

from torchem.bench import main

DEFAULTS = ["--models", "bernoulli", "--n", "100000", "--d", "784", "--k", "10", "--iters", "20", "--repeat", "2"]

if __name__ == "__main__":
    sys.exit(main(DEFAULTS + sys.argv[1:]))
