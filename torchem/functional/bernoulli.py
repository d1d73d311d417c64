"""Stateless, batched Bernoulli and Binomial kernels: log-probabilities, statistics, M-step.

A component holds one success probability per feature, stored as logits (``p = sigmoid(l)``),
so every log-probability is exact in log space: ``log p = logsigmoid(l)`` and
``log(1 - p) = logsigmoid(-l)``.

With counts ``x_d`` out of ``n_d`` trials (``n_d = 1`` for Bernoulli),

    log p_k(x) = sum_d x_d l_kd + sum_d n_d logsigmoid(-l_kd) + sum_d log C(n_d, x_d),

that is one GEMM ``X @ l^T`` plus a per-component and a per-sample constant. The binomial
coefficient does not depend on the component: it changes the log-likelihood but not the
responsibilities.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "PROB_EPS",
    "binomial_log_coefficient",
    "bernoulli_log_prob",
    "bernoulli_n_parameters",
    "bernoulli_m_step",
    "bernoulli_stats",
    "logits_from_probs",
]

#: Probabilities are kept in ``[PROB_EPS, 1 - PROB_EPS]`` so no log-probability is infinite.
PROB_EPS = 1e-10


def logits_from_probs(probs: Tensor, eps: float = PROB_EPS) -> Tensor:
    """``log p - log(1 - p)`` of probabilities clamped to ``[eps, 1 - eps]``."""
    p = probs.clamp(eps, 1.0 - eps)
    return p.log() - torch.log1p(-p)


def binomial_log_coefficient(X: Tensor, n_trials: Tensor) -> Tensor:
    """``sum_d log C(n_d, x_d)`` per sample: ``[..., n]``."""
    n = n_trials.to(X.dtype)
    return (torch.lgamma(n + 1) - torch.lgamma(X + 1) - torch.lgamma(n - X + 1)).sum(-1)


def bernoulli_log_prob(X: Tensor, logits: Tensor, n_trials: Tensor | None = None) -> Tensor:
    """Component log-probabilities ``[..., n, K]`` of counts ``X [..., n, D]``.

    Args:
        X: ``[..., n, D]`` binary values (Bernoulli) or counts.
        logits: ``[..., K, D]`` component logits.
        n_trials: ``None`` for Bernoulli, else ``[D]`` trials per feature (the binomial
            coefficient is included).
    """
    logits = logits.to(X.dtype)
    if n_trials is None:
        const = torch.nn.functional.logsigmoid(-logits).sum(-1)  # [..., K]
        return X @ logits.mT + const.unsqueeze(-2)
    n = n_trials.to(X.dtype)
    const = (torch.nn.functional.logsigmoid(-logits) * n).sum(-1)
    return X @ logits.mT + const.unsqueeze(-2) + binomial_log_coefficient(X, n_trials).unsqueeze(-1)


def bernoulli_stats(X: Tensor, resp: Tensor, sample_weight: Tensor | None = None) -> dict[str, Tensor]:
    """Additive statistics in float64: ``nk [..., K]`` and ``sx [..., K, D]`` (weighted sums
    of the counts)."""
    r = resp if sample_weight is None else resp * sample_weight.unsqueeze(-1)
    return {"nk": r.sum(-2).double(), "sx": (r.mT @ X.to(r.dtype)).double()}


def bernoulli_m_step(stats: dict[str, Tensor], n_trials: Tensor | None = None, eps: float = PROB_EPS):
    """Closed-form update: ``w_k = N_k / N``, ``p_kd = sum_i r_ik x_id / (N_k n_d)``.

    Returns:
        ``(log_weights [..., K], logits [..., K, D])`` in float64.
    """
    nk = stats["nk"] + 10.0 * torch.finfo(torch.float64).eps
    log_weights = nk.log() - nk.sum(-1, keepdim=True).log()
    denom = nk.unsqueeze(-1)
    if n_trials is not None:
        denom = denom * n_trials.double()
    return log_weights, logits_from_probs(stats["sx"] / denom, eps)


def bernoulli_n_parameters(n_components: int, n_features: int) -> int:
    return n_components * n_features + n_components - 1


