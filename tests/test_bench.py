"""``torchem bench``: FLOP/byte counts against hand-computed formulas, and the structure of a
tiny run's results (no timing assertions: timings belong to benchmarks, not tests)."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from torchem.bench import bytes_per_iter, flops_per_iter, format_table, main
from torchem.bench._counts import n_features_of_expansion
from torchem.functional.gaussian import quadratic_features


def test_flop_counts_match_hand_computed_formulas():
    n, d, k = 2000, 4, 3
    # full: Q = 4 * 5 / 2 = 10 products (one per unordered pair), F = Q + D = 14 features
    assert flops_per_iter("gmm-full", n, d, k) == 2000 * (4 + 10) + 4 * 2000 * 3 * 14 + 9 * 2000 * 3 + 3 * 4**3
    assert flops_per_iter("gmm-full", n, d, k) == 418_192
    assert flops_per_iter("gmm-diag", n, d, k) == 2 * 2000 * 4 + 4 * 2000 * 3 * 8 + 9 * 2000 * 3 + 4 * 3 * 4
    assert flops_per_iter("gmm-spherical", n, d, k) == 3 * 2000 * 4 + 4 * 2000 * 3 * 5 + 9 * 2000 * 3 + 4 * 3 * 4
    assert flops_per_iter("gmm-tied", n, d, k) == 3 * 2000 * 4 + 4 * 2000 * 16 + 4 * 2000 * 3 * 4 + 9 * 2000 * 3 + 64
    assert flops_per_iter("kmeans", n, d, k) == 98_012  # 4ND + 2NKD + 3NK + KD
    assert flops_per_iter("bernoulli", n, d, k) == 4 * 2000 * 3 * 4 + 8 * 2000 * 3 + 4 * 3 * 4
    # the compulsory traffic: the data read once
    assert bytes_per_iter("gmm-full", n, d, k, 4) == 4 * 2000 * 4 == 32_000
    assert bytes_per_iter("kmeans", n, d, k, 8) == 8 * 2000 * 4
    with pytest.raises(ValueError, match="unknown model"):
        flops_per_iter("gmm-banana", n, d, k)


@pytest.mark.parametrize("d", [1, 2, 5, 8])
def test_full_feature_count_is_the_kernels_width(d):
    """The counted feature width is the width of the features the kernel builds."""
    width = quadratic_features(torch.zeros(3, d)).shape[-1]
    assert n_features_of_expansion("full", d) == width + d


def by_lib_iters(res, model, library):
    return next(r["iters_per_fit"] for r in res["runs"] if (r["model"], r["library"]) == (model, library))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_iteration_clock_ticks_once_per_iteration_inside_a_fit():
    """The driver's hook times each iteration of one fit; it is restored afterwards."""
    from torchem import GaussianMixture, em
    from torchem.bench._cases import RUNNERS, MODELS
    from torchem.bench._timing import IterationClock

    X = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    clock = IterationClock()
    with em._clock_iterations(clock.tick):
        gm = GaussianMixture(2, tol=0.0, max_iter=4, random_state=0).fit(X)
    assert em._iteration_clock is None and gm.n_iter_ == 4
    assert len(clock.stamps) == 5 and len(clock.seconds()) == 4 and all(t >= 0 for t in clock.seconds())
    GaussianMixture(2, max_iter=2).fit(X)  # no clock: nothing recorded
    assert len(clock.stamps) == 5
    pytest.importorskip("sklearn")
    # scikit-learn hooked at its E-step / Lloyd kernel: one duration per iteration it ran
    from torchem.bench._cases import make_problem

    for model in ("gmm-diag", "kmeans"):
        problem = make_problem(MODELS[model], 500, 2, 3, np.float32, 0)
        clock = IterationClock()
        fitted = RUNNERS["sklearn"].fit(MODELS[model], problem.X, problem.init, 3, clock)
        assert len(clock.seconds()) == fitted.n_iter_ >= 1


def test_array_api_reference_is_used_or_skipped_with_a_reason():
    from torchem.bench._cases import installed_references

    skipped = {}
    found = installed_references(["sklearn-array-api"], skipped)
    assert ("sklearn-array-api" in found) != ("sklearn-array-api" in skipped)
    if skipped:
        assert "SCIPY_ARRAY_API" in skipped["sklearn-array-api"] or "Error" in skipped["sklearn-array-api"]


