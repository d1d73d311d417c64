"""How far two ``torchem bench --json`` runs of the same command agree: for every row timed
in both, the ratio of the slower to the faster median iteration, and the largest of them over
torchem's rows (the goal: within 1.35x for two consecutive ``torchem bench --quick`` runs).

    torchem bench --quick --json a.json; torchem bench --quick --json b.json
    python benchmarks/bench_agreement.py a.json b.json --json agreement.json
"""

from __future__ import annotations

import argparse
import json
import os


def agreement(first: dict, second: dict) -> dict:
    key = lambda r: (r["model"], r["n"], r["d"], r["k"], r["label"])  # noqa: E731
    other = {key(r): r for r in second["runs"]}
    rows = []
    for r in first["runs"]:
        o = other.get(key(r))
        if o is None or not r.get("ms_per_iter") or not o.get("ms_per_iter"):
            continue
        a, b = r["ms_per_iter"], o["ms_per_iter"]
        rows.append({"model": r["model"], "n": r["n"], "d": r["d"], "k": r["k"], "label": r["label"],
                     "ms_first": a, "ms_second": b, "ratio": max(a, b) / min(a, b),
                     "iqr_first": r.get("spread"), "iqr_second": o.get("spread")})
    ours = [row["ratio"] for row in rows if row["label"].startswith("torchem/")]
    return {"rows": rows, "max_ratio_torchem": max(ours) if ours else None,
            "max_ratio_all": max((row["ratio"] for row in rows), default=None)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    with open(args.first) as fh:
        first = json.load(fh)
    with open(args.second) as fh:
        second = json.load(fh)
    out = {"benchmark": "bench_agreement", "files": [os.path.basename(args.first), os.path.basename(args.second)],
           "commands": [first.get("command"), second.get("command")],
           "load_average": [first.get("load_average_before"), second.get("load_average_after")],
           "threads": first.get("threads"), **agreement(first, second)}
    for row in out["rows"]:
        print(f"{row['model']:14s} {row['label']:24s} {row['ms_first']:9.2f} {row['ms_second']:9.2f}  x{row['ratio']:.2f}")
    print(f"largest ratio on a torchem row: {out['max_ratio_torchem']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
