"""Stateless, batched kernels: pure functions of tensors, no Python loop over components."""

from . import covariance, estep, gaussian, kmeans

__all__ = ["covariance", "estep", "gaussian", "kmeans"]
