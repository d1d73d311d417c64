"""The table ``torchem bench`` prints and the figures it draws (matplotlib, optional)."""

from __future__ import annotations

import math
from collections import defaultdict

#: CPUs' worth of other work during the timed fits above which a run or row is called busy
BUSY_CPUS = 0.25

__all__ = ["format_table", "plot_results"]


def _num(value, fmt: str, width: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-".rjust(width)
    return format(value, fmt).rjust(width)


def _groups(runs: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["model"], run["n"], run["d"], run["k"])].append(run)
    return groups


def format_table(results: dict) -> str:
    """A plain-text table of ``results`` (the dict :func:`torchem.bench.run_benchmarks`
    returns): one block per model and size, one row per library and device."""
    fits = f"{results['repeat']} or more fits" if results.get("min_seconds") else f"{results['repeat']} fits"
    lines = [
        f"torchem {results['torchem']}, torch {results['torch']}, {results['dtype']}, "
        f"median of {results['iters']} iterations timed inside each of {fits} "
        f"(IQR: interquartile range of those iterations, % of the median)"
    ]
    load = results.get("load_average_before"), results.get("load_average_after")
    if None not in load:
        lines.append(f"  1-minute load average {load[0]:.1f} before the run, {load[1]:.1f} after "
                     f"({results.get('cpu_count')} CPUs)")
    other, steal = results.get("other_cpus"), results.get("steal_cpus")
    if other is not None:
        busy = other + steal
        lines.append(f"  during the timed fits other processes held {other:.2f} CPUs and the hypervisor {steal:.2f}, "
                     "on average" + (": NOT an idle machine, timings may be off by 2x or more; rerun when idle"
                                     if busy > BUSY_CPUS else ""))
    for dev, info in results["devices"].items():
        lines.append(
            f"  {dev}: {info['name']}; measured peak {info['peak_gflops']:.1f} GFLOP/s "
            f"({info['matmul_size']}^2 matmul), {info['peak_gbps']:.1f} GB/s (copy)"
        )
    for lib, why in (results.get("skipped_references") or {}).items():
        lines.append(f"  {lib}: skipped ({why})")
    header = (f"{'implementation':<24}{'ms/iter':>10}{'IQR':>6}{'speed-up':>10}{'GFLOP/s':>10}{'%peak':>7}"
              f"{'GB/s':>9}{'%peak':>7}  quality")
    for (model, n, d, k), runs in _groups(results["runs"]).items():
        base = next((r["baseline"] for r in runs if r.get("baseline")), None)
        lines.append("")
        lines.append(f"{model}  N={n:,} D={d} K={k}" + (f"  (speed-up = {base} ms/iter / row's)" if base else ""))
        lines.append(header)
        for run in runs:
            if run.get("error"):
                lines.append(f"{run['label']:<24}  failed: {run['error']}")
                continue
            speed = run.get("speedup_vs_baseline")
            quality = run.get("quality")
            q = "-" if quality is None else f"{run['quality_name']} {quality:.6g}"
            if run.get("note"):
                q += f"  ({run['note']})"
            lines.append(
                f"{run['label']:<24}{_num(run['ms_per_iter'], '.2f', 10)}"
                f"{_num(None if run.get('spread') is None else 100 * run['spread'], '.0f', 5)}%"
                f"{(_num(speed, '.2f', 9) + 'x') if speed is not None else '-'.rjust(10)}"
                f"{_num(run['gflops'], '.1f', 10)}{_num(run['pct_peak_flops'], '.0f', 7)}"
                f"{_num(run['gbps'], '.1f', 9)}{_num(run['pct_peak_bw'], '.0f', 7)}  {q}"
            )
    return "\n".join(lines)


_AXES = (("n", "N (samples)"), ("k", "K (components)"), ("d", "D (features)"))
_MARKERS = "os^vDP*Xph"


def plot_results(results: dict, path: str) -> None:
    """Draw milliseconds per iteration against N, K and D (log-log), one panel for each of
    them that takes several values, one line per model and implementation; the two other
    sizes are held at each model's first benchmarked values. Without a sweep, one bar chart
    of every run. Needs matplotlib."""
    try:
        from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures stay as they are
    except ImportError:
        raise ImportError("plots need matplotlib: pip install matplotlib (or torchem[bench])") from None
    runs = [r for r in results["runs"] if r.get("ms_per_iter") is not None]
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_model[r["model"]].append(r)
    # (axis, label) -> model -> its runs along that axis, the other sizes at the model's first
    sweeps = {}
    for key, label in _AXES:
        along = {}
        for model, rows in by_model.items():
            first = rows[0]
            line = [r for r in rows if all(r[o] == first[o] for o, _ in _AXES if o != key)]
            if len({r[key] for r in line}) > 1:
                along[model] = line
        if along:
            sweeps[(key, label)] = along
    title = f"torchem {results['torchem']}, {results['dtype']}: " + ", ".join(
        f"{dev} = {info['name']}" for dev, info in results["devices"].items()
    )
    if not sweeps:
        fig = Figure(figsize=(max(6.0, 0.5 * len(runs) + 2), 4.5))
        ax = fig.subplots()
        names = [f"{r['model']} N={r['n']:,} D={r['d']} K={r['k']}\n{r['label']}" for r in runs]
        ax.bar(range(len(runs)), [r["ms_per_iter"] for r in runs], color="tab:blue")
        ax.set_xticks(range(len(runs)), names, rotation=90, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("ms per EM iteration")
    else:
        fig = Figure(figsize=(5.5 * len(sweeps), 4.5))
        axes = fig.subplots(1, len(sweeps), squeeze=False)
        colours: dict[str, str] = {}  # one colour per implementation, one marker per model
        for ax, ((key, label), along) in zip(axes[0], sweeps.items()):
            for m, (model, rows) in enumerate(along.items()):
                series: dict[str, list[tuple[int, float]]] = defaultdict(list)
                for r in rows:
                    series[r["label"]].append((r[key], r["ms_per_iter"]))
                fixed = ", ".join(f"{o.upper()}={rows[0][o]:,}" for o, _ in _AXES if o != key)
                for impl, points in series.items():
                    points.sort()
                    colour = colours.setdefault(impl, f"C{len(colours) % 10}")
                    ax.plot([p[0] for p in points], [p[1] for p in points], color=colour,
                            marker=_MARKERS[m % len(_MARKERS)], label=f"{model} {impl} ({fixed})")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel("ms per EM iteration")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6, loc="best")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
