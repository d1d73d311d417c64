"""Fitting and fine-tuning mixtures by gradient: mini-batch maximum likelihood.

Every torchem mixture keeps its parameters as unconstrained ``nn.Parameter`` s (mixing logits,
means, log-diagonal precision Cholesky factors, Bernoulli logits), so any ``torch.optim``
optimizer can move them and the model stays valid. EM is usually the faster way to a
maximum of the likelihood; gradient fitting is for what EM cannot do: a mixture whose input
comes from a network being trained, extra loss terms, or objectives other than likelihood.

The loop is the ordinary one, and you can write it yourself::

    model = torchem.GaussianMixture(8).fit(X)      # or .initialize(X) to start from scratch
    model.requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for xb in loader:
        loss = -model(xb).mean()                   # mean negative log-likelihood
        opt.zero_grad()
        loss.backward()
        opt.step()

:func:`fit_by_gradient` runs that loop over a tensor in shuffled mini-batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._utils import as_float_tensor, check_data, check_int, check_real
from .estimator import _invalid_entries

__all__ = ["fit_by_gradient"]


def fit_by_gradient(
    model,
    X,
    *,
    epochs: int = 100,
    batch_size: int | None = None,
    lr: float = 1e-2,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[int, float], bool | None] | None = None,
) -> list[float]:
    """Maximise the mean log-likelihood of ``X`` under ``model`` by mini-batch gradient steps.

    An unfitted model is first initialised by its ``init_params`` (``model.initialize(X)``,
    no EM); a fitted one is fine-tuned from its current parameters. Gradients are enabled on
    the model's parameters and stay enabled afterwards.

    Args:
        model: a torchem mixture (``GaussianMixture``, ``BernoulliMixture``,
            ``BinomialMixture``, ``CategoricalMixture``).
        X: ``[N, D]`` (or ``[B, N, D]`` for a model of B problems) data, numpy or tensor.
        epochs: passes over the data.
        batch_size: samples per step; ``None`` uses all of them (full-batch steps).
        lr: learning rate of the default optimizer, ``torch.optim.Adam``.
        optimizer: an optimizer over ``model.parameters()`` to use instead.
        generator: random generator for the shuffling.
        callback: called after every epoch with ``(epoch, mean negative log-likelihood)``;
            returning True stops.

    Returns:
        The mean negative log-likelihood of each epoch (averaged over its mini-batches).
    """
    from .mixture.base import BaseMixture

    if not isinstance(model, BaseMixture):
        raise TypeError(
            f"fit_by_gradient trains a torchem mixture (GaussianMixture, BernoulliMixture, BinomialMixture, "
            f"CategoricalMixture, PoissonMixture) as its model argument; got {type(model).__name__}. "
            + ("Fit a KMeans with fit (Lloyd's algorithm), or train its soft score model(x, temperature=T) with "
               "your own optimizer loop after requires_grad_(True)." if type(model).__name__ == "KMeans" else "")
        )
    if getattr(model, "_variational", False):
        # its forward is the variational expected log-density: gradient steps on it leave the
        # point estimate (weights_, sample) behind and drive the mean precisions to infinity
        raise TypeError(
            f"fit_by_gradient maximises a likelihood, but a {type(model).__name__} holds a variational posterior "
            "that fit (or partial_fit) computes in closed form; fit it with fit, or train a GaussianMixture by gradient."
        )
    epochs = check_int(epochs, "epochs", 1)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", 1)
    if check_real(lr, "lr") == 0.0:
        raise ValueError("lr must be positive; got 0.")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "optimizer must be a torch.optim.Optimizer built over the model's parameters, e.g. "
            f"torch.optim.SGD(model.parameters(), lr=0.1), or None (Adam with lr); got {optimizer!r}."
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)) or None; got {generator!r}.")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function of (epoch, mean negative log-likelihood) or None; got {callback!r}.")
    t, _ = as_float_tensor(X, "X")
    check_data(t, "X", allow_stacked=True)
    if getattr(model, "_fitted", False) and t.shape[-1] != model.n_features_in_:
        raise ValueError(f"X has {t.shape[-1]} features, but {type(model).__name__} is expecting {model.n_features_in_} "
                         "features as input (fit_by_gradient continues the fitted model); pass data with the same columns.")
    # all or nothing: a run that fails (diverges, or is interrupted) leaves the model as it was,
    # its parameters frozen or not as they were
    with model._transaction():
        return _descend(model, t, epochs, batch_size, lr, optimizer, generator, callback)


def _descend(model, t: Tensor, epochs: int, batch_size: int | None, lr: float, optimizer, generator, callback) -> list[float]:
    """The loop of :func:`fit_by_gradient` on its checked arguments."""
    if not getattr(model, "_fitted", False):
        model.initialize(t)
    for s in range(0, t.shape[-2], 2**16):  # by blocks: the checks' temporaries stay block-sized
        model._validate_values(t[..., s : s + 2**16, :], "X")
    for name, p in list(model._parameters.items()):  # made under torch.inference_mode: normal tensors to train
        if p is not None and p.is_inference():
            model._parameters[name] = torch.nn.Parameter(p.clone(), requires_grad=False)
    model.requires_grad_(True)
    ref = next(model.parameters())
    data = t.to(device=ref.device, dtype=torch.promote_types(t.dtype, ref.dtype))
    n = data.shape[-2]
    step = n if batch_size is None else min(batch_size, n)
    opt = optimizer if optimizer is not None else torch.optim.Adam(model.parameters(), lr=lr)
    held = {id(p) for group in opt.param_groups for p in group["params"]}
    if not any(id(p) in held for p in model.parameters()):
        raise ValueError(
            "The optimizer holds none of the model's parameters, so it would train nothing; build it over "
            "model.parameters() of this model once it is fitted or initialised (model.initialize(X))."
        )
    history: list[float] = []
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator, device=generator.device if generator is not None else "cpu").to(ref.device)
        total = torch.zeros((), dtype=torch.float64, device=ref.device)
        for start in range(0, n, step):
            batch: Tensor = data.index_select(-2, order[start : start + step])

            first: list[Tensor] = []

            def closure(batch=batch, first=first):  # (L-BFGS evaluates it several times a step; the others once)
                opt.zero_grad()
                loss = -model(batch).mean()
                loss.backward()
                first.append(loss.detach())
                return loss

            try:
                opt.step(closure)
            except TypeError:  # an optimizer whose step takes no closure: the plain step
                if first:
                    raise
                closure()
                opt.step()
            if not first:  # a step that ignored the closure trained nothing
                raise TypeError(f"optimizer {type(opt).__name__}.step(closure) did not evaluate the closure; give a "
                                "torch.optim optimizer (their step evaluates it), or train with your own loop.")
            total += first[0].double() * batch.shape[-2]
        history.append(float(total) / n)
        if not math.isfinite(history[-1]) or any(bool(_invalid_entries(n, p).any()) for n, p in model.named_parameters()):
            raise ValueError(
                f"fit_by_gradient diverged in epoch {epoch + 1}: the loss or the model's parameters became NaN or "
                f"infinite. {'Give an optimizer with smaller steps' if optimizer is not None else f'Lower lr (now {lr:g})'}; "
                "the model keeps the parameters it had before the call."
            )
        if callback is not None and callback(epoch, history[-1]):
            break
    return history
