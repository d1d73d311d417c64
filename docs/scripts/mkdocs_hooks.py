"""mkdocs hook: render the benchmark results page from benchmarks/results/*.json at every
build, so results committed there appear in the site without a separate step."""

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)


def on_pre_build(config, **kwargs):
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import benchmark_tables

    benchmark_tables.main()
