"""Model selection with GaussianMixtureIC: scikit-learn's "Gaussian Mixture Model Selection"
example (figure model_selection)."""

import numpy as np
from _common import figure, run, save


def main():
    # --8<-- [start:data]
    n_samples = 500
    rng = np.random.RandomState(0)  # scikit-learn's example seeds numpy's global generator with 0
    C = np.array([[0.0, -0.1], [1.7, 0.4]])
    component_1 = np.dot(rng.randn(n_samples, 2), C)  # general
    component_2 = 0.7 * rng.randn(n_samples, 2) + np.array([-4, 1])  # spherical
    X = np.concatenate([component_1, component_2])
    # --8<-- [end:data]

    # --8<-- [start:fit]
    from torchem import GaussianMixtureIC

    ic = GaussianMixtureIC(
        n_components=range(1, 7),
        covariance_type=("spherical", "tied", "diag", "full"),
        criterion="bic",
        random_state=0,
    ).fit(X)  # 24 models, fitted as one batch
    print(f"chosen: covariance_type={ic.covariance_type_!r}, n_components={ic.n_components_}")
    # --8<-- [end:fit]

    print()
    print("BIC".ljust(12) + "".join(f"{k:>10}" for k in ic.n_components_grid_))
    for name, row in zip(ic.covariance_types_, ic.criterion_):
        print(name.ljust(12) + "".join(f"{v:10.1f}" for v in row))

    # the same 24 models fitted one by one by scikit-learn (its own initialisation)
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    sk = np.array([[SkGaussianMixture(k, covariance_type=t, random_state=0).fit(X).bic(X) for k in ic.n_components_grid_]
                   for t in ic.covariance_types_])
    row, col = np.unravel_index(np.argmin(sk), sk.shape)
    print()
    print(f"scikit-learn's loop chooses covariance_type={ic.covariance_types_[row]!r}, "
          f"n_components={ic.n_components_grid_[col]}; largest relative difference of the 24 BIC values: "
          f"{np.max(np.abs(sk - ic.bic_) / np.abs(sk)):.1e}")

    # --8<-- [start:plot]
    from torchem.plot import plot_criterion, plot_mixture

    fig, (left, right) = figure(ncols=2, size=4.2)
    plot_criterion(ic, left)
    plot_mixture(ic.best_estimator_, X, right, sigmas=(1, 2), s=4, max_alpha=0.4)
    # --8<-- [end:plot]
    left.set_title("BIC of every model")
    right.set_title(f"chosen: {ic.covariance_type_}, {ic.n_components_} components")
    save(fig, "model_selection")


if __name__ == "__main__":
    run(main, "model_selection.txt")
