"""Docs in the interpreter: every estimator's docstring opens with an example that runs and
prints what it shows, ``help(Estimator.__init__)`` speaks of the estimator, and the repr is
scikit-learn's (only the parameters that differ from their defaults)."""

import doctest
import inspect

import numpy as np
import pytest

import torchem
from torchem.estimator import EMEstimator

ESTIMATORS = [getattr(torchem, name) for name in torchem.__all__
              if inspect.isclass(getattr(torchem, name)) and issubclass(getattr(torchem, name), EMEstimator)]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_docstring_opens_with_an_example_that_runs(cls):
    doc = inspect.getdoc(cls)
    summary, rest = doc.split("\n\n", 1)
    assert rest.startswith("Example:"), f"{cls.__name__}'s docstring should open with an example"
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(cls, cls.__name__, globs={"np": np})
    assert tests and tests[0].examples
    for test in tests:
        runner.run(test)
    assert runner.failures == 0


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_init_is_documented_by_the_estimator_and_repr_shows_non_defaults(cls):
    assert cls.__name__ in inspect.getdoc(cls.__init__)
    assert "Module state" not in inspect.getdoc(cls.__init__)
    assert repr(cls()) == f"{cls.__name__}()"
    k = "n_clusters" if cls is torchem.KMeans else "n_components"
    assert repr(cls(**{k: 3}, random_state=0)) == f"{cls.__name__}({k}=3, random_state=0)"
