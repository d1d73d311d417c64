"""Mixtures inside models: the module's forward is the per-sample log-likelihood,
differentiable with respect to the input and to the parameters (printed output only)."""

from _common import four_blobs, run, section


def main():
    X_np = four_blobs()
    section("forward")
    # --8<-- [start:forward]
    import torch

    from torchem import GaussianMixture

    X = torch.as_tensor(X_np, dtype=torch.float32)
    gmm = GaussianMixture(4, random_state=0).fit(X)
    log_p = gmm(X)  # forward: per-sample log-likelihood [N], same values as score_samples
    print(log_p.shape, torch.allclose(log_p, gmm.score_samples(X)))
    print([(name, tuple(p.shape), p.requires_grad) for name, p in gmm.named_parameters()])
    # --8<-- [end:forward]

    section("input_grad")
    # --8<-- [start:input_grad]
    x = torch.tensor([[2.0, 0.0], [6.0, 0.0]], requires_grad=True)
    for _ in range(50):  # gradient ascent on log p(x): the points climb to the nearest mode
        (grad,) = torch.autograd.grad(gmm(x).sum(), x)
        with torch.no_grad():
            x += 0.1 * grad
    print("points moved to\n", x.detach().double().numpy().round(2))
    print("component means\n", gmm.means_.double().numpy().round(2))
    # --8<-- [end:input_grad]

    section("finetune")
    # --8<-- [start:finetune]
    X_new = X + torch.tensor([0.5, -0.3])  # the data drift
    means_before = gmm.means_.clone()
    gmm.requires_grad_(True)  # parameters are frozen after fit; make them trainable
    opt = torch.optim.Adam(gmm.parameters(), lr=0.02)
    before = -gmm(X_new).mean().item()
    for step in range(200):
        loss = -gmm(X_new).mean()  # mean negative log-likelihood
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"NLL on the drifted data: {before:.4f} -> {loss.item():.4f}")
    print("shift of the means:\n", (gmm.means_ - means_before).double().numpy().round(2))
    print("score(X_new), the EM API on the trained parameters:", round(float(gmm.score(X_new)), 4))
    # --8<-- [end:finetune]

    section("from_scratch")
    # --8<-- [start:from_scratch]
    from torchem import fit_by_gradient

    em = GaussianMixture(4, random_state=0).fit(X)
    sgd = GaussianMixture(4, random_state=0)  # not fitted: initialised by init_params, then Adam
    shuffle = torch.Generator().manual_seed(0)
    history = fit_by_gradient(sgd, X, epochs=50, batch_size=200, lr=0.05, generator=shuffle)
    print(f"NLL per epoch: {history[0]:.4f} -> {history[-1]:.4f}")
    print(f"mean log-likelihood, gradient: {float(sgd.score(X)):.4f}, EM: {float(em.score(X)):.4f}")
    # --8<-- [end:from_scratch]

    section("distribution")
    # --8<-- [start:distribution]
    dist = em.to_distribution()  # torch.distributions.MixtureSameFamily
    print(type(dist).__name__, type(dist.component_distribution).__name__)
    print("same log_prob:", torch.allclose(dist.log_prob(X), em(X), atol=1e-5))
    back = GaussianMixture.from_distribution(dist)
    print("same predictions after the round trip:", bool((back.predict(X) == em.predict(X)).all()))
    # --8<-- [end:distribution]

    section("rsample")
    # --8<-- [start:rsample]
    em.requires_grad_(True)
    samples = em.rsample(1000, generator=torch.Generator().manual_seed(0))  # [1000, 2]
    samples.square().sum(-1).mean().backward()  # any differentiable function of the samples
    print({name: p.grad is not None for name, p in em.named_parameters()})
    # --8<-- [end:rsample]


if __name__ == "__main__":
    run(main, "models.txt")
