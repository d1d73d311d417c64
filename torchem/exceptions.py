"""Exceptions and warnings raised by torchem.

When scikit-learn is installed they subclass scikit-learn's own classes, so code written for
scikit-learn (``except sklearn.exceptions.NotFittedError``,
``warnings.filterwarnings("ignore", category=sklearn.exceptions.ConvergenceWarning)``) catches
torchem's too; without it they derive from the same built-ins (``ValueError`` and
``AttributeError``, ``UserWarning``).

The classes are made on first use (``torchem.NotFittedError``, or the first error or warning
raised): importing scikit-learn takes seconds, which ``import torchem`` does not pay.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

__all__ = ["ConvergenceWarning", "NotFittedError"]

_NOT_FITTED_DOC = """Raised when a model is used before it is fitted (also an AttributeError, so
    ``hasattr(model, "weights_")`` is False on an unfitted model)."""
_CONVERGENCE_DOC = """Warned when EM stops at ``max_iter`` before the change in lower bound fell below ``tol``."""


def _define() -> None:
    """Make both classes, on scikit-learn's when it is installed, into this module's namespace."""
    if importlib.util.find_spec("sklearn") is not None:
        from sklearn.exceptions import ConvergenceWarning as base_warning
        from sklearn.exceptions import NotFittedError as base_error
    else:  # pragma: no cover - scikit-learn is in every test environment

        class base_error(ValueError, AttributeError):
            pass

        class base_warning(UserWarning):
            pass

    made = {
        "NotFittedError": type("NotFittedError", (base_error,), {"__doc__": _NOT_FITTED_DOC, "__module__": __name__}),
        "ConvergenceWarning": type("ConvergenceWarning", (base_warning,), {"__doc__": _CONVERGENCE_DOC, "__module__": __name__}),
    }
    for name, cls in made.items():
        cls.__qualname__ = name
        globals().setdefault(name, cls)  # made once: every use sees the same class


def __getattr__(name: str):
    if name in __all__:
        _define()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:  # what type checkers and the documentation read (the classes _define makes)

    class NotFittedError(ValueError, AttributeError):
        """Raised when a model is used before it is fitted (also an AttributeError, so
        ``hasattr(model, "weights_")`` is False on an unfitted model)."""

    class ConvergenceWarning(UserWarning):
        """Warned when EM stops at ``max_iter`` before the change in lower bound fell below ``tol``."""
