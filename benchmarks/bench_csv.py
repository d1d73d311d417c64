"""Reading a large CSV file for the command line: time and peak memory, side by side.

Writes a 1,000,000 x 16 CSV of ``%.6f`` numbers (~152 MB, the size in the scikit-learn
contract issue), then reads it in fresh processes, round by round so that the machine's load
drifts over every reader alike:

- ``before``: the reader of an older checkout (``--before PATH``: a checkout whose
  ``torchem.cli.load_array`` or ``torchem._cli.load_array`` is the one to compare against),
- ``numpy``, ``pyarrow``, ``pandas``: today's ``load_array`` with only that C reader importable
  (the others blocked), skipped when the reader is not installed,
- ``loadtxt``: ``numpy.loadtxt`` alone, the floor of the numpy-only path.

Each figure is the median of ``--rounds`` runs; memory is the process's peak resident size
above what it held before reading (so imports do not count), as a multiple of the file's size.

    python benchmarks/bench_csv.py --before /tmp/wt-before --out benchmarks/results/checks/cpu-2core-csv.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, resource, sys, time
reader, root, path = sys.argv[1], sys.argv[2], sys.argv[3]
blocked = {"numpy": ("pandas", "pyarrow"), "pyarrow": ("pandas",), "pandas": (), "before": (), "loadtxt": ()}[reader]
for name in blocked:
    sys.modules[name] = None  # `import name` raises ImportError
sys.path.insert(0, root)
import numpy as np
if reader == "loadtxt":
    load = lambda p: np.loadtxt(p, delimiter=",", comments=None, ndmin=2, dtype=np.float64)
else:
    try:
        from torchem._cli import load_array as load
    except ImportError:
        from torchem.cli import load_array as load
    if reader in ("pyarrow", "pandas"):
        __import__(reader + (".csv" if reader == "pyarrow" else ""))
page = resource.getpagesize()
with open("/proc/self/statm") as fh:
    before = int(fh.read().split()[1]) * page
t0 = time.perf_counter()
X = load(path)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_bytes": peak - before, "shape": list(X.shape), "sum": float(X.sum())}))
"""


def available(reader: str) -> bool:
    module = {"pyarrow": "pyarrow.csv", "pandas": "pandas"}.get(reader)
    if module is None:
        return True
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    return probe.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="an older checkout to compare against")
    parser.add_argument("--out", help="write the results here (JSON)")
    args = parser.parse_args()

    readers = (["before"] if args.before else []) + ["loadtxt", "numpy", "pyarrow", "pandas"]
    readers = [r for r in readers if available(r)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.csv")
        X = np.random.default_rng(0).normal(size=(args.rows, args.cols))
        np.savetxt(path, X, delimiter=",", fmt="%.6f")
        del X
        size = os.path.getsize(path)
        runs: dict[str, list[dict]] = {r: [] for r in readers}
        for _ in range(args.rounds):
            for reader in readers:
                root = args.before if reader == "before" else REPO
                done = subprocess.run([sys.executable, "-c", CHILD, reader, root, path],
                                      capture_output=True, text=True, check=True)
                runs[reader].append(json.loads(done.stdout.strip().splitlines()[-1]))
    sums = {r: runs[r][0]["sum"] for r in readers}
    assert len({round(v, 6) for v in sums.values()}) == 1, f"the readers disagree: {sums}"
    rows = {}
    for reader in readers:
        seconds = statistics.median(run["seconds"] for run in runs[reader])
        peak = statistics.median(run["peak_bytes"] for run in runs[reader])
        rows[reader] = {"seconds_median": seconds, "seconds_all": [run["seconds"] for run in runs[reader]],
                        "peak_over_file_size": peak / size}
    if "before" in rows:
        for reader in readers:
            rows[reader]["speedup_vs_before"] = rows["before"]["seconds_median"] / rows[reader]["seconds_median"]
    result = {"what": f"read a {args.rows}x{args.cols} CSV (%.6f, {size / 1e6:.0f} MB) with torchem's load_array",
              "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared; ratios from one run)",
              "command": "python benchmarks/bench_csv.py " + " ".join(sys.argv[1:]),
              "file_bytes": size, "rounds": args.rounds, "readers": rows}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
