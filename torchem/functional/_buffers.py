"""Chunk-sized scratch buffers reused from chunk to chunk.

On CPU, writing a freshly allocated chunk-sized tensor costs more than the arithmetic that
fills it (its pages are faulted in on every allocation), so the per-pass hooks keep their
large intermediates in a ``workspace`` dict and overwrite them chunk after chunk.
"""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["broadcast_shape", "buffer"]

#: views a workspace keeps at most (a fit's fixed chunk shapes need a few dozen)
_MAX_VIEWS = 256


def buffer(workspace: dict | None, name: str, shape, like: Tensor) -> Tensor:
    """An uninitialised tensor of ``shape``: a view of a buffer kept in ``workspace`` (reused
    from chunk to chunk, so its pages are touched once rather than faulted in for every
    chunk; the view itself is kept too, as chunks of one length ask for the same one) or,
    without a workspace, a fresh one."""
    if workspace is None:
        return like.new_empty(shape)
    shape = tuple(shape)
    buf = workspace.get(name)
    views = workspace.setdefault("views", {})  # (name, shape) -> (buffer, view): chunks of one length share them
    kept = views.get((name, shape))
    if kept is not None and kept[0] is buf and buf.dtype == like.dtype and buf.device == like.device:
        return kept[1]
    numel = math.prod(shape)
    if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
        for key in [key for key in views if key[0] == name]:  # views of the old buffer
            del views[key]
        buf = like.new_empty(numel)
        workspace[name] = buf
    view = buf[:numel].view(shape)
    if len(views) >= _MAX_VIEWS:  # shapes that vary from call to call (gathered rows) must not pile up
        views.clear()
    views[(name, shape)] = (buf, view)
    return view


def broadcast_shape(*shapes) -> tuple[int, ...]:
    """The broadcast of ``shapes`` (as :func:`torch.broadcast_shapes`, which costs tens of
    microseconds a call in Python: per chunk, that adds up to a few percent of a pass)."""
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for s in shapes:
        for i, size in enumerate(s, ndim - len(s)):
            if size != 1:
                if out[i] not in (1, size):
                    raise RuntimeError(f"shapes {[tuple(t) for t in shapes]} do not broadcast")
                out[i] = size
    return tuple(out)
