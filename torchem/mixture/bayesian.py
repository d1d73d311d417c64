"""Variational Bayesian Gaussian mixture: scikit-learn's ``BayesianGaussianMixture`` on the
one EM driver.

The E-step and the statistics are the Gaussian family's (the same covariance table, float64
statistics and precise pass); what is variational is small and lives here:

* the expected log-weights ``E[log pi_k]`` (digammas of the Dirichlet concentrations, or of
  the Beta sticks of a Dirichlet process, :func:`expected_log_weights`);
* the expected log-density terms of the Normal-Wishart posterior added to each component's
  Gaussian log-density (:func:`log_prob_offset`);
* the variational M-step, which turns the Gaussian moments ``(nk, xk, sk)`` into posterior
  parameters (:data:`_WISHART`, one function per covariance type, as scikit-learn's);
* the lower bound, computed after the M-step from the parameters and the responsibilities'
  entropy (an additive statistic), through the driver's :meth:`~torchem.em.Family.lower_bound`.

Shapes: parameters carry leading ``[B, R]``; the priors taken from data (``mean_prior_``,
``covariance_prior_``) are per problem, ``[B, ...]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from .._utils import as_float_tensor, check_fitted
from ..data import Source
from ..distributed import all_reduce_sum, is_distributed, world_size
from ..em import accumulate
from ..functional import covariance as C
from ..functional import gaussian as G
from ..functional import missing as M
from .gaussian import GaussianMixture, _GaussianFamily

__all__ = ["BayesianGaussianMixture", "expected_log_weights", "log_prob_offset"]

PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


# --------------------------------------------------------------------------------------------
# Variational kernels
# --------------------------------------------------------------------------------------------


def expected_log_weights(concentration: Tensor, process: bool) -> Tensor:
    """``E[log pi_k]`` ``[..., K]`` under the weights' posterior.

    Args:
        concentration: ``[..., K]`` Dirichlet concentrations, or for a Dirichlet process
            (``process=True``) ``[..., 2, K]``: the Beta parameters ``(a_k, b_k)`` of the
            sticks, ``pi_k = v_k prod_{j<k} (1 - v_j)``, ``v_k ~ Beta(a_k, b_k)``.
        process: stick-breaking (Dirichlet process) or Dirichlet distribution.
    """
    if not process:
        return torch.digamma(concentration) - torch.digamma(concentration.sum(-1, keepdim=True))
    a, b = concentration.unbind(-2)
    dsum = torch.digamma(a + b)
    tail = torch.cumsum(torch.digamma(b) - dsum, -1)
    return torch.digamma(a) - dsum + F.pad(tail[..., :-1], (1, 0))


def log_prob_offset(dof: Tensor, mean_precision: Tensor, n_features: int) -> Tensor:
    """What the Normal-Wishart posterior adds to the Gaussian log-density of each component
    (its means and ``precisions_cholesky_`` being the posterior's, the scale matrix divided by
    the degrees of freedom ``nu``): ``(E[log det Lambda] - D log nu - D / beta) / 2``, with
    ``E[log det Lambda] = D log 2 + sum_i digamma((nu - i) / 2) + log det(nu W)``; ``[..., K]``
    from ``dof`` and ``mean_precision`` (``beta``) ``[..., K]``."""
    d = n_features
    i = torch.arange(d, dtype=dof.dtype, device=dof.device)
    log_lambda = d * math.log(2.0) + torch.digamma(0.5 * (dof.unsqueeze(-1) - i)).sum(-1)
    return 0.5 * (log_lambda - d / mean_precision) - 0.5 * d * dof.log()


def _weight_concentration(nk: Tensor, prior: float, process: bool) -> Tensor:
    """Posterior concentrations from the counts ``nk [..., K]`` (see :func:`expected_log_weights`)."""
    if not process:
        return prior + nk
    after = nk.flip(-1).cumsum(-1).flip(-1) - nk  # sum_{j > k} n_j
    return torch.stack([1.0 + nk, prior + after], -2)


def _mean_weights(concentration: Tensor, process: bool) -> Tensor:
    """The posterior mean weights (``weights_``), ``[..., K]``, normalised."""
    if not process:
        return concentration / concentration.sum(-1, keepdim=True)
    a, b = concentration.unbind(-2)
    stick = a / (a + b)
    rest = torch.cumprod(b / (a + b), -1)
    w = stick * F.pad(rest[..., :-1], (1, 0), value=1.0)
    return w / w.sum(-1, keepdim=True)


# The Wishart posterior's scale (as scikit-learn's ``covariances_``: divided by the degrees of
# freedom) and its degrees of freedom ``[B, R, K]``, from the counts ``nk [B, R, K]``, the
# covariances ``sk`` (per type), ``diff = xk - mean_prior [B, R, K, D]``, the mean precisions'
# prior ``beta0`` and posterior ``beta [B, R, K]``, the covariance prior ``[B, 1, ...]`` and the
# degrees of freedom's prior ``nu0``.


def _wishart_full(nk, sk, diff, beta0, beta, prior, nu0):
    dof = nu0 + nk
    shift = (nk * beta0 / beta)[..., None, None] * diff.unsqueeze(-1) * diff.unsqueeze(-2)
    scale = prior.unsqueeze(-3) + nk[..., None, None] * sk + shift
    return scale / dof[..., None, None], dof


def _wishart_tied(nk, sk, diff, beta0, beta, prior, nu0):
    k = nk.shape[-1]
    per = nk.sum(-1) / k  # [B, R]: the degrees of freedom are shared, like the covariance
    dof = nu0 + per
    shift = (beta0 / k) * (diff * (nk / beta).unsqueeze(-1)).mT @ diff
    scale = prior + sk * per[..., None, None] + shift
    return scale / dof[..., None, None], dof.unsqueeze(-1).expand_as(nk)


def _wishart_diag(nk, sk, diff, beta0, beta, prior, nu0):
    dof = nu0 + nk
    scale = prior.unsqueeze(-2) + nk.unsqueeze(-1) * (sk + (beta0 / beta).unsqueeze(-1) * diff.square())
    return scale / dof.unsqueeze(-1), dof


def _wishart_spherical(nk, sk, diff, beta0, beta, prior, nu0):
    dof = nu0 + nk
    scale = prior.unsqueeze(-1) + nk * (sk + beta0 / beta * diff.square().mean(-1))
    return scale / dof, dof


_WISHART = {"full": _wishart_full, "tied": _wishart_tied, "diag": _wishart_diag, "spherical": _wishart_spherical}

# The covariance prior taken from data, as scikit-learn takes it: the moments computed (with
# the statistics of that covariance type) and what is kept of them.
_DATA_COVARIANCE = {
    "full": ("full", lambda cov: cov),
    "tied": ("full", lambda cov: cov),
    "diag": ("diag", lambda var: var),
    "spherical": ("diag", lambda var: var.mean(-1)),
}


# --------------------------------------------------------------------------------------------
# The family
# --------------------------------------------------------------------------------------------


class _BayesianFamily(_GaussianFamily):
    """The variational hooks (see :class:`torchem.em.Family`); the E-step's Gaussian part,
    the statistics and the precise pass are the Gaussian family's.

    ``priors``: ``weight_concentration``, ``mean_precision``, ``degrees_of_freedom`` (floats),
    ``mean`` ``[B, D]`` and ``covariance`` ``[B, ...]`` (tensors). ``n_scale``: the statistics
    are per-sample averages (stepwise EM) standing for this many samples."""

    missing_entropy = True  # the entropy of q(x_m | x_o, z) is a term of the lower bound

    def __init__(self, covariance_type: str, reg_covar: float, process: bool, priors: dict, n_scale: float | None = None,
                 marginalize: bool = False):
        super().__init__(covariance_type, reg_covar, marginalize)
        self.process = process
        self.priors = priors
        self.n_scale = n_scale

    def _prior(self, name: str, like: Tensor) -> Tensor:
        """A per-problem prior as ``[B, 1, ...]`` float64 on ``like``'s device."""
        return self.priors[name].to(device=like.device, dtype=torch.float64).unsqueeze(1)

    def prepare(self, params, precise=False):
        prep = super().prepare(params, precise)
        if "dof" in params:  # (statistics about given parameters need no E-step terms)
            prep["offset"] = log_prob_offset(params["dof"], params["mean_precision"], params["means"].shape[-1])
        return prep

    def log_prob(self, X, prepared):
        log_prob, aux = super().log_prob(X, prepared)
        offset = prepared["offset"].unsqueeze(-2).to(log_prob.dtype)
        return (log_prob + offset if log_prob.requires_grad else log_prob.add_(offset)), aux

    def log_weights(self, params):
        return expected_log_weights(params["concentration"], self.process)

    def stats(self, X, resp, prepared, aux, sample_weight):
        stats = super().stats(X, resp, prepared, aux, sample_weight)
        # sum of r log r: the responsibilities' (negative) entropy, a term of the lower bound
        # (r log r with 0 log 0 = 0; the clamp is cheaper than xlogy's special cases)
        ent = (resp * resp.clamp_min(torch.finfo(resp.dtype).tiny).log()).sum(-1, dtype=torch.float64)
        stats["entropy"] = (ent if sample_weight is None else ent * sample_weight.double()).sum(-1)
        if "missing_entropy" in stats:  # -sum E[log q(z, x_m)]: the missing entries' entropy too
            stats["entropy"] = stats["entropy"] - stats.pop("missing_entropy")
        return stats

    def m_step(self, stats, params):
        if self.n_scale is not None:  # a number, or [B, R] (per problem)
            scale = torch.as_tensor(self.n_scale, dtype=torch.float64)
            stats = {k: v * scale.to(v.device).reshape(scale.shape + (1,) * (v.ndim - scale.ndim)) for k, v in stats.items()}
        p = self.priors
        nk, xk, sk = G.gaussian_moments(stats, params["means"], self.covariance_type, self.reg_covar)
        beta0, nu0 = p["mean_precision"], p["degrees_of_freedom"]
        mean_prior = self._prior("mean", nk).unsqueeze(-2)  # [B, 1, 1, D]
        concentration = _weight_concentration(nk, p["weight_concentration"], self.process)
        beta = beta0 + nk
        means = (beta0 * mean_prior + nk.unsqueeze(-1) * xk) / beta.unsqueeze(-1)
        cov, dof = _WISHART[self.covariance_type](nk, sk, xk - mean_prior, beta0, beta, self._prior("covariance", nk), nu0)
        prec_chol, failed = G._regularised_cholesky(cov, self.covariance_type)
        new = {
            "log_weights": _mean_weights(concentration, self.process).log(),
            "means": means,
            "prec_chol": prec_chol,
            "concentration": concentration,
            "mean_precision": beta,
            "dof": dof,
        }
        return new, self.table.per_problem(failed)

    def lower_bound(self, stats, params, ll):
        """scikit-learn's lower bound (its constant terms left out, as there): the entropy of
        the responsibilities, the Wishart and Dirichlet (or Beta) normalisers and the mean
        precisions, after the M-step; a sum over the samples, not a mean."""
        d = params["means"].shape[-1]
        dof, beta, conc = params["dof"].double(), params["mean_precision"].double(), params["concentration"].double()
        log_det = self.table.component_log_det(params["prec_chol"].double(), d) - 0.5 * d * dof.log()
        i = torch.arange(d, dtype=torch.float64, device=dof.device)
        log_wishart = -(dof * log_det + dof * d * 0.5 * math.log(2.0) + torch.lgamma(0.5 * (dof.unsqueeze(-1) - i)).sum(-1))
        if self.process:
            a, b = conc.unbind(-2)
            log_norm_weight = -(torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)).sum(-1)
        else:
            log_norm_weight = torch.lgamma(conc.sum(-1)) - torch.lgamma(conc).sum(-1)
        return -stats["entropy"] - log_wishart.sum(-1) - log_norm_weight - 0.5 * d * beta.log().sum(-1)


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------


