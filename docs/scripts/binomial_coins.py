"""The tutorial's coins: which coin was tossed is latent; a Binomial mixture recovers the
coins from the number of heads in sessions of 10 tosses (figure binomial_coins)."""

import numpy as np
from _common import figure, run, save, section


def main():
    # --8<-- [start:data]
    rng = np.random.default_rng(0)
    true_p, true_alpha = np.array([0.8, 0.35]), np.array([0.4, 0.6])
    coin = rng.choice(2, size=500, p=true_alpha)  # latent: which coin, per session
    flips = rng.random((500, 10)) < true_p[coin, None]  # 10 tosses per session
    heads = flips.sum(1, keepdims=True).astype(np.float64)  # observed: [500, 1] counts in 0..10
    # --8<-- [end:data]

    section("fit")
    # --8<-- [start:fit]
    from torchem import BinomialMixture

    bmm = BinomialMixture(n_components=2, n_trials=10, random_state=0).fit(heads)
    order = np.argsort(-bmm.probs_[:, 0])  # list the likelier-heads coin first
    print("p (heads):", bmm.probs_[order, 0].round(3), " true:", true_p)
    print("alpha    :", bmm.weights_[order].round(3), " true:", true_alpha)
    print("EM iterations:", bmm.n_iter_)
    # --8<-- [end:fit]

    # --8<-- [start:plot]
    counts = np.arange(11, dtype=np.float64)[:, None]
    pmf = np.exp(bmm.score_samples(counts))  # the mixture's probability of each head count
    joint = bmm.predict_proba(counts) * pmf[:, None]  # alpha_j * Binomial(count | 10, p_j)
    # --8<-- [end:plot]
    fig, ax = figure(size=4.0)
    ax.bar(counts[:, 0], np.bincount(heads[:, 0].astype(int), minlength=11) / len(heads), color="0.8", label="data")
    ax.plot(counts[:, 0], pmf, "k.-", label="fitted mixture")
    for j, c in zip(order, ["C3", "C0"]):
        ax.plot(counts[:, 0], joint[:, j], "--", color=c, label=f"coin p={bmm.probs_[j, 0]:.2f}")
    ax.set(xlabel="heads in 10 tosses", ylabel="probability", title="BinomialMixture(2, n_trials=10)")
    ax.legend()
    save(fig, "binomial_coins")

    section("single")
    # --8<-- [start:single]
    from torchem import BernoulliMixture

    single = flips.reshape(-1, 1).astype(np.float64)  # every toss on its own: x in {0, 1}
    two_coins = BernoulliMixture(2, random_state=0).fit(single)
    heads_rate = single.mean()
    one_coin = heads_rate * np.log(heads_rate) + (1 - heads_rate) * np.log(1 - heads_rate)
    print(f"single tosses: two coins {two_coins.score(single):.6f}, one coin {one_coin:.6f}")
    # --8<-- [end:single]


if __name__ == "__main__":
    run(main, "binomial_coins.txt")
