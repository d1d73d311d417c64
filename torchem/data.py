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
]

# Bytes of per-chunk working memory the driver aims for when no chunk size is given.
_CPU_BUDGET = 16 * 2**20
_MIN_CHUNK = 256


def _free_device_memory(device: torch.device) -> int:
    """Bytes a CUDA device can still give this process: the driver's free memory plus what
    PyTorch's caching allocator holds reserved but unallocated (``mem_get_info`` counts that
    as taken, so after one large fit the next would see half the device as used and stream
    its data over PCIe every iteration)."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + max(0, torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)))


def auto_chunk_size(bytes_per_sample: int, device: torch.device, n_samples: int) -> int:
    """A chunk length whose working memory fits a budget: 16 MiB on CPU (chunks that stay
    in the caches are fastest there: measured on the Gaussian full-covariance E+M pass), and an eighth of the free memory, at most 2 GiB, on
    CUDA."""
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
    streamed data) and ``sample_weight`` (``[B, N]`` or ``None``, in-memory data only).
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

    def chunks(self) -> Iterator[tuple[int, Tensor, Tensor | None]]:
        """``(start, X [B, n, D], sample_weight [B, n] or None)`` over the whole data."""


class TensorSource:
    """In-memory data: a ``[B, N, D]`` tensor (optionally with ``[B, N]`` sample weights).

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
    ):
        if X.ndim == 2:
            X = X.unsqueeze(0)
        self.X = X.to(device=device, dtype=dtype)
        self.sample_weight = None
        if sample_weight is not None:
            if sample_weight.ndim == 1:
                sample_weight = sample_weight.unsqueeze(0)
            self.sample_weight = sample_weight.to(device=device, dtype=dtype).expand(self.X.shape[0], -1)
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

    def chunks(self) -> Iterator[tuple[int, Tensor, Tensor | None]]:
        """Yield ``(start, X[:, start:start+n], weight or None)`` over the whole data."""
        step = self.chunk_size
        for start in range(0, self.n_samples, step):
            w = None if self.sample_weight is None else self.sample_weight[:, start : start + step]
            yield start, self.X[:, start : start + step], w


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


#: The keys a mapping batch of a stream may hold: the data, its weights, and labels (ignored).
BATCH_KEYS = ("X", "sample_weight", "y")

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
                f"A mapping batch of {name} must hold the key 'X' (and optionally 'sample_weight', and 'y', which is "
                f"ignored); got the keys {sorted(map(str, batch))}."
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


#: Rows per block when inference methods read an ``np.memmap``.
INFERENCE_BLOCK = 65536


