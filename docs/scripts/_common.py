"""Shared by the figure scripts: output locations, the tutorial's data sets, saving.

Every figure and every printed number of the documentation comes from torchem's own output
through these scripts (fixed seeds). ``python docs/scripts/make_figures.py`` runs them all.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DOCS = Path(__file__).resolve().parents[1]
IMG = DOCS / "img"  # figures (PNG, dpi 100), committed
GENERATED = DOCS / "generated"  # printed output included in the pages, committed
REPO = DOCS.parent

DPI = 100


def two_squares(seed: int = 0) -> np.ndarray:
    """The tutorial's K-means data: 50 points uniform in [-2, 0]^2 and 50 in [1, 3]^2."""
    # --8<-- [start:two_squares_data]
    rng = np.random.default_rng(seed)
    X = -2 * rng.random((100, 2))
    X[50:100, :] = 1 + 2 * rng.random((50, 2))
    # --8<-- [end:two_squares_data]
    return X


def four_blobs() -> np.ndarray:
    """The tutorial's Gaussian-mixture data: 400 points around 4 centres, standard deviation
    0.6 (``make_blobs(n_samples=400, centers=4, cluster_std=0.60, random_state=0)``, with the
    axes flipped as in the tutorial)."""
    # --8<-- [start:four_blobs_data]
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=400, centers=4, cluster_std=0.60, random_state=0)
    X = np.ascontiguousarray(X[:, ::-1])  # flip the axes, as the tutorial does
    # --8<-- [end:four_blobs_data]
    return X


def figure(ncols: int = 1, nrows: int = 1, size: float = 4.0, **kwargs):
    return plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), **kwargs)


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` unless it already holds exactly that (so rebuilding the
    site does not touch unchanged files, and ``mkdocs serve`` does not rebuild in a loop)."""
    if path.exists() and path.read_bytes() == data:
        return
    path.write_bytes(data)
    print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)


def save(fig, name: str) -> Path:
    """Save ``fig`` as ``docs/img/<name>.png`` (small PNG) and close it."""
    IMG.mkdir(exist_ok=True)
    path = IMG / f"{name}.png"
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    plt.close(fig)
    _replace(path, buffer.getvalue())
    return path


def write(name: str, text: str) -> Path:
    """Write ``text`` as ``docs/generated/<name>`` (included verbatim in the pages)."""
    GENERATED.mkdir(exist_ok=True)
    path = GENERATED / name
    _replace(path, (text.rstrip() + "\n").encode())
    return path


class _Tee(io.StringIO):
    """Prints to ``stream`` and keeps a copy, with section markers in the copy only."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream
        self.section = None

    def write(self, text):
        self.stream.write(text)
        return super().write(text)

    def mark(self, name: str | None) -> None:
        if self.section is not None:
            newline = "" if self.getvalue().endswith("\n") else "\n"
            super().write(f"{newline}--8<-- [end:{self.section}]\n")
        if name is not None:
            super().write(f"--8<-- [start:{name}]\n")
        self.section = name


_TEE: _Tee | None = None


def section(name: str) -> None:
    """Start a named section of the kept output (ending the previous one), so a page can
    include the output of one part of a script: ``--8<-- "docs/generated/<file>:<name>"``."""
    if _TEE is not None:
        _TEE.mark(name)


def run(main, output: str) -> None:
    """Run a script's ``main()``, printing as usual, and keep what it printed as
    ``docs/generated/<output>`` so the pages show the real output of the code they show."""
    global _TEE
    _TEE = _Tee(sys.stdout)
    try:
        with contextlib.redirect_stdout(_TEE):
            main()
        _TEE.mark(None)
        write(output, _TEE.getvalue())
    finally:
        _TEE = None
