"""Clustering estimators on the shared EM driver."""

from .kmeans import KMeans

__all__ = ["KMeans"]
