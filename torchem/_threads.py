"""CPU passes whose chunks run side by side on threads of one intra-op thread each.

On the CPU, torch parallelises every operation over its own elements: a pass of many
chunk-sized operations forks and joins its thread team once per operation, and between
operations the other threads idle or sleep. On the 2-core machine CI runs on, two intra-op
threads made whole fits no faster than one, and a sleeping thread sometimes took
milliseconds to wake. So the chunks of an in-memory CPU pass are shared out instead: the
calling thread and ``T - 1`` workers (``T = torch.get_num_threads()``) each take the next
chunk as soon as they are free and run its operations on one thread, as scikit-learn's
K-means runs its chunks under OpenMP with BLAS held to one thread. Each chunk's result is
handed on in the chunks' order (:func:`run_ordered`), so statistics are summed in the same
order as a pass on one thread: with the same chunks the sums are the same, bit for bit,
whatever the number of threads.

A worker's one-thread setting is its own (OpenMP's and MKL's thread counts are per thread);
the calling thread runs at one thread only while it works through a pass's chunks, and gets
its own count back at the end. While it does, torch's process-wide default (which
``torch.set_num_threads`` also sets) is one: a thread elsewhere whose first torch operation
falls in that time starts with one intra-op thread (``torch.set_num_threads`` in that thread
chooses again; ``TORCHEM_CHUNK_THREADS=0`` keeps torchem's passes in the caller). Work
started from a worker runs there, on its own. Autocast is off in the passes
(:func:`torchem._utils.full_float32_matmul`), so every thread computes in the data's dtype.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from functools import partial
from typing import Callable, Iterable, TypeVar

import torch

__all__ = ["MIN_ROWS", "run_ordered", "shares", "slot", "workers"]

T = TypeVar("T")
R = TypeVar("R")

#: Off: every pass runs its chunks one after the other in the calling thread, on its own
#: threads (``TORCHEM_CHUNK_THREADS=0`` in the environment turns it off for a process).
enabled = os.environ.get("TORCHEM_CHUNK_THREADS", "1") != "0"

#: Fewest rows a pass shares among threads: a pass over fewer takes a few milliseconds at
#: most, less than handing its chunks to other threads costs (it runs in the caller).
MIN_ROWS = 2**14

_PREFIX = "torchem-chunks"
_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}
_pid = os.getpid()
_local = threading.local()


def workers() -> int:
    """How many threads a pass started from this thread shares its chunks among: the calling
    thread's ``torch.get_num_threads()``; 1 (the caller alone) when switched off or when
    called from a worker or from a pass already under way."""
    if not enabled or getattr(_local, "slot", 0) or getattr(_local, "busy", False):
        return 1
    return max(1, torch.get_num_threads())


def shares(device: torch.device, n_rows: int, n_chunks: int) -> bool:
    """Whether a pass of ``n_chunks`` chunks over ``n_rows`` in-memory rows on ``device`` is
    worth sharing among threads: on the CPU, with more than one chunk and at least
    :data:`MIN_ROWS` rows (a GPU pass, or a smaller one, runs in the caller)."""
    return device.type == "cpu" and n_chunks > 1 and n_rows >= MIN_ROWS


def slot() -> int:
    """This thread's place in a pass: 0 for the calling thread, ``1 .. T - 1`` for the
    workers (each keeps its own scratch buffers under its slot)."""
    return getattr(_local, "slot", 0)


def _start_worker(numbers: Iterable[int]) -> None:
    """A worker's setting: one intra-op thread, and its slot. (torch sets a thread's count
    from the process-wide default the first time the thread asks for it: asked here first,
    so that the default given back afterwards does not overwrite the one.)"""
    torch.get_num_threads()
    torch.set_num_threads(1)
    _local.slot = next(numbers)


def _pool(size: int) -> ThreadPoolExecutor | None:
    """The pool of ``size`` workers (made once per size and process), or ``None`` if its
    workers could not be started (the pass then runs in the caller)."""
    global _pid
    with _lock:
        if os.getpid() != _pid:  # a forked child inherits the pools but not their threads
            _pools.clear()
            _pid = os.getpid()
        pool = _pools.get(size)
        if pool is None:
            caller = torch.get_num_threads()
            pool = ThreadPoolExecutor(size, thread_name_prefix=_PREFIX, initializer=partial(_start_worker, itertools.count(1)))
            # start every worker now (each waits for all the others, so each runs on a thread
            # of its own), then give the process-wide default for threads started later back
            # its value: set_num_threads(1) in a worker also set that default
            ready = threading.Barrier(size, timeout=60)
            try:
                list(pool.map(lambda _: ready.wait(), range(size)))
            except Exception:  # noqa: BLE001 - a worker that cannot start: no pool, the caller works alone
                ready.abort()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = None
            finally:
                torch.set_num_threads(caller)
            if pool is not None:
                _pools[size] = pool
        return pool


def run_ordered(items: Iterable[T], work: Callable[[T], R], take: Callable[[R], None]) -> None:
    """``take(work(item))`` for every item, ``take`` in the items' order: ``work`` runs on
    :func:`workers` threads side by side (the caller and workers, each on one intra-op thread,
    each taking the next item once free; the caller's grad mode in all), ``take`` on
    whichever thread finds the next result ready, one at a time. On one thread this is the
    plain loop. Once reading an item, a ``work`` or a ``take`` raises, no further item is
    started and, when the started ones have finished, the exception of the earliest item is
    raised."""
    t = workers()
    pool = _pool(t - 1) if t > 1 else None
    if pool is None:
        for item in items:
            take(work(item))
        return
    source = iter(items)
    lock = threading.Lock()
    ready: dict[int, R] = {}
    state = {"read": 0, "next": 0}
    errors: list[tuple[int, BaseException]] = []
    grad = torch.is_grad_enabled()

    def loop():
        with torch.set_grad_enabled(grad):
            while True:
                with lock:
                    if errors:
                        return
                    i = state["read"]
                    try:
                        item = next(source)
                    except StopIteration:
                        return
                    except BaseException as error:  # noqa: BLE001 - handed to the caller below
                        errors.append((i, error))
                        return
                    state["read"] += 1
                try:
                    result = work(item)
                except BaseException as error:  # noqa: BLE001
                    with lock:
                        errors.append((i, error))
                    return
                with lock:
                    ready[i] = result
                    while not errors and state["next"] in ready:
                        try:
                            take(ready.pop(state["next"]))
                        except BaseException as error:  # noqa: BLE001
                            errors.append((state["next"], error))
                            return
                        state["next"] += 1

    futures = [pool.submit(loop) for _ in range(t - 1)]
    own = torch.get_num_threads()
    torch.set_num_threads(1)
    _local.busy = True
    try:
        loop()
    finally:
        _local.busy = False
        torch.set_num_threads(own)
        # loops still queued behind another caller's pass would start only to find no item
        # left: cancel them rather than wait for that pass
        started = [future for future in futures if not future.cancel()]
        wait(started)
    for future in started:
        future.result()
    if errors:
        raise min(errors, key=lambda e: e[0])[1]
