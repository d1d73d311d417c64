"""Write the API reference pages (docs/api/*.md) from the public modules' ``__all__``, so
the reference lists exactly the public names: run by the mkdocs hook before every build (a
page is rewritten only when it changes). ``PAGES`` is the one list of public modules."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

API = Path(__file__).resolve().parents[1] / "api"

#: page file -> (title, introduction, [(section title or None, module), ...])
PAGES: dict[str, tuple[str, str, list[tuple[str | None, str]]]] = {
    "estimators.md": (
        "Estimators",
        "The models, with scikit-learn's constructor arguments, methods and fitted attributes. Data is "
        "`[N, D]`, or `[B, N, D]` for `B` independent problems; numpy input gives numpy output, and "
        "tensor input gives tensors on the input's device. These are the names of `torchem.__all__`.",
        [(None, "torchem")],
    ),
    "functional.md": (
        "torchem.functional",
        "Stateless batched kernels: pure functions of tensors, with no Python loop over components. "
        "The estimators are thin layers over them; they can also be used directly.",
        [("torchem.functional.gaussian", "torchem.functional.gaussian"),
         ("torchem.functional.covariance", "torchem.functional.covariance"),
         ("torchem.functional.bernoulli", "torchem.functional.bernoulli"),
         ("torchem.functional.estep", "torchem.functional.estep"),
         ("torchem.functional.kmeans", "torchem.functional.kmeans"),
         ("Kernels of the Poisson family (torchem.mixture.poisson)", "torchem.mixture.poisson"),
         ("Kernels of the categorical family (torchem.mixture.categorical)", "torchem.mixture.categorical"),
         ("Kernels of the variational Gaussian family (torchem.mixture.bayesian)", "torchem.mixture.bayesian")],
    ),
    "contract.md": (
        "The estimator layer, the driver and the data",
        "What a new model family is written against (see [Write your own family](../write-a-family.md)): "
        "the estimator layer every model shares, the mixture layer, the EM driver and its family contract, "
        "the chunk sources, the initialisations and the torch.distributed helpers.",
        [("torchem.estimator", "torchem.estimator"), ("torchem.mixture", "torchem.mixture.base"),
         ("torchem.em", "torchem.em"), ("torchem.data", "torchem.data"), ("torchem.init", "torchem.init"),
         ("torchem.distributed", "torchem.distributed"), ("torchem.exceptions", "torchem.exceptions")],
    ),
    "plot.md": ("torchem.plot", "Figures of fitted models (matplotlib, an optional extra).", [(None, "torchem.plot")]),
    "bench.md": ("torchem.bench", "The benchmark behind `torchem bench`, as a library.", [(None, "torchem.bench")]),
}


def public_names(module_name: str) -> list[str]:
    """The documented names of a module: its ``__all__`` (modules and dunders left out, and a
    family's estimator class, which the estimators page shows)."""
    import torchem

    module = importlib.import_module(module_name)
    return [name for name in module.__all__
            if not name.startswith("__") and not inspect.ismodule(getattr(module, name))
            and not (module_name != "torchem" and getattr(torchem, name, None) is getattr(module, name))]


def render(title: str, intro: str, sections: list[tuple[str | None, str]]) -> str:
    lines = [f"# {title}", "", intro, ""]
    for heading, module in sections:
        if heading is not None:
            lines += [f"## {heading}", ""]
        for name in public_names(module):
            lines += [f"::: {module}.{name}", ""]
    return "\n".join(lines)


def main(out: Path = API) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for page, (title, intro, sections) in PAGES.items():
        text = render(title, intro, sections)
        path = out / page
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


if __name__ == "__main__":
    main()
