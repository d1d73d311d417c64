"""Poisson mixtures: count vectors whose features are independent Poisson given the component.

With rates ``lambda_kd`` stored as ``log_rates``,

    log p_k(x) = sum_d x_d log lambda_kd - sum_d lambda_kd - sum_d lgamma(x_d + 1),

that is one GEMM ``X @ log_rates^T``, a per-component constant and a per-sample constant. The
last does not depend on the component: it changes the log-likelihood but not the
responsibilities. The sufficient statistics are those of the Bernoulli family (``nk``, ``sx``)
and the M-step is ``lambda_kd = sx_kd / nk_k``.
"""

from __future__ import annotations


import torch
from torch import Tensor
from torch import distributions as D

from .._utils import check_fitted
from ..em import Family
from ..functional import missing as M
from .base import BaseMixture

__all__ = ["RATE_EPS", "PoissonMixture", "poisson_log_prob", "poisson_m_step", "poisson_stats"]

# --8<-- [start:kernels]
#: Rates are kept at or above ``RATE_EPS``: a component that saw only zeros in a feature would
#: otherwise get rate 0, whose log is ``-inf`` (and ``0 * -inf`` is NaN in the GEMM).
RATE_EPS = 1e-10


def poisson_log_prob(X: Tensor, log_rates: Tensor, rate_sum: Tensor | None = None) -> Tensor:
    """Component log-probabilities ``[..., n, K]`` of counts ``X [..., n, D]``.

    Args:
        X: ``[..., n, D]`` non-negative whole numbers.
        log_rates: ``[..., K, D]`` log rates.
        rate_sum: ``[..., K]`` ``sum_d exp(log_rates)``, when already computed.
    """
    if rate_sum is None:
        rate_sum = log_rates.exp().sum(-1)
    k = log_rates.shape[-2]
    # BLAS kernels are several times slower for an output width that is not a multiple of 8
    # (K=10: 1.5x): pad the weights with zero columns and slice the product.
    w = log_rates.new_zeros(*log_rates.shape[:-2], log_rates.shape[-1], -(-k // 8) * 8, dtype=X.dtype)
    w[..., :k] = log_rates.mT
    log_factorial = X + 1
    # in place (one temporary, not two) unless autograd needs x + 1 for lgamma's gradient
    log_factorial = log_factorial.lgamma() if log_factorial.requires_grad else log_factorial.lgamma_()
    return (X @ w)[..., :k] - rate_sum.to(X.dtype).unsqueeze(-2) - log_factorial.sum(-1, keepdim=True)


def poisson_stats(X: Tensor, resp: Tensor, sample_weight: Tensor | None = None) -> dict[str, Tensor]:
    """Additive statistics in float64: ``nk [..., K]`` (weights of the components) and
    ``sx [..., K, D]`` (their weighted sums of the counts)."""
    r = resp if sample_weight is None else resp * sample_weight.unsqueeze(-1)
    return {"nk": r.sum(-2).double(), "sx": (r.mT @ X.to(r.dtype)).double()}


def poisson_m_step(stats: dict[str, Tensor], eps: float = RATE_EPS) -> tuple[Tensor, Tensor]:
    """Closed-form update ``w_k = N_k / N``, ``lambda_kd = sx_kd / N_k`` (at least ``eps``).

    Returns:
        ``(log_weights [..., K], log_rates [..., K, D])`` in float64.
    """
    nk = stats["nk"] + 10.0 * torch.finfo(torch.float64).eps  # an empty component: rates 0/0
    log_weights = nk.log() - nk.sum(-1, keepdim=True).log()
    return log_weights, (stats["sx"] / nk.unsqueeze(-1)).clamp_min(eps).log()
# --8<-- [end:kernels]


#: The most rounding (in nats) a float32 log-probability may carry before passes are computed in
#: float64: a count's terms ``x log(rate)``, ``rate`` and ``lgamma(x + 1)`` grow like
#: ``rate log(rate)`` and cancel, so float32 loses a nat near rates of 1e6 and all meaning at 1e9.
_PRECISION_TOLERANCE = 1e-3


def _float32_loses(log_rates: Tensor) -> bool:
    """Whether log-probabilities computed in ``log_rates``' dtype would carry more than
    ``_PRECISION_TOLERANCE`` of rounding for counts near the rates (float64 never asks: its
    own rounding is what the counts carry; a traced forward keeps its dtype)."""
    if log_rates.dtype == torch.float64 or torch.compiler.is_compiling():
        return False
    lr = log_rates.detach().double()
    rate = lr.exp()
    size = (rate * (lr.abs() + 1.0) + torch.lgamma(rate + 1.0)).sum(-1)  # [..., K]
    return bool(torch.finfo(log_rates.dtype).eps * size.max() > _PRECISION_TOLERANCE)


# --8<-- [start:family]
class _PoissonFamily(Family):
    """EM hooks of a Poisson mixture; parameters ``log_weights [B, R, K]`` and
    ``log_rates [B, R, K, D]``."""

    parallel_chunks = True  # pure per-chunk hooks: an in-memory CPU pass runs on worker threads

    def __init__(self, marginalize: bool = False):
        self.marginalize = marginalize  # NaN entries are missing at random (nan_policy="marginalize")

    def prepare(self, params, precise=False):
        precise = precise or _float32_loses(params["log_rates"])
        log_rates = params["log_rates"].to(torch.float64 if precise else params["log_rates"].dtype)
        return {"log_rates": log_rates, "rate_sum": log_rates.exp().sum(-1)}

    def log_prob(self, X, prepared):
        if self.marginalize and M.has_missing(X):
            # the observed entries' terms only (log x! is 0 where missing: x0 = 0 there)
            log_rates = prepared["log_rates"].double()
            o, x0 = M.observed(X)
            lp = x0 @ log_rates.mT - o @ log_rates.exp().mT - torch.lgamma(x0 + 1).sum(-1, keepdim=True)
            return lp.to(X.dtype), M.Conditional({"mean": log_rates.exp()})
        X = X.to(prepared["log_rates"].dtype)
        return poisson_log_prob(X, prepared["log_rates"], prepared["rate_sum"]), None

    def portable_aux(self, aux):
        return aux if isinstance(aux, M.Conditional) else None

    def stats(self, X, resp, prepared, aux, sample_weight):
        if isinstance(aux, M.Conditional) or (self.marginalize and aux is None and M.has_missing(X)):
            mean = aux.params["mean"] if isinstance(aux, M.Conditional) else prepared["log_rates"].double().exp()
            nk, sx = M.expected_sums(X, resp, mean, sample_weight)
            return {"nk": nk, "sx": sx}
        return poisson_stats(X, resp, sample_weight)

    def m_step(self, stats, params):
        log_weights, log_rates = poisson_m_step(stats)
        failed = torch.zeros(log_weights.shape[:-1], dtype=torch.bool, device=log_weights.device)
        return {"log_weights": log_weights, "log_rates": log_rates}, failed
# --8<-- [end:family]


# --8<-- [start:estimator]
class PoissonMixture(BaseMixture):
    """Mixture of independent Poisson distributions for count vectors, fitted by EM.

    Example:
        >>> import numpy as np
        >>> from torchem import PoissonMixture
        >>> X = np.array([[0, 1], [1, 1], [0, 0], [5, 7], [6, 8], [7, 6]])
        >>> pm = PoissonMixture(n_components=2, random_state=0).fit(X)
        >>> pm.rates_.round(2)
        array([[6.  , 7.  ],
               [0.33, 0.67]])
        >>> pm.predict(X)
        array([1, 1, 1, 0, 0, 0])

    The interface of :class:`torchem.GaussianMixture` where it applies: numpy or tensors in
    (``[N, D]`` or ``[B, N, D]``), the same kind out, restarts as a batch, ``nn.Module``
    state. Component ``k`` has rates ``rates_[k]`` (one per feature), stored as ``log_rates``
    and kept at or above ``1e-10`` (:data:`RATE_EPS`), so no log-probability is NaN. The
    E-step is one matrix product in log space; ``score_samples`` is the full log-pmf,
    ``lgamma(x + 1)`` included.

    Args:
        n_components: number of components ``K``.
        tol: convergence threshold on the change of the mean log-likelihood.
        max_iter: the most EM iterations per restart.
        n_init: number of restarts (run in parallel); the best is kept.
        init_params: ``"kmeans"`` (k-means++ then Lloyd, as hard responsibilities),
            ``"random"`` (random responsibilities), ``"k-means++"`` or
            ``"random_from_data"`` (chosen samples, averaged half-and-half with the mean of
            the data so no rate starts at 0).
        weights_init: ``[K]`` initial weights.
        rates_init: ``[K, D]`` initial rates, positive.
        random_state, warm_start, verbose, verbose_interval, chunk_size, hard: as in
            :class:`torchem.GaussianMixture`.
        nan_policy: as in :class:`torchem.GaussianMixture` (NaN marks a missing entry).
    """

    _param_names = ("logits", "log_rates")
    _fitted_attributes = BaseMixture._fitted_attributes + ("rates_",)
    _init_methods = ("kmeans", "k-means++", "random", "random_from_data")
    _init_arguments = ("weights_init", "rates_init")
    _input_tags = {"positive_only": True, "categorical": True}  # counts

    def _component_shapes(self, k: int, d: int) -> dict[str, tuple]:
        return {"logits": (k,), "log_rates": (k, d)}

    def __init__(
        self,
        n_components: int = 1,
        *,
        tol: float = 1e-3,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init=None,
        rates_init=None,
        random_state=None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        chunk_size: int | None = None,
        hard: bool = False,
        nan_policy: str = "raise",
    ):
        super().__init__(
            n_components, tol=tol, max_iter=max_iter, n_init=n_init, init_params=init_params,
            random_state=random_state, warm_start=warm_start, verbose=verbose,
            verbose_interval=verbose_interval, chunk_size=chunk_size, hard=hard, nan_policy=nan_policy,
        )
        self.weights_init = weights_init
        self.rates_init = rates_init

    def _family(self, n_features: int) -> _PoissonFamily:
        return _PoissonFamily(self._marginalizes)

    def _validate_values(self, X: Tensor, name: str) -> None:
        for start in range(0, X.shape[-2], 2**16):  # in blocks: X.round() would copy all the data
            block = X[..., start : start + 2**16, :]
            for bad, what in (
                (~torch.isfinite(block), "NaN or infinite values"),
                (block < 0, "negative values"),
                (block != block.round(), "non-integer values"),
            ):
                if bool(bad.any()):
                    # scikit-learn's wording for negative input to an estimator of non-negative data
                    lead = "Negative values in data passed to PoissonMixture" if what == "negative values" else (
                        "PoissonMixture expects counts")
                    raise ValueError(
                        f"{lead}: {name} must hold non-negative whole numbers, but it holds "
                        f"{what} (e.g. {float(block[bad][0]):g}). Pass counts (round or clip the data first), or use "
                        "GaussianMixture for real-valued data."
                    )

    def _bytes_per_sample(self, n_features: int, n_restarts: int, itemsize: int) -> int:
        # the GEMM's input and output, the E-step's [n, K] work, the lgamma(x + 1) temporaries
        return itemsize * n_restarts * (4 * n_features + 5 * self.n_components)

    def _n_parameters(self) -> int:
        return self.n_components * self.n_features_in_ + self.n_components - 1

    def _store(self, params: dict[str, Tensor]) -> None:
        self._set_parameter("logits", params["log_weights"])
        self._set_parameter("log_rates", params["log_rates"])

    def _constrained(self) -> dict[str, Tensor]:
        return {"log_weights": torch.log_softmax(self.logits, -1), "log_rates": self.log_rates}

    def _event_ndims(self) -> dict[str, int]:
        return {"log_weights": 1, "log_rates": 2}

    def _n_features_of(self, params: dict[str, Tensor]) -> int:
        return params["log_rates"].shape[-1]

    def _user_initial_params(self, n_features: int, n_problems: int) -> dict[str, Tensor]:
        user: dict[str, Tensor] = {}
        log_weights = self._init_weights(n_problems)
        if log_weights is not None:
            user["log_weights"] = log_weights
        if self.rates_init is not None:
            rates = self._init_array("rates_init", (self.n_components, n_features), n_problems)
            if bool((rates <= 0).any()):
                raise ValueError(
                    f"rates_init must hold positive rates; got a minimum of {float(rates.min()):g}. "
                    "Pass rates > 0 (e.g. the mean counts of each component)."
                )
            user["log_rates"] = rates.log()
        return user

    def _moment_points(self, params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """One point per component, at its rates, with weight ``w_k``: its statistics are
        ``nk = w_k`` and ``sx_k = w_k lambda_k``, which the M-step turns back into the model."""
        log_rates = params["log_rates"].double()
        k = log_rates.shape[-2]
        weights = params["log_weights"].double().exp()
        return log_rates.exp(), torch.eye(k, dtype=torch.float64, device=log_rates.device) * weights.unsqueeze(-2)

    @property
    def rates_(self):
        """Rates ``[K, D]`` (``[B, K, D]``): the expected count of each feature per component."""
        check_fitted(self)
        return self._attr(self.log_rates.detach().exp())

    def _draw(self, labels: Tensor, generator: torch.Generator | None) -> Tensor:
        rates = self.log_rates.detach().exp()
        if not self._stacked:
            rates = rates.unsqueeze(0)
        b, _, d = rates.shape
        chosen = torch.gather(rates, 1, labels.unsqueeze(-1).expand(b, labels.shape[1], d))
        gen_device = generator.device if generator is not None else chosen.device
        return torch.poisson(chosen.to(gen_device), generator=generator).to(chosen.device)

    def _component_distribution(self, params: dict[str, Tensor]) -> D.Distribution:
        return D.Independent(D.Poisson(params["log_rates"].exp()), 1)

    @classmethod
    def _params_from_components(cls, comp: D.Distribution, shape: tuple[int, ...], kwargs: dict) -> dict[str, Tensor]:
        """``Independent(Poisson, 1)`` components; rates below :data:`RATE_EPS` are raised to
        it, as a fit would."""
        if not (isinstance(comp, D.Independent) and isinstance(comp.base_dist, D.Poisson) and comp.reinterpreted_batch_ndims == 1):
            inner = f"({type(comp.base_dist).__name__})" if isinstance(comp, D.Independent) else ""
            raise TypeError(f"PoissonMixture.from_distribution needs Independent(Poisson, 1) components; got {type(comp).__name__}{inner}.")
        rate = comp.base_dist.rate
        return {"log_rates": rate.clamp_min(RATE_EPS).log().expand(*shape, comp.event_shape[0])}
# --8<-- [end:estimator]
