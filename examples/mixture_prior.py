"""A GaussianMixture as a learnable prior inside a larger model, trained end to end.

The model is a one-layer normalising flow: ``z = A x + b`` with a Gaussian-mixture prior on
``z``, so the exact log-likelihood of ``x`` is ``prior(z) + log|det A|``. The prior starts
from an EM fit on the initial ``z`` (EM is the fast way to a good start), then the flow and
the prior are trained together by gradient: the mixture is an ordinary ``nn.Module``
submodule whose parameters (mixing logits, means, log-diagonal precision factors) the
optimizer moves, and it stays a valid mixture after every step.

    python examples/mixture_prior.py                 # CUDA when present
    python examples/mixture_prior.py --steps 500 --device cpu
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import torchem


class FlowWithMixturePrior(nn.Module):
    def __init__(self, prior: torchem.GaussianMixture, d: int):
        super().__init__()
        self.A = nn.Parameter(torch.eye(d))
        self.b = nn.Parameter(torch.zeros(d))
        self.prior = prior

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.A.T + self.b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample log-likelihood of ``x``."""
        return self.prior(self.encode(x)) + torch.linalg.slogdet(self.A).logabsdet


def make_data(n: int, generator: torch.Generator) -> torch.Tensor:
    """Three skewed clusters in 2-D."""
    labels = torch.randint(0, 3, (n,), generator=generator)
    centres = torch.tensor([[0.0, 0.0], [4.0, 1.0], [1.0, 4.0]])
    z = centres[labels] + 0.6 * torch.randn(n, 2, generator=generator)
    return z @ torch.tensor([[1.5, 0.8], [-0.3, 0.7]]).T


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    x = make_data(args.n, gen).to(args.device)

    prior = torchem.GaussianMixture(3, covariance_type="diag", random_state=0).to(args.device)
    model = FlowWithMixturePrior(prior, 2).to(args.device)
    with torch.no_grad():
        prior.fit(model.encode(x))  # EM start for the prior
    prior.requires_grad_(True)  # fitted parameters are frozen until asked
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss = torch.tensor(float("nan"))
    for step in range(args.steps):
        loss = -model(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            print(f"step {step:4d}  negative log-likelihood per point {loss.item():.4f}")
    print("prior weights:", [round(w, 3) for w in prior.weights_.tolist()])
    print("prior means:", prior.means_.cpu().numpy().round(2).tolist())
    return loss.item()


if __name__ == "__main__":
    main()
