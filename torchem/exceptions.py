"""Exceptions and warnings raised by torchem.

They derive from the same built-ins as scikit-learn's (which torchem does not import, to
keep ``import torchem`` light): code that catches ``ValueError``/``AttributeError`` or filters
``UserWarning`` behaves as it did with scikit-learn.
"""

from __future__ import annotations

__all__ = ["ConvergenceWarning", "NotFittedError"]


class NotFittedError(ValueError, AttributeError):
    """Raised when a model is used before it is fitted (also an AttributeError, so
    ``hasattr(model, "weights_")`` is False on an unfitted model)."""


class ConvergenceWarning(UserWarning):
    """Warned when EM stops at ``max_iter`` before the change in lower bound fell below ``tol``."""
