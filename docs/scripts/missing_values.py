"""Missing values: a Gaussian mixture fitted with 30% of the entries missing, by marginalising
them (nan_policy="marginalize"), against mean imputation and against dropping the rows that
hold them (figure missing_values)."""

import numpy as np
from _common import figure, run, save, section
from matplotlib.patches import Ellipse

MEANS = np.array([[0.0, 0.0], [3.0, 3.0]])
COVARIANCES = np.array([[[1.0, 0.8], [0.8, 1.0]], [[1.0, -0.6], [-0.6, 1.0]]])


def data(seed: int, n: int = 600, fraction: float = 0.3):
    """``(complete, with_holes)``: two correlated components; each entry is missing with
    probability ``fraction`` (completely at random), every row keeping one observed entry."""
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 2, n)
    X = np.stack([rng.multivariate_normal(MEANS[k], COVARIANCES[k]) for k in z])
    holes = rng.random(X.shape) < fraction
    holes[holes.all(1), rng.integers(0, 2, int(holes.all(1).sum()))] = False
    return X, np.where(holes, np.nan, X)


def data_mar(seed: int, n: int = 600):
    """Missing at random but not completely: the second feature goes missing with probability
    0.6 where the first (always observed) exceeds 1."""
    rng = np.random.default_rng(seed)
    X = data(seed, n, 0.0)[0]
    X[(X[:, 0] > 1.0) & (rng.random(n) < 0.6), 1] = np.nan
    return X


def fits(X):
    # --8<-- [start:fit]
    from torchem import GaussianMixture

    # X holds NaN where an entry is missing
    marginalized = GaussianMixture(2, nan_policy="marginalize", random_state=0).fit(X)
    imputed = GaussianMixture(2, random_state=0).fit(np.where(np.isnan(X), np.nanmean(X, 0), X))
    dropped = GaussianMixture(2, nan_policy="omit", random_state=0).fit(X)  # warns: rows left out
    # --8<-- [end:fit]
    return {"marginalize": marginalized, "mean imputation": imputed, "drop rows (omit)": dropped}


def errors(model):
    """Largest error of the means and of the covariances, components matched by their means."""
    order = np.argsort(model.means_[:, 0])
    return np.abs(model.means_[order] - MEANS).max(), np.abs(model.covariances_[order] - COVARIANCES).max()


def main():
    import warnings

    warnings.simplefilter("ignore")  # omit's warning (the count is printed below)
    complete, X = data(0)
    section("once")
    print(f"{np.isnan(X).mean():.0%} of the entries missing; {np.isnan(X).any(1).sum()} of {len(X)} rows hold one")
    models = fits(X)
    for name, model in models.items():
        mean_err, cov_err = errors(model)
        print(f"{name:>17}: max error of the means {mean_err:.3f}, of the covariances {cov_err:.3f}")

    test = data(100, n=5000)[0]

    def repeated(title, draw):  # the three fits on 20 data sets: mean errors and test log-likelihood
        table = {name: [] for name in models}
        for seed in range(1, 21):
            for name, model in fits(draw(seed)).items():
                table[name].append((*errors(model), model.score(test)))
        print(title)
        print(f"{'':>17}  {'means':>7}  {'covariances':>11}  {'test log-lik.':>13}")
        for name, rows in table.items():
            m, c, ll = np.mean(rows, 0)
            print(f"{name:>17}  {m:7.3f}  {c:11.3f}  {ll:13.4f}")

    section("repeated")
    repeated("20 data sets of 600 rows, 30% of entries missing (mean over the data sets):", lambda seed: data(seed)[1])
    section("mar")
    repeated("The second feature missing where the first exceeds 1 (60% of those rows), 20 data sets:", data_mar)

    fig, axes = figure(ncols=3, size=3.6, sharex=True, sharey=True)
    for ax, (name, model) in zip(axes, models.items()):
        seen = ~np.isnan(X).any(1)
        ax.scatter(*X[seen].T, s=6, c="0.6", label="complete rows")
        for x in X[~seen]:  # a row with one missing entry: a line through its observed value
            if np.isnan(x[0]):
                ax.axhline(x[1], xmin=0, xmax=0.03, c="tab:red", lw=0.8)
            else:
                ax.axvline(x[0], ymin=0, ymax=0.03, c="tab:red", lw=0.8)
        for k in range(2):
            for mean, cov, style in ((MEANS[k], COVARIANCES[k], dict(ec="k", ls="--")),
                                     (model.means_[k], model.covariances_[k], dict(ec="tab:blue", lw=2))):
                from torchem.plot import covariance_ellipse

                w, h, angle = covariance_ellipse(cov, 2.0)
                ax.add_patch(Ellipse(mean, w, h, angle=angle, fill=False, **style))
        mean_err, cov_err = errors(model)
        ax.set_title(f"{name}\nerror: means {mean_err:.2f}, cov. {cov_err:.2f}", fontsize=9)
        ax.grid()
    axes[0].set_xlim(-4, 7)
    axes[0].set_ylim(-4, 7)
    fig.suptitle("2-sigma ellipses: truth (dashed) and fit (blue); 30% of entries missing", fontsize=10)
    save(fig, "missing_values")


if __name__ == "__main__":
    run(main, "missing_values.txt")
