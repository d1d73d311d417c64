"""Plots of fitted models: data coloured by component, covariance ellipses, centres.

matplotlib is optional: it is imported when a function here is called, and a missing
matplotlib raises an ``ImportError`` that names the ``plot`` extra
(``pip install "torchem[plot]"``).

Example:
    ```python
    from torchem import GaussianMixture
    from torchem.plot import plot_mixture

    gm = GaussianMixture(n_components=4, random_state=0).fit(X)
    ax = plot_mixture(gm, X)             # points coloured by gm.predict(X), 1/2/3-sigma ellipses
    ax.figure.savefig("gmm.png")
    ```
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import torch

from .cluster import KMeans
from .functional.covariance import COVARIANCE_TYPES
from .mixture import GaussianMixture, GaussianMixtureIC

__all__ = ["covariance_ellipse", "plot_criterion", "plot_mixture"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            'torchem.plot needs matplotlib, which is not installed: pip install "torchem[plot]" '
            "(or pip install matplotlib)."
        ) from exc
    return plt


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def covariance_ellipse(covariance, sigma: float = 1.0) -> tuple[float, float, float]:
    """Geometry of the ``sigma`` contour of a 2-D Gaussian with covariance ``covariance``.

    The contour ``(x - mu)^T covariance^{-1} (x - mu) = sigma^2`` is an ellipse whose axes are
    the eigenvectors of the covariance, with full lengths ``2 * sigma * sqrt(eigenvalue)``.

    Args:
        covariance: ``[2, 2]`` symmetric positive semi-definite matrix.
        sigma: the contour's Mahalanobis radius (positive).

    Returns:
        ``(width, height, angle)`` as ``matplotlib.patches.Ellipse`` takes them: the full
        length of the major axis, that of the minor axis, and the major axis' angle from the
        x axis in degrees, in ``(-90, 90]``.
    """
    c = _numpy(covariance)
    if c.shape != (2, 2) or not np.all(np.isfinite(c)):
        raise ValueError(f"covariance must be a finite 2x2 matrix; got shape {c.shape}.")
    values, vectors = np.linalg.eigh(0.5 * (c + c.T))  # ascending eigenvalues
    if values[0] < -1e-12 * max(1.0, abs(values[1])):
        raise ValueError(f"covariance must be positive semi-definite; its eigenvalues are {values.tolist()}.")
    values = np.clip(values, 0.0, None)
    major = vectors[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    if angle <= -90.0:
        angle += 180.0
    elif angle > 90.0:
        angle -= 180.0
    return 2.0 * sigma * math.sqrt(values[1]), 2.0 * sigma * math.sqrt(values[0]), angle


def _component_covariances(model: GaussianMixture, dims: tuple[int, int]) -> np.ndarray:
    """``[K, 2, 2]`` covariances of the components projected on ``dims`` (the marginal of
    each component on those two features)."""
    cov = torch.from_numpy(_numpy(model.covariances_))
    ct = COVARIANCE_TYPES[model.covariance_type]
    dense = ct.dense_covariances(cov, model.n_components, model.n_features_in_).numpy()  # [K, D, D]
    i, j = dims
    return dense[:, [i, j]][:, :, [i, j]]


def _check_dims(dims, n_features: int) -> tuple[int, int]:
    if n_features < 2:
        raise ValueError(f"plot_mixture draws 2-D data; the model has {n_features} feature(s).")
    if dims is None:
        if n_features != 2:
            raise ValueError(
                f"The model has {n_features} features; pass dims=(i, j) to choose the two features to draw "
                "(the ellipses are then the components' marginals on those features)."
            )
        return 0, 1
    try:
        i, j = (int(d) for d in dims)
        ok = len(tuple(dims)) == 2 and all(int(d) == d for d in dims)
    except (TypeError, ValueError):
        ok = False
    if not ok or i == j or not (0 <= i < n_features and 0 <= j < n_features):
        raise ValueError(
            f"dims must be two different feature indices in [0, {n_features - 1}]; got {dims!r}."
        )
    return i, j


def _check_sigmas(sigmas) -> tuple[float, ...]:
    try:
        values = tuple(sigmas)
    except TypeError:
        values = (sigmas,)
    if not values or not all(
        isinstance(s, Real) and not isinstance(s, bool) and math.isfinite(s) and s > 0 for s in values
    ):
        raise ValueError(f"sigmas must be one or more positive numbers, e.g. (1, 2, 3); got {sigmas!r}.")
    return tuple(float(s) for s in values)


def plot_mixture(
    model,
    X,
    ax=None,
    *,
    sigmas=(1, 2, 3),
    dims=None,
    cmap: str = "viridis",
    s: float = 20.0,
    max_alpha: float = 0.25,
):
    """Draw data coloured by predicted component, with the model's components on top.

    For a [GaussianMixture][torchem.GaussianMixture] (any ``covariance_type``) each component gets one
    filled ellipse per value in ``sigmas`` (its ``sigma``-contour, see
    [covariance_ellipse][torchem.plot.covariance_ellipse]), centred on its mean and
    drawn more opaque the heavier its weight. For a [KMeans][torchem.KMeans] the cluster
    centres are marked.

    Args:
        model: a fitted ``GaussianMixture`` or ``KMeans`` on one problem (not a stack of B problems).
        X: ``[N, D]`` data (numpy array or tensor) with the model's number of features.
        ax: matplotlib ``Axes`` to draw on; the current axes when ``None``.
        sigmas: Mahalanobis radii of the ellipses drawn for each component.
        dims: the two features ``(i, j)`` to draw; required when ``D > 2`` (the ellipses are
            then the components' marginal covariances on those features).
        cmap: matplotlib colour map for the components.
        s: marker size of the data points.
        max_alpha: opacity of the ellipses of the heaviest component.

    Returns:
        The ``Axes`` drawn on.

    Raises:
        ImportError: matplotlib is not installed.
        TypeError: ``model`` is not a ``GaussianMixture`` or ``KMeans``.
        ValueError: the model holds ``B`` problems, ``dims`` or ``sigmas`` are invalid, or ``X`` does not
            match the model.
    """
    if not isinstance(model, (GaussianMixture, KMeans)):
        raise TypeError(
            f"plot_mixture draws a fitted torchem GaussianMixture or KMeans; got {type(model).__name__}."
        )
    sigmas = _check_sigmas(sigmas)
    if not (isinstance(max_alpha, Real) and 0 < max_alpha <= 1):
        raise ValueError(f"max_alpha must be in (0, 1]; got {max_alpha!r}.")
    is_gmm = isinstance(model, GaussianMixture)
    centres = _numpy(model.means_ if is_gmm else model.cluster_centers_)  # raises NotFittedError
    if centres.ndim != 2:
        raise ValueError(
            f"plot_mixture draws one problem, but this model was fitted on {centres.shape[0]} problems "
            "([B, N, D] data); fit a model on one [N, D] problem to plot it."
        )
    i, j = _check_dims(dims, centres.shape[1])
    labels = _numpy(model.predict(X)).astype(np.int64)  # validates X against the model
    data = _numpy(X)

    plt = _pyplot()
    from matplotlib.patches import Ellipse

    if ax is None:
        ax = plt.gca()
    k = centres.shape[0]
    colour_map = plt.get_cmap(cmap)
    colours = colour_map(np.linspace(0.0, 1.0, k)) if k > 1 else colour_map([0.5])
    ax.scatter(data[:, i], data[:, j], c=colours[labels], s=s, zorder=2, linewidths=0)
    if is_gmm:
        covariances = _component_covariances(model, (i, j))
        weights = _numpy(model.weights_)
        alphas = max_alpha * weights / weights.max()
        for c in range(k):
            for sigma in sigmas:
                width, height, angle = covariance_ellipse(covariances[c], sigma)
                ax.add_patch(
                    Ellipse(
                        (centres[c, i], centres[c, j]), width, height, angle=angle,
                        facecolor=colours[c], edgecolor="none", alpha=float(alphas[c]), zorder=1,
                    )
                )
    else:
        ax.scatter(
            centres[:, i], centres[:, j], c=colours, s=12 * s, marker="s",
            edgecolors="black", linewidths=1.0, zorder=3,
        )
    ax.set_xlabel(f"x{i}")
    ax.set_ylabel(f"x{j}")
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    return ax


def plot_criterion(ic, ax=None, *, mark_best: bool = True):
    """Draw a fitted [GaussianMixtureIC][torchem.GaussianMixtureIC]'s criterion against the
    number of components, one line per covariance type, the chosen model starred.

    Models that failed (an infinite criterion) leave a gap in their line.

    Args:
        ic: a fitted ``GaussianMixtureIC``.
        ax: matplotlib ``Axes`` to draw on; the current axes when ``None``.
        mark_best: mark the chosen model (lowest criterion) with a star.

    Returns:
        The ``Axes`` drawn on.

    Raises:
        ImportError: matplotlib is not installed.
        TypeError: ``ic`` is not a ``GaussianMixtureIC``.
        NotFittedError: ``ic`` is not fitted.
    """
    if not isinstance(ic, GaussianMixtureIC):
        raise TypeError(f"plot_criterion draws a fitted torchem GaussianMixtureIC; got {type(ic).__name__}.")
    values = np.where(np.isfinite(ic.criterion_), ic.criterion_, np.nan)  # raises NotFittedError
    ks = np.asarray(ic.n_components_grid_)
    order = np.argsort(ks)
    plt = _pyplot()
    if ax is None:
        ax = plt.gca()
    for row, name in enumerate(ic.covariance_types_):
        ax.plot(ks[order], values[row, order], marker="o", label=name)
    if mark_best:
        row, col = ic.best_index_
        ax.plot([ks[col]], [values[row, col]], marker="*", markersize=16, color="black", linestyle="none",
                label=f"chosen: {ic.covariance_type_}, K={ic.n_components_}", zorder=3)
    ax.set_xlabel("n_components")
    ax.set_ylabel(f"{ic.criterion.upper()} (lower is better)")
    ax.set_xticks(ks[order])
    ax.legend()
    ax.grid(alpha=0.3)
    return ax