def test_tiny_run_writes_consistent_results(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    args = ["--quick", "--models", "gmm-diag,kmeans,bgmm-full,gmm-ic", "--n", "2000", "--d", "3", "--k", "2", "--iters", "2",
            "--repeat", "1", "--devices", "cpu", "--references", "sklearn,faiss", "--json", str(out), "--no-progress"]
    has_plot = importlib.util.find_spec("matplotlib") is not None
    assert main(args + (["--plot", str(png)] if has_plot else [])) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    for key in ("torchem", "torch", "threads", "dtype", "iters", "repeat", "devices", "runs", "libraries", "command"):
        assert key in res
    assert res["dtype"] == "float32" and res["iters"] == 2 and res["repeat"] == 1
    cpu = res["devices"]["cpu"]
    assert cpu["name"] and cpu["peak_gflops"] > 0 and cpu["peak_gbps"] > 0
    labels = {(r["model"], r["label"]) for r in res["runs"]}
    assert {("gmm-diag", "torchem/cpu"), ("gmm-diag", "sklearn/cpu"), ("kmeans", "torchem/cpu"),
            ("kmeans", "sklearn/cpu"), ("gmm-ic", "torchem/cpu"), ("gmm-ic", "sklearn/cpu")} <= labels
    # the grid is charged one iteration of each of its models: K = 1, 2 of every covariance type
    grid = sum(flops_per_iter(f"gmm-{t}", 2000, 3, kk) for t in ("full", "tied", "diag", "spherical") for kk in (1, 2))
    assert {r["flops_per_iter"] for r in res["runs"] if r["model"] == "gmm-ic"} == {grid}
    for r in res["runs"]:
        assert not r["error"], r
        assert (r["n"], r["d"], r["k"]) == (2000, 3, 2)
        assert r["flops_per_iter"] == flops_per_iter(r["model"], 2000, 3, 2)
        assert r["bytes_per_iter"] == bytes_per_iter(r["model"], 2000, 3, 2, 4)
        # every row timed, from the iterations inside its fits (the first of each dropped):
        # one fit asked for, and up to four where one fit times less than --min-seconds
        assert r["ms_per_iter"] is not None and 1 <= len(r["iters_per_fit"]) <= 4
        assert len(r["iter_ms"]) == sum(i - 1 or 1 for i in r["iters_per_fit"]) and all(t > 0 for t in r["iter_ms"])
        assert len(r["cpu_share_s"]) == len(r["iters_per_fit"])
        if res["other_cpus"] is not None:  # Linux: what other processes took is measured
            assert r["other_cpus"] >= 0 and r["steal_cpus"] >= 0
        assert r["ms_iter_p25"] <= r["ms_per_iter"] <= r["ms_iter_p75"]
        assert r["ms_per_iter"] == pytest.approx(float(np.median(r["iter_ms"])))
        assert r["pct_peak_bw"] == pytest.approx(100 * r["gbps"] / cpu["peak_gbps"])
        if (r["model"], r["library"]) == ("kmeans", "torchem"):  # bounded: does less than the dense count
            assert r["gflops"] is None and r["pct_peak_flops"] is None
        else:
            assert r["gflops"] == pytest.approx(r["flops_per_iter"] / r["ms_per_iter"] / 1e6)
    assert {i for lib in ("torchem", "sklearn") for i in by_lib_iters(res, "gmm-diag", lib)} == {3}
    # Same data and same initial parameters: the libraries reach the same model.
    by = {(r["model"], r["library"]): r for r in res["runs"]}
    np.testing.assert_allclose(by["gmm-diag", "torchem"]["quality"], by["gmm-diag", "sklearn"]["quality"], rtol=1e-4)
    np.testing.assert_allclose(by["kmeans", "torchem"]["quality"], by["kmeans", "sklearn"]["quality"], rtol=1e-4)
    np.testing.assert_allclose(by["bgmm-full", "torchem"]["quality"], by["bgmm-full", "sklearn"]["quality"], rtol=1e-4)
    if ("kmeans", "faiss") in by:
        np.testing.assert_allclose(by["kmeans", "faiss"]["quality"], by["kmeans", "sklearn"]["quality"], rtol=1e-4)
    assert "gmm-diag  N=2,000 D=3 K=2" in printed and "torchem/cpu" in printed
    if has_plot:
        assert png.read_bytes()[:4] == b"\x89PNG"
    # A saved run renders again without running.
    assert main(["--from-json", str(out)]) == 0
    assert "kmeans  N=2,000 D=3 K=2" in capsys.readouterr().out
    rows = [line for line in format_table(res).splitlines() if line.startswith("torchem/cpu")]
    assert len(rows) == 4  # one per model


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "gmm-banana"], "unknown model"),
        (["--references", "mlpack"], "unknown reference library mlpack"),
        (["--devices", "tpu"], "device"),
        (["--from-json", "/nonexistent/r.json"], "cannot read benchmark results"),
    ],
)
def test_bad_options_get_a_message(args, message, capsys):
    assert main(args + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cuda_requested_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["--devices", "cuda", "--no-progress"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.cuda
def test_tiny_run_on_cuda(tmp_path):
    out = tmp_path / "r.json"
    assert main(["--quick", "--models", "gmm-full,kmeans", "--n", "2000", "--d", "3", "--k", "2", "--iters", "2",
                 "--repeat", "1", "--devices", "cpu,cuda", "--no-reference", "--json", str(out), "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert "cuda" in res["devices"]
    runs = {(r["model"], r["device"]): r for r in res["runs"]}
    for model in ("gmm-full", "kmeans"):
        assert not runs[model, "cuda"]["error"]
        np.testing.assert_allclose(runs[model, "cuda"]["quality"], runs[model, "cpu"]["quality"], rtol=1e-3)


def test_unwritable_outputs_are_refused_before_the_run(capsys):
    assert main(["--quick", "--models", "kmeans", "--json", "/proc/results.json", "--no-progress"]) == 2
    assert "--json: cannot write /proc/results.json" in capsys.readouterr().err
    pytest.importorskip("matplotlib")
    assert main(["--quick", "--models", "kmeans", "--plot", "results.xyz", "--no-progress"]) == 2
    assert "unsupported image type 'xyz'" in capsys.readouterr().err



@pytest.mark.parametrize("quick", [True, False])
def test_quick_repeats_go_round_every_row(monkeypatch, quick):
    """With --quick each repeat times every row group once (a row's fits then span the whole
    run, so a slow spell of a shared machine is shared out); otherwise a group's repeats run
    together, one group's data held at a time. Either way every repeat is timed."""
    import torchem.bench._run as run

    order = []
    real = run._time_fit

    def record(lib, dev, spec, problem, state, iters):
        order.append(spec.name)
        return real(lib, dev, spec, problem, state, iters)

    monkeypatch.setattr(run, "_time_fit", record)
    monkeypatch.setattr(run, "measure_peak", lambda *a, **kw: {"peak_gflops": 1.0, "peak_gbps": 1.0})
    out = run.run_benchmarks(["gmm-diag", "kmeans"], n=[500], d=[2], k=[2], iters=2, repeat=3, references=False,
                             quick=quick, progress=False, min_seconds=0)
    expected = ["gmm-diag", "kmeans"] * 3 if quick else ["gmm-diag"] * 3 + ["kmeans"] * 3
    assert order == expected
    assert [r["model"] for r in out["runs"]] == ["gmm-diag", "kmeans"]
    assert all(r["ms_per_iter"] and len(r["iters_per_fit"]) == 3 for r in out["runs"])


@pytest.mark.parametrize("quick", [True, False])
def test_fast_rows_get_more_fits_spread_over_the_rounds(monkeypatch, quick):
    """An implementation whose --repeat fits would time less than --min-seconds of iterations
    gets more fits (at most 4x --repeat), spread evenly over the rounds; a slow one keeps
    --repeat. (Iteration times are stood in for: the schedule is what is checked.)"""
    import torchem.bench._run as run

    order = []
    per_iter = {"gmm-diag": 0.05, "kmeans": 1e-4}  # seconds per iteration, stood in

    def fake(lib, dev, spec, problem, state, iters):
        order.append(spec.name)
        state["iter_s"] += [per_iter[spec.name]] * iters
        state["iters"].append(1 + iters)
        state["share"].append((per_iter[spec.name] * iters, 0.0, 0.0))
        state["fitted"] = None

    monkeypatch.setattr(run, "_time_fit", fake)
    monkeypatch.setattr(run, "measure_peak", lambda *a, **kw: {"peak_gflops": 1.0, "peak_gbps": 1.0})
    # gmm-diag: 0.1 s of iterations a fit, 0.5 s wanted -> 5 fits; kmeans: capped at 4 x 3
    out = run.run_benchmarks(["gmm-diag", "kmeans"], n=[500], d=[2], k=[2], iters=2, repeat=3, references=False,
                             quick=quick, progress=False, min_seconds=0.5)
    fits = {r["model"]: len(r["iters_per_fit"]) for r in out["runs"]}
    assert fits == {"gmm-diag": 5, "kmeans": 12}
    assert order.count("gmm-diag") == 5 and order.count("kmeans") == 12
    if quick:  # each round goes over every row (kmeans takes part in all 12); gmm-diag's 5
        # fits are spread over them, first to last
        rounds = [order[:i].count("kmeans") for i, name in enumerate(order) if name == "gmm-diag"]
        assert rounds == [0, 3, 6, 9, 11]
    else:  # one group after the other
        assert order == ["gmm-diag"] * 5 + ["kmeans"] * 12
    slow = run.run_benchmarks(["gmm-diag"], n=[500], d=[2], k=[2], iters=2, repeat=3, references=False,
                              quick=quick, progress=False, min_seconds=0.2)
    assert len(slow["runs"][0]["iters_per_fit"]) == 3  # 3 fits time 0.3 s: no more
    assert slow["other_cpus"] == 0.0 and slow["steal_cpus"] == 0.0


def test_cpu_share_counts_another_process():
    """What another process does during an interval is counted as others' CPU time, and
    this process's own work is not."""
    import subprocess
    import sys
    import time

    from torchem.bench._timing import CpuShare

    meter = CpuShare()
    if not meter.available:
        pytest.skip("no /proc/stat here")
    meter.start()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                             "while time.process_time() - t < 0.6: pass"])
    busy.wait()
    wall, other, steal = meter.stop()
    assert other >= 0.4 and steal >= 0 and wall >= 0.6


def test_cpu_share_arithmetic(tmp_path, monkeypatch):
    """Others' time is the machine's busy ticks (user, nice, system, irq, softirq; not idle,
    iowait or steal) less this process's own CPU time; steal is reported apart."""
    from torchem.bench import _timing

    stat = tmp_path / "stat"
    own = iter([10.0, 10.5])
    monkeypatch.setattr(_timing.CpuShare, "_PATH", str(stat))
    monkeypatch.setattr(_timing.CpuShare, "_own", staticmethod(lambda: next(own)))
    monkeypatch.setattr(_timing.CpuShare, "tick_seconds", staticmethod(lambda: 0.01))
    #               user nice sys  idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  1000 0 200 5000 30 0 10 7 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    meter = _timing.CpuShare()
    assert meter.available
    meter.start()
    stat.write_text("cpu  1100 10 230 5100 90 5 15 27 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    _, other, steal = meter.stop()
    # busy grew by 100 + 10 + 30 + 5 + 5 = 150 ticks = 1.5 s, of which 0.5 s was this process
    assert other == pytest.approx(1.0) and steal == pytest.approx(0.2)
    stat.write_text("no cpu line\n")
    assert not _timing.CpuShare().available


def test_a_rate_above_the_measured_peak_is_flagged():
    """%-of-peak above 100 means a FLOP or byte count, or the peak, is wrong: the row says so
    rather than printing it as an achievement."""
    from torchem.bench._run import _add_rates

    row = {"ms_per_iter": 1.0, "flops_per_iter": 3e9, "bytes_per_iter": 1e6, "note": "x"}
    _add_rates(row, {"peak_gflops": 2000.0, "peak_gbps": 100.0})
    assert row["pct_peak_flops"] == pytest.approx(150.0) and row["note"].startswith("above the measured peak")
    assert row["note"].endswith("; x")
    row = {"ms_per_iter": 1.0, "flops_per_iter": 1e9, "bytes_per_iter": 1e6}
    _add_rates(row, {"peak_gflops": 2000.0, "peak_gbps": 100.0})
    assert row["pct_peak_flops"] == pytest.approx(50.0) and "note" not in row


def test_wait_until_idle_outlasts_a_spinning_thread():
    """After a fit, the next waits until the process's threads stop spinning (a spinning
    pool holds a core); with nothing spinning it waits one short sleep."""
    import threading
    import time

    from torchem.bench._timing import wait_until_idle

    def spin(seconds):  # its own CPU time, so a busy machine cannot cut it short
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    assert wait_until_idle(limit_s=1.0) < 0.2
    worker = threading.Thread(target=spin, args=(0.15,))
    worker.start()
    waited = wait_until_idle(limit_s=1.0)
    worker.join()
    assert 0.12 <= waited < 1.0
    assert 0.05 <= wait_until_idle(limit_s=0.05, step_s=0.01, busy_fraction=-1.0) < 0.5  # gives up at the limit
