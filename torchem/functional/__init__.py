"""Stateless, batched kernels: pure functions of tensors, no Python loop over components."""

from . import bernoulli, covariance, estep, gaussian, kmeans

__all__ = ["bernoulli", "covariance", "estep", "gaussian", "kmeans"]
