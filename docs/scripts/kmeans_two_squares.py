"""K-means on the tutorial's two-square random data (figures kmeans_data, kmeans_centres)."""

from _common import figure, run, save, two_squares


def main():
    X = two_squares()
    fig, ax = figure()
    ax.scatter(X[:, 0], X[:, 1], s=30, c="b")
    ax.grid()
    ax.set(xlabel="x", ylabel="y", title="some random data")
    save(fig, "kmeans_data")

    # --8<-- [start:fit]
    import matplotlib.pyplot as plt

    from torchem import KMeans
    from torchem.plot import plot_mixture

    k_mean = KMeans(n_clusters=2, random_state=0).fit(X)
    print(k_mean)
    print("centres:\n", k_mean.cluster_centers_)
    print(f"inertia: {k_mean.inertia_:.3f}, Lloyd iterations: {k_mean.n_iter_}")

    fig, ax = plt.subplots(figsize=(4, 4))
    plot_mixture(k_mean, X, ax=ax)  # points coloured by cluster, centres as squares
    # --8<-- [end:fit]
    ax.grid()
    ax.set(xlabel="x", ylabel="y", title="K-means, 2 clusters")
    save(fig, "kmeans_centres")


if __name__ == "__main__":
    run(main, "kmeans_two_squares.txt")
