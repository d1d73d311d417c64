"""``torchem bench``: every model on every device and against the reference libraries, on the
same generated data from the same initial parameters, in one run.

How an iteration is timed: from inside one fit. Each implementation fits with
``max_iter=1+iters``, convergence checks off, and a timestamp is taken at every iteration
boundary (:class:`~torchem.bench._timing.IterationClock`: torchem's driver calls it, the
reference libraries are hooked at their E-step or Lloyd kernel; CUDA events on a GPU). The
first iteration of each fit (first-touch allocations, caches) is dropped, the others of all
``--repeat`` fits are pooled, and the row reports their median and interquartile range, so
set-up costs never enter and no subtraction of two noisy fits is needed (a fit that stops
after one iteration, as scikit-learn's K-means does when no label changes, keeps that one).
Implementations alternate within each repeat, so slow spells of a shared machine hit all of
them alike; with ``--quick`` (6 repeats) each repeat also goes round every row, so a row's
fits span the whole run rather than one stretch of it. ``--repeat`` is the least number of
fits: an implementation whose timed iterations add up to less than ``--min-seconds`` over
them gets more (at most four times as many), spread evenly over the rounds, so a fast row's
median is not a handful of moments. While each fit runs, the CPU time that other processes
and the hypervisor (steal) take is measured (``/proc/stat``); the row reports it, and the
table warns when the machine was not idle. FLOPs and bytes per iteration are counted as in
:func:`torchem.bench.flops_per_iter` and :func:`torchem.bench.bytes_per_iter` and divided by
the median; the device's peak is measured once per run (``measure_peak``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import itertools
import json
import math
import os
import platform
import shlex
import statistics
import sys

import numpy as np
import torch

from .. import __version__
from ._cases import MODELS, ON_DEVICE, REFERENCES, RUNNERS, installed_references, make_problem
from ._counts import bytes_per_iter, flops_per_iter
from ._report import BUSY_CPUS, format_table, plot_results
from ._timing import CpuShare, IterationClock, measure_peak, wait_until_idle

__all__ = ["build_parser", "main", "run_benchmarks"]

_DTYPES = {"float32": (torch.float32, np.float32), "float64": (torch.float64, np.float64)}
_QUALITY = {"gmm": "loglik", "gmm-ic": "loglik", "bgmm": "loglik", "bernoulli": "loglik", "poisson": "loglik", "categorical": "loglik", "kmeans": "inertia"}
#: the longest wait after a fit for the process's thread pools to stop spinning (OpenBLAS's
#: spin for about 0.1 s after scikit-learn's Gaussian mixtures)
_IDLE_WAIT_S = 0.5
#: at most this many times ``repeat`` fits for an implementation whose iterations are fast
_MAX_EXTRA_FITS = 4



def _progress(total: int, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not enabled:
        class _Silent:
            def update(self, n=1):
                pass

            def close(self):
                pass

            def set_postfix_str(self, text):
                pass

        return _Silent()
    return tqdm(total=total, desc="torchem bench", unit="fit", leave=False, disable=None)


def _finite(x):
    return x if x is not None and math.isfinite(x) else None


#: (library, model family) pairs whose iteration skips part of the counted work (torchem's
#: K-means: Hamerly's bounds skip distances), so a rate from the counted FLOPs is not theirs
_SKIPS_WORK = {("torchem", "kmeans")}


def _quantile(sorted_values: list[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])


def _row(spec, n, d, k, library, device, dtype, iters, state) -> dict:
    row = {"model": spec.name, "n": n, "d": d, "k": k, "library": library, "device": device,
           "label": f"{library}/{device}", "quality_name": _QUALITY[spec.family], "quality": None,
           "ms_per_iter": None, "gflops": None, "gbps": None, "pct_peak_flops": None, "pct_peak_bw": None,
           "flops_per_iter": flops_per_iter(spec.name, n, d, k),
           "bytes_per_iter": bytes_per_iter(spec.name, n, d, k, torch.finfo(dtype).bits // 8),
           "error": state.get("error")}
    if row["error"]:
        return row
    times = sorted(state["iter_s"])
    if not times:
        row["error"] = "no iteration was timed"
        return row
    ms = [1e3 * t for t in times]
    row.update(iter_ms=[1e3 * t for t in state["iter_s"]], iters_per_fit=state["iters"],
               ms_per_iter=statistics.median(ms), ms_iter_p25=_quantile(ms, 0.25), ms_iter_p75=_quantile(ms, 0.75))
    row["spread"] = (row["ms_iter_p75"] - row["ms_iter_p25"]) / row["ms_per_iter"]
    row["cpu_share_s"] = [list(t) for t in state["share"]]  # (wall, other, steal) seconds per fit
    row.update(_shares(state["share"]))
    notes = []
    if state.get("first_only"):
        notes.append("stopped after its first iteration, which is the one timed")
    if row["other_cpus"] is not None and _busy_beyond_ticks(row["other_cpus"] + row["steal_cpus"], state["share"]):
        notes.append(f"busy machine: others held {row['other_cpus'] + row['steal_cpus']:.2f} CPUs during its fits")
    if notes:
        row["note"] = "; ".join(notes)
    if (library, spec.family) in _SKIPS_WORK:
        row["skips_work"] = True
    return row


def _shares(shares: list) -> dict:
    """The CPUs' worth of work that other processes (``other_cpus``) and the hypervisor
    (``steal_cpus``) did, on average, during the timed fits ``shares`` (``(wall, other,
    steal)`` seconds each, from :class:`~torchem.bench._timing.CpuShare`)."""
    wall = sum(w for w, _, _ in shares)
    if not shares or wall <= 0 or any(o is None for _, o, _ in shares):
        return {"other_cpus": None, "steal_cpus": None}
    return {"other_cpus": sum(o for _, o, _ in shares) / wall, "steal_cpus": sum(t for _, _, t in shares) / wall}


def _busy_beyond_ticks(busy_cpus: float, shares: list) -> bool:
    """Whether others held more than ``BUSY_CPUS`` during the fits ``shares``, beyond the
    counters' rounding (``/proc/stat`` ticks: two per fit, adding up as a random walk)."""
    wall = sum(w for w, _, _ in shares)
    return busy_cpus - 2 * CpuShare.tick_seconds() * math.sqrt(len(shares)) / wall > BUSY_CPUS


