"""Stateless, batched kernels: pure functions of tensors, no Python loop over components."""

from . import estep, gaussian, kmeans

__all__ = ["estep", "gaussian", "kmeans"]
