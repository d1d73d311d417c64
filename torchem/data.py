"""Chunk sources: where the EM driver reads its samples from.

A source yields the data in chunks of samples, always shaped ``[B, n, D]`` (``B`` independent
problems) on the compute device in the compute dtype, so the driver's peak memory is set by
the chunk size rather than by the number of samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from dataclasses import dataclass
from typing import Any

from .distributed import is_distributed
from ._utils import InputKind, all_finite, as_float_tensor, check_data, rand

__all__ = [
    "HostStreamSource",
    "Source",
    "INIT_SAMPLE_SIZE",
    "IterableSource",
    "TensorSource",
    "auto_chunk_size",
    "is_iterable_data",
    "reservoir_sample",
    "inference_blocks",
    "concat_blocks",
    "split_batch",
    "BATCH_KEYS",
    "HOW_TO_WEIGHT",
    "DataInfo",
    "describe",
    "open_source",
    "check_sample_weight",
    "check_batch_weight",
    "check_labels",
    "batch_labels",
    "working_dtype",
    "check_observed",
    "omit_rows",
]

# Bytes of per-chunk working memory the driver aims for on CPU when no chunk size is given.
_CPU_BUDGET = 8 * 2**20
_MIN_CHUNK = 256


def _free_device_memory(device: torch.device) -> int:
    """Bytes a CUDA device can still give this process: the driver's free memory plus what
    PyTorch's caching allocator holds reserved but unallocated (``mem_get_info`` counts that
    as taken, so after one large fit the next would see half the device as used and stream
    its data over PCIe every iteration)."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + max(0, torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)))