def inference_blocks(X, name: str = "X"):
    """The blocks ``(X_block, sample_weight or None)`` an inference method (``predict``,
    ``score``, ...) reads one at a time: the batches of a stream (any iterable, a one-shot
    generator too: inference reads it once), or row blocks of a 2-D ``np.memmap`` (so it is
    never copied whole); ``None`` for in-memory data."""
    if is_iterable_data(X):
        return (split_batch(batch, name) for batch in X)
    if isinstance(X, np.memmap) and X.ndim == 2:
        # np.asarray: a plain view of each block (a slice of a memmap is a memmap again)
        return ((np.asarray(X[s : s + INFERENCE_BLOCK]), None) for s in range(0, X.shape[0], INFERENCE_BLOCK))
    return None


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
                 convert: ChunkMap | None = None):
        super().__init__(device=device, dtype=dtype, check=check, convert=convert)
        self.X = None  # not an in-memory device tensor (K-means' bounded passes need one)
        self.host = X if X.ndim == 3 else X[None]
        self.sample_weight = None
        if sample_weight is not None:
            w = torch.as_tensor(sample_weight).double()
            w = w.unsqueeze(0) if w.ndim == 1 else w
            self.sample_weight = w.expand(self.host.shape[0], -1)
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
        if self.sample_weight is None:
            return torch.full((self.n_problems,), float(self.n_samples), dtype=torch.float64, device=self.device)
        return self.sample_weight.sum(-1).to(self.device)

    def _host_chunk(self, start: int, stop: int) -> Tensor:
        part = self.host[:, start:stop]
        if isinstance(part, np.ndarray):
            # a chunk of a read-only memmap is copied (torch tensors cannot be read-only)
            part = torch.from_numpy(np.ascontiguousarray(part) if part.flags.writeable else np.array(part))
        return part

    def _weights(self, start: int, stop: int) -> Tensor | None:
        if self.sample_weight is None:
            return None
        return self.sample_weight[:, start:stop].to(device=self.device, dtype=self.dtype)

    def chunks(self) -> Iterator[tuple[int, Tensor, Tensor | None]]:
        step = max(1, int(self.chunk_size))
        starts = range(0, self.n_samples, step)
        if self.device.type == "cuda":
            yield from self._cuda_chunks(starts, step)
        else:
            for start in starts:
                stop = min(self.n_samples, start + step)
                X = self._checked_chunk(self._host_chunk(start, stop).to(self.dtype))
                yield start, X, self._weights(start, stop)
        self._checked = True

    def _cuda_chunks(self, starts, step):
        side = torch.cuda.Stream(self.device)
        pinned: list[Tensor | None] = [None, None]
        copied: list = [None, None]  # event: the copy out of that pinned buffer has finished

        def stage(i: int, start: int):
            host = self._host_chunk(start, min(self.n_samples, start + step))
            slot = i % 2
            if copied[slot] is not None:
                copied[slot].synchronize()  # the buffer is free again
            buf = pinned[slot]
            if buf is None or buf.shape != host.shape or buf.dtype != host.dtype:
                buf = pinned[slot] = torch.empty(host.shape, dtype=host.dtype, pin_memory=True)
            buf.copy_(host)
            with torch.cuda.stream(side):
                dev = buf.to(self.device, non_blocking=True)
                event = torch.cuda.Event()
                event.record(side)
            copied[slot] = event
            return dev, event

        compute = torch.cuda.current_stream(self.device)
        starts = list(starts)
        nxt = stage(0, starts[0]) if starts else None
        for i, start in enumerate(starts):
            dev, event = nxt
            compute.wait_event(event)
            dev.record_stream(compute)  # allocated on the side stream, used on this one
            if i + 1 < len(starts):
                nxt = stage(i + 1, starts[i + 1])  # host work for the next chunk overlaps this one
            X = self._checked_chunk(dev.to(self.dtype))
            yield start, X, self._weights(start, min(self.n_samples, start + step))


class IterableSource(_StreamBase):
    """A re-iterable of batches, e.g. a ``torch.utils.data.DataLoader``: one full pass per EM
    iteration.

    A batch is ``X [n, D]``, or ``(X,)``, or a mapping ``{"X": X, "sample_weight": w [n]}``
    (tensors or numpy arrays; see :func:`split_batch`). Batches are re-cut into chunks of ``chunk_size`` samples on the compute device.
    The number of samples and the total weight are known after the first pass (the
    initialisation's sampling pass); every later pass must yield as many samples. An iterator
    that can be consumed only once (a generator) cannot be read once per iteration: it is
    refused with a ``TypeError`` that points to ``partial_fit``.
    """

    def __init__(self, iterable, *, device, dtype=None, check: ChunkCheck | None = None, name: str = "X",
                 chunk_size: int | None = None, first: tuple[int, torch.dtype, bool] | None = None,
                 convert: ChunkMap | None = None):
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
        self._n = None
        self._total = None
        self.host_is_numpy = None  # numpy batches give numpy fitted attributes
        if first is None:
            first = self.peek(iterable, name)
        self._width, self.host_dtype, self.host_is_numpy = first
        super().__init__(device=device, dtype=dtype or self.host_dtype, check=check, convert=convert)
        self.chunk_size = int(chunk_size) if chunk_size is not None else 65536

    @classmethod
    def peek(cls, iterable, name: str = "X") -> tuple[int, torch.dtype, bool]:
        """``(n_features, dtype, numpy?)`` of the first non-empty batch (this starts a pass)."""
        probe = cls.__new__(cls)
        probe.name, probe.host_is_numpy = name, None
        first = None
        for batch in iterable:
            first = probe._split(batch)[0]
            if first.shape[0] > 0:
                break
        if first is None or first.shape[0] == 0:
            raise ValueError(f"{name} yielded no samples; pass an iterable of non-empty [n_samples, n_features] batches.")
        return int(first.shape[1]), first.dtype, bool(probe.host_is_numpy)

    def _split(self, batch) -> tuple[Tensor, Tensor | None]:
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
        return X, w

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

    def chunks(self) -> Iterator[tuple[int, Tensor, Tensor | None]]:
        step = max(1, int(self.chunk_size))
        pending: list[tuple[Tensor, Tensor | None]] = []
        held = 0
        start = 0
        total = torch.zeros(1, dtype=torch.float64)

        def emit(rows: list[tuple[Tensor, Tensor | None]]):
            X = torch.cat([x for x, _ in rows]) if len(rows) > 1 else rows[0][0]
            X = self._checked_chunk(X.to(device=self.device, dtype=self.dtype, non_blocking=True))
            ws = [w for _, w in rows]
            if all(w is None for w in ws):
                w = None
            else:
                w = torch.cat([torch.ones(x.shape[0], dtype=torch.float64) if w is None else w.double().cpu() for x, w in rows])
                if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                    raise ValueError(f"The sample weights of {self.name} must be finite and non-negative.")
                w = w.to(device=self.device, dtype=self.dtype).unsqueeze(0)
            return X.unsqueeze(0), w

        for batch in self.iterable:
            X, w = self._split(batch)
            if X.shape[1] != self._width:
                raise ValueError(
                    f"{self.name} yielded batches of inconsistent width: {X.shape[1]} features after batches of "
                    f"{self._width}; every batch must have the same number of features."
                )
            if X.shape[0] == 0:
                continue
            total += float(X.shape[0]) if w is None else w.double().sum().cpu()
            pending.append((X, w))
            held += X.shape[0]
            while held >= step:
                # cut exactly ``step`` rows off the pending batches
                take, need = [], step
                while need:
                    x, wx = pending[0]
                    if x.shape[0] <= need:
                        take.append(pending.pop(0))
                        need -= x.shape[0]
                    else:
                        take.append((x[:need], None if wx is None else wx[:need]))
                        pending[0] = (x[need:], None if wx is None else wx[need:])
                        need = 0
                held -= step
                Xc, wc = emit(take)
                yield start, Xc, wc
                start += step
        if held:
            Xc, wc = emit(pending)
            yield start, Xc, wc
            start += held
        if start == 0:
            raise ValueError(f"{self.name} yielded no samples in a pass; pass an iterable of non-empty batches.")
        if self._n is not None and start != self._n:
            raise ValueError(
                f"{self.name} yielded {start} samples in this pass but {self._n} in the first; fit needs the same "
                "data on every pass (use partial_fit for a stream that changes)."
            )
        self._n, self._total, self._checked = start, total, True


