"""The getting-started page's first fit: numpy in, numpy out; tensors in, tensors out; a batch
of independent problems (printed output only)."""

import os

from _common import run, section


def main():
    section("numpy")
    # --8<-- [start:numpy]
    import numpy as np

    from torchem import GaussianMixture

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-2.0, 0.5, (500, 2)), rng.normal(3.0, 1.0, (500, 2))])

    gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    print(type(gm.means_).__name__, gm.means_.round(2).tolist())
    print("weights:", gm.weights_.round(3), "converged:", gm.converged_, "iterations:", gm.n_iter_)
    labels = gm.predict(X)  # numpy in -> numpy out
    print(type(labels).__name__, labels.dtype, labels[:5], labels[-5:])
    print("mean log-likelihood:", round(gm.score(X), 4), " BIC:", round(gm.bic(X), 1))
    # --8<-- [end:numpy]

    section("tensor")
    # --8<-- [start:tensor]
    import torch

    Xt = torch.as_tensor(X, dtype=torch.float32)  # on a GPU: Xt = Xt.cuda()
    gm_t = GaussianMixture(n_components=2, random_state=0).fit(Xt)
    print(type(gm_t.means_).__name__, gm_t.means_.dtype, gm_t.means_.device)
    print(gm_t.predict_proba(Xt[:2]))  # tensor in -> tensor out, on the input's device
    # --8<-- [end:tensor]

    section("batch")
    # --8<-- [start:batch]
    Xb = np.stack([X, X * 2.0 + 1.0, -X])  # [B=3, N=1000, D=2]: three independent problems
    gm_b = GaussianMixture(n_components=2, random_state=0).fit(Xb)
    print("means_ shape:", gm_b.means_.shape, " n_iter_:", gm_b.n_iter_, " predict:", gm_b.predict(Xb).shape)
    # --8<-- [end:batch]

    section("save")
    # --8<-- [start:save]
    torch.save(gm.state_dict(), "gm.pt")
    restored = GaussianMixture(n_components=2)  # same n_components and covariance_type
    restored.load_state_dict(torch.load("gm.pt"))
    print("same predictions after reloading:", bool((restored.predict(X) == labels).all()))
    # --8<-- [end:save]
    os.remove("gm.pt")


if __name__ == "__main__":
    run(main, "getting_started.txt")
