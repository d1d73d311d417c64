"""Fitting on many processes with ``torch.distributed``.

When a default process group is initialised (``torch.distributed.init_process_group``, as
``torchrun`` scripts do) and has more than one rank, every ``fit`` becomes a data-parallel
fit: each rank passes its own shard of the data, and

* before anything else, the ranks exchange a small signature (number of features, dtype,
  batch layout, the model's hyper-parameters, and any error a rank met while reading its
  data) and all raise the same ``ValueError`` if they disagree, so no rank hangs;
* the initialisation runs on the concatenation of the ranks' samples (see
  :func:`torchem.data.reservoir_sample`), and rank 0's result is broadcast;
* each EM pass all-reduces (sums) the float64 sufficient statistics, the log-likelihood sums
  and the total weight, so the M-step, the convergence test and the choice of the best
  restart are the same computation on every rank, which all end with identical parameters,
  equal (up to the order of floating-point sums) to a single-process fit on the
  concatenated data.

``partial_fit`` is data-parallel in the same way: each rank passes its part of every batch.

Use the NCCL backend for CUDA tensors (after ``torch.cuda.set_device(local_rank)``) and gloo
on CPU. A rank that dies mid-fit leaves the others blocked in a collective until the process
group's ``timeout`` (``init_process_group(timeout=...)``) expires, when they raise; gloo
usually notices a closed connection sooner.
"""

from __future__ import annotations

import contextlib
import hashlib

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "all_gather",
    "all_reduce_sum",
    "broadcast_params",
    "check_consistent",
    "consistent_count",
    "gather_samples",
    "is_distributed",
    "on_device",
    "rank",
    "signature",
    "world_size",
]


def is_distributed() -> bool:
    """Whether a default process group with more than one rank is initialised."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


def all_reduce_sum(tensors: list[Tensor]) -> list[Tensor]:
    """Sum each tensor over the ranks (one collective for all of them, in float64); a no-op
    without a process group."""
    if not is_distributed() or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
    torch.distributed.all_reduce(flat)
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset : offset + t.numel()].reshape(t.shape).to(t.dtype))
        offset += t.numel()
    return out


def all_gather(t: Tensor) -> list[Tensor]:
    """Every rank's ``t`` (all of the same shape), in rank order; ``[t]`` without a process group."""
    if not is_distributed():
        return [t]
    parts = [torch.empty_like(t) for _ in range(world_size())]
    torch.distributed.all_gather(parts, t.contiguous())
    return parts


def signature(model, n_features: int, dtype, batch: int, stacked: bool, skip=()) -> dict:
    """What every rank of a distributed fit must agree on: the data's layout and dtype and the
    model's hyper-parameters (but for those in ``skip``, such as ``verbose``)."""
    sig = {"model": type(model).__name__, "n_features": int(n_features), "dtype": str(dtype), "batch": int(batch), "stacked": bool(stacked)}
    sig.update({k: _describe(v) for k, v in model.get_params().items() if k not in skip})
    return sig


def _describe(value) -> str:
    """A comparable description of a hyper-parameter: arrays by shape, dtype and a digest of
    their contents (``repr`` abbreviates large arrays, so differing ones could look equal)."""
    if isinstance(value, torch.Tensor):  # raw bytes: every dtype (bfloat16 too) has them
        t = value.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        return f"tensor(shape={tuple(t.shape)}, dtype={t.dtype}, sha1={hashlib.sha1(raw).hexdigest()})"
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        return f"array(shape={a.shape}, dtype={a.dtype}, sha1={hashlib.sha1(a.tobytes()).hexdigest()})"
    return repr(value)


def on_device(device: torch.device | None):
    """A context in which ``device`` is the current CUDA device (a no-op for other devices):
    object collectives (``all_gather_object``) run on the *current* CUDA device under NCCL, so
    a rank whose data lives on ``cuda:1`` while ``cuda:0`` is current (the user called only
    ``.to(f"cuda:{rank}")``, not ``torch.cuda.set_device``) would fail or hang outside it."""
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.device(torch.device(device))
    return contextlib.nullcontext()


