"""The public surface: every module is private (a leading underscore) or documented public API
with a complete ``__all__``, and the API reference pages list exactly those names."""

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

import pytest

import torchem

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS / "scripts"))
import api_pages  # noqa: E402


def _public_modules():
    names = ["torchem"]
    for info in pkgutil.walk_packages(torchem.__path__, "torchem."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue  # private modules (and __main__)
        names.append(info.name)
    return names


@pytest.mark.parametrize("name", _public_modules())
def test_public_module_has_a_complete_all(name):
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} is public but has no __all__ (or make it private: _{name.split('.')[-1]})"
    for item in module.__all__:
        assert hasattr(module, item), f"{name}.__all__ names {item!r}, which does not exist"
    defined = [n for n, obj in vars(module).items()
               if not n.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == name]
    missing = sorted(set(defined) - set(module.__all__))
    assert not missing, f"{name} defines public {missing} that are not in __all__: add them, or prefix them with _"


def test_every_estimator_is_exported_at_the_top():
    from torchem.estimator import EMEstimator

    found = set()
    for name in _public_modules():
        for obj in vars(importlib.import_module(name)).values():
            if (inspect.isclass(obj) and issubclass(obj, EMEstimator) and not inspect.isabstract(obj)
                    and not obj.__name__.startswith("_")):  # private helpers (GaussianMixtureIC's grid fit)
                found.add(obj.__name__)
    assert found and found <= set(torchem.__all__)


def test_the_api_reference_lists_every_public_name(tmp_path):
    api_pages.main(tmp_path)
    text = "\n".join(p.read_text() for p in tmp_path.glob("*.md"))
    documented = {line.removeprefix("::: ").strip() for line in text.splitlines() if line.startswith("::: ")}
    def resolve(path):
        module, _, attr = path.rpartition(".")
        return getattr(importlib.import_module(module), attr)

    documented_objects = [resolve(path) for path in documented]
    for name in _public_modules():
        module = importlib.import_module(name)
        for n in module.__all__:
            obj = getattr(module, n)
            if n.startswith("__") or inspect.ismodule(obj):
                continue
            # documented under this name or another public path to the same object
            same = f"{name}.{n}" in documented or any(d is obj for d in documented_objects
                                                      if not isinstance(obj, (int, float, str, tuple)))
            assert same, f"{name}.{n} is public but not in the API reference"
    # the committed pages are the generated ones
    for page in tmp_path.glob("*.md"):
        assert (DOCS / "api" / page.name).read_text() == page.read_text(), f"docs/api/{page.name} is stale"


def test_import_does_not_pay_for_scikit_learn_and_the_exceptions_are_its():
    """``import torchem`` leaves scikit-learn unimported (seconds of start-up for every
    process); the exception classes, made on first use, still subclass scikit-learn's (and the
    built-ins), with one identity however they are reached."""
    import subprocess

    code = ("import sys, torchem; assert 'sklearn' not in sys.modules, 'imported'; "
            "from torchem import NotFittedError as A; from torchem.exceptions import NotFittedError as B; "
            "import sklearn.exceptions as s, torchem.exceptions as e; "
            "assert A is B is torchem.NotFittedError and issubclass(A, s.NotFittedError) "
            "and issubclass(A, ValueError) and issubclass(A, AttributeError); "
            "assert issubclass(e.ConvergenceWarning, s.ConvergenceWarning) and issubclass(e.ConvergenceWarning, UserWarning); "
            "m = torchem.GaussianMixture(2); assert not hasattr(m, 'means_')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(torchem.__file__).parents[1])
    assert run.returncode == 0, run.stderr
