"""torchem: mixture models fitted by Expectation-Maximisation as batched PyTorch kernels."""

from .exceptions import ConvergenceWarning, NotFittedError
from .mixture import GaussianMixture

__version__ = "0.1.0"

__all__ = ["ConvergenceWarning", "GaussianMixture", "NotFittedError", "__version__"]