def check_consistent(signature: dict, error: BaseException | None, device: torch.device | None = None) -> None:
    """Exchange ``signature`` (and the error this rank met, if any) with every rank, and
    raise the same ``ValueError`` on all of them if a rank failed or the signatures differ.
    ``device``: where this rank computes (the exchange runs there).

    Without a process group this re-raises ``error``."""
    if not is_distributed():
        if error is not None:
            raise error
        return
    mine = {"signature": signature, "error": None if error is None else f"{type(error).__name__}: {error}"}
    everyone: list = [None] * world_size()
    with on_device(device):
        torch.distributed.all_gather_object(everyone, mine)
    failed = [(r, item["error"]) for r, item in enumerate(everyone) if item["error"] is not None]
    if failed:
        text = "; ".join(f"rank {r}: {msg}" for r, msg in failed)
        raise ValueError(f"The distributed fit cannot start because a rank could not read its data ({text}).")
    first = everyone[0]["signature"]
    for r, item in enumerate(everyone[1:], start=1):
        sig = item["signature"]
        keys = sorted(k for k in set(first) | set(sig) if first.get(k) != sig.get(k))
        if keys:
            what = ", ".join(f"{k}: {first.get(k)!r} on rank 0 but {sig.get(k)!r} on rank {r}" for k in keys)
            raise ValueError(
                f"The ranks of this distributed fit disagree ({what}); give every rank data with the same "
                "number of features and dtype, and a model with the same settings."
            )


def _digest(signature: dict) -> int:
    """A 16-bit digest of a signature (small enough that sums of its square over 1,024 ranks
    stay exact in float64)."""
    text = repr(sorted((str(k), repr(v)) for k, v in signature.items()))
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:2], "little")


def consistent_count(signature: dict, error: BaseException | None, count: int, device: torch.device) -> int:
    """The cheap handshake of a stream's later batches: one all-reduce of a small float64
    tensor (on ``device``) that sums ``count`` (this rank's samples) over the ranks and tells
    whether every rank read its batch and holds the same ``signature`` (the digests agree when
    ``W sum d^2 == (sum d)^2``, which holds only if all are equal). Only when something is off
    do the ranks take :func:`check_consistent`'s full exchange, which raises on all of them.
    Counts are summed in float64: exact up to 2^53 samples.

    Without a process group this re-raises ``error`` or returns ``count``."""
    if not is_distributed():
        if error is not None:
            raise error
        return int(count)
    d = float(_digest(signature))
    failed = error is not None
    mine = torch.tensor([0.0 if failed else float(count), float(failed), d, d * d], dtype=torch.float64, device=device)
    total, n_failed, s1, s2 = all_reduce_sum([mine])[0].tolist()
    if n_failed > 0 or world_size() * s2 != s1 * s1:
        check_consistent(signature, error, device)  # raises the same error on every rank
    return int(total)


def gather_samples(X: Tensor, w: Tensor | None, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Concatenate, in rank order, each rank's ``X [B, m_r, D]`` (and weights and labels
    ``[B, m_r]``) along the sample dimension; every rank receives the whole (weights of 1 and
    labels of -1 stand in for a rank that has none while another has)."""
    if not is_distributed():
        return X, w, labels
    dist = torch.distributed
    sizes = torch.tensor([X.shape[1]], dtype=torch.int64, device=X.device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world_size())]
    dist.all_gather(all_sizes, sizes)
    counts = [int(s) for s in all_sizes]
    most = max(counts)

    def gather(t: Tensor) -> Tensor:
        padded = t.new_zeros(t.shape[0], most, *t.shape[2:])
        padded[:, : t.shape[1]] = t
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:, :c] for p, c in zip(parts, counts)], 1)

    weighted, labelled = all_reduce_sum([torch.tensor([float(w is not None), float(labels is not None)],
                                                      device=X.device)])[0].tolist()
    if weighted > 0 and w is None:
        w = torch.ones(X.shape[:2], dtype=X.dtype, device=X.device)
    if labelled > 0 and labels is None:
        labels = torch.full(X.shape[:2], -1, dtype=torch.int64, device=X.device)
    return gather(X), None if weighted == 0 else gather(w), None if labelled == 0 else gather(labels)


def broadcast_params(params: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rank 0's parameters on every rank (in place where possible)."""
    if not is_distributed():
        return params
    out = {}
    for key in sorted(params):
        t = params[key].contiguous().clone()
        torch.distributed.broadcast(t, src=0)
        out[key] = t
    return out
