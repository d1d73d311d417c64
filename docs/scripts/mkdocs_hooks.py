"""mkdocs hook: render the benchmark results page from benchmarks/results/*.json and the API
reference from the public modules' ``__all__`` at every build, so neither needs a separate step."""

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)


def on_pre_build(config, **kwargs):
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import api_pages
    import benchmark_tables

    benchmark_tables.main()
    api_pages.main()
