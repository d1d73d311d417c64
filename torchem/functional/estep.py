"""The E-step shared by every mixture family: log-sum-exp responsibilities.

Shapes: ``...`` is any batch shape (independent problems and/or restarts), ``n`` samples,
``K`` components.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["log_responsibilities", "mixture_log_prob", "responsibilities", "responsibilities_base2_"]


def mixture_log_prob(component_log_prob: Tensor, log_weights: Tensor) -> Tensor:
    """Per-sample log-likelihood of a mixture, ``log sum_k w_k p_k(x)``.

    Args:
        component_log_prob: ``[..., n, K]`` log-densities ``log p_k(x_i)``.
        log_weights: ``[..., K]`` log mixing weights (log-softmax of the logits).

    Returns:
        ``[..., n]`` log-likelihood of each sample.
    """
    return torch.logsumexp(component_log_prob + log_weights.unsqueeze(-2), dim=-1)


def log_responsibilities(component_log_prob: Tensor, log_weights: Tensor) -> tuple[Tensor, Tensor]:
    """E-step: posterior log-probabilities of the components, computed in log space.

    ``log r_ik = log w_k + log p_k(x_i) - log sum_j w_j p_j(x_i)``.

    Args:
        component_log_prob: ``[..., n, K]`` log-densities ``log p_k(x_i)``.
        log_weights: ``[..., K]`` log mixing weights.

    Returns:
        ``(log_norm, log_resp)``: ``[..., n]`` per-sample log-likelihood and ``[..., n, K]``
        log-responsibilities (each row log-sums to zero).
    """
    joint = component_log_prob + log_weights.unsqueeze(-2)
    # Shifted by the row's maximum *before* the log-sum is subtracted: ``joint - logsumexp``
    # rounds the log-sum into a huge ``joint`` (log 2 is lost next to -1e30 in float32), giving
    # rows of log-responsibilities [0, 0] for a far query (posteriors summing to 2). The shift
    # does not change the value, so no gradient flows through it.
    shift = joint.detach().amax(-1, keepdim=True)
    # A sample with zero likelihood under every component (e.g. a float32 Mahalanobis distance
    # that overflowed) gets zero responsibilities (-inf - 0 instead of -inf - -inf = NaN), so
    # it adds nothing to the statistics; its -inf log-likelihood still reaches the caller.
    possible = torch.isfinite(shift)
    shift = torch.where(possible, shift, torch.zeros_like(shift))
    centred = joint - shift
    log_sum = centred.exp().sum(-1, keepdim=True).log()
    log_norm = torch.where(possible, log_sum + shift, -torch.inf).squeeze(-1)
    return log_norm, centred - torch.where(possible, log_sum, torch.zeros_like(log_sum))


def responsibilities(
    component_log_prob: Tensor, log_weights: Tensor, *, inplace: bool = False
) -> tuple[Tensor, Tensor]:
    """E-step with one exponential per entry: ``(log_norm [..., n], resp [..., n, K])``.

    The same quantities as :func:`log_responsibilities` (``resp = exp(log_resp)``), computed
    as a max-shifted softmax that also yields the log-sum-exp. A sample with zero likelihood
    under every component gets zero responsibilities and a ``-inf`` log-likelihood.

    With ``inplace=True`` the responsibilities are written over ``component_log_prob``.
    """
    if inplace:
        joint = component_log_prob.add_(log_weights.unsqueeze(-2))
    else:
        joint = component_log_prob + log_weights.unsqueeze(-2)
    shift = joint.amax(-1, keepdim=True)
    # [..., n, 1]: False for a sample impossible under every component. (Each mask below is one
    # operation on the chunk's rows: these per-row passes cost as much as the [n, K] ones.)
    possible = shift.abs() < torch.inf
    shift = torch.nan_to_num(shift, nan=0.0, posinf=0.0, neginf=0.0)
    # Exponents are clamped a little above the smallest normal number (e^-79 in float32):
    # exp() of very negative numbers is an order of magnitude slower on many CPUs (denormal
    # and underflow paths), and a responsibility of 1e-35 instead of 0 changes nothing.
    # Everything after the first operation works in place: on CPU, writing fresh chunk-sized
    # tensors costs more than the arithmetic.
    e = _exp_(joint.sub_(shift).clamp_min_(math.log(torch.finfo(joint.dtype).tiny) + 8.0))
    total = torch.where(possible, e.sum(-1, keepdim=True), torch.inf)
    log_norm = torch.where(possible, total.log().add_(shift), -torch.inf).squeeze(-1)
    return log_norm, e.div_(total)


_LOG2_E = 1.0 / math.log(2.0)
_LN_2 = math.log(2.0)


def responsibilities_base2_(joint: Tensor, cap: Tensor, log_norm: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The soft E-step of :func:`responsibilities` on component-major joint log-probabilities in
    base 2, overwritten by the responsibilities: the fused pass of a family that computes
    ``joint = log2(w_k p_k(x_i))`` itself (one GEMM, the log weights in its offsets).

    Args:
        joint: ``[..., K, n]`` base-2 joint log-probabilities, written over; the reductions over
            ``K`` then run along contiguous rows of ``n`` samples.
        cap: ``[..., K, 1]`` their largest possible values (a density's peak), which entries
            exceed only by rounding (by far less than the 114 units of the floor below).
        log_norm: ``[..., n]`` where to write the log-likelihoods (e.g. a reused float64
            buffer: the driver sums them in float64), or ``None`` for a new tensor.

    Returns:
        ``(log_norm [..., n], resp [..., K, n])``: natural-log per-sample log-likelihoods and
        the responsibilities (``joint`` itself). As in :func:`responsibilities`, a sample with
        zero likelihood under every component gets zero responsibilities and ``-inf``.
    """
    shift = joint.amax(-2)  # [..., n]; -inf for a sample impossible under every component
    finite = torch.nan_to_num(shift, nan=0.0, posinf=0.0, neginf=0.0)
    # One pass caps the entries at their peak and raises those far below the row's maximum to
    # a little above the smallest normal number (exp2 of very negative numbers is an order of
    # magnitude slower on many CPUs; 1e-35 instead of 0 changes nothing); an impossible
    # sample's floor is -inf, so its entries stay -inf and become exact zeros.
    floor = (shift + (math.log2(torch.finfo(joint.dtype).tiny) + 12.0)).unsqueeze(-2)
    torch.clamp(joint, min=floor, max=cap, out=joint)
    e = joint.sub_(finite.unsqueeze(-2)).exp2_()
    total = e.sum(-2)  # [..., n]: at least about 1 (the maximum's term), 0 if impossible
    natural = total.log2().add_(shift).mul_(_LN_2)  # log2(0) + -inf = -inf if impossible
    log_norm = natural if log_norm is None else log_norm.copy_(natural)
    return log_norm, e.div_(total.clamp_min_(torch.finfo(total.dtype).tiny).unsqueeze(-2))


def _exp_(t: Tensor) -> Tensor:
    """``exp`` in place; float32 on the CPU as ``exp2(t log2 e)``, which torch's CPU kernels
    compute about three times faster than ``exp`` (a relative error of ``|t|`` times 6e-8: a
    few units in the last place for exponents of order -10, below the rounding of the float32
    GEMMs that produced them; float64, and GPUs, keep ``exp`` itself)."""
    if t.dtype == torch.float32 and t.device.type == "cpu":
        return t.mul_(_LOG2_E).exp2_()
    return t.exp_()
