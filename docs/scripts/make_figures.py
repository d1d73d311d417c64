"""Regenerate every figure (docs/img/*.png) and every printed output (docs/generated/*) of
the documentation from torchem's own output:

    python docs/scripts/make_figures.py            # all of them (under a minute on 2 cores)
    python docs/scripts/make_figures.py bic hard_em  # only these scripts
"""

import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import run  # noqa: E402

# script -> the file its printed output goes to (None: the script writes its own files)
SCRIPTS = {
    "getting_started": "getting_started.txt",
    "kmeans_two_squares": "kmeans_two_squares.txt",
    "gmm_blobs": "gmm_blobs.txt",
    "em_loglik": "em_loglik.txt",
    "binomial_coins": "binomial_coins.txt",
    "poisson_counts": "poisson_counts.txt",
    "latent_classes": "latent_classes.txt",
    "hard_em": "hard_em.txt",
    "bic": "bic.txt",
    "bayesian_concentration": "bayesian_concentration.txt",
    "partial_labels": "partial_labels.txt",
    "missing_values": "missing_values.txt",
    "model_selection": "model_selection.txt",
    "models": "models.txt",
    "benchmark_tables": None,
}


def main(names):
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        sys.exit(f"unknown script(s) {unknown}; choose from {list(SCRIPTS)}")
    for name in names or SCRIPTS:
        start = time.perf_counter()
        module = importlib.import_module(name)
        if SCRIPTS[name] is None:
            module.main()
        else:
            run(module.main, SCRIPTS[name])
        print(f"--- {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