def reservoir_sample(source, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """A uniform random sample of at most ``size`` samples, in one pass over any source
    (reservoir sampling, Vitter's algorithm R, vectorised per chunk).

    The sample keeps the samples' order in the data, so when the data has at most ``size``
    samples the sample *is* the data. This pass also counts the samples of an iterable and
    checks its values.

    Returns:
        ``(X [B, m, D], sample_weight [B, m] or None)`` on the source's device, in its dtype.
    """
    xs, ws, pos = None, None, None
    seen = 0
    for _, X, w in source.chunks():
        n = X.shape[1]
        idx = torch.arange(seen, seen + n, device=X.device)
        if xs is None:
            xs, pos = X[:, :0], idx[:0]
            ws = None if w is None else w[:, :0]
        room = max(0, size - xs.shape[1])
        if room:
            fill = min(room, n)
            xs = torch.cat([xs, X[:, :fill]], 1)
            pos = torch.cat([pos, idx[:fill]])
            if w is not None:
                ws = torch.cat([ws, w[:, :fill]], 1)
        else:
            fill = 0
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
                if w is not None:
                    ws[:, slots] = w[:, chosen]
        seen += n
    order = pos.argsort()
    return xs[:, order].contiguous(), None if ws is None else ws[:, order].contiguous()


def check_sample_weight(sample_weight, shape) -> Tensor | None:
    """``sample_weight`` as a tensor of shape ``[N]`` or ``[B, N]`` for data of ``shape``
    (``[N, D]`` or ``[B, N, D]``), finite and non-negative; ``None`` stays ``None``."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, Tensor):
        w = sample_weight.detach()
    else:
        w = torch.from_numpy(np.asarray(sample_weight, dtype=np.float64))
    if tuple(w.shape) not in (tuple(shape[-2:-1]), tuple(shape[:-1])):
        raise ValueError(f"sample_weight should have shape {tuple(shape[-2:-1])} (one weight per sample); got {tuple(w.shape)}.")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("sample_weight must hold finite, non-negative numbers.")
    if bool((w.double().sum(-1) <= 0).any()) and not is_distributed():  # a shard may weigh nothing
        raise ValueError("Sample weights must contain at least one non-zero number: sample_weight sums to zero; "
                         "give some samples a positive weight.")
    return w


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


def describe(X, name: str = "X") -> DataInfo:
    """The layout of ``X`` (checked: rank, emptiness, numeric dtype; in-memory data is
    converted once here, without copying where possible)."""
    if is_iterable_data(X):
        if isinstance(X, Iterator):  # refused, with advice, before a batch is consumed
            IterableSource(X, device=torch.device("cpu"), name=name)
        first = IterableSource.peek(X, name)
        return DataInfo((X, first), InputKind(first[2], None), False, 1, first[0], None, first[1],
                        torch.device("cpu"), False, False, True)
    if isinstance(X, np.memmap) or (isinstance(X, (np.ndarray, Tensor)) and getattr(X, "ndim", 0) in (2, 3)
                                    and 0 not in X.shape and (not isinstance(X, Tensor) or X.device.type == "cpu")):
        if isinstance(X, np.memmap) and X.ndim in (2, 3) and 0 not in X.shape:
            if X.dtype.kind not in "fiub":
                raise ValueError(f"{name} must contain numbers; got an array of dtype {X.dtype}.")
            dt = torch.float32 if X.dtype == np.float32 else torch.float64
            b = X.shape[0] if X.ndim == 3 else 1
            return DataInfo(X, InputKind(True, None), X.ndim == 3, b, int(X.shape[-1]), int(X.shape[-2]), dt,
                            torch.device("cpu"), True, True, False)
    t, kind = as_float_tensor(X, name)
    check_data(t, name, min_samples=1, allow_stacked=True, check_finite=False)
    return DataInfo(t, kind, t.ndim == 3, t.shape[0] if t.ndim == 3 else 1, int(t.shape[-1]), int(t.shape[-2]),
                    t.dtype, t.device, t.device.type == "cpu", False, False)


def open_source(info: DataInfo, sample_weight=None, *, device, dtype, chunk_size: int, check: ChunkCheck | None = None,
                name: str = "X", convert: ChunkMap | None = None) -> Source:
    """The chunk source of described data on ``device`` in ``dtype``, read ``chunk_size``
    samples at a time.

    Streamed are re-iterables of batches (:class:`IterableSource`), ``np.memmap`` arrays, and
    host arrays larger than half the free memory of a CUDA compute device
    (:class:`HostStreamSource`); everything else is moved once to the device
    (:class:`TensorSource`). ``check(chunk)`` raises ``ValueError`` on bad values: on every
    in-memory chunk now, on a stream's chunks during its first pass; NaN and infinity are
    refused here. ``convert(chunk)``, when given, maps checked values to those the model reads
    (BernoulliMixture's ``binarize``): a stream's chunks as they are read, on every pass;
    in-memory data once, block by block, into the tensor the source holds (which a change of
    device or dtype would copy anyway)."""
    device = torch.device(device)

    def checked(chunk: Tensor) -> None:
        if not all_finite(chunk):
            raise ValueError(f"Input {name} contains NaN or infinity. Remove or impute those values before fitting.")
        if check is not None:
            check(chunk)

    if info.iterable:
        if sample_weight is not None:
            raise ValueError(f"sample_weight cannot be combined with an iterable {name}. {HOW_TO_WEIGHT}.")
        iterable, first = info.data
        return IterableSource(iterable, device=device, dtype=dtype, check=checked, name=name, chunk_size=chunk_size, first=first,
                              convert=convert)
    big = False
    if info.host and device.type == "cuda":
        itemsize = torch.finfo(dtype).bits // 8
        big = _host_nbytes(info.data, itemsize) > _free_device_memory(device) // 2
    shape = (info.n_problems, info.n_samples, info.n_features) if info.stacked else (info.n_samples, info.n_features)
    w = check_sample_weight(sample_weight, shape)
    if info.memmap or big:
        return HostStreamSource(info.data, device=device, dtype=dtype, sample_weight=w, check=checked, chunk_size=chunk_size,
                                convert=convert)
    X = info.data
    out = None if convert is None else torch.empty(X.shape, device=device, dtype=dtype)
    for s in range(0, X.shape[-2], 2**16):  # by blocks: no data-sized temporaries
        block = X[..., s : s + 2**16, :]
        checked(block)
        if out is not None:
            out[..., s : s + 2**16, :] = convert(block.to(device=device, dtype=dtype))
    return TensorSource(X if out is None else out, device=device, dtype=dtype, sample_weight=w, chunk_size=chunk_size)
