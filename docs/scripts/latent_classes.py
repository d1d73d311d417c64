"""Latent class analysis: a survey whose respondents come from three unobserved groups; a
CategoricalMixture recovers the groups' answer profiles from the answers alone (figure
latent_classes)."""

import numpy as np
from _common import figure, run, save, section

QUESTIONS = {  # question: its answers, coded 0, 1, ... in this order
    "owns a car": ["no", "yes"],
    "commute": ["walk", "bike", "transit", "car"],
    "exercise": ["never", "monthly", "weekly", "daily"],
    "transit rating": ["1", "2", "3", "4", "5"],
    "lives in": ["city", "suburb", "village"],
    "children": ["no", "yes"],
}


def main():
    section("data")
    # --8<-- [start:data]
    rng = np.random.default_rng(0)
    groups = ["city cyclists", "suburban drivers", "village families"]
    share = np.array([0.45, 0.35, 0.20])
    profile = [  # P(answer | group), one row per group, for each question in turn
        [[0.85, 0.15], [0.15, 0.85], [0.35, 0.65]],  # owns a car
        [[0.30, 0.50, 0.15, 0.05], [0.05, 0.05, 0.20, 0.70], [0.10, 0.10, 0.10, 0.70]],  # commute
        [[0.05, 0.15, 0.45, 0.35], [0.30, 0.40, 0.20, 0.10], [0.20, 0.30, 0.35, 0.15]],  # exercise
        [[0.05, 0.10, 0.20, 0.40, 0.25], [0.20, 0.30, 0.30, 0.15, 0.05], [0.45, 0.30, 0.15, 0.07, 0.03]],
        [[0.90, 0.08, 0.02], [0.15, 0.80, 0.05], [0.05, 0.15, 0.80]],  # lives in
        [[0.80, 0.20], [0.50, 0.50], [0.15, 0.85]],  # children
    ]
    n = 1500
    group = rng.choice(3, size=n, p=share)  # latent: which group a respondent belongs to
    answers = np.stack([(rng.random((n, 1)) > np.cumsum(np.array(p)[group], 1)[:, :-1]).sum(1) for p in profile], 1)
    print(answers[:4])  # observed: [1500, 6] integer codes, one column per question
    # --8<-- [end:data]

    section("fit")
    # --8<-- [start:fit]
    from torchem import CategoricalMixture

    lca = CategoricalMixture(n_components=3, n_init=20, tol=1e-6, random_state=0).fit(answers)
    print("categories per question:", lca.n_categories_)
    print("probs_ shape:", lca.probs_.shape)  # [K, D, C]: zero beyond a question's answers
    print("class sizes:", lca.weights_.round(3))
    print("EM iterations:", lca.n_iter_)
    # --8<-- [end:fit]

    section("compare")
    # match the fitted classes to the true groups, for the comparison only
    truth = np.zeros(lca.probs_.shape)
    for d, p in enumerate(profile):
        truth[:, d, : len(p[0])] = p
    order = [int(np.argmin([np.abs(lca.probs_[k] - truth[g]).sum() for k in range(3)])) for g in range(3)]
    print("largest error in P(answer | class):", np.abs(lca.probs_[order] - truth).max().round(3))
    print("true sizes:", share, " fitted, in the same order:", lca.weights_[order].round(3))

    section("bic")
    # --8<-- [start:bic]
    for k in range(1, 6):
        model = CategoricalMixture(k, n_init=10, tol=1e-5, max_iter=500, random_state=0).fit(answers)
        print(f"K={k}  free parameters {model._n_parameters():3d}  BIC {model.bic(answers):9.1f}")
    # --8<-- [end:bic]

    section("predict")
    # --8<-- [start:predict]
    new = np.array([[0, 1, 3, 4, 0, 0],   # no car, bikes, exercises daily, likes transit, city
                    [1, 3, 1, 1, 2, 1]])  # car, drives, exercises monthly, rates transit 2, village, children
    print(lca.predict_proba(new).round(3))
    try:
        lca.predict(np.array([[0, 4, 0, 0, 0, 0]]))  # commute answer 4 was never seen
    except ValueError as err:
        print("ValueError:", err)
    # --8<-- [end:predict]

    fig, axes = figure(3, 2, size=3.2, sharey=True)
    colours = ["C0", "C1", "C2"]
    for ax, (question, labels), d in zip(axes.flat, QUESTIONS.items(), range(len(QUESTIONS))):
        x = np.arange(len(labels))
        for g, (k, colour) in enumerate(zip(order, colours)):
            ax.bar(x + (g - 1) * 0.27, lca.probs_[k, d, : len(labels)], width=0.27, color=colour,
                   label=f"{groups[g]} ({lca.weights_[k]:.0%})" if d == 0 else None)
            ax.plot(x + (g - 1) * 0.27, truth[g, d, : len(labels)], "k_", markersize=9)
        ax.set(title=question, xticks=x, xticklabels=labels, ylim=(0, 1))
    axes[0, 0].set_ylabel("P(answer | class)")
    axes[1, 0].set_ylabel("P(answer | class)")
    axes[1, 0].legend(*axes[0, 0].get_legend_handles_labels(), loc="upper right", fontsize=8)
    fig.suptitle("CategoricalMixture(3): fitted answer profiles (bars) and the true ones (black ticks)")
    save(fig, "latent_classes")


if __name__ == "__main__":
    run(main, "latent_classes.txt")
