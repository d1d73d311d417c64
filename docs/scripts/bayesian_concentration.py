"""scikit-learn's "Concentration Prior Type Analysis of Variation Bayesian Gaussian Mixture"
with torchem (figures bayesian_dirichlet_distribution, bayesian_dirichlet_process)."""

import numpy as np
from _common import run, save


def main():
    # --8<-- [start:data]
    # scikit-learn's toy data: three Gaussians, 200 + 500 + 200 points (the same draws)
    means = np.array([[0.0, -0.70], [0.0, 0.0], [0.0, 0.70]])
    covars = np.array([[[0.7, 0.0], [0.0, 0.1]], [[0.5, 0.0], [0.0, 0.1]], [[0.5, 0.0], [0.0, 0.1]]])
    samples = [200, 500, 200]
    rng = np.random.RandomState(2)
    X = np.vstack([rng.multivariate_normal(m, c, n) for m, c, n in zip(means, covars, samples)])
    # --8<-- [end:data]

    # --8<-- [start:fit]
    import matplotlib.pyplot as plt

    from torchem import BayesianGaussianMixture
    from torchem.plot import plot_mixture

    settings = {  # prior type -> the three concentrations the example compares
        "dirichlet_distribution": [0.001, 1, 1000],
        "dirichlet_process": [1, 1000, 100000],
    }
    for prior_type, concentrations in settings.items():
        fig, axes = plt.subplots(2, 3, figsize=(12, 6), gridspec_kw={"height_ratios": [3, 1]})
        for column, gamma0 in enumerate(concentrations):
            kwargs = dict(n_components=6, weight_concentration_prior_type=prior_type,
                          weight_concentration_prior=gamma0, mean_precision_prior=0.8, reg_covar=0,
                          init_params="random", max_iter=1500, n_init=5, random_state=2)
            bgm = BayesianGaussianMixture(**kwargs).fit(X)  # the 5 restarts run as one batch
            print(f"{prior_type:>22}, gamma0={gamma0:<6g} weights {np.sort(bgm.weights_)[::-1].round(3)}, "
                  f"{(bgm.weights_ > 0.01).sum()} above 0.01, lower bound {bgm.lower_bound_:.2f}")
            plot_mixture(bgm, X, ax=axes[0, column], sigmas=(1, 2), s=4, max_alpha=0.5)
            axes[0, column].set_title(f"$\\gamma_0$ = {gamma0:g}")
            axes[1, column].bar(range(6), bgm.weights_, color="tab:blue")
            axes[1, column].set(ylim=(0, 1), xlabel="component", ylabel="weight")
        fig.suptitle(prior_type.replace("_", " ") + " prior")
        save(fig, f"bayesian_{prior_type}")
    # --8<-- [end:fit]


if __name__ == "__main__":
    run(main, "bayesian_concentration.txt")
