"""Mixture models: thin ``nn.Module`` families over the shared EM driver."""

from .base import BaseMixture
from .bernoulli import BernoulliMixture, BinomialMixture
from .categorical import CategoricalMixture
from .bayesian import BayesianGaussianMixture
from .gaussian import GaussianMixture
from .poisson import PoissonMixture
from .selection import GaussianMixtureIC

__all__ = ["BaseMixture", "BayesianGaussianMixture", "BernoulliMixture", "BinomialMixture", "CategoricalMixture", "GaussianMixture",
           "GaussianMixtureIC", "PoissonMixture"]