class BayesianGaussianMixture(GaussianMixture):
    """Variational Bayesian Gaussian mixture, with scikit-learn's interface.

    Example:
        >>> import numpy as np
        >>> from torchem import BayesianGaussianMixture
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [4, 2], [12, 4], [10, 7]], dtype=float)
        >>> bgm = BayesianGaussianMixture(n_components=2, random_state=42).fit(X)
        >>> bgm.means_.round(2)
        array([[2.5 , 2.29],
               [8.46, 4.52]])
        >>> bgm.predict([[0, 0], [9, 3]])
        array([0, 1])

    A drop-in replacement for ``sklearn.mixture.BayesianGaussianMixture``: the same
    constructor arguments, methods and fitted attributes, and from the same initial
    responsibilities the same fit. The components' weights have a Dirichlet-process
    (stick-breaking) or Dirichlet prior, their means and precisions a Normal-Wishart prior;
    the posterior is approximated by variational inference, whose updates have EM's shape:
    the E-step is the Gaussian one plus expected log-weights and log-determinants, the M-step
    turns the Gaussian moments into posterior parameters. With a small
    ``weight_concentration_prior`` the unneeded components get weights near zero, so
    ``n_components`` is an upper bound rather than a choice.

    Everything :class:`GaussianMixture` adds to scikit-learn holds: ``B`` problems as
    ``X [B, N, D]``, the ``n_init`` restarts as one batch, CUDA, streamed data (the
    priors taken from the data cost one more pass), ``torch.distributed``, ``sample_weight``
    (a weight ``w`` counts as ``w`` repeated rows, in the priors too) and ``partial_fit``.

    Differences from a maximum-likelihood fit to keep in mind:

    * ``lower_bound_`` is scikit-learn's variational lower bound (without its constant terms),
      a sum over the samples, not the mean log-likelihood; ``tol`` applies to it.
    * ``predict_proba``, ``score_samples`` and ``score`` use the variational expected
      log-densities, as scikit-learn's do (so do ``bic`` and ``aic``, which scikit-learn's
      BayesianGaussianMixture does not have: compare models by ``lower_bound_`` instead);
      ``sample`` and ``to_distribution`` use the point estimate (``weights_``, ``means_``,
      ``covariances_``).
    * ``partial_fit`` runs stochastic variational inference: the running per-sample statistics
      stand for all the samples seen so far (``n_iter_`` batches; their total weight); the priors come from the
      first batch; ``lower_bound_`` is then the last batch's mean log-density, as for the
      other mixtures.

    Args:
        n_components: the most components ``K``.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        tol: convergence threshold on the change of the lower bound.
        reg_covar: non-negative value added to the diagonal of every covariance estimate.
        max_iter: the most iterations per restart.
        n_init: number of restarts; the one with the highest lower bound is kept.
        init_params: ``"kmeans"``, ``"k-means++"``, ``"random"`` or ``"random_from_data"``.
        weight_concentration_prior_type: ``"dirichlet_process"`` (stick-breaking) or
            ``"dirichlet_distribution"``.
        weight_concentration_prior: positive ``gamma_0``; ``None`` for ``1 / n_components``.
            Small values let components switch off.
        mean_precision_prior: positive ``beta_0``, how strongly the means are drawn to
            ``mean_prior``; ``None`` for 1.
        mean_prior: ``[D]`` (or ``[B, D]``) prior mean; ``None`` for the data's mean.
        degrees_of_freedom_prior: ``nu_0 > D - 1``; ``None`` for ``D``.
        covariance_prior: the Wishart prior's covariance: ``[D, D]`` for ``full`` and
            ``tied``, ``[D]`` for ``diag``, a positive number for ``spherical`` (a leading
            ``B`` for ``B`` problems); ``None`` for the data's (unbiased) covariance.
        random_state: ``None``, an int, a ``torch.Generator`` or a numpy random state.
        warm_start: continue from the previous fit's parameters (with one restart).
        verbose: 0 silent, 1 a summary, 2 progress every ``verbose_interval`` iterations.
        verbose_interval: iterations between progress lines.
        chunk_size: samples per chunk; ``None`` picks one from the available memory.
        nan_policy: what a NaN in the data means (scipy's name): ``"raise"`` (the default)
            refuses it; ``"omit"`` leaves out every row that holds one, with a warning that
            counts them; ``"marginalize"``: a NaN entry is missing at random and latent like
            the component: mean-field variational EM with ``q(z, x_m) q(pi) q(mu, Lambda)``.
            Its E-step reads each row's observed entries (``log q(z = k)``: the Gaussian
            log-density of the observed sub-vector under the mean precision ``E[Lambda_k]``
            plus the complete-data variational terms), its M-step expects the missing entries
            under ``q(x_m | x_o, k)`` (Gaussian, precision ``E[Lambda_k]_mm``: conditional
            means, and their covariance added to the second moments), and ``lower_bound_``
            includes the entropy of ``q(x_m | x_o, z)``, so it never decreases. The priors
            taken from the data and the initialisation read each missing entry at its
            feature's observed mean. ``predict``, ``predict_proba``, ``score_samples``,
            ``score``, ``bic`` and ``aic`` read each row's observed entries (under ``"omit"``
            too; a row with none is an error). See the user guide's "Missing values".

    Fitted attributes (a leading ``B`` for ``B`` problems): ``weights_`` ``[K]``,
    ``means_`` ``[K, D]``, ``covariances_``, ``precisions_``, ``precisions_cholesky_`` (shaped
    per ``covariance_type``, as :class:`GaussianMixture`'s), ``weight_concentration_`` (a pair
    of ``[K]`` arrays for a Dirichlet process, else ``[K]``), ``mean_precision_`` ``[K]``,
    ``degrees_of_freedom_`` (``[K]``; one number for ``tied``), the priors used
    (``weight_concentration_prior_``, ``mean_precision_prior_``, ``mean_prior_``,
    ``degrees_of_freedom_prior_``, ``covariance_prior_``), ``lower_bound_``, ``converged_``,
    ``n_iter_``.
    """

    _param_names = GaussianMixture._param_names + (
        "log_weight_concentration", "log_mean_precision", "log_degrees_of_freedom",
    )
    _fitted_attributes = GaussianMixture._fitted_attributes + (
        "weight_concentration_",
        "mean_precision_",
        "degrees_of_freedom_",
        "weight_concentration_prior_",
        "mean_precision_prior_",
        "mean_prior_",
        "degrees_of_freedom_prior_",
        "covariance_prior_",
    )
    _init_arguments = ()
    _variational = True  # a posterior, not a likelihood: fit_by_gradient refuses it

    def _component_shapes(self, k: int, d: int) -> dict[str, tuple]:
        concentration = (2, k) if self._process else (k,)  # a Beta per stick, or one Dirichlet
        return {**super()._component_shapes(k, d), "log_weight_concentration": concentration,
                "log_mean_precision": (k,), "log_degrees_of_freedom": (k,)}

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weight_concentration_prior_type: str = "dirichlet_process",
        weight_concentration_prior: float | None = None,
        mean_precision_prior: float | None = None,
        mean_prior=None,
        degrees_of_freedom_prior: float | None = None,
        covariance_prior=None,
        random_state=None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        chunk_size: int | None = None,
        nan_policy: str = "raise",
    ):
        super(GaussianMixture, self).__init__(
            n_components, tol=tol, max_iter=max_iter, n_init=n_init, init_params=init_params,
            random_state=random_state, warm_start=warm_start, verbose=verbose,
            verbose_interval=verbose_interval, chunk_size=chunk_size, nan_policy=nan_policy,
        )
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior

    # ----------------------------------------------------------------------------------------
    # Hyper-parameters and priors
    # ----------------------------------------------------------------------------------------

    @property
    def _process(self) -> bool:
        return self.weight_concentration_prior_type == "dirichlet_process"

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        if self.weight_concentration_prior_type not in PRIOR_TYPES:
            raise ValueError(
                f"weight_concentration_prior_type must be one of {list(PRIOR_TYPES)}; got "
                f"{self.weight_concentration_prior_type!r}."
            )
        for name, default in (("weight_concentration_prior", "1 / n_components"), ("mean_precision_prior", "1"),
                              ("degrees_of_freedom_prior", "n_features")):
            value = getattr(self, name)
            if value is None:
                continue
            if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
                    or not math.isfinite(float(value)) or value <= 0):
                raise ValueError(f"{name} must be a positive finite number (or None for {default}); got {value!r}.")

    def _structural_hyperparameters(self) -> dict:
        return {**super()._structural_hyperparameters(), "weight_concentration_prior_type": self.weight_concentration_prior_type}

    def _user_initial_params(self, n_features: int, n_problems: int) -> dict[str, Tensor]:
        return {}  # the variational parameters start from the initial responsibilities only

    def _prior_array(self, name: str, event_shape: tuple[int, ...], n_problems: int, d: int) -> Tensor:
        """A user's prior as a float64 ``[B, *event_shape]`` tensor, finite, or an error naming it."""
        t, _ = as_float_tensor(getattr(self, name), name)
        t = t.double()
        if tuple(t.shape) == tuple(event_shape):
            t = t.expand(n_problems, *event_shape)
        elif tuple(t.shape) != (n_problems, *event_shape):
            raise ValueError(
                f"{name} should have the shape {tuple(event_shape)} (or {(n_problems, *event_shape)} for "
                f"{n_problems} problems) for covariance_type={self.covariance_type!r} and {d} features; got {tuple(t.shape)}."
            )
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or infinity; pass finite values.")
        return t.clone()

    def _prepare_fit(self, source: Source) -> None:
        """The priors of this fit: the given ones, checked against the data, and the data's
        mean and covariance for those left ``None`` (one pass, over every rank)."""
        d, b, ct = source.n_features, source.n_problems, self._covariance
        dof = float(d) if self.degrees_of_freedom_prior is None else float(self.degrees_of_freedom_prior)
        if dof <= d - 1:
            raise ValueError(
                f"The parameter 'degrees_of_freedom_prior' should be greater than {d - 1}, but got {dof:.3f}: "
                "the Wishart prior needs more degrees of freedom than n_features - 1."
            )
        mean = cov = None
        if self.mean_prior is not None:
            mean = self._prior_array("mean_prior", (d,), b, d)
        if self.covariance_prior is not None:
            shape = ct.factor_shape(1, d)  # one component's covariance: the prior's shape
            cov = self._prior_array("covariance_prior", shape if ct.pooled else shape[1:], b, d)
            if not ct.is_symmetric(cov) or bool(ct.factor_from_covariances(cov)[1].any()):
                raise ValueError(f"'{ct.name} covariance_prior' should be {ct.precision_requirement}; check "
                                 "covariance_prior.")
        if mean is None or cov is None:
            data_mean, data_cov = _data_moments(_filled(source) if self.nan_policy == "marginalize" else source, ct)
            mean = data_mean if mean is None else mean
            cov = data_cov if cov is None else cov
        k = self._n_components
        self._priors = {
            "weight_concentration": 1.0 / k if self.weight_concentration_prior is None else float(self.weight_concentration_prior),
            "mean_precision": 1.0 if self.mean_precision_prior is None else float(self.mean_precision_prior),
            "degrees_of_freedom": dof,
            "mean": mean,
            "covariance": cov,
        }

    def _family(self, n_features: int, n_scale: float | None = None) -> _BayesianFamily:
        return _BayesianFamily(self.covariance_type, float(self.reg_covar), self._process, self._priors, n_scale,
                               self._marginalizes)

    def _online_step(self, source: Source, params: dict[str, Tensor], state: dict | None, batch_weight: np.ndarray):
        # stochastic variational inference: the running statistics, averages per unit of
        # weight, stand for the total weight seen so far: this batch's (a weight w counts as w
        # rows; over every rank) and the fitted posterior's, sum_k (beta_k - beta_0) (none
        # before a fit, or after an initialisation without EM iterations); [B, 1], per problem
        weight = torch.as_tensor(batch_weight, dtype=torch.float64).reshape(-1, 1)
        if self._past_weight() is not None:
            past = params["mean_precision"].double() - self._priors["mean_precision"]
            weight = weight + past.sum(-1).cpu()
        self._online_weight = weight
        return super()._online_step(source, params, state, batch_weight)

    def _online_family(self, n_features: int, batch_weight: np.ndarray) -> _BayesianFamily:
        return self._family(n_features, self._online_weight)

    def _extra_state(self) -> dict:
        p = self._priors
        return {"priors": {k: v if isinstance(v, Tensor) else torch.tensor(v, dtype=torch.float64) for k, v in p.items()}}

    def _load_extra_state(self, state: dict) -> None:
        p = state["priors"]
        self._priors = {k: (v if k in ("mean", "covariance") else float(v)) for k, v in p.items()}

    def _bytes_per_sample(self, n_features: int, n_restarts: int, itemsize: int) -> int:
        return super()._bytes_per_sample(n_features, n_restarts, itemsize) + 8 * n_restarts * self.n_components

    # ----------------------------------------------------------------------------------------
    # Parameters
    # ----------------------------------------------------------------------------------------

    def _store(self, params: dict[str, Tensor]) -> None:
        super()._store(params)
        self._set_parameter("log_weight_concentration", params["concentration"].log())
        self._set_parameter("log_mean_precision", params["mean_precision"].log())
        self._set_parameter("log_degrees_of_freedom", params["dof"].log())

    def _constrained(self) -> dict[str, Tensor]:
        return {
            **super()._constrained(),
            "concentration": self.log_weight_concentration.exp(),
            "mean_precision": self.log_mean_precision.exp(),
            "dof": self.log_degrees_of_freedom.exp(),
        }

    def _event_ndims(self) -> dict[str, int]:
        return {**super()._event_ndims(), "concentration": 2 if self._process else 1, "mean_precision": 1, "dof": 1}

    def _moment_points(self, params: dict[str, Tensor], origin: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Sigma points of the Gaussian moments ``(nk, xk, sk)`` the variational M-step turns
        into ``params``: ``nk = beta - beta_0``, ``xk`` from the posterior mean, and ``sk`` from
        the posterior scale, which is affine in ``sk`` (read off by evaluating the M-step's
        Wishart update at ``sk = 0`` and ``sk = 1``); the weights ``nk / sum(nk)``."""
        p, ct = self._priors, self._covariance
        beta, beta0 = params["mean_precision"].double(), p["mean_precision"]
        nk = (beta - beta0).clamp_min(10.0 * torch.finfo(torch.float64).eps)
        mean_prior = p["mean"].to(beta.device, torch.float64)[:, None, None, :]
        xk = (beta.unsqueeze(-1) * params["means"].double() - beta0 * mean_prior) / nk.unsqueeze(-1)
        cov = ct.covariances(params["prec_chol"].double())
        prior = p["covariance"].to(beta.device, torch.float64).unsqueeze(1)
        update = _WISHART[ct.name]

        def scale(sk):
            return update(nk, sk, xk - mean_prior, beta0, beta, prior, p["degrees_of_freedom"])[0]

        base = scale(torch.zeros_like(cov))
        sk = (cov - base) / (scale(torch.ones_like(cov)) - base)
        return self._sigma_points((nk / nk.sum(-1, keepdim=True)).log(), xk, sk, origin)

    @classmethod
    def _params_from_components(cls, comp, shape, kwargs):
        raise TypeError(
            "A BayesianGaussianMixture holds a posterior over its parameters, which a MixtureSameFamily does not "
            "give; build a GaussianMixture with GaussianMixture.from_distribution instead."
        )

    # ----------------------------------------------------------------------------------------
    # Fitted attributes
    # ----------------------------------------------------------------------------------------

    @property
    def weight_concentration_(self):
        """The weights' posterior: for a Dirichlet process the pair ``(a, b)`` of the sticks'
        Beta parameters, each ``[K]``; for a Dirichlet distribution its concentrations ``[K]``."""
        check_fitted(self)
        conc = self._attr(self.log_weight_concentration.detach().exp())
        if not self._process:
            return conc
        return conc[..., 0, :], conc[..., 1, :]

    @property
    def mean_precision_(self):
        """Posterior precisions ``beta_k`` of the means ``[K]`` (the means' covariances are
        the components' divided by them)."""
        check_fitted(self)
        return self._attr(self.log_mean_precision.detach().exp())

    @property
    def degrees_of_freedom_(self):
        """Degrees of freedom of the Wishart posteriors ``[K]`` (one number for ``tied``)."""
        check_fitted(self)
        dof = self.log_degrees_of_freedom.detach().exp()
        if not self._covariance.pooled:
            return self._attr(dof)
        dof = dof[..., 0]
        return float(dof) if dof.ndim == 0 and self._output_numpy else self._attr(dof)

    def _scalar_prior(self, name: str) -> float:
        check_fitted(self)
        return self._priors[name]

    @property
    def weight_concentration_prior_(self) -> float:
        """The weights' prior concentration used (``1 / n_components`` when not given)."""
        return self._scalar_prior("weight_concentration")

    @property
    def mean_precision_prior_(self) -> float:
        """The means' prior precision ``beta_0`` used."""
        return self._scalar_prior("mean_precision")

    @property
    def degrees_of_freedom_prior_(self) -> float:
        """The Wishart prior's degrees of freedom ``nu_0`` used."""
        return self._scalar_prior("degrees_of_freedom")

    def _tensor_prior(self, name: str):
        check_fitted(self)
        t = self._priors[name]
        t = t if self._stacked else t[0]
        if self._output_numpy:
            t = t.cpu().numpy()
            return float(t) if t.ndim == 0 else t
        return t

    @property
    def mean_prior_(self):
        """The means' prior mean used ``[D]`` (the data's mean when not given)."""
        return self._tensor_prior("mean")

    @property
    def covariance_prior_(self):
        """The Wishart prior's covariance used (the data's when not given): ``[D, D]`` for
        ``full`` and ``tied``, ``[D]`` for ``diag``, a number for ``spherical``."""
        return self._tensor_prior("covariance")


class _FilledSource:
    """``source`` with each missing entry (NaN) read as ``fill [B, D]``."""

    def __init__(self, source: Source, fill: Tensor):
        self._source, self._fill = source, fill

    def __getattr__(self, name):
        return getattr(self._source, name)

    def chunks(self, labels: bool = False):
        for start, X, *rest in self._source.chunks(labels):
            yield (start, torch.where(torch.isnan(X), self._fill.to(X.dtype).unsqueeze(-2), X), *rest)


def _filled(source: Source) -> Source:
    """The data the priors are taken from under ``nan_policy="marginalize"``: each missing
    entry at its feature's (weighted) observed mean, over every rank, as in the
    initialisation (one pass; ``source`` itself when nothing is missing)."""
    sums = None
    for _, X, w in source.chunks():
        o, x0 = M.observed(X)
        ow = o if w is None else o * w.double().unsqueeze(-1)
        part = [ow.sum(-2), (ow * x0).sum(-2), (1.0 - o).sum((-2, -1))]
        sums = part if sums is None else [a + b for a, b in zip(sums, part)]
    count, total, missing = all_reduce_sum(sums)
    if not bool((missing > 0).any()):
        return source
    if bool((count <= 0).any()):
        raise ValueError("A feature of X has no observed value (or only weight 0), so the priors cannot be taken from "
                         "the data; drop that feature, or pass mean_prior and covariance_prior.")
    return _FilledSource(source, total / count)


def _data_moments(source: Source, ct: C.CovarianceType) -> tuple[Tensor, Tensor]:
    """The data's (weighted) mean ``[B, D]`` and unbiased covariance (``[B, D, D]`` for
    ``full`` and ``tied``, ``[B, D]`` variances for ``diag``, ``[B]`` their mean for
    ``spherical``), in float64, over every rank: one pass of the Gaussian statistics of a
    single component, about the first chunk's mean."""
    moments, reduce = _DATA_COVARIANCE[ct.name]
    pooled = C.lookup(moments)
    b, d = source.n_problems, source.n_features
    X0 = next(iter(source.chunks()))[1]
    centre = X0.double().mean(-2)  # [B, D]
    if is_distributed():  # every rank's statistics must be taken about the same point
        centre = all_reduce_sum([centre])[0] / world_size()
    about = {
        "log_weights": centre.new_zeros(b, 1, 1),
        "means": centre[:, None, None, :],
        "prec_chol": pooled.identity_factor((b, 1), 1, d, centre.device, torch.float64),
    }
    family = _GaussianFamily(pooled.name, 0.0)
    stats, _, _ = accumulate(family, source, about, about=about,
                             resp=lambda start, X: X.new_ones(b, 1, X.shape[-2], 1, dtype=torch.float64))
    _, mean, cov = G.gaussian_moments(stats, about["means"], pooled.name, 0.0)
    n = stats["nk"][:, 0, 0]
    unbiased = torch.where(n > 1, n / (n - 1), torch.ones_like(n))
    mean, cov = mean[:, 0, 0], cov[:, 0, 0] * unbiased.reshape(b, *(1,) * (cov.ndim - 3))
    return mean, reduce(cov)
