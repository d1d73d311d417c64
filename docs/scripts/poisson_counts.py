"""Counts: calls per hour from quiet and busy hours, a Poisson mixture finds the two rates;
then word counts of documents from three topics, with BIC choosing K (figure poisson_counts)."""

import numpy as np
from _common import figure, run, save, section


def main():
    section("data")
    # --8<-- [start:data]
    rng = np.random.default_rng(0)
    true_rate, true_weight = np.array([3.0, 11.0]), np.array([0.7, 0.3])
    busy = rng.random(1000) < true_weight[1]  # latent: was the hour a busy one?
    calls = rng.poisson(true_rate[busy.astype(int)])[:, None].astype(np.float64)  # [1000, 1]
    print(f"mean {calls.mean():.2f}, variance {calls.var():.2f}")  # a single Poisson has variance = mean
    # --8<-- [end:data]

    section("fit")
    # --8<-- [start:fit]
    from torchem import PoissonMixture

    pm = PoissonMixture(n_components=2, random_state=0).fit(calls)
    order = np.argsort(pm.rates_[:, 0])  # quiet hours first
    print("rates  :", pm.rates_[order, 0].round(2), " true:", true_rate)
    print("weights:", pm.weights_[order].round(3), " true:", true_weight)
    one = PoissonMixture(n_components=1).fit(calls)
    print(f"log-likelihood per hour: two rates {pm.score(calls):.4f}, one rate {one.score(calls):.4f}")
    # --8<-- [end:fit]

    # --8<-- [start:plot]
    counts = np.arange(26, dtype=np.float64)[:, None]
    pmf = np.exp(pm.score_samples(counts))  # the mixture's probability of each count
    joint = pm.predict_proba(counts) * pmf[:, None]  # w_k * Poisson(count | rate_k)
    # --8<-- [end:plot]

    section("topics")
    # --8<-- [start:topics]
    # word counts of 600 documents over 8 words, from 3 topics with their own rates
    topic_rates = rng.gamma(1.0, 3.0, size=(3, 8))
    topic = rng.integers(0, 3, 600)
    docs = rng.poisson(topic_rates[topic]).astype(np.float64)  # [600, 8]
    ks = range(1, 7)
    bic = [PoissonMixture(k, n_init=3, random_state=0).fit(docs).bic(docs) for k in ks]
    best = ks[int(np.argmin(bic))]
    print("BIC:", np.round(bic, 1), "-> lowest at n_components =", best)
    pm3 = PoissonMixture(best, n_init=3, random_state=0).fit(docs)
    from sklearn.metrics import adjusted_rand_score

    print(f"adjusted Rand index of the labels against the topics: {adjusted_rand_score(topic, pm3.predict(docs)):.3f}")
    # --8<-- [end:topics]

    fig, (left, right) = figure(ncols=2, size=4.0)
    left.bar(counts[:, 0], np.bincount(calls[:, 0].astype(int), minlength=26)[:26] / len(calls), color="0.8", label="data")
    left.plot(counts[:, 0], pmf, "k.-", label="fitted mixture")
    for j, c in zip(order, ["C0", "C3"]):
        left.plot(counts[:, 0], joint[:, j], "--", color=c, label=f"rate {pm.rates_[j, 0]:.2f}")
    left.set(xlabel="calls in an hour", ylabel="probability", title="PoissonMixture(2)")
    left.legend()
    right.plot(list(ks), bic, "o-")
    right.axvline(best, color="0.6", ls=":")
    right.set(xlabel="n_components", ylabel="BIC (lower is better)", title="word counts: choosing K")
    right.grid()
    save(fig, "poisson_counts")


if __name__ == "__main__":
    run(main, "poisson_counts.txt")
