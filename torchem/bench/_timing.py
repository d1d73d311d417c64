"""Clocks and the measured peak of a device.

On CUDA an interval is measured with ``torch.cuda.Event`` pairs recorded on the current
stream (the device is synchronised first, so earlier work does not leak in); on the CPU with
``time.perf_counter``. :class:`IterationClock` takes a timestamp at each iteration boundary
inside one fit. :class:`CpuShare` measures how much of the machine other processes (and the
hypervisor, as steal time) took while an interval ran, from ``/proc/stat`` where there is one.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Callable

import torch

__all__ = ["CpuShare", "IterationClock", "device_name", "measure_peak", "timed", "wait_until_idle"]


def _is_cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


def timed(fn: Callable, device: str):
    """``(seconds, fn())``: wall time on the CPU, CUDA event time on a GPU."""
    if not _is_cuda(device):
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out
    with torch.cuda.device(torch.device(device)):
        begin = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        begin.record()
        out = fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3, out


class IterationClock:
    """Timestamps taken inside one fit, one per iteration boundary: ``tick()`` as the first
    iteration starts and as each one ends. On CUDA each tick records an event on the current
    stream (read after the fit, so timing adds no synchronisation); on the CPU it reads
    ``time.perf_counter``. A library that keeps its own per-iteration times (faiss) hands
    them to :meth:`set` instead."""

    def __init__(self, device: str = "cpu"):
        self.cuda = _is_cuda(device)
        self.device = torch.device(device)
        self.stamps: list = []

    def tick(self, *_) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            self.stamps.append(event)
        else:
            self.stamps.append(time.perf_counter())

    def set(self, seconds) -> None:
        """Timestamps (seconds) measured by the library itself."""
        self.stamps = [float(t) for t in seconds]

    def seconds(self) -> list[float]:
        """Durations of the iterations, in order (one fewer than the ticks)."""
        if self.cuda and self.stamps and not isinstance(self.stamps[0], float):
            self.stamps[-1].synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.stamps, self.stamps[1:])]
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]


class CpuShare:
    """CPU time that other processes and the hypervisor took while intervals ran.

    ``start()`` and ``stop()`` bracket an interval; ``stop()`` returns ``(wall, other,
    steal)`` in seconds: its wall time, the CPU time every other process used meanwhile (the
    machine's busy time in ``/proc/stat`` less this process's own), and the time the
    hypervisor gave this machine's CPUs to others (``steal``). ``/proc/stat`` counts in clock
    ticks (:attr:`tick`, 10 ms), so a figure is meaningful summed over many intervals, within
    about a tick per interval, not for one short interval. Where ``/proc/stat`` cannot be read (not Linux) ``other`` and ``steal`` are
    ``None``."""

    _PATH = "/proc/stat"

    def __init__(self):
        self.tick = self.tick_seconds()
        self.available = self._read() is not None
        self._begin = None

    @staticmethod
    def tick_seconds() -> float:
        """The length of a ``/proc/stat`` clock tick."""
        try:
            return 1.0 / os.sysconf("SC_CLK_TCK")
        except (AttributeError, ValueError, OSError):
            return 0.01

    def _read(self):
        """``(busy, steal)`` seconds of the whole machine, or None."""
        try:
            with open(self._PATH) as fh:
                fields = fh.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu" or len(fields) < 9:
            return None
        # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
        # counted in user already
        v = [int(x) for x in fields[1:9]]
        return (v[0] + v[1] + v[2] + v[5] + v[6]) * self.tick, v[7] * self.tick

    @staticmethod
    def _own() -> float:
        return time.process_time()  # every thread of this process, to the nanosecond

    def start(self) -> None:
        self._begin = (time.perf_counter(), self._read(), self._own())

    def stop(self) -> tuple[float, float | None, float | None]:
        end = (time.perf_counter(), self._read(), self._own())
        wall = end[0] - self._begin[0]
        if self._begin[1] is None or end[1] is None:
            return wall, None, None
        other = (end[1][0] - self._begin[1][0]) - (end[2] - self._begin[2])
        return wall, max(other, 0.0), end[1][1] - self._begin[1][1]


def wait_until_idle(limit_s: float = 0.5, step_s: float = 0.01, busy_fraction: float = 0.1) -> float:
    """Sleep until this process's threads are idle, at most ``limit_s``; the seconds waited.

    Thread pools spin after their work ends before they sleep (OpenBLAS's, used by
    NumPy, for about 0.1 s after scikit-learn's Gaussian mixtures; OpenMP's, briefly), and a
    pool that spins holds a core: the next fit timed on a 2-core machine then loses whole
    scheduler ticks (4 ms) at its synchronisations. Idle here: the process used less than
    ``busy_fraction`` of one CPU over a sleep of ``step_s``."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        cpu = time.process_time()
        time.sleep(step_s)
        if time.process_time() - cpu < busy_fraction * step_s:
            break
    return time.perf_counter() - start


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model name and the number of torch threads."""
    if _is_cuda(device):
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def _best_time(fn: Callable, device: str, repeat: int) -> float:
    fn()  # warm-up
    return min(timed(fn, device)[0] for _ in range(repeat))


def measure_peak(device: str, dtype: torch.dtype, *, quick: bool = False, repeat: int = 5) -> dict:
    """Measured peak of ``device`` in ``dtype``: GFLOP/s of a square matmul (``2 m^3``
    operations) and GB/s of a tensor copy (each element read once and written once), from
    the fastest of ``repeat`` runs after a warm-up: a peak is the best the device does, and
    other work on a shared machine only ever slows a run down.

    Sizes: ``m`` = 8192 and 2^28 elements on CUDA; ``m`` = 2048 and 2^25 elements on the CPU
    (1536 and 2^24 with ``quick``)."""
    if _is_cuda(device):
        m, numel = 8192, 2**28
    elif quick:
        m, numel = 1536, 2**24
    else:
        m, numel = 2048, 2**25
    t_mm = _time_matmul(m, device, dtype, repeat)
    t_copy, nbytes = _time_copy(numel, device, dtype, repeat)
    return {
        "name": device_name(device),
        "peak_gflops": 2 * m**3 / t_mm / 1e9,
        "peak_gbps": nbytes / t_copy / 1e9,
        "matmul_size": m,
        "copy_bytes": nbytes,
    }


def _time_matmul(m: int, device: str, dtype: torch.dtype, repeat: int) -> float:
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(m, m, device=device, dtype=dtype, generator=gen)
    b = torch.randn(m, m, device=device, dtype=dtype, generator=gen)
    out = torch.empty(m, m, device=device, dtype=dtype)
    return _best_time(lambda: torch.matmul(a, b, out=out), device, repeat)


def _time_copy(numel: int, device: str, dtype: torch.dtype, repeat: int) -> tuple[float, int]:
    src = torch.ones(numel, device=device, dtype=dtype)
    dst = torch.empty_like(src)
    return _best_time(lambda: dst.copy_(src), device, repeat), 2 * numel * src.element_size()
