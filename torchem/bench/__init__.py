"""Benchmark harness behind ``torchem bench``: torchem on the CPU and CUDA against
scikit-learn, faiss and pomegranate on the same data from the same initial parameters.

    torchem bench --quick                                   # < 1 minute on a 2-core CPU
    torchem bench --devices cpu,cuda --n 100000,1000000 --json r.json --plot r.png

:func:`run_benchmarks` returns the results as a dict (the JSON written by ``--json``),
:func:`format_table` and :func:`plot_results` render them, and :func:`flops_per_iter` and :func:`bytes_per_iter`
documents the FLOPs and bytes counted per iteration.
"""

from ._cases import MODELS
from ._counts import bytes_per_iter, flops_per_iter
from ._report import format_table, plot_results
from ._run import build_parser, main, run_benchmarks

__all__ = ["MODELS", "build_parser", "bytes_per_iter", "flops_per_iter", "format_table", "main", "plot_results",
           "run_benchmarks"]