def auto_chunk_size(bytes_per_sample: int, device: torch.device, n_samples: int) -> int:
    """A chunk length whose working memory fits a budget: 8 MiB on CPU, whatever the number
    of threads (each chunk of an in-memory pass runs on one thread, see
    :mod:`torchem._threads`; on one thread the Gaussian full and diagonal E+M passes ran
    about 0.86 of their 16 MiB time with 8 MiB chunks; and the same chunks on any number of
    threads give the same sums), and an eighth of the free memory, at most 2 GiB, on CUDA."""
    if device.type == "cuda":
        budget = min(_free_device_memory(device) // 8, 2 * 2**30)
    else:
        budget = _CPU_BUDGET
    size = max(_MIN_CHUNK, int(budget // max(1, bytes_per_sample)))
    return int(min(size, n_samples))


@runtime_checkable
class Source(Protocol):
    """What the driver reads: the data of ``B`` problems, chunk by chunk, on the compute
    device in the compute dtype.

    Attributes: ``device``, ``dtype``, ``n_problems`` (``B``), ``n_features`` (``D``),
    ``n_samples`` (per problem; an iterable knows it after its first pass), ``chunk_size``
    (samples per chunk), ``X`` (the ``[B, N, D]`` tensor of in-memory data, ``None`` for
    streamed data), ``sample_weight`` (``[B, N]`` or ``None``, in-memory data only) and
    ``labels`` (``[B, N]`` int64 of in-memory data or ``None``: ``-1`` for an unlabelled row,
    ``k`` for a row known to come from component ``k``).
    """

    device: torch.device
    dtype: torch.dtype
    chunk_size: int

    @property
    def n_problems(self) -> int: ...

    @property
    def n_features(self) -> int: ...

    @property
    def n_samples(self) -> int: ...

    def total_weight(self) -> Tensor:
        """``[B]`` float64: the number of samples, or the sum of the sample weights."""

    def chunks(self, labels: bool = False) -> Iterator[tuple]:
        """``(start, X [B, n, D], sample_weight [B, n] or None)`` over the whole data; with
        ``labels=True`` also the chunk's ``labels [B, n]`` int64 (``None`` when none given)."""


class TensorSource:
    """In-memory data: a ``[B, N, D]`` tensor (optionally with ``[B, N]`` sample weights and
    ``[B, N]`` labels, see :func:`check_labels`).

    Data on another device than the compute device is moved there once, in the compute dtype.
    """

    def __init__(
        self,
        X: Tensor,
        *,
        device: torch.device,
        dtype: torch.dtype,
        sample_weight: Tensor | None = None,
        chunk_size: int | None = None,
        labels: Tensor | None = None,
    ):
        if X.ndim == 2:
            X = X.unsqueeze(0)
        self.X = X.to(device=device, dtype=dtype)
        self.sample_weight = None
        if sample_weight is not None:
            if sample_weight.ndim == 1:
                sample_weight = sample_weight.unsqueeze(0)
            self.sample_weight = sample_weight.to(device=device, dtype=dtype).expand(self.X.shape[0], -1)
        self.labels = None if labels is None else _lead(labels).to(device=device, dtype=torch.int64).expand(self.X.shape[0], -1)
        self.device = torch.device(device)
        self.dtype = dtype
        self.chunk_size = int(chunk_size) if chunk_size is not None else max(1, self.X.shape[1])

    @property
    def n_problems(self) -> int:
        return self.X.shape[0]

    @property
    def n_samples(self) -> int:
        return self.X.shape[1]

    @property
    def n_features(self) -> int:
        return self.X.shape[2]

    def total_weight(self) -> Tensor:
        """``[B]`` float64: the number of samples, or the sum of the sample weights."""
        if self.sample_weight is None:
            return torch.full((self.n_problems,), float(self.n_samples), dtype=torch.float64, device=self.device)
        return self.sample_weight.double().sum(-1)

    def chunks(self, labels: bool = False) -> Iterator[tuple]:
        """Yield ``(start, X[:, start:start+n], weight or None)`` over the whole data (and the
        chunk's labels or ``None`` with ``labels=True``)."""
        step = self.chunk_size
        for start in range(0, self.n_samples, step):
            w = None if self.sample_weight is None else self.sample_weight[:, start : start + step]
            part = (start, self.X[:, start : start + step], w)
            yield part + (None if self.labels is None else self.labels[:, start : start + step],) if labels else part


# --------------------------------------------------------------------------------------------
# Streamed sources: host arrays (numpy, np.memmap, CPU tensors) and re-iterables of batches
# --------------------------------------------------------------------------------------------

#: Rows kept (per process) by :func:`reservoir_sample` for initialising a streamed fit.
INIT_SAMPLE_SIZE = 100_000

ChunkCheck = Callable[[Tensor], None]
#: Maps a checked chunk to the values the model reads (e.g. binarised), in its dtype and shape.
ChunkMap = Callable[[Tensor], Tensor]


def _float_tensor(a, name: str) -> Tensor:
    """A floating CPU/device tensor from one batch (no copy when the dtype already fits)."""
    if isinstance(a, np.ndarray):
        if a.dtype.kind not in "fiub":
            raise ValueError(f"{name} must contain numbers; got a batch of dtype {a.dtype}.")
        if a.dtype not in (np.float32, np.float64):
            a = a.astype(np.float64)  # as scikit-learn (and torchem's in-memory input) does
        a = torch.from_numpy(np.ascontiguousarray(a))
    elif not isinstance(a, Tensor):
        raise ValueError(
            f"{name} must yield torch tensors or numpy arrays (or {{'X': X, 'sample_weight': w}} mappings of them); "
            f"got a batch of type {type(a).__name__}."
        )
    if a.is_complex():
        raise ValueError(f"{name} must be real-valued; got a complex batch.")
    if a.dtype in (torch.float16, torch.bfloat16):
        return a.float()
    if not a.is_floating_point():
        return a.to(torch.get_default_dtype())
    return a


def is_iterable_data(X) -> bool:
    """Whether ``X`` is a stream of batches (a DataLoader, a generator, any iterable that is
    not itself an array: tensors, numpy arrays, lists, tuples and objects with ``__array__``, such
    as pandas DataFrames, are array-likes)."""
    if isinstance(X, (Tensor, np.ndarray, list, tuple, str, bytes, dict)) or hasattr(X, "__array__"):
        return False
    if type(X).__module__.startswith("scipy.sparse"):
        return False  # refused as sparse by the array path  # array-likes (pandas DataFrames too: iterating one yields its column names)
    return hasattr(X, "__iter__")


def _host_nbytes(X, itemsize: int) -> int:
    """Bytes ``X`` takes in a dtype of ``itemsize`` bytes."""
    return int(np.prod(X.shape)) * itemsize


#: The keys a mapping batch of a stream may hold: the data, its weights, its partial labels
#: (``"labels"``, :func:`check_labels`; read by ``fit`` and ``partial_fit``) and targets (``"y"``, ignored).
BATCH_KEYS = ("X", "sample_weight", "labels", "y")

#: How to pass weights in a stream, for error messages.
HOW_TO_WEIGHT = ("To weight the samples of a stream, yield mappings {'X': X, 'sample_weight': w} (e.g. a Dataset "
                 "whose __getitem__ returns {'X': x, 'sample_weight': w}: a DataLoader's default collate keeps the "
                 "dict)")


def split_batch(batch, name: str = "X"):
    """``(X, sample_weight or None)`` of one batch of a stream: ``X``, ``(X,)``, or a mapping
    ``{"X": X, "sample_weight": w}`` (numpy or tensors; ``"sample_weight"`` and ``"y"``
    optional, ``"y"`` ignored). Weights are read only from the key ``"sample_weight"``: a
    sequence of two or more items (``TensorDataset(X, y)``) is refused rather than its second
    item guessed to be weights or labels, and so is a mapping with another key (a misspelt
    ``"sample_weights"`` would otherwise silently fit unweighted)."""
    if isinstance(batch, Mapping):
        unknown = sorted(str(key) for key in batch if key not in BATCH_KEYS)
        if "X" not in batch or unknown:
            raise ValueError(
                f"A mapping batch of {name} must hold the key 'X' (and optionally 'sample_weight', 'labels', and 'y', "
                f"which is ignored); got the keys {sorted(map(str, batch))}."
            )
        return batch["X"], batch.get("sample_weight")
    if not isinstance(batch, (tuple, list)):
        return batch, None
    if len(batch) != 1:
        raise ValueError(
            f"Each batch of {name} must be X, (X,) or a mapping {{'X': X, 'sample_weight': w}}; got a sequence of "
            f"{len(batch)} items. torchem does not guess what a second item means: labels (as in TensorDataset(X, y)) "
            f"are not used, so yield X alone (e.g. TensorDataset(X)) or {{'X': X, 'y': y}}. {HOW_TO_WEIGHT}."
        )
    return batch[0], None


def batch_labels(batch):
    """The ``"labels"`` of a mapping batch of a stream, else ``None`` (see :func:`split_batch`)."""
    return batch.get("labels") if isinstance(batch, Mapping) else None


#: Rows per block when inference methods read an ``np.memmap``.
INFERENCE_BLOCK = 65536


def inference_blocks(X, name: str = "X"):
    """The blocks ``(X_block, sample_weight or None)`` an inference method (``predict``,
    ``score``, ...) reads one at a time: the batches of a stream (any iterable, a one-shot
    generator too: inference reads it once), or row blocks of a 2-D ``np.memmap`` (so it is
    never copied whole); ``None`` for in-memory data."""
    if is_iterable_data(X):
        # a batch without rows is skipped, as fit skips it (all of them empty: "X yielded no samples")
        return (block for block in (split_batch(batch, name) for batch in X) if not _no_rows(block[0]))
    if isinstance(X, np.memmap) and X.ndim == 2:
        # np.asarray: a plain view of each block (a slice of a memmap is a memmap again)
        return ((np.asarray(X[s : s + INFERENCE_BLOCK]), None) for s in range(0, X.shape[0], INFERENCE_BLOCK))
    return None


def _no_rows(X) -> bool:
    """Whether a batch is ``[0, D]`` (or ``[B, 0, D]``): data without a sample."""
    shape = tuple(X.shape) if hasattr(X, "shape") else np.shape(X)
    return len(shape) >= 2 and shape[-2] == 0


def concat_blocks(outs: list, axis_from_end: int, name: str = "X"):
    """Join per-block outputs along their sample axis (``axis_from_end`` from the end)."""
    if not outs:
        raise ValueError(f"{name} yielded no samples; pass a non-empty iterable of [n_samples, n_features] batches.")
    if isinstance(outs[0], np.ndarray):
        return np.concatenate(outs, axis=outs[0].ndim - axis_from_end)
    return torch.cat(outs, dim=-axis_from_end)


class _StreamBase:
    """What the two streamed sources share: weights, totals, the first-pass value check and
    the value map of every pass."""

    def __init__(self, *, device, dtype, check: ChunkCheck | None, convert: ChunkMap | None = None):
        self.device = torch.device(device)
        self.dtype = dtype
        self._check = check
        self._convert = convert
        self._checked = False  # values are checked during the first complete pass only

    def _checked_chunk(self, X: Tensor) -> Tensor:
        if not self._checked and self._check is not None:
            self._check(X)
        return X if self._convert is None else self._convert(X)


class HostStreamSource(_StreamBase):
    """Host data ``[N, D]`` or ``[B, N, D]`` (a numpy array, an ``np.memmap`` or a CPU tensor)
    read chunk by chunk, so no full copy is ever made.

    On CPU each chunk is converted to the compute dtype on its own (a memmap's pages are read
    as the chunk is touched). On CUDA each chunk is copied into one of two pinned host
    buffers and sent to the device with a non-blocking copy on a side stream, so the transfer
    of chunk ``i + 1`` overlaps the compute on chunk ``i``; device memory holds two chunks.
    """

    def __init__(self, X, *, device, dtype, sample_weight=None, check: ChunkCheck | None = None, chunk_size: int | None = None,
                 convert: ChunkMap | None = None, labels: Tensor | None = None):
        super().__init__(device=device, dtype=dtype, check=check, convert=convert)
        self.X = None  # not an in-memory device tensor (K-means' bounded passes need one)
        self.host = X if X.ndim == 3 else X[None]
        self.sample_weight = None
        self._total = None
        if sample_weight is not None:
            w = torch.as_tensor(sample_weight).double()
            w = w.unsqueeze(0) if w.ndim == 1 else w
            self.sample_weight = w.expand(self.host.shape[0], -1)
            self._total = self.sample_weight.sum(-1)
        self.labels = None if labels is None else _lead(labels).to(torch.int64).expand(self.host.shape[0], -1)  # host
        self.chunk_size = int(chunk_size) if chunk_size is not None else max(1, self.n_samples)

    @property
    def n_problems(self) -> int:
        return int(self.host.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.host.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.host.shape[2])

    def total_weight(self) -> Tensor:
        if self._total is None:
            return torch.full((self.n_problems,), float(self.n_samples), dtype=torch.float64, device=self.device)
        return self._total.to(self.device)

    def _host_dtype(self) -> torch.dtype:
        """The dtype a chunk crosses to the device in: the host array's own when torch has it
        (a uint8 memmap moves a quarter of the bytes of float32 and is converted on the
        device), else the compute dtype."""
        if isinstance(self.host, Tensor):
            return self.host.dtype
        try:
            return torch.from_numpy(np.empty(0, dtype=self.host.dtype)).dtype
        except TypeError:  # a numpy dtype torch lacks (e.g. uint32 on old torch, float128)
            return self.dtype

    def _fill(self, out: Tensor, start: int, stop: int) -> Tensor:
        """Copy host rows ``start:stop`` of every problem straight into ``out`` (a CPU
        tensor, pinned on CUDA): one copy, converting the dtype on the way. A chunk of a
        read-only memmap is read by ``np.copyto`` into ``out``'s memory, never first into a
        numpy copy of its own (that doubled the memory traffic of streaming)."""
        part = self.host[:, start:stop]
        if isinstance(part, Tensor):
            out.copy_(part)
        else:
            np.copyto(out.numpy(), part, casting="unsafe")
        return out

    def _cpu_chunk(self, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` in the compute dtype: a view of a writable host array already
        in that dtype, else one copy (read-only memory is never handed to torch)."""
        part = self.host[:, start:stop]
        if isinstance(part, Tensor):
            return part.to(self.dtype)
        if part.flags.writeable and part.flags.c_contiguous and part.dtype == torch.empty(0, dtype=self.dtype).numpy().dtype:
            return torch.from_numpy(part)
        return self._fill(torch.empty((self.n_problems, stop - start, self.n_features), dtype=self.dtype), start, stop)

    def _weights(self, start: int, stop: int) -> Tensor | None:
        if self.sample_weight is None:
            return None
        return self.sample_weight[:, start:stop].to(dtype=self.dtype)

    def _part(self, start: int, X: Tensor, w: Tensor | None, labels: bool) -> tuple:
        part = (start, X, w)
        if not labels:
            return part
        stop = start + X.shape[1]
        return part + (None if self.labels is None else _to_device(self.labels[:, start:stop], self.device, torch.int64),)

    def chunks(self, labels: bool = False) -> Iterator[tuple]:
        step = max(1, int(self.chunk_size))
        starts = range(0, self.n_samples, step)
        if self.device.type == "cuda":
            for start, X, w in self._cuda_chunks(starts, step):
                yield self._part(start, X, w, labels)
        else:
            for start in starts:
                stop = min(self.n_samples, start + step)
                X = self._checked_chunk(self._cpu_chunk(start, stop))
                yield self._part(start, X, self._weights(start, stop), labels)
        self._checked = True

    def _cuda_chunks(self, starts, step):
        side = torch.cuda.Stream(self.device)
        host_dtype = self._host_dtype()
        pinned: list[tuple[Tensor, Tensor | None] | None] = [None, None]
        copied: list = [None, None]  # event: the copies out of that pinned slot have finished

        def stage(i: int, start: int):
            stop = min(self.n_samples, start + step)
            shape = (self.n_problems, stop - start, self.n_features)
            slot = i % 2
            if copied[slot] is not None:
                copied[slot].synchronize()  # the buffers are free again
            if pinned[slot] is None or tuple(pinned[slot][0].shape) != shape:
                w_buf = None if self.sample_weight is None else torch.empty(shape[:2], dtype=self.dtype, pin_memory=True)
                pinned[slot] = (torch.empty(shape, dtype=host_dtype, pin_memory=True), w_buf)
            buf, w_buf = pinned[slot]
            self._fill(buf, start, stop)
            if w_buf is not None:  # the weights travel like the data: pinned, on the side stream
                w_buf.copy_(self.sample_weight[:, start:stop])
            with torch.cuda.stream(side):
                dev = buf.to(self.device, non_blocking=True)
                w_dev = None if w_buf is None else w_buf.to(self.device, non_blocking=True)
                event = torch.cuda.Event()
                event.record(side)
            copied[slot] = event
            return dev, w_dev, event

        compute = torch.cuda.current_stream(self.device)
        starts = list(starts)
        nxt = stage(0, starts[0]) if starts else None
        for i, start in enumerate(starts):
            dev, w_dev, event = nxt
            compute.wait_event(event)
            for t in (dev, w_dev):  # allocated on the side stream, used on this one
                if t is not None:
                    t.record_stream(compute)
            if i + 1 < len(starts):
                nxt = stage(i + 1, starts[i + 1])  # host work for the next chunk overlaps this one
            X = self._checked_chunk(dev.to(self.dtype))
            yield start, X, w_dev


def _to_device(t: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``t`` on ``device`` in ``dtype``. A host tensor bound for CUDA goes through pinned
    memory with a non-blocking copy (a pageable one stalls the host until the device has
    drained its queue); the caching host allocator keeps the pinned block until the copy is
    done."""
    if device.type == "cuda" and t.device.type == "cpu":
        if not t.is_pinned():
            t = t.pin_memory()
        return t.to(device=device, non_blocking=True).to(dtype)
    return t.to(device=device, dtype=dtype)


class IterableSource(_StreamBase):
    """A re-iterable of batches, e.g. a ``torch.utils.data.DataLoader``: one full pass per EM
    iteration.

    A batch is ``X [n, D]``, or ``(X,)``, or a mapping ``{"X": X, "sample_weight": w [n]}``,
    optionally with ``"labels": [n]`` (tensors or numpy arrays; see :func:`split_batch` and
    :func:`check_labels`; a chunk without any labelled batch carries ``None``). Batches are re-cut into chunks of ``chunk_size`` samples on the compute device.
    The number of samples and the total weight are known after the first pass (the
    initialisation's sampling pass); every later pass must yield as many samples. An iterator
    that can be consumed only once (a generator) cannot be read once per iteration: it is
    refused with a ``TypeError`` that points to ``partial_fit``.
    """

    def __init__(self, iterable, *, device, dtype=None, check: ChunkCheck | None = None, name: str = "X",
                 chunk_size: int | None = None, first: tuple[int, torch.dtype, bool] | None = None,
                 convert: ChunkMap | None = None, n_components: int | None = None):
        if isinstance(iterable, Iterator):
            raise TypeError(
                f"{name} is a one-shot iterator ({type(iterable).__name__}): fit reads the data once per EM "
                "iteration, so it needs a re-iterable (a DataLoader, or an object whose __iter__ starts "
                "a new pass). For an unbounded stream, call partial_fit on each batch instead."
            )
        self.iterable = iterable
        self.name = name
        self.X = None
        self.sample_weight = None
        self.labels = None  # carried by the batches
        self.n_components = n_components  # labels name components below it
        self._n = None
        self._total = None
        self.host_is_numpy = None  # numpy batches give numpy fitted attributes
        if first is None:
            first = self.peek(iterable, name)
        self._width, self.host_dtype, self.host_is_numpy = first[:3]
        super().__init__(device=device, dtype=dtype or self.host_dtype, check=check, convert=convert)
        self.chunk_size = int(chunk_size) if chunk_size is not None else 65536

    @classmethod
    def peek(cls, iterable, name: str = "X") -> tuple[int, torch.dtype, bool, bool]:
        """``(n_features, dtype, numpy?, integral?)`` of the first non-empty batch (this starts
        a pass); ``integral``: its values are integers or booleans (see :func:`working_dtype`)."""
        probe = cls.__new__(cls)
        probe.name, probe.host_is_numpy, probe.n_components = name, None, None
        first, integral = None, False
        for batch in iterable:
            integral = _is_integral(split_batch(batch, name)[0])
            first = probe._split(batch)[0]
            if first.shape[0] > 0:
                break
        if first is None or first.shape[0] == 0:
            raise ValueError(f"{name} yielded no samples; pass an iterable of non-empty [n_samples, n_features] batches.")
        return int(first.shape[1]), first.dtype, bool(probe.host_is_numpy), integral

    def _split(self, batch) -> tuple[Tensor, Tensor | None, Tensor | None]:
        lab = batch_labels(batch)
        batch, w = split_batch(batch, self.name)
        if self.host_is_numpy is None:
            self.host_is_numpy = isinstance(batch, np.ndarray)
        X = _float_tensor(batch, self.name)
        if X.ndim != 2:
            raise ValueError(
                f"Each batch of {self.name} must be 2-D [n_samples, n_features]; got shape {tuple(X.shape)}."
            )
        if w is not None:
            w = _float_tensor(w, f"the sample weights of {self.name}")
            if tuple(w.shape) != (X.shape[0],):
                raise ValueError(
                    f"A batch of {self.name} has {X.shape[0]} samples but its sample weights have shape "
                    f"{tuple(w.shape)}; give one weight per sample."
                )
        if lab is not None:
            lab = check_labels(lab, (X.shape[0],), self.n_components, f"the labels of a batch of {self.name}").reshape(-1)
        return X, w, lab

    @property
    def n_problems(self) -> int:
        return 1

    @property
    def n_features(self) -> int:
        return self._width

    @property
    def n_samples(self) -> int:
        if self._n is None:
            raise RuntimeError("the number of samples of an iterable is known after its first pass")
        return self._n

    def total_weight(self) -> Tensor:
        if self._total is None:
            raise RuntimeError("the total weight of an iterable is known after its first pass")
        return self._total.to(self.device)

    def chunks(self, labels: bool = False) -> Iterator[tuple]:
        step = max(1, int(self.chunk_size))
        pending: list[tuple[Tensor, Tensor | None, Tensor | None]] = []  # (X, w, labels) of each batch
        held = 0
        start = 0
        total = torch.zeros(1, dtype=torch.float64)

        def emit(rows: list[tuple[Tensor, Tensor | None, Tensor | None]]) -> tuple:
            X = torch.cat([x for x, _, _ in rows]) if len(rows) > 1 else rows[0][0]
            X = self._checked_chunk(_to_device(X, self.device, self.dtype))
            ws = [w for _, w, _ in rows]
            if all(w is None for w in ws):
                w = None
            else:
                w = torch.cat([torch.ones(x.shape[0], dtype=torch.float64) if w is None else w.double().cpu() for x, w, _ in rows])
                if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                    raise ValueError(f"The sample weights of {self.name} must be finite and non-negative.")
                w = _to_device(w.to(self.dtype), self.device, self.dtype).unsqueeze(0)
            part = (X.unsqueeze(0), w)
            if not labels:
                return part
            if all(lab is None for _, _, lab in rows):
                return part + (None,)
            lab = torch.cat([torch.full((x.shape[0],), -1, dtype=torch.int64) if lab is None else lab.cpu() for x, _, lab in rows])
            return part + (_to_device(lab, self.device, torch.int64).unsqueeze(0),)

        for batch in self.iterable:
            X, w, lab = self._split(batch)
            if X.shape[1] != self._width:
                raise ValueError(
                    f"{self.name} yielded batches of inconsistent width: {X.shape[1]} features after batches of "
                    f"{self._width}; every batch must have the same number of features."
                )
            if X.shape[0] == 0:
                continue
            total += float(X.shape[0]) if w is None else w.double().sum().cpu()
            pending.append((X, w, lab))
            held += X.shape[0]
            while held >= step:
                # cut exactly ``step`` rows off the pending batches
                take, need = [], step
                while need:
                    x, wx, lx = pending[0]
                    if x.shape[0] <= need:
                        take.append(pending.pop(0))
                        need -= x.shape[0]
                    else:
                        cut = lambda t, a, b: None if t is None else t[a:b]  # noqa: E731
                        take.append((x[:need], cut(wx, 0, need), cut(lx, 0, need)))
                        pending[0] = (x[need:], cut(wx, need, None), cut(lx, need, None))
                        need = 0
                held -= step
                yield (start,) + emit(take)
                start += step
        if held:
            yield (start,) + emit(pending)
            start += held
        if start == 0:
            raise ValueError(f"{self.name} yielded no samples in a pass; pass an iterable of non-empty batches.")
        if self._n is not None and start != self._n:
            raise ValueError(
                f"{self.name} yielded {start} samples in this pass but {self._n} in the first; fit needs the same "
                "data on every pass (use partial_fit for a stream that changes)."
            )
        self._n, self._total, self._checked = start, total, True


def reservoir_sample(source, size: int, generator: torch.Generator, labels: bool = False) -> tuple:
    """A uniform random sample of at most ``size`` samples, in one pass over any source
    (reservoir sampling, Vitter's algorithm R, vectorised per chunk).

    The sample keeps the samples' order in the data, so when the data has at most ``size``
    samples the sample *is* the data. This pass also counts the samples of an iterable and
    checks its values.

    Returns:
        ``(X [B, m, D], sample_weight [B, m] or None)`` on the source's device, in its dtype;
        with ``labels=True`` also the sample's ``labels [B, m]`` (``-1`` where a chunk carried
        none), or ``None`` when no chunk carried any.
    """
    xs, pos = None, None
    extras: list[Tensor | None] = [None, None]  # the sample's weights and labels
    seen, weighted, labelled = 0, False, False
    for _, X, *per_row in source.chunks(labels=True):
        n = X.shape[1]
        # a stream may weigh or label only some of its batches: the others count as weight 1
        # and unlabelled; a sample of a source that never does carries None
        weighted, labelled = weighted or per_row[0] is not None, labelled or per_row[1] is not None
        if per_row[0] is None:
            per_row[0] = torch.ones(X.shape[:2], dtype=X.dtype, device=X.device)
        if per_row[1] is None:
            per_row[1] = torch.full(X.shape[:2], -1, dtype=torch.int64, device=X.device)
        idx = torch.arange(seen, seen + n, device=X.device)
        if xs is None:
            xs, pos = X[:, :0], idx[:0]
            extras = [e[:, :0] for e in per_row]
        room = max(0, size - xs.shape[1])
        fill = min(room, n)
        if fill:
            xs = torch.cat([xs, X[:, :fill]], 1)
            pos = torch.cat([pos, idx[:fill]])
            extras = [torch.cat([e, p[:, :fill]], 1) for e, p in zip(extras, per_row)]
        if fill < n:
            g = idx[fill:]
            # sample number g (0-based) replaces slot j = floor(u (g + 1)) when j < size
            j = (rand(generator, n - fill, device=X.device) * (g + 1).double()).long()
            ok = j < size
            j, rows = j[ok], (g[ok] - seen)
            if j.numel():
                last = torch.full((size,), -1, dtype=torch.long, device=X.device)
                last.scatter_reduce_(0, j, rows, reduce="amax")  # later samples win a slot
                slots = (last >= 0).nonzero(as_tuple=True)[0]
                chosen = last[slots]
                xs[:, slots] = X[:, chosen]
                pos[slots] = chosen + seen
                for e, p in zip(extras, per_row):
                    e[:, slots] = p[:, chosen]
        seen += n
    order = pos.argsort()
    ws, ls = (e[:, order].contiguous() for e in extras)
    out = (xs[:, order].contiguous(), ws if weighted else None)
    return out + (ls if labelled else None,) if labels else out


def check_sample_weight(sample_weight, shape) -> Tensor | None:
    """``sample_weight`` as a tensor of shape ``[N]`` or ``[B, N]`` for data of ``shape``
    (``[N, D]`` or ``[B, N, D]``), finite and non-negative; ``None`` stays ``None``."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, Tensor):
        w = sample_weight.detach()
    else:
        # (a copy: a read-only array, e.g. a pandas Series, is not handed to torch as it is)
        w = torch.from_numpy(np.array(sample_weight, dtype=np.float64))
    if w.ndim == 0 and len(shape) > 1:  # one number weighs every sample, as in scikit-learn
        w = w.expand(tuple(shape[-2:-1]))
    if tuple(w.shape) not in (tuple(shape[-2:-1]), tuple(shape[:-1])):
        raise ValueError(f"sample_weight should have shape {_per_sample_shapes(tuple(shape[:-1]))} (one weight per sample"
                         f"{_per_problem_note(len(shape))}); got {tuple(w.shape)}.")
    _check_weight_values(w, "sample_weight")
    if bool((w.double().sum(-1) <= 0).any()) and not is_distributed():  # a shard may weigh nothing
        raise ValueError("Sample weights must contain at least one non-zero number: sample_weight sums to zero; "
                         "give some samples a positive weight.")
    return w


def check_batch_weight(w, shape: tuple[int, ...]) -> Tensor:
    """A stream batch's ``sample_weight`` for its log-likelihoods of ``shape`` (``[n]`` or
    ``[B, n]``) as float64 on the CPU: one per sample (or per problem and sample), finite and
    non-negative, as :func:`check_sample_weight` asks of in-memory weights (a
    batch may weigh nothing; the whole stream may not)."""
    t = (w.detach() if isinstance(w, Tensor) else torch.from_numpy(np.array(w, dtype=np.float64))).double().cpu()
    if tuple(t.shape) not in (tuple(shape[-1:]), tuple(shape)):
        raise ValueError(f"A batch's sample_weight should have shape {tuple(shape[-1:])} (one weight per sample of the "
                         f"batch); got {tuple(t.shape)}.")
    _check_weight_values(t, "A batch's sample_weight")
    return t


def _check_weight_values(w: Tensor, what: str) -> None:
    """Weights are finite and non-negative (``what`` names them in the message)."""
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"{what} must hold finite, non-negative numbers.")


def _per_sample_shapes(rows: tuple[int, ...]) -> str:
    """``(N,)``, or ``(N,) or (B, N)`` for the rows ``(B, N)`` of stacked problems."""
    return f"{rows[-1:]}" if len(rows) < 2 else f"{rows[-1:]} or {rows}"


def _per_problem_note(ndim: int) -> str:
    """For stacked problems (3-D data), how the two accepted shapes are read."""
    return "" if ndim < 3 else "; (N,) is shared by all the stacked problems, (B, N) gives each its own"


def _lead(t: Tensor) -> Tensor:
    """Per-sample values ``[N]`` as ``[1, N]``; ``[B, N]`` as they are."""
    return t.unsqueeze(0) if t.ndim == 1 else t


#: What labels mean, for error messages.
HOW_TO_LABEL = ("labels[i] = -1 leaves row i unlabelled and labels[i] = k fixes it to component k, "
                "for 0 <= k < n_components")


def check_labels(labels, shape, n_components: int | None, name: str = "labels") -> Tensor | None:
    """Partial labels as an int64 CPU tensor of shape ``[N]`` or ``[B, N]`` for data of
    ``shape`` (``[N, D]`` or ``[B, N, D]``; ``(n,)`` for one batch of a stream): whole numbers
    from ``-1`` (unlabelled) to ``n_components - 1`` (unchecked above when ``None``); ``None``
    stays ``None``."""
    if labels is None:
        return None
    if isinstance(labels, np.ma.MaskedArray) and bool(np.ma.getmaskarray(labels).any()):
        # np.asarray would read the masked entries' hidden values as labels
        raise ValueError(f"{name} is a masked array with masked entries; pass {name}.filled(-1) to leave those rows "
                         f"unlabelled ({HOW_TO_LABEL}).")
    t = labels.detach().cpu() if isinstance(labels, Tensor) else None
    if t is not None and t.dtype in _WIDE_UNSIGNED:
        labels, t = t.numpy(), None  # torch has few kernels for these: read them through NumPy
    if t is None:
        a = np.asarray(labels)
        if a.dtype.kind not in "iuf":
            raise ValueError(f"{name} must hold integers ({HOW_TO_LABEL}); got an array of dtype {a.dtype}.")
        if a.dtype.kind == "u" and a.dtype.itemsize > 1:  # (uint64 beyond int64 read as float, refused below)
            a = a.astype(np.float64 if a.size and a.max() > np.iinfo(np.int64).max else np.int64)
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.dtype == torch.bool or t.is_complex() or not (t.is_floating_point() or t.dtype in _INT_DTYPES):
        raise ValueError(f"{name} must hold integers ({HOW_TO_LABEL}); got dtype {t.dtype}.")
    if t.is_floating_point():
        whole = torch.isfinite(t) & (t == t.round())
        if not bool(whole.all()):
            bad = t[~whole][0].item()
            raise ValueError(f"{name} must hold whole numbers ({HOW_TO_LABEL}); got {bad!r}.")
    n_rows = tuple(shape[:-1]) if len(shape) > 1 else tuple(shape)
    if tuple(t.shape) not in (n_rows[-1:], n_rows):
        raise ValueError(f"{name} should have shape {_per_sample_shapes(n_rows)} (one label per sample, -1 where "
                         f"unknown{_per_problem_note(len(n_rows) + 1)}); got {tuple(t.shape)}.")
    if t.numel():  # before the cast to int64, which would wrap a whole float beyond its range
        low, high = _label_value(t.min()), _label_value(t.max())
        if low < -1:
            raise ValueError(f"{name} holds {low}, below -1; {HOW_TO_LABEL}.")
        if n_components is not None and high >= n_components:
            raise ValueError(f"{name} names component {high}, but the model has n_components={n_components} "
                             f"(components 0 to {n_components - 1}); {HOW_TO_LABEL}, or raise n_components.")
        if high >= 2**62:
            raise ValueError(f"{name} names component {high}, beyond any n_components; {HOW_TO_LABEL}.")
    return t.to(torch.int64)


def _label_value(v: Tensor) -> int | float:
    """A label as the user wrote it: an int, or a float beyond the int64 range."""
    v = v.item()
    return int(v) if abs(v) < 2**62 else v


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_WIDE_UNSIGNED = tuple(getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name))  # torch >= 2.3


@dataclass(frozen=True)
class DataInfo:
    """What :func:`describe` learns of the data before anything is decided: its layout, the
    float dtype it takes and where it lives, so the estimator can choose the compute device,
    dtype and chunk size before :func:`open_source` opens it."""

    data: Any  # the converted tensor (in-memory), the host array, or the iterable
    kind: InputKind  # how outputs go back (numpy or tensors on the input's device)
    stacked: bool  # [B, N, D] input: B independent problems
    n_problems: int  # B (1 for [N, D] input)
    n_features: int
    n_samples: int | None  # per problem; None for an iterable (known after its first pass)
    dtype: torch.dtype  # the float dtype the data takes (scikit-learn's rules)
    device: torch.device  # where the data lives (CPU for host data)
    host: bool  # numpy, memmap or a CPU tensor: may be streamed to a CUDA device
    memmap: bool  # always streamed, never copied whole
    iterable: bool  # a re-iterable of batches: one pass per EM iteration
    integral: bool = False  # integer or boolean values (no float dtype of their own): see working_dtype


def describe(X, name: str = "X") -> DataInfo:
    """The layout of ``X`` (checked: rank, emptiness, numeric dtype; in-memory data is
    converted once here, without copying where possible)."""
    if is_iterable_data(X):
        if isinstance(X, Iterator):  # refused, with advice, before a batch is consumed
            IterableSource(X, device=torch.device("cpu"), name=name)
        first = IterableSource.peek(X, name)
        return DataInfo((X, first), InputKind(first[2], None), False, 1, first[0], None, first[1],
                        torch.device("cpu"), False, False, True, first[3])
    if isinstance(X, np.memmap) or (isinstance(X, (np.ndarray, Tensor)) and getattr(X, "ndim", 0) in (2, 3)
                                    and 0 not in X.shape and (not isinstance(X, Tensor) or X.device.type == "cpu")):
        if isinstance(X, np.memmap) and X.ndim in (2, 3) and 0 not in X.shape:
            if X.dtype.kind not in "fiub":
                raise ValueError(f"{name} must contain numbers; got an array of dtype {X.dtype}.")
            dt = torch.float32 if X.dtype == np.float32 else torch.float64
            b = X.shape[0] if X.ndim == 3 else 1
            return DataInfo(X, InputKind(True, None), X.ndim == 3, b, int(X.shape[-1]), int(X.shape[-2]), dt,
                            torch.device("cpu"), True, True, False, X.dtype.kind in "iub")
    integral = _is_integral(X)
    t, kind = as_float_tensor(X, name)
    check_data(t, name, min_samples=1, allow_stacked=True, check_finite=False)
    return DataInfo(t, kind, t.ndim == 3, t.shape[0] if t.ndim == 3 else 1, int(t.shape[-1]), int(t.shape[-2]),
                    t.dtype, t.device, t.device.type == "cpu", False, False, integral)


def _is_integral(X) -> bool:
    """Whether an array or tensor holds integers or booleans (lists and other array-likes:
    ``False``, they take scikit-learn's float64 as before)."""
    if isinstance(X, Tensor):
        return not (X.is_floating_point() or X.is_complex())
    return isinstance(X, np.ndarray) and X.dtype.kind in "iub"


def working_dtype(info: DataInfo, device: torch.device, model_dtype: torch.dtype) -> torch.dtype:
    """The dtype a fit computes in, from the data and the model: the wider of the data's
    float dtype and the model's (float32 unless the model was made, or fitted, in float64),
    with one exception for data of integers or booleans (a uint8 memmap of binary vectors,
    int counts) on a CUDA device: those have no float dtype of their own, and scikit-learn's
    float64 for them would run the whole fit at a small fraction of the GPU's speed (1/64 on
    consumer GPUs), so they take the model's dtype, float32 by default. On the CPU they keep
    scikit-learn's float64 (numpy input; integer tensors take torch's default dtype), so
    results there equal scikit-learn's; float input keeps its dtype everywhere. ``partial_fit``
    follows the same rule batch by batch (its statistics are float64 sums, as every fit's)."""
    data = info.dtype
    if info.integral and torch.device(device).type == "cuda":
        data = model_dtype
    dtype = torch.promote_types(data, model_dtype)
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def check_observed(chunk: Tensor, name: str = "X", action: str = "fitting") -> Tensor:
    """For data whose NaN entries are missing values (``nan_policy="marginalize"``): refuse
    infinity (as every finiteness check does) and a row with no observed entry; returns the
    chunk with 0 where an entry is missing, the values a family's checks read."""
    if bool(torch.isinf(chunk).any()):
        raise ValueError(f"Input {name} contains NaN or infinity. Remove or impute those values before {action}.")
    missing = torch.isnan(chunk)
    if bool(missing.all(-1).any()):
        raise ValueError(
            f"{name} holds a row with no observed entry (every value NaN): its likelihood cannot be marginalised over "
            "nothing. Drop such rows (nan_policy='omit' leaves out every row holding NaN)."
        )
    return chunk.masked_fill(missing, 0.0)


def open_source(info: DataInfo, sample_weight=None, *, device, dtype, chunk_size: int, check: ChunkCheck | None = None,
                name: str = "X", convert: ChunkMap | None = None, labels=None, n_components: int | None = None,
                allow_nan: bool = False) -> Source:
    """The chunk source of described data on ``device`` in ``dtype``, read ``chunk_size``
    samples at a time.

    Streamed are re-iterables of batches (:class:`IterableSource`), ``np.memmap`` arrays, and
    host arrays larger than half the free memory of a CUDA compute device
    (:class:`HostStreamSource`); everything else is moved once to the device
    (:class:`TensorSource`). ``check(chunk)`` raises ``ValueError`` on bad values: on every
    in-memory chunk now, on a stream's chunks during its first pass; NaN and infinity are
    refused here (with ``allow_nan``, NaN marks a missing entry: see :func:`check_observed`;
    ``check`` then reads 0 there). ``convert(chunk)``, when given, maps checked values to those the model reads
    (BernoulliMixture's ``binarize``): a stream's chunks as they are read, on every pass;
    in-memory data once, block by block, into the tensor the source holds (which a change of
    device or dtype would copy anyway). ``labels`` (checked by :func:`check_labels` against
    ``n_components``) travel with the samples; a stream carries them in its mapping batches."""
    device = torch.device(device)

    def checked(chunk: Tensor) -> None:
        if not all_finite(chunk):
            if not allow_nan:
                raise ValueError(f"Input {name} contains NaN or infinity. Remove or impute those values before fitting.")
            chunk = check_observed(chunk, name)
        if check is not None:
            check(chunk)

    if info.iterable:
        if sample_weight is not None:
            raise ValueError(f"sample_weight cannot be combined with an iterable {name}. {HOW_TO_WEIGHT}.")
        if labels is not None:
            raise ValueError(f"labels cannot be combined with an iterable {name}: yield mappings "
                             "{'X': X, 'labels': labels} (and 'sample_weight' if weighted) instead.")
        iterable, first = info.data
        return IterableSource(iterable, device=device, dtype=dtype, check=checked, name=name, chunk_size=chunk_size, first=first,
                              convert=convert, n_components=n_components)
    big = False
    if info.host and device.type == "cuda":
        itemsize = torch.finfo(dtype).bits // 8
        big = _host_nbytes(info.data, itemsize) > _free_device_memory(device) // 2
    shape = (info.n_problems, info.n_samples, info.n_features) if info.stacked else (info.n_samples, info.n_features)
    w = check_sample_weight(sample_weight, shape)
    lab = check_labels(labels, shape, n_components)
    if info.memmap or big:
        return HostStreamSource(info.data, device=device, dtype=dtype, sample_weight=w, check=checked, chunk_size=chunk_size,
                                convert=convert, labels=lab)
    X = info.data
    out = None if convert is None else torch.empty(X.shape, device=device, dtype=dtype)
    for s in range(0, X.shape[-2], 2**16):  # by blocks: no data-sized temporaries
        block = X[..., s : s + 2**16, :]
        checked(block)
        if out is not None:
            out[..., s : s + 2**16, :] = convert(block.to(device=device, dtype=dtype))
    return TensorSource(X if out is None else out, device=device, dtype=dtype, sample_weight=w, chunk_size=chunk_size,
                        labels=lab)


def _keep_rows(value, keep):
    """``value`` (an array, a tensor or a list of one entry per row) without the rows ``~keep``."""
    if isinstance(value, Tensor):
        return value[torch.as_tensor(keep, device=value.device)]
    return np.asarray(value)[np.asarray(keep)]


class _RowsWithoutNaN:
    """A re-iterable of the batches of ``data`` (an iterable of batches, or a 2-D memmap read
    in blocks with its ``sample_weight`` and ``labels``) without their rows that hold NaN (a
    mapping batch loses them from every entry); ``omitted`` counts the rows left out by the
    last complete pass."""

    def __init__(self, data, sample_weight=None, labels=None, block: int = 2**16):
        self.data, self.sample_weight, self.labels, self.block = data, sample_weight, labels, block
        self.omitted = 0

    def _batches(self):
        if isinstance(self.data, np.memmap):
            for s in range(0, self.data.shape[0], self.block):
                batch = {"X": np.asarray(self.data[s : s + self.block])}
                if self.sample_weight is not None:
                    batch["sample_weight"] = self.sample_weight[s : s + self.block]
                if self.labels is not None:
                    batch["labels"] = self.labels[s : s + self.block]
                yield batch if len(batch) > 1 else batch["X"]
        else:
            yield from self.data

    def __iter__(self):
        count = 0
        for batch in self._batches():
            X, _ = split_batch(batch, "X")
            if isinstance(X, Tensor):
                keep = ~torch.isnan(X).any(-1) if X.is_floating_point() else None
            else:
                X = np.asarray(X)
                keep = ~np.isnan(X).any(-1) if X.dtype.kind == "f" and X.ndim == 2 else None
            if keep is not None and not bool(keep.all()):
                count += int((~keep).sum())
                if isinstance(batch, Mapping):
                    batch = {k: (None if v is None else _keep_rows(v, keep)) for k, v in batch.items() if k != "y"}
                else:
                    batch = X[keep]
            yield batch
        self.omitted = count


def omit_rows(X, sample_weight=None, labels=None) -> tuple[Any, Any, Any, Any]:
    """``nan_policy="omit"``: ``(X, sample_weight, labels, omitted)`` without the rows of
    ``X`` that hold NaN. In-memory ``[N, D]`` data loses those rows (``omitted`` is their
    number; everything unchanged, the very objects, when there is none); ``[B, N, D]`` data
    keeps its shape, the rows getting weight 0 (their NaN entries replaced by the feature's
    median, an observed value every family accepts); a stream or a 2-D memmap is filtered
    batch by batch as it is read (``omitted`` is then the filtering iterable, whose
    ``omitted`` attribute counts the rows after a pass)."""
    if is_iterable_data(X) or isinstance(X, np.memmap):
        if isinstance(X, np.memmap) and X.ndim != 2:
            raise ValueError("nan_policy='omit' reads a memmap as a stream of rows, so it must be 2-D [n_samples, "
                             f"n_features]; got shape {X.shape}. Use nan_policy='marginalize', or fit each problem apart.")
        w = lab = None
        if isinstance(X, np.memmap):
            w = None if sample_weight is None else np.asarray(check_sample_weight(sample_weight, X.shape))
            lab = None if labels is None else check_labels(labels, X.shape, None).numpy()
            sample_weight = labels = None
        elif sample_weight is not None:
            raise ValueError(f"sample_weight cannot be combined with an iterable X. {HOW_TO_WEIGHT}.")
        rows = _RowsWithoutNaN(X, w, lab)
        return rows, sample_weight, labels, rows
    t, kind = as_float_tensor(X, "X")
    if t.ndim not in (2, 3) or 0 in t.shape:
        return X, sample_weight, labels, 0  # refused with the usual message when the data is opened
    bad = torch.isnan(t).any(-1)  # [N] or [B, N]
    n_bad = int(bad.sum())
    if n_bad == 0:
        return X, sample_weight, labels, 0
    if bool(bad.all(-1).any()):
        raise ValueError("Every row of X holds NaN, so nan_policy='omit' leaves nothing to fit; use "
                         "nan_policy='marginalize' to fit on the observed entries, or impute the data.")
    w = check_sample_weight(sample_weight, t.shape)
    if t.ndim == 2:
        keep = ~bad
        t = t[keep]
        w = None if w is None else w[keep.to(w.device)]
        labels = None if labels is None else check_labels(labels, bad.shape + (1,), None)[keep.cpu()]
        return (t.cpu().numpy() if kind.is_numpy else t), w, labels, n_bad
    w = torch.ones(bad.shape, dtype=t.dtype, device=t.device) if w is None else w.to(t.device).expand(bad.shape)
    w = torch.where(bad, torch.zeros_like(w), w)
    fill = torch.nan_to_num(torch.nanmedian(t, dim=-2).values, nan=0.0)  # [B, D]
    t = torch.where(torch.isnan(t), fill.unsqueeze(-2), t)
    return (t.cpu().numpy() if kind.is_numpy else t), w, labels, n_bad