def _add_ratios(rows: list[dict], references: tuple[str, ...]) -> None:
    timed = [r for r in rows if r["ms_per_iter"] is not None]
    base = next((r for lib in references for r in timed if r["library"] == lib), None)
    base = base or next((r for r in timed if r["label"] == "torchem/cpu"), None) or (timed[0] if timed else None)
    for r in timed:
        r["speedup"] = {o["label"]: o["ms_per_iter"] / r["ms_per_iter"] for o in timed if o is not r}
        r["baseline"] = base["label"]
        r["speedup_vs_baseline"] = base["ms_per_iter"] / r["ms_per_iter"]


def run_benchmarks(
    models=tuple(MODELS),
    *,
    n=None,
    d=None,
    k=None,
    devices=("cpu",),
    dtype: str = "float32",
    iters: int = 20,
    repeat: int = 3,
    references=True,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    min_seconds: float = 0.3,
) -> dict:
    """Run the benchmark and return the results (the JSON ``torchem bench --json`` writes).

    ``n``, ``d``, ``k``: lists of sizes (every combination is run), or ``None`` for each
    model's default (``quick``: smaller) size. ``references``: True for every installed
    reference library, False for none, or a list of names. ``repeat``: the least number of
    timed fits per implementation; one whose timed iterations add up to less than
    ``min_seconds`` gets more (at most four times as many)."""
    tdtype, ndtype = _DTYPES[dtype]
    wanted = None if references is True else (references or [])
    skipped: dict = {}
    refs = installed_references(wanted, skipped)
    jobs = []
    for name in models:
        spec = MODELS[name]
        base = spec.quick if quick else spec.default
        sizes = itertools.product(n or [base[0]], d or [base[1]], k or [base[2]])
        impls = [("torchem", dev) for dev in devices]
        if refs:
            impls += [(lib, dev) for lib in spec.references if lib in refs
                      for dev in (devices if lib in ON_DEVICE else ("cpu",))]
        jobs += [(spec, size, impls) for size in sizes]
    used = list(dict.fromkeys(dev for _, _, impls in jobs for _, dev in impls))
    results = {
        "torchem": __version__, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "load_average_before": _load(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dtype": dtype, "iters": iters, "repeat": repeat, "seed": seed, "quick": quick,
        "libraries": refs, "skipped_references": skipped, "devices": {dev: measure_peak(dev, tdtype, quick=quick) for dev in used}, "runs": [],
    }
    bar = _progress(sum(len(impls) * (repeat + 1) for _, _, impls in jobs), progress)
    # --quick: every row's data is small, so all are held at once and each repeat goes round
    # every row; a row's samples then span the whole run, not one stretch of it, and a slow
    # spell of a shared machine (seconds long) hits every row a little rather than one a lot
    rounds = quick and len(jobs) > 1
    held = []
    for spec, (nn, dd, kk), impls in jobs:
        bar.set_postfix_str(f"{spec.name} N={nn:,} D={dd} K={kk}")
        job = _prepare_job(spec, (nn, dd, kk), impls, dtype=ndtype, seed=seed, bar=bar)
        if rounds:
            held.append(job)
            continue
        _time_rounds([job], iters, repeat, min_seconds, bar)
        results["runs"] += _finish_job(job, tdtype, iters)
    _time_rounds(held, iters, repeat, min_seconds, bar)
    for job in held:
        results["runs"] += _finish_job(job, tdtype, iters)
    bar.close()
    # the peak measured again after the runs: a slow spell at the start must not leave a
    # peak below what the rows achieved (the best of both is the device's)
    for dev, before in results["devices"].items():
        after = measure_peak(dev, tdtype, quick=quick)
        for key in ("peak_gflops", "peak_gbps"):
            before[key] = max(before[key], after[key])
    for row in results["runs"]:
        _add_rates(row, results["devices"][row["device"]])
    results["min_seconds"] = min_seconds
    results.update(_shares([tuple(t) for r in results["runs"] for t in r.get("cpu_share_s", [])]))
    results["load_average_after"] = _load()
    return results


def _fits_wanted(state: dict, repeat: int, min_seconds: float) -> int:
    """How many timed fits an implementation gets: ``repeat``, or more (up to
    ``_MAX_EXTRA_FITS * repeat``) where ``repeat`` fits like its first one would time less
    than ``min_seconds`` of iterations in all."""
    if state.get("error") or not state["iter_s"] or min_seconds <= 0:
        return repeat
    per_fit = sum(state["iter_s"])
    return max(repeat, min(_MAX_EXTRA_FITS * repeat, math.ceil(min_seconds / max(per_fit, 1e-9))))


def _time_rounds(jobs: list[dict], iters: int, repeat: int, min_seconds: float, bar) -> None:
    """Time ``jobs`` in rounds, each round one fit of every taking part implementation of
    every job, alternating. Every implementation takes part in the first round; from its
    timings each gets its number of fits (:func:`_fits_wanted`), the remaining ones spread
    evenly over the remaining rounds."""
    if not jobs:
        return
    for job in jobs:
        _time_round(job, iters, bar, lambda state: True)
    states = [state for job in jobs for state in job["states"].values()]
    for state in states:
        state["fits_wanted"] = _fits_wanted(state, repeat, min_seconds)
    total = max(state["fits_wanted"] for state in states)
    if hasattr(bar, "total") and bar.total is not None:
        bar.total += sum(state["fits_wanted"] - repeat for state in states)
        bar.refresh()

    def takes_part(i):  # round i of 1 .. total - 1 (fits_wanted - 1 of them each, evenly spread)
        return lambda state: (i * (state["fits_wanted"] - 1)) // (total - 1) > ((i - 1) * (state["fits_wanted"] - 1)) // (total - 1)

    for i in range(1, total):
        for job in jobs:
            _time_round(job, iters, bar, takes_part(i))


def _prepare_job(spec, size, impls, *, dtype, seed, bar) -> dict:
    """One row group's data on each implementation's device, and a warm-up fit of each."""
    nn, dd, kk = size
    problem = make_problem(spec, nn, dd, kk, dtype, seed)
    states = {}
    for lib, dev in impls:
        state = states[(lib, dev)] = {"iter_s": [], "iters": [], "share": []}
        try:
            state["data"] = RUNNERS[lib].prepare(problem.X, dev)
            RUNNERS[lib].fit(spec, state["data"], problem.init, 2, IterationClock(dev))
            if torch.device(dev).type == "cuda":
                torch.cuda.synchronize(dev)
        except Exception as exc:  # one library failing must not end the run
            state["error"] = f"{type(exc).__name__}: {exc}"
        bar.update(1)
    return {"spec": spec, "size": size, "problem": problem, "states": states}


def _time_round(job: dict, iters: int, bar, takes_part) -> None:
    """One timed fit of every implementation of the row group for which ``takes_part(state)``
    holds, alternating."""
    spec, problem = job["spec"], job["problem"]
    for (lib, dev), state in job["states"].items():
        if not takes_part(state):
            continue
        if not state.get("error"):
            try:
                _time_fit(lib, dev, spec, problem, state, iters)
            except Exception as exc:
                state["error"] = f"{type(exc).__name__}: {exc}"
            # the next fit starts once this one's thread pools stopped spinning
            wait_until_idle(_IDLE_WAIT_S)
        bar.update(1)


def _finish_job(job: dict, tdtype, iters: int) -> list[dict]:
    """The rows of a timed group (quality read off the last fit), its data released."""
    spec, (nn, dd, kk), states = job["spec"], job["size"], job["states"]
    rows = []
    for (lib, dev), state in states.items():
        row = _row(spec, nn, dd, kk, lib, dev, tdtype, iters, state)
        if not row["error"]:
            try:
                row["quality"] = _finite(RUNNERS[lib].quality(spec, lib, state["fitted"], state["data"]))
            except Exception as exc:
                row["quality_error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    _add_ratios(rows, spec.references)
    job.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the next size starts with the GPU's memory free
    return rows


def _load():
    """The 1-minute load average (other work on the machine skews the timings), or None."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _time_fit(lib, dev, spec, problem, state, iters) -> None:
    """One fit of ``1 + iters`` iterations, timed per iteration from inside; the first
    iteration is dropped unless it is the only one."""
    clock, share = IterationClock(dev), state.setdefault("meter", CpuShare())
    share.start()
    fitted = RUNNERS[lib].fit(spec, state["data"], problem.init, 1 + iters, clock)
    seconds = clock.seconds()
    state["share"].append(share.stop())
    state["iters"].append(len(seconds))
    if len(seconds) == 1:
        state["first_only"] = True
    state["iter_s"] += seconds[1:] if len(seconds) > 1 else seconds
    state["fitted"] = fitted


def _add_rates(row: dict, peak: dict) -> None:
    ms = row["ms_per_iter"]
    if ms is None:
        return
    for key in ("gflops", "gbps", "pct_peak_flops", "pct_peak_bw"):
        row[key] = None
    row["gflops"] = row["flops_per_iter"] / ms / 1e6
    row["gbps"] = row["bytes_per_iter"] / ms / 1e6
    row["pct_peak_bw"] = 100.0 * row["gbps"] / peak["peak_gbps"]
    if row.get("skips_work"):
        note = "bounded pass: skips distances, so no FLOP rate or %-of-peak from the dense count"
        row["note"] = note + (f"; {row['note']}" if row.get("note") else "")
        row["gflops"] = None
        return
    row["pct_peak_flops"] = 100.0 * row["gflops"] / peak["peak_gflops"]
    if max(row["pct_peak_flops"], row["pct_peak_bw"]) > 100:  # a count or the peak is wrong: say so
        over = f"above the measured peak ({row['pct_peak_flops']:.0f}% FLOP/s, {row['pct_peak_bw']:.0f}% GB/s): a count or the peak is wrong"
        row["note"] = over + (f"; {row['note']}" if row.get("note") else "")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _list(cast):
    def parse(text: str):
        try:
            values = [cast(v) for v in text.split(",") if v.strip()]
        except ValueError:
            what = "positive whole numbers" if cast is _positive_int else "values"
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
        return values

    return parse


def _positive_int(text: str) -> int:
    value = int(text.replace("_", ""))
    if value < 1:
        raise ValueError
    return value


def build_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchem bench", add_help=add_help, description=__doc__.split("\n\n")[0],
        epilog="Examples: torchem bench --quick;  torchem bench --models gmm-full,kmeans --devices cpu,cuda "
               "--n 100000,1000000,10000000 --json results.json --plot results.png",
    )
    parser.add_argument("--models", type=_list(str), metavar="LIST",
                        help=f"comma-separated, from {', '.join(MODELS)} (default: all)")
    for size, what in (("n", "samples"), ("d", "features"), ("k", "components")):
        parser.add_argument(f"--{size}", type=_list(_positive_int), metavar="LIST",
                            help=f"numbers of {what}, comma-separated for a sweep (default: per model)")
    parser.add_argument("--devices", type=_list(str), metavar="LIST",
                        help="torchem's devices, e.g. cpu,cuda (default: cpu, and cuda when available)")
    parser.add_argument("--dtype", choices=list(_DTYPES), default="float32")
    parser.add_argument("--iters", type=_positive_int, default=None,
                        help="timed EM iterations per fit (default 20; 5 with --quick)")
    parser.add_argument("--repeat", type=_positive_int, default=None,
                        help="fits per implementation; their iterations are pooled (default 3; 6 with --quick, "
                             "in rounds over every row)")
    parser.add_argument("--min-seconds", type=float, default=0.3, metavar="S",
                        help="an implementation whose timed iterations add up to less than S seconds over "
                             "--repeat fits gets more fits, up to 4x --repeat (default 0.3; 0: exactly --repeat)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 5 iterations: under a minute on a 2-core CPU")
    parser.add_argument("--references", type=_list(str), metavar="LIST",
                        help="reference libraries to compare with, from sklearn, faiss, pomegranate, "
                             "sklearn-array-api (default: those installed)")
    parser.add_argument("--no-reference", action="store_true", help="time torchem only (no scikit-learn, faiss, pomegranate)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data and initial parameters")
    parser.add_argument("--json", metavar="PATH", help="write the results to this JSON file")
    parser.add_argument("--plot", metavar="PATH", help="draw ms/iteration against N, K and D to this image (matplotlib)")
    parser.add_argument("--from-json", metavar="PATH", help="print the table (and --plot) of a saved run instead of running")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _fail(message: str) -> int:
    print(f"torchem bench: error: {message}", file=sys.stderr)
    return 2


def _unwritable(path: str) -> str | None:
    """Why ``path`` cannot be written (checked before a long run), or None."""
    from .._cli import CLIError, _check_writable

    try:
        _check_writable(path)
    except CLIError as exc:
        return str(exc)
    return None


def run_from_args(args: argparse.Namespace) -> int:
    if args.plot:
        if importlib.util.find_spec("matplotlib") is None:
            return _fail("--plot needs matplotlib: pip install matplotlib (or pip install 'torchem[bench]')")
        from matplotlib.figure import Figure

        kinds = Figure().canvas.get_supported_filetypes()
        ext = os.path.splitext(args.plot)[1].lstrip(".").lower()
        if ext not in kinds:
            return _fail(f"--plot {args.plot}: unsupported image type {ext or '(none)'!r}; use one of {', '.join(sorted(kinds))}")
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        problem = _unwritable(path) if path else None
        if problem:
            return _fail(f"{option}: {problem}")
    if args.from_json:
        try:
            with open(args.from_json) as fh:
                results = json.load(fh)
            table = format_table(results)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return _fail(f"cannot read benchmark results from {args.from_json}: {exc}")
    else:
        models = args.models or list(MODELS)
        unknown = [m for m in models if m not in MODELS]
        if unknown:
            return _fail(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
        devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
        for dev in devices:
            try:
                kind = torch.device(dev).type
            except RuntimeError:
                return _fail(f"unknown device {dev!r}; use cpu or cuda (cuda:1, ...)")
            if kind not in ("cpu", "cuda"):
                return _fail(f"unsupported device {dev!r}; use cpu or cuda")
            if kind == "cuda" and not torch.cuda.is_available():
                return _fail("CUDA is not available on this machine; drop cuda from --devices")
        references = False if args.no_reference else (args.references or True)
        unknown = [r for r in (args.references or []) if r not in REFERENCES]
        if unknown:
            return _fail(f"unknown reference librar{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                         f"choose from {', '.join(REFERENCES)}")
        iters = args.iters or (5 if args.quick else 20)
        if not (args.min_seconds >= 0 and math.isfinite(args.min_seconds)):
            return _fail(f"--min-seconds must be a non-negative number of seconds, got {args.min_seconds}")
        try:
            results = run_benchmarks(
                models, n=args.n, d=args.d, k=args.k, devices=tuple(dict.fromkeys(devices)), dtype=args.dtype,
                iters=iters, repeat=args.repeat or (6 if args.quick else 3), references=references, quick=args.quick,
                seed=args.seed, progress=not args.no_progress, min_seconds=args.min_seconds,
            )
        except ValueError as exc:
            return _fail(str(exc))
        given = getattr(args, "argv", None)
        results["command"] = shlex.join(sys.argv) if given is None else "torchem bench " + shlex.join(given)
        table = format_table(results)
    written = []  # files first: they survive an output pipe that closes early
    if args.json and not args.from_json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
        written.append(f"results written to {args.json}")
    if args.plot:
        plot_results(results, args.plot)
        written.append(f"plot written to {args.plot}")
    print("\n".join([table, *written]), flush=True)
    return 0


def main(argv=None) -> int:
    """``torchem bench`` (also ``python -m torchem.bench``); returns the exit status."""
    args = build_parser().parse_args(argv)
    args.argv = argv
    return run_from_args(args)
