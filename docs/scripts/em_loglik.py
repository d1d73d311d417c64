"""EM step by step on the four blobs: the log-likelihood rises at every iteration (figures
em_loglik, em_steps)."""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from _common import figure, four_blobs, run, save

from torchem import ConvergenceWarning, GaussianMixture
from torchem.plot import plot_mixture


def main():
    X = four_blobs()
    # --8<-- [start:fit]
    gmm = GaussianMixture(4, init_params="random", tol=1e-6, max_iter=500, random_state=1).fit(X)
    ll = np.array(gmm.lower_bounds_)  # mean log-likelihood of X, one value per EM iteration
    print(f"{gmm.n_iter_} iterations, log-likelihood {ll[0]:.4f} -> {ll[-1]:.4f}")
    print("smallest change between iterations:", np.diff(ll).min())
    # --8<-- [end:fit]
    assert np.all(np.diff(ll) >= 0), "EM decreased the log-likelihood"

    fig, ax = figure(size=4.0)
    ax.plot(np.arange(1, len(ll) + 1), ll, marker=".")
    ax.set(xlabel="EM iteration", ylabel="mean log-likelihood", title="EM never decreases the likelihood")
    ax.grid()
    save(fig, "em_loglik")

    # The same fit stopped after t iterations (same seed, so the same path).
    # --8<-- [start:steps]
    steps = [1, 10, 25, gmm.n_iter_]
    fig, axes = plt.subplots(1, len(steps), figsize=(12.8, 3.2))
    for ax, t in zip(axes, steps):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # stopped early on purpose
            partial = GaussianMixture(4, init_params="random", tol=1e-6, max_iter=t, random_state=1).fit(X)
        plot_mixture(partial, X, ax=ax, s=8)
        ax.set_title(f"after {t} iteration{'s' if t > 1 else ''}: {partial.score(X):.3f}")
    # --8<-- [end:steps]
        assert np.allclose(partial.lower_bounds_, ll[:t]), "a shorter fit left the path of the full fit"
    save(fig, "em_steps")


if __name__ == "__main__":
    run(main, "em_loglik.txt")
