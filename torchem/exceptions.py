"""Exceptions and warnings raised by torchem.

When scikit-learn is installed they subclass scikit-learn's own classes, so code written for
scikit-learn (``except sklearn.exceptions.NotFittedError``,
``warnings.filterwarnings("ignore", category=sklearn.exceptions.ConvergenceWarning)``) catches
torchem's too; without it they derive from the same built-ins (``ValueError`` and
``AttributeError``, ``UserWarning``).
"""

from __future__ import annotations

import importlib.util

__all__ = ["ConvergenceWarning", "NotFittedError"]

if importlib.util.find_spec("sklearn") is not None:
    from sklearn.exceptions import ConvergenceWarning as _BaseConvergenceWarning
    from sklearn.exceptions import NotFittedError as _BaseNotFittedError
else:  # pragma: no cover - scikit-learn is in every test environment

    class _BaseNotFittedError(ValueError, AttributeError):
        pass

    class _BaseConvergenceWarning(UserWarning):
        pass


class NotFittedError(_BaseNotFittedError):
    """Raised when a model is used before it is fitted (also an AttributeError, so
    ``hasattr(model, "weights_")`` is False on an unfitted model)."""


class ConvergenceWarning(_BaseConvergenceWarning):
    """Warned when EM stops at ``max_iter`` before the change in lower bound fell below ``tol``."""
