"""torchem: mixture models fitted by Expectation-Maximisation as batched PyTorch kernels."""

from typing import TYPE_CHECKING

from .cluster import KMeans
from ._gradient import fit_by_gradient
from .mixture import BayesianGaussianMixture, BernoulliMixture, BinomialMixture, CategoricalMixture, GaussianMixture, GaussianMixtureIC, PoissonMixture

if TYPE_CHECKING:  # made on first use (__getattr__ below); what type checkers and the documentation read
    from .exceptions import ConvergenceWarning, NotFittedError

__version__ = "0.1.0"


def __getattr__(name: str):
    # the exception classes are made on first use: they import scikit-learn (torchem.exceptions)
    if name in ("ConvergenceWarning", "NotFittedError"):
        from . import exceptions

        return getattr(exceptions, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
