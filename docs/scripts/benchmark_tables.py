"""The benchmark results page: markdown tables (docs/generated/benchmarks.md) and one chart
per result file (docs/img/bench-<file>.png) rendered from the JSON files in
benchmarks/results/.

Three layouts are read: ``torchem bench --json`` (a ``runs`` list with one row per library
and device), ``benchmarks/bench_gmm.py --json`` (``runs`` with ``<library>_ms_per_iter``
columns per covariance type) and ``bench_kmeans.py`` / ``bench_bernoulli.py``
(``ms_per_iter`` per library). Files in another layout are listed, not guessed at.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from _common import IMG, REPO, figure, save, write

RESULTS = REPO / "benchmarks" / "results"
_SCRIPT_MODELS = {"gmm": "GaussianMixture", "kmeans": "KMeans", "bernoulli": "BernoulliMixture"}


def _fmt(value, spec: str = ".1f") -> str:
    return "" if value is None else format(value, spec)


def _rows_torchem_bench(data: dict) -> list[dict]:
    rows = []
    for r in data["runs"]:
        rows.append({
            "model": r.get("model"), "n": r.get("n"), "d": r.get("d"), "k": r.get("k"),
            "library": r.get("library"), "device": r.get("device"), "ms": r.get("ms_per_iter"),
            "ratio": r.get("speedup_vs_baseline"), "baseline": r.get("baseline"),
            "gflops": r.get("gflops"), "pct_flops": r.get("pct_peak_flops"),
            "gbps": r.get("gbps"), "pct_bw": r.get("pct_peak_bw"), "note": r.get("note") or r.get("error"),
            "quality": r.get("quality"), "quality_name": r.get("quality_name"),
        })
    return rows


def _rows_bench_script(data: dict, stem: str) -> list[dict]:
    device = data.get("device", "cpu")
    size = {"n": data.get("n"), "d": data.get("d"), "k": data.get("k")}
    rows = []
    if "runs" in data:  # bench_gmm.py: one row per covariance type
        for r in data["runs"]:
            libs = [key[: -len("_ms_per_iter")] for key in r if key.endswith("_ms_per_iter")]
            for lib in libs:
                rows.append({"model": f"GaussianMixture ({r['covariance_type']})", **size, "library": lib,
                             "device": device, "ms": r[f"{lib}_ms_per_iter"]})
    else:
        model = next((name for key, name in _SCRIPT_MODELS.items() if key in stem), stem)
        for lib, ms in data["ms_per_iter"].items():
            rows.append({"model": model, **size, "library": lib, "device": device, "ms": ms})
    for r in rows:  # ratio: the library's time over torchem's on the same model
        ref = next(o for o in rows if o["model"] == r["model"] and o["library"] == "torchem")
        r["ratio"] = r["ms"] / ref["ms"] if r["library"] != "torchem" else None
    return rows


def _memory_table(data: dict) -> list[str]:
    """``benchmarks/bench_memory.py``: peak resident memory of fits on data read from disk."""
    out = ["| N | D | K | device | data source | data size | peak RSS | peak RSS / data size | fit (s) "
           "| EM iterations |", "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in data["results"]:
        def gb(key):
            return f"{r[key] / 1e9:.2f} GB" if r.get(key) is not None else ""

        ratio = f"{r['peak_over_data']:.2f}" if r.get("peak_over_data") is not None else ""
        out.append(f"| {r.get('n', 0):,} | {r.get('d', '')} | {r.get('k', '')} | {r.get('device', '')} "
                   f"| {r.get('source', '')} | {gb('data_bytes')} | {gb('peak_rss_bytes')} | {ratio} "
                   f"| {_fmt(r.get('fit_seconds'), '.2f')} | {r.get('n_iter', '')} |")
    return out


def _model_selection_table(data: dict) -> list[str]:
    """``benchmarks/bench_model_selection.py``: the grid of K and covariance types as one batch
    against the same models fitted one by one (medians of interleaved repeats)."""
    med = data["median_seconds"]
    names = {"grid": "torchem `GaussianMixtureIC` (one batch)", "torchem_loop": "torchem `GaussianMixture`, one by one",
             "sklearn_loop": "scikit-learn `GaussianMixture`, one by one"}
    ratios = {"torchem_loop": data.get("ratio_grid_vs_torchem_loop"), "sklearn_loop": data.get("ratio_grid_vs_sklearn_loop")}
    out = [f"{data['models']} models (n_components {data['n_components'][0]}..{data['n_components'][-1]} x "
           f"{', '.join(data['covariance_types'])}) on {data['n']:,} x {data['d']} {data['dtype']} data, "
           f"{data['device']}, {data['threads']} thread(s), {data.get('cpu_count', '?')} CPUs, torch {data['torch']}, "
           f"{data['date']}; median of {data['repeat']} interleaved repeats (the machine was shared with other jobs). "
           f"Command: `{data['command'].strip()}`\n",
           "| fitting the grid with | seconds (median) | grid's time / this |", "|---|---:|---:|"]
    for key, label in names.items():
        if key in med:
            ratio = "" if key == "grid" else f"{ratios[key]:.2f}"
            out.append(f"| {label} | {med[key]:.2f} | {ratio} |")
    chosen = data.get("chosen", {})
    out.append(f"\nChosen model: `{chosen.get('covariance_type')}`, {chosen.get('n_components')} components; largest "
               f"relative difference between the grid's BIC and the one-by-one torchem fits' `bic(X)`: "
               f"{data.get('max_relative_bic_difference_vs_torchem_loop', float('nan')):.1e}.\n")
    return out


def _fit_ratio_table(data: dict) -> list[str]:
    """``benchmarks/bench_fit_ratios.py``: whole fits, torchem against its peer in one process."""
    out = ["| workload | N | D | K | ratio | wall | CPU time | torchem CPU s (median) | peer CPU s (median) |",
           "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in data["runs"]:
        if "times_s" in r:
            ours = np.median([t[1] for t in r["times_s"]["torchem"]])
            peer = np.median([t[1] for t in r["times_s"][r["peer"]]])
        else:  # torchem after scikit-learn against torchem before
            ours = np.median([t[1] for t in r["after_s"]])
            peer = np.median([t[1] for t in r["before_s"]])
        out.append(f"| {r['workload']} | {r['n']:,} | {r['d']} | {r['k']} | {r['ratio_name']} | {r['ratio']:.2f} "
                   f"| {r['ratio_cpu']:.2f} | {ours:.3f} | {peer:.3f} |")
    return out


def _agreement_table(data: dict) -> list[str]:
    """``benchmarks/bench_agreement.py``: two runs of one ``torchem bench`` command."""
    out = ["| model | N | D | K | implementation | ms / iteration, first | second | slower / faster |",
           "|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in data["rows"]:
        out.append(f"| {r['model']} | {r['n']:,} | {r['d']} | {r['k']} | {r['label']} | {r['ms_first']:.2f} "
                   f"| {r['ms_second']:.2f} | {r['ratio']:.2f} |")
    return out


def read_results(paths=None) -> tuple[list[tuple[str, dict, list[dict]]], list[str]]:
    files, skipped = [], []
    for path in paths or sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        runs = data.get("runs") if isinstance(data, dict) else None
        if isinstance(data, dict) and data.get("benchmark") == "bench_memory" and data.get("results"):
            files.append((path.name, data, []))
        elif isinstance(data, dict) and data.get("benchmark") in ("bench_model_selection", "bench_fit_ratios", "bench_agreement"):
            files.append((path.name, data, []))
        elif runs and all("ms_per_iter" in r and "library" in r for r in runs):
            files.append((path.name, data, _rows_torchem_bench(data)))
        elif isinstance(data, dict) and (
            (runs and all("covariance_type" in r for r in runs)) or isinstance(data.get("ms_per_iter"), dict)
        ):
            files.append((path.name, data, _rows_bench_script(data, path.stem)))
        else:
            skipped.append(path.name)
    return files, skipped


def _machine(data: dict) -> str:
    devices = data.get("devices")
    if isinstance(devices, dict) and devices:
        return "; ".join(
            f"{dev}: {info.get('name', '?')} (measured peak {info.get('peak_gflops', 0):.0f} GFLOP/s, "
            f"{info.get('peak_gbps', 0):.0f} GB/s)" for dev, info in devices.items()
        )
    return f"{data.get('device', 'cpu')}, {data.get('threads', '?')} torch threads"


def markdown(files, skipped, images) -> str:
    out = []
    for name, data, rows in files:
        out.append(f"### `{name}`\n")
        if data.get("benchmark") == "bench_memory":
            out.append(f"Peak memory of fits whose data stays on disk ({data.get('machine', '?')}, "
                       f"{data.get('cpu_count', '?')} CPUs): `{data.get('command', '')}`\n")
            out += _memory_table(data) + [""]
            continue
        if data.get("benchmark") == "bench_model_selection":
            out += _model_selection_table(data) + [""]
            continue
        if data.get("benchmark") == "bench_fit_ratios":
            out.append(f"Whole fits, interleaved in one process ({data.get('threads', '?')} torch threads, "
                       f"{data.get('cpu_count', '?')} CPUs, 1-minute load average {data.get('load_average_before', 0):.1f} "
                       f"before and {data.get('load_average_after', 0):.1f} after, commit {data.get('commit', '?')}, "
                       f"{data.get('date', '')}), median over {data.get('repeat', '?')} pairs: "
                       f"`{data.get('command', '')}`\n")
            out += _fit_ratio_table(data) + [""]
            continue
        if data.get("benchmark") == "bench_agreement":
            worst = data.get("max_ratio_torchem")
            out.append(f"Agreement of two consecutive runs ({', '.join(f'`{f}`' for f in data['files'])}; "
                       f"{data.get('threads', '?')} torch threads, 1-minute load average "
                       f"{data['load_average'][0]:.1f} / {data['load_average'][1]:.1f}): the largest ratio on a torchem "
                       f"row is {worst:.2f}.\n")
            out += _agreement_table(data) + [""]
            continue
        meta = [_machine(data), f"torch {data.get('torch', '?')}"]
        if data.get("dtype"):
            meta.append(data["dtype"])
        if data.get("iters"):
            meta.append(f"{data['iters']} EM iterations")
        if data.get("date"):
            meta.append(data["date"])
        out.append(", ".join(meta) + ".\n")
        rich = any(r.get("gflops") is not None or r.get("baseline") for r in rows)
        if rich:
            out.append("| model | N | D | K | implementation | ms / iteration | speed-up vs baseline "
                       "| GFLOP/s (% peak) | GB/s (% peak) | result |")
            out.append("|---|---:|---:|---:|---|---:|---:|---:|---:|---|")
            for r in rows:
                ms = _fmt(r["ms"], ".2f") or (r.get("note") or "not timed")
                ratio = f"{r['ratio']:.2f}× vs {r['baseline']}" if r.get("ratio") is not None else ""
                flops = f"{r['gflops']:.1f} ({r['pct_flops']:.0f}%)" if r.get("gflops") is not None else ""
                bw = f"{r['gbps']:.1f} ({r['pct_bw']:.0f}%)" if r.get("gbps") is not None else ""
                quality = f"{r.get('quality_name') or ''} {r['quality']:.6g}" if r.get("quality") is not None else ""
                out.append(f"| {r['model']} | {r['n']:,} | {r['d']} | {r['k']} | {r['library']}/{r['device']} "
                           f"| {ms} | {ratio} | {flops} | {bw} | {quality} |")
        else:
            out.append("| model | N | D | K | library | ms / iteration | time / torchem's |")
            out.append("|---|---:|---:|---:|---|---:|---:|")
            for r in rows:
                ratio = f"{r['ratio']:.2f}×" if r.get("ratio") is not None else ""
                out.append(f"| {r['model']} | {r['n']:,} | {r['d']} | {r['k']} | {r['library']} "
                           f"| {_fmt(r['ms'], '.1f')} | {ratio} |")
        out.append("")
        if images.get(name):
            out.append(f"![milliseconds per EM iteration in {name}](img/{images[name]})\n")
    if skipped:
        out.append("Not rendered (layout not recognised): " + ", ".join(f"`{s}`" for s in skipped) + ".\n")
    return "\n".join(out)


def _label(r: dict) -> str:
    return f"{r['library']}/{r['device']}"


def _sweep(rows: list[dict]) -> str | None:
    """The size (``n``, ``d`` or ``k``) that takes several values in ``rows``, if any."""
    return next((key for key in ("n", "k", "d") if len({r[key] for r in rows}) > 1), None)


def chart(name: str, rows: list[dict]) -> str | None:
    """Draw ``docs/img/bench-<stem>.png`` for one result file and return its file name:
    milliseconds per iteration against the swept size (one panel per model) when the file
    holds a sweep, else one bar per model and implementation."""
    rows = [r for r in rows if r.get("ms")]
    if not rows:
        return None
    stem = "bench-" + name.removesuffix(".json")
    models = list(dict.fromkeys(r["model"] for r in rows))
    swept = {m: _sweep([r for r in rows if r["model"] == m]) for m in models}
    if any(swept.values()):
        fig, axes = figure(ncols=len(models), size=3.4, squeeze=False)
        for ax, model in zip(axes[0], models):
            mine = [r for r in rows if r["model"] == model]
            key = swept[model]
            for label in dict.fromkeys(_label(r) for r in mine):
                pts = sorted((r[key], r["ms"]) for r in mine if _label(r) == label) if key else []
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=label)
            ax.set(xscale="log", yscale="log", xlabel=key.upper() if key else "", ylabel="ms per EM iteration",
                   title=model)
            ax.grid(which="both", alpha=0.3)
            ax.legend(fontsize=7)
    else:
        bars = [(f"{r['model']}, {_label(r)}", r["ms"]) for r in rows]
        fig, ax = figure(size=4.0)
        fig.set_size_inches(7.0, 0.8 + 0.28 * len(bars))
        y = np.arange(len(bars))
        ax.barh(y, [ms for _, ms in bars], color=["C0" if "torchem" in label else "0.6" for label, _ in bars])
        ax.set_yticks(y, [label for label, _ in bars], fontsize=8)
        ax.invert_yaxis()
        times = [ms for _, ms in bars]
        if max(times) > 20 * min(times):  # bars on a log axis start at a power of ten
            ax.set_xscale("log")
            ax.set_xlim(left=10 ** np.floor(np.log10(min(times))))
        ax.set_xlabel("ms per EM iteration (torchem in blue)")
        ax.grid(axis="x", which="both", alpha=0.3)
    save(fig, stem)
    return f"{stem}.png"


def main(paths=None):
    """Render ``paths`` (default: every ``benchmarks/results/*.json``)."""
    files, skipped = read_results(paths)
    if not files:
        sys.exit(f"no benchmark results found in {RESULTS}")
    images = {name: chart(name, rows) for name, _, rows in files}
    for old in IMG.glob("bench-*.png"):  # charts of results that were removed or renamed
        if old.name not in images.values():
            old.unlink()
    write("benchmarks.md", markdown(files, skipped, images))
    for name, data, _ in files:  # the model-selection page shows its own result
        if data.get("benchmark") == "bench_model_selection":
            write("model_selection_bench.md", "\n".join(_model_selection_table(data)))


if __name__ == "__main__":
    from pathlib import Path

    main([Path(p) for p in sys.argv[1:]] or None)
