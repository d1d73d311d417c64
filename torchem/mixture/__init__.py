"""Mixture models: thin ``nn.Module`` families over the shared EM driver."""

from .base import BaseMixture
from .bernoulli import BernoulliMixture, BinomialMixture
from .gaussian import GaussianMixture
from .poisson import PoissonMixture

__all__ = ["BaseMixture", "BernoulliMixture", "BinomialMixture", "GaussianMixture", "PoissonMixture"]
