"""Mixture models: thin ``nn.Module`` families over the shared EM driver."""

from .base import BaseMixture
from .gaussian import GaussianMixture

__all__ = ["BaseMixture", "GaussianMixture"]
