"""A Gaussian mixture on the tutorial's four blobs, drawn with 1-, 2- and 3-sigma covariance
ellipses (figures gmm_blobs_data, gmm_blobs, gmm_covariance_types)."""

from _common import figure, four_blobs, run, save


def main():
    X = four_blobs()
    fig, ax = figure()
    ax.scatter(X[:, 0], X[:, 1], s=20)
    ax.grid()
    ax.set_title("400 points, 4 blobs, std 0.6")
    save(fig, "gmm_blobs_data")

    # --8<-- [start:fit]
    import matplotlib.pyplot as plt

    from torchem import GaussianMixture
    from torchem.plot import plot_mixture

    gmm = GaussianMixture(n_components=4, random_state=42).fit(X)
    print("converged:", gmm.converged_, "after", gmm.n_iter_, "EM iterations")
    print("weights:", gmm.weights_.round(3))
    print("means:\n", gmm.means_.round(2))
    print("mean log-likelihood:", round(gmm.score(X), 4))

    fig, ax = plt.subplots(figsize=(4, 4))
    plot_mixture(gmm, X, ax=ax, sigmas=(1, 2, 3))  # ellipses at 1, 2 and 3 sigma
    # --8<-- [end:fit]
    ax.grid()
    ax.set_title("GaussianMixture(4), full covariances")
    save(fig, "gmm_blobs")

    # --8<-- [start:types]
    import numpy as np

    X_stretched = X @ np.random.default_rng(5).normal(size=(2, 2))  # elongated blobs
    fig, axes = plt.subplots(1, 4, figsize=(12.8, 3.2))
    for ax, covariance_type in zip(axes, ["full", "tied", "diag", "spherical"]):
        gmm = GaussianMixture(4, covariance_type=covariance_type, random_state=42).fit(X_stretched)
        plot_mixture(gmm, X_stretched, ax=ax, s=8)
        ax.set_title(f"{covariance_type}: BIC {gmm.bic(X_stretched):.0f}")
    # --8<-- [end:types]
    save(fig, "gmm_covariance_types")


if __name__ == "__main__":
    run(main, "gmm_blobs.txt")
