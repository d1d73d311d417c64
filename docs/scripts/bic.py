"""Model selection: BIC against the number of components on the four blobs (figure bic)."""

import numpy as np
from _common import figure, four_blobs, run, save


def main():
    X = four_blobs()
    # --8<-- [start:fit]
    from torchem import GaussianMixture

    ks = range(1, 9)
    bic = {}
    for covariance_type in ["full", "tied", "diag", "spherical"]:
        bic[covariance_type] = [
            GaussianMixture(k, covariance_type=covariance_type, n_init=3, random_state=0).fit(X).bic(X) for k in ks
        ]
        best = ks[int(np.argmin(bic[covariance_type]))]
        print(f"{covariance_type:>9}: lowest BIC {min(bic[covariance_type]):7.1f} at n_components={best}")
    # --8<-- [end:fit]

    fig, ax = figure(size=4.0)
    for covariance_type, values in bic.items():
        ax.plot(list(ks), values, marker="o", label=covariance_type)
    ax.set(xlabel="n_components", ylabel="BIC (lower is better)", title="BIC on the four blobs")
    ax.legend()
    ax.grid()
    save(fig, "bic")


if __name__ == "__main__":
    run(main, "bic.txt")
