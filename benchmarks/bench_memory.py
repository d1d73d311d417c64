"""Peak memory of a fit as N grows: does it stay flat beyond the data itself?

Each case runs in its own subprocess (so one peak does not hide another) and records:

* on CPU, the peak resident set size (``resource.getrusage``'s ``ru_maxrss``, which counts
  the pages of a memory-mapped file the fit has touched), the resident size just before the
  fit (after importing torch and opening the data), and their difference;
* on CUDA, ``torch.cuda.max_memory_allocated``, with the data either generated on the device
  (``--source device``) or generated in host RAM and streamed chunk by chunk through pinned
  buffers (``--source host``: a host tensor larger than half the free device memory, which
  ``fit`` streams; 350M x 64 float32 is 90 GB, more than an 80 GB device).

The data's size counts once: a ``np.memmap`` file (``--source memmap``, the default on CPU) or
the array in RAM (``--source memory``).

    # the CPU figures in benchmarks/results/cpu-2core-memory.json
    python benchmarks/bench_memory.py --n 1000000 3000000 10000000 --d 32 --k 16 --max-iter 3 \\
        --json benchmarks/results/cpu-2core-memory.json
    # on a GPU: 100M x 64 on the device, and a host-streamed run larger than the device
    python benchmarks/bench_memory.py --device cuda --source device --n 100000000 --d 64 --k 64 --max-iter 3
    python benchmarks/bench_memory.py --device cuda --source host --n 350000000 --d 64 --k 64 --max-iter 2
    # the same path on a machine with less RAM than device memory: hold all but 16 GiB of it
    python benchmarks/bench_memory.py --device cuda --source host --n 40000000 --d 64 --k 64 --max-iter 2 \
        --leave-free-gib 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

CENTRE_SCALE = 4.0


def _make_memmap(path: str, n: int, d: int, seed: int, block: int = 1_000_000) -> None:
    """``n x d`` float32 mixture data written block by block (never all in RAM)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(16, d)).astype(np.float32) * CENTRE_SCALE
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, block):
        m = min(block, n - s)
        out[s : s + m] = centres[rng.integers(0, len(centres), m)] + rng.standard_normal((m, d), dtype=np.float32)
    out.flush()
    del out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(args) -> dict:
    import torch

    from torchem import GaussianMixture

    torch.manual_seed(0)
    model = GaussianMixture(args.k, covariance_type="diag", max_iter=args.max_iter, tol=0.0, random_state=0)
    n, d = args.n[0], args.d
    if args.device == "cuda":
        model = model.to("cuda")
        if args.source == "device":
            g = torch.Generator(device="cuda").manual_seed(0)
            centres = torch.randn(16, d, device="cuda", generator=g) * CENTRE_SCALE
            X = torch.empty(n, d, device="cuda")
            for s in range(0, n, 10_000_000):
                m = min(10_000_000, n - s)
                idx = torch.randint(0, 16, (m,), device="cuda", generator=g)
                X[s : s + m] = centres[idx] + torch.randn(m, d, device="cuda", generator=g)
            data_bytes = X.numel() * X.element_size()
        else:  # a host tensor in RAM, larger than half the free device memory: streamed
            if args.leave_free_gib:
                # a smaller device, simulated: hold all but this much device memory, so a host
                # array that fits in RAM is still larger than half the free device memory
                free = torch.cuda.mem_get_info()[0]
                keep = int(args.leave_free_gib * 2**30)
                ballast = torch.empty(max(0, free - keep), dtype=torch.uint8, device="cuda")  # noqa: F841
            g = torch.Generator().manual_seed(0)
            centres = torch.randn(16, d, generator=g) * CENTRE_SCALE
            X = torch.empty(n, d)
            for s in range(0, n, 10_000_000):
                m = min(10_000_000, n - s)
                X[s : s + m] = centres[torch.randint(0, 16, (m,), generator=g)] + torch.randn(m, d, generator=g)
            data_bytes = X.numel() * X.element_size()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        # memory: read into RAM (np.load reads straight into the array: no second copy)
        X = np.load(args.path, mmap_mode="r" if args.source == "memmap" else None)
        data_bytes = X.size * X.itemsize
        before = _rss_bytes()
    start = time.perf_counter()
    model.fit(X)
    seconds = time.perf_counter() - start
    out = {
        "n": n, "d": d, "k": args.k, "max_iter": args.max_iter, "device": args.device, "source": args.source,
        "data_bytes": int(data_bytes), "fit_seconds": seconds, "n_iter": int(model.n_iter_),
        "lower_bound": float(model.lower_bound_),
    }
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated()
        out.update(peak_device_bytes=int(peak), device_bytes_before_fit=int(before), peak_over_data=peak / data_bytes,
                   gpu=torch.cuda.get_device_name(), leave_free_gib=args.leave_free_gib,
                   fit_peak_bytes=int(peak - before))  # without the data and any held memory
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        out.update(peak_rss_bytes=int(peak), rss_before_fit_bytes=int(before), peak_over_data=peak / data_bytes,
                   peak_minus_data_bytes=int(peak - data_bytes), threads=torch.get_num_threads())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--max-iter", type=int, default=3)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--source", choices=["memmap", "memory", "device", "host"], default=None)
    p.add_argument("--leave-free-gib", type=float, default=None,
                   help="--source host: hold device memory so that only this many GiB stay free (streams a host array "
                        "smaller than the device)")
    p.add_argument("--dir", default=None, help="where to write the memmap files (a temporary folder by default)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.source = args.source or ("memmap" if args.device == "cpu" else "device")
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    results = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in args.n:
            path = None
            if args.source in ("memmap", "memory"):
                path = os.path.join(tmp, f"X-{n}x{args.d}.npy")
                _make_memmap(path, n, args.d, seed=n)
            cmd = [sys.executable, __file__, "--child", "--n", str(n), "--d", str(args.d), "--k", str(args.k),
                   "--max-iter", str(args.max_iter), "--device", args.device, "--source", args.source]
            if path:
                cmd += ["--path", path]
            if args.leave_free_gib:
                cmd += ["--leave-free-gib", str(args.leave_free_gib)]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            results.append(res)
            peak = res.get("peak_rss_bytes", res.get("peak_device_bytes"))
            print(f"N={n:>11,} data {res['data_bytes'] / 2**20:9.1f} MiB  peak {peak / 2**20:9.1f} MiB  "
                  f"peak - data {(peak - res['data_bytes']) / 2**20:7.1f} MiB  peak/data {res['peak_over_data']:.3f}  "
                  f"fit {res['fit_seconds']:.1f}s", flush=True)
            if path:
                os.remove(path)
    report = {"benchmark": "bench_memory", "machine": platform.platform(), "processor": platform.processor(),
              "cpu_count": os.cpu_count(), "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
              "results": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
