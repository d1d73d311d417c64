"""torchem.plot: ellipse geometry against the covariance's eigen-decomposition, one ellipse per
component and sigma, colours from the predicted components, and clear errors."""

import sys

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from torchem import BernoulliMixture, GaussianMixture, GaussianMixtureIC, KMeans, NotFittedError  # noqa: E402
from torchem.plot import covariance_ellipse, plot_criterion, plot_mixture  # noqa: E402


def _blobs(d=2, n=300, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0, 0.0], [3.0, 3.0], [3.0, -3.0]])
    centres = np.concatenate([centres, rng.normal(size=(3, d - 2))], axis=1)
    scales = rng.uniform(0.3, 1.2, size=(3, d, d))
    X = np.concatenate([c + rng.normal(size=(n // 3, d)) @ a for c, a in zip(centres, scales)])
    return X


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def _ellipses(ax):
    return [p for p in ax.patches if isinstance(p, Ellipse)]


def _mahalanobis_of_boundary(ellipse, mean, cov):
    """Squared Mahalanobis radius of points on the drawn ellipse's boundary (data coordinates)."""
    t = np.linspace(0.0, 2 * np.pi, 17)
    unit_circle = np.stack([np.cos(t), np.sin(t)], 1)  # an Ellipse's path is the unit circle
    pts = ellipse.get_patch_transform().transform(unit_circle)
    diff = pts - mean
    return np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_ellipses_are_the_sigma_contours_of_each_component(ax, covariance_type):
    X = _blobs()
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    sigmas = (1, 2, 3)
    plot_mixture(gm, X, ax=ax, sigmas=sigmas)
    ellipses = _ellipses(ax)
    assert len(ellipses) == 3 * len(sigmas)
    cov = np.asarray(gm.covariances_, dtype=np.float64)
    full = {  # each component's 2x2 covariance
        "full": lambda: cov,
        "tied": lambda: np.broadcast_to(cov, (3, 2, 2)),
        "diag": lambda: np.stack([np.diag(c) for c in cov]),
        "spherical": lambda: cov[:, None, None] * np.eye(2),
    }[covariance_type]()
    for idx, ellipse in enumerate(ellipses):
        c, sigma = divmod(idx, len(sigmas))
        sigma = sigmas[sigma]
        values, vectors = np.linalg.eigh(full[c])
        np.testing.assert_allclose(ellipse.center, gm.means_[c], rtol=1e-6)
        np.testing.assert_allclose(ellipse.width, 2 * sigma * np.sqrt(values[1]), rtol=1e-6)
        np.testing.assert_allclose(ellipse.height, 2 * sigma * np.sqrt(values[0]), rtol=1e-6)
        if values[1] > values[0] * (1 + 1e-6):  # the major axis has a direction
            direction = np.array([np.cos(np.radians(ellipse.angle)), np.sin(np.radians(ellipse.angle))])
            assert abs(direction @ vectors[:, 1]) == pytest.approx(1.0, abs=1e-6)
        # every boundary point lies on the sigma-contour of the component's density
        np.testing.assert_allclose(_mahalanobis_of_boundary(ellipse, gm.means_[c], full[c]), sigma**2, rtol=1e-6)


def test_covariance_ellipse_closed_form():
    # covariance with eigenvalues 9 and 1, major axis along (1, 1)/sqrt(2): angle 45 degrees
    rot = np.array([[1.0, -1.0], [1.0, 1.0]]) / np.sqrt(2)
    cov = rot @ np.diag([9.0, 1.0]) @ rot.T
    width, height, angle = covariance_ellipse(cov, sigma=2)
    assert (width, height) == pytest.approx((12.0, 4.0))
    assert angle == pytest.approx(45.0)
    assert covariance_ellipse(np.diag([1.0, 4.0]))[2] == pytest.approx(90.0)
    assert covariance_ellipse(torch.eye(2))[:2] == pytest.approx((2.0, 2.0))  # a circle: any angle


def test_points_coloured_by_predicted_component_and_alpha_by_weight(ax):
    X = _blobs()
    gm = GaussianMixture(3, random_state=0).fit(X)
    plot_mixture(gm, X, ax=ax, sigmas=(1,))
    colours = ax.collections[0].get_facecolors()
    labels = gm.predict(X)
    # points of one predicted component share one colour, different components differ
    for c in range(3):
        assert len(np.unique(colours[labels == c], axis=0)) == 1
    assert len(np.unique(colours[:, :3], axis=0)) == 3
    alphas = np.array([e.get_alpha() for e in _ellipses(ax)])
    np.testing.assert_allclose(alphas, 0.25 * gm.weights_ / gm.weights_.max(), rtol=1e-6)


def test_projection_on_two_dims_uses_marginal_covariances(ax):
    X = _blobs(d=4)
    gm = GaussianMixture(3, random_state=0).fit(X)
    plot_mixture(gm, X, ax=ax, sigmas=(2,), dims=(3, 1))
    for c, ellipse in enumerate(_ellipses(ax)):
        marginal = gm.covariances_[c][np.ix_([3, 1], [3, 1])]
        np.testing.assert_allclose(ellipse.center, gm.means_[c, [3, 1]], rtol=1e-6)
        np.testing.assert_allclose(_mahalanobis_of_boundary(ellipse, gm.means_[c, [3, 1]], marginal), 4.0, rtol=1e-6)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), X[:, [3, 1]])


def test_kmeans_draws_centres_and_no_ellipses(ax):
    X = torch.as_tensor(_blobs(), dtype=torch.float32)
    km = KMeans(3, random_state=0).fit(X)
    plot_mixture(km, X, ax=ax)
    assert _ellipses(ax) == []
    np.testing.assert_allclose(ax.collections[1].get_offsets(), km.cluster_centers_.numpy(), rtol=1e-6)


def test_bad_input(ax):
    X = _blobs()
    gm = GaussianMixture(3, random_state=0).fit(X)
    with pytest.raises(NotFittedError):
        plot_mixture(GaussianMixture(3), X, ax=ax)
    with pytest.raises(TypeError, match="GaussianMixture or KMeans"):
        plot_mixture(BernoulliMixture(2).fit((X > 0).astype(float)), X, ax=ax)
    for sigmas in [(), (0,), (-1, 2), ("1",), (float("nan"),)]:
        with pytest.raises(ValueError, match="sigmas"):
            plot_mixture(gm, X, ax=ax, sigmas=sigmas)
    with pytest.raises(ValueError, match="features"):
        plot_mixture(gm, X[:, :1], ax=ax)
    X4 = _blobs(d=4)
    gm4 = GaussianMixture(3, covariance_type="diag", random_state=0).fit(X4)
    with pytest.raises(ValueError, match=r"dims=\(i, j\)"):
        plot_mixture(gm4, X4, ax=ax)
    for dims in [(0, 0), (0, 4), (-1, 2), (0, 1, 2), (0.5, 1), "ab"]:
        with pytest.raises(ValueError, match="dims"):
            plot_mixture(gm4, X4, ax=ax, dims=dims)
    batched = GaussianMixture(2, random_state=0).fit(np.stack([X, X + 1.0]))
    with pytest.raises(ValueError, match="one problem"):
        plot_mixture(batched, X, ax=ax)
    with pytest.raises(ValueError, match="2x2"):
        covariance_ellipse(np.eye(3))
    with pytest.raises(ValueError, match="positive semi-definite"):
        covariance_ellipse(np.diag([1.0, -1.0]))


def test_missing_matplotlib_names_the_plot_extra(monkeypatch):
    X = _blobs()
    gm = GaussianMixture(3, random_state=0).fit(X)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # import now fails
    with pytest.raises(ImportError, match=r"torchem\[plot\]"):
        plot_mixture(gm, X)


def test_plot_criterion_draws_one_line_per_covariance_type_with_the_chosen_model_starred(ax):
    X = _blobs()
    ic = GaussianMixtureIC((3, 1, 2, 4), covariance_type=("full", "diag", "spherical"), random_state=0).fit(X)
    plot_criterion(ic, ax)
    lines = [line for line in ax.get_lines() if line.get_label() in ("full", "diag", "spherical")]
    assert [line.get_label() for line in lines] == ["full", "diag", "spherical"]
    for row, line in enumerate(lines):
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3, 4])  # sorted by K
        order = np.argsort([3, 1, 2, 4])
        np.testing.assert_allclose(line.get_ydata(), ic.bic_[row, order])
    star = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert len(star) == 1 and star[0].get_xdata()[0] == ic.n_components_
    assert star[0].get_ydata()[0] == ic.bic_.min()
    assert ax.get_ylabel().startswith("BIC")
    with pytest.raises(TypeError, match="GaussianMixtureIC"):
        plot_criterion(GaussianMixture(2).fit(X), ax)
    with pytest.raises(NotFittedError):
        plot_criterion(GaussianMixtureIC(), ax)
