"""Partly labelled data: a Gaussian mixture fitted with 5% of the labels against the
unsupervised fit, on classes that overlap (figure partial_labels)."""

import matplotlib.pyplot as plt
import numpy as np
from _common import figure, run, save, section


def overlapping(seed: int = 0, n: int = 900):
    """Three long classes lying side by side: the unsupervised fit prefers to cut across them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = np.stack([rng.normal(size=n) * 3.0, rng.normal(size=n) * 0.5 + 1.3 * y], 1)
    return X, y


def main():
    section("fit")
    # --8<-- [start:fit]
    from sklearn.metrics import adjusted_rand_score
    from torchem import GaussianMixture

    X, y = overlapping()
    rng = np.random.default_rng(1)
    labels = np.full(len(X), -1)  # -1: unlabelled
    known = rng.choice(len(X), len(X) // 20, replace=False)  # 5% of the rows
    labels[known] = y[known]

    free = GaussianMixture(3, random_state=0).fit(X)
    semi = GaussianMixture(3, random_state=0).fit(X, labels=labels)
    for name, model in (("unsupervised", free), ("5% labelled", semi)):
        print(f"{name:>13}: adjusted Rand index {adjusted_rand_score(y, model.predict(X)):.3f}, "
              f"mean log-likelihood {model.score(X):.4f}")
    print("component k is class k on", f"{np.mean(semi.predict(X) == y):.1%}", "of the rows")
    # --8<-- [end:fit]

    fig, axes = figure(ncols=3, size=3.6, sharex=True, sharey=True)
    colours = plt.get_cmap("viridis")(np.linspace(0, 1, 3))
    panels = [("truth (labelled rows circled)", y), ("unsupervised", free.predict(X)), ("5% labelled", semi.predict(X))]
    for ax, (title, c) in zip(axes, panels):
        ax.scatter(X[:, 0], X[:, 1], c=colours[c], s=6)
        ax.set_title(title)
    axes[0].scatter(X[known, 0], X[known, 1], s=40, facecolors="none", edgecolors="red", linewidths=1.0)
    save(fig, "partial_labels")

    section("stream")
    # --8<-- [start:stream]
    import torch

    class Batches:
        """A re-iterable of mapping batches, as a DataLoader over a dict Dataset yields."""

        def __iter__(self):
            for s in range(0, len(X), 256):
                yield {"X": torch.from_numpy(X[s : s + 256]), "labels": torch.from_numpy(labels[s : s + 256])}

    streamed = GaussianMixture(3, random_state=0).fit(Batches())
    print("streamed fit equals the in-memory one:", np.allclose(streamed.means_, semi.means_, rtol=1e-9, atol=1e-12))
    # --8<-- [end:stream]


if __name__ == "__main__":
    run(main, "partial_labels.txt")
