"""torchem: mixture models fitted by Expectation-Maximisation as batched PyTorch kernels."""

from .cluster import KMeans
from .exceptions import ConvergenceWarning, NotFittedError
from .mixture import BernoulliMixture, BinomialMixture, GaussianMixture

__version__ = "0.1.0"

__all__ = [
    "BernoulliMixture",
    "BinomialMixture",
    "ConvergenceWarning",
    "GaussianMixture",
    "KMeans",
    "NotFittedError",
    "__version__",
]
