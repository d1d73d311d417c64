"""torchem: mixture models fitted by Expectation-Maximisation as batched PyTorch kernels."""

from .cluster import KMeans
from .exceptions import ConvergenceWarning, NotFittedError
from ._gradient import fit_by_gradient
from .mixture import BayesianGaussianMixture, BernoulliMixture, BinomialMixture, CategoricalMixture, GaussianMixture, GaussianMixtureIC, PoissonMixture

__version__ = "0.1.0"

__all__ = [
    "BayesianGaussianMixture",
    "BernoulliMixture",
    "BinomialMixture",
    "CategoricalMixture",
    "ConvergenceWarning",
    "GaussianMixture",
    "GaussianMixtureIC",
    "KMeans",
    "NotFittedError",
    "PoissonMixture",
    "__version__",
    "fit_by_gradient",
]
