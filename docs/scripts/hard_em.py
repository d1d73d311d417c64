"""K-means as "hard GMM": as the shared covariance eps*I shrinks, the responsibilities of a
Gaussian mixture become one-hot nearest-centre assignments (figure hard_em_limit)."""

import matplotlib.pyplot as plt
import numpy as np
from _common import figure, four_blobs, run, save, section


def main():
    X = four_blobs()
    section("limit")
    # --8<-- [start:limit]
    from torchem import GaussianMixture, KMeans

    km = KMeans(n_clusters=4, random_state=0).fit(X)
    epsilons = [4.0, 1.0, 0.25, 0.01]
    resps = []
    for eps in epsilons:
        # equal weights, means at the k-means centres, covariances eps * I; max_iter=0 keeps
        # exactly these parameters, so predict_proba is the E-step of the tutorial's derivation
        gmm = GaussianMixture(
            4, covariance_type="spherical", max_iter=0,
            weights_init=np.full(4, 0.25), means_init=km.cluster_centers_, precisions_init=np.full(4, 1 / eps),
        ).fit(X)
        r = gmm.predict_proba(X)
        resps.append(r)
        print(f"eps={eps:<5} points with max r_ij > 0.99: {np.mean(r.max(1) > 0.99):6.1%}   "
              f"argmax r_ij == k-means label: {np.mean(gmm.predict(X) == km.labels_):.0%}")
    # --8<-- [end:limit]

    colours = plt.get_cmap("viridis")(np.linspace(0, 1, 4))[:, :3]
    fig, axes = figure(ncols=len(epsilons), size=3.2)
    for ax, eps, r in zip(axes, epsilons, resps):
        ax.scatter(X[:, 0], X[:, 1], c=np.clip(r @ colours, 0, 1), s=8)  # colours mixed by r_ij
        ax.scatter(*km.cluster_centers_.T, c=colours, s=120, marker="s", edgecolors="black")
        ax.set_title(f"covariance {eps:g} I")
        ax.set_aspect("equal", adjustable="datalim")
    save(fig, "hard_em_limit")

    section("hard")
    # --8<-- [start:hard]
    hard = GaussianMixture(4, covariance_type="spherical", hard=True, random_state=0).fit(X)
    match = km.predict(hard.means_)  # the k-means cluster nearest to each hard-EM mean
    print("hard EM iterations:", hard.n_iter_)
    print("largest distance between matched centres:", np.abs(hard.means_ - km.cluster_centers_[match]).max())
    print("same partition as k-means:", bool(np.all(match[hard.predict(X)] == km.labels_)))
    # --8<-- [end:hard]


if __name__ == "__main__":
    run(main, "hard_em.txt")
