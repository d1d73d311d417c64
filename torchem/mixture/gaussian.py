"""Gaussian mixture: scikit-learn's ``GaussianMixture`` as a batched ``nn.Module``."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch import distributions as D

from .._utils import check_fitted, check_n_samples
from ..data import TensorSource
from ..functional import covariance as C
from ..functional import gaussian as G
from ..functional import missing as M
from ..em import Family
from .base import BaseMixture

__all__ = ["GaussianMixture"]


class _GaussianFamily(Family):
    """The EM hooks of a Gaussian mixture (see :class:`torchem.em.Family`)."""

    parallel_chunks = True  # pure per-chunk hooks: an in-memory CPU pass runs on worker threads

    # the statistics of a chunk with missing entries also hold ``missing_entropy`` (see
    # torchem.functional.missing.gaussian_stats_missing): a variational family's lower bound reads it
    missing_entropy = False

    def __init__(self, covariance_type: str, reg_covar: float, marginalize: bool = False):
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.table = C.lookup(covariance_type)
        self.marginalize = marginalize  # NaN entries are missing at random (nan_policy="marginalize")
        self._workspaces: dict[torch.dtype, dict] = {}  # per working dtype (see prepare)

    def prepare(self, params, precise=False):
        means, prec_chol = params["means"], params["prec_chol"]
        if (torch.compiler.is_compiling() and not precise and means.dtype != torch.float64
                and not (means.requires_grad or prec_chol.requires_grad)):
            # Traced (torch.compile): the float64 fall-back cannot be a host-side decision, so
            # both precisions are prepared and log_prob picks per problem with torch.where,
            # where the eager decision would take float64 (no graph break, no host sync).
            eps = torch.finfo(means.dtype).eps
            need = eps * G.expansion_error_bound(means, prec_chol, self.covariance_type) > G.EXPANSION_TOLERANCE
            pair = [G.gaussian_prepare(means, prec_chol, self.covariance_type, working_dtype=w, data_dtype=means.dtype)
                    for w in (means.dtype, torch.float64)]
            # the float64 member reads the differences x - mu, as eager float64 does only when its
            # expansion would round (G.FLOAT64_EXPANSION_TOLERANCE, a host decision): never less
            # exact than eager, at the cost of [rows, K, D] differences per compiled call
            pair[1]["direct_means"] = means.double()
            return {"pair": pair, "need": need, "means": means, "prec_chol": prec_chol}
        prep = G.gaussian_prepare(
            means, prec_chol, self.covariance_type,
            working_dtype=torch.float64 if precise else None, data_dtype=means.dtype,
        )
        prep["means"] = means
        # chunk buffers reused through the pass and by the next passes of this family (one per
        # fit): a pass then allocates nothing chunk-sized, whatever state the allocator is in.
        # A precise pass (rare) takes its own, as callers may hold several of them at once.
        prep["workspace"] = {} if precise else self._workspaces.setdefault(prep["dtype"], {})
        prep["centred"] = precise  # a precise pass takes the moments about each component's mean
        # the soft E-step and the statistics in one pass (fused_e_step), where measured faster
        # (float32 on the CPU) and where this family's own hooks are the ones that would run
        prep["fusable"] = (not precise and prep["dtype"] == torch.float32 and means.device.type == "cpu"
                           and "direct_means" not in prep and not self.table.pooled
                           and not (means.requires_grad or prec_chol.requires_grad)
                           and all(getattr(type(self), hook) is getattr(_GaussianFamily, hook)
                                   for hook in ("log_prob", "log_weights", "stats")))
        return prep

    def log_prob(self, X, prepared):
        if self.marginalize and M.has_missing(X):
            cond = {"means": prepared["means"].double(), "prec_chol": prepared["prec_chol"].double()}
            lp, kept = M.gaussian_log_prob_missing(X, cond["means"], cond["prec_chol"], self.covariance_type, keep=True)
            return lp.to(X.dtype), M.Conditional(cond, kept)
        if "pair" in prepared:
            low, high = (G.gaussian_log_prob_prepared(X, p) for p in prepared["pair"])
            need = prepared["need"].reshape(prepared["need"].shape + (1,) * (low.ndim - prepared["need"].ndim))
            return torch.where(need, high.to(low.dtype), low), None
        return G.gaussian_log_prob_prepared(X, prepared, return_aux=True)

    def fused_e_step(self, X, prepared, log_weights, sample_weight):
        if not prepared.get("fusable") or (self.marginalize and M.has_missing(X)):
            return None
        return G.gaussian_e_step_stats(X, prepared, log_weights, sample_weight)

    def needs_precise_pass(self, stats, params) -> bool:
        """Ask the driver to redo a pass in float64, about each component's own mean, when its
        second moments cancelled (float32: beyond 1e-4 of a variance; float64: beyond 1e-9)."""
        if "centred" in stats:
            return False  # already the precise pass
        dtype = params["means"].dtype  # float64 data too: far components cancel there as well
        tolerance = G.FLOAT64_CANCELLATION_TOLERANCE if dtype == torch.float64 else G.CANCELLATION_TOLERANCE
        return G.stats_need_float64(stats, self.covariance_type, torch.finfo(dtype).eps, tolerance)

    def needs_recentring(self, stats, params) -> bool:
        """Whether moments about the reference means, rounded to float64's ``eps``, keep a
        variance only to worse than :data:`~torchem.functional.gaussian.RECENTRING_TOLERANCE`
        (the new means lie far from the reference, the error being ``eps`` times the squared
        distance)."""
        eps = torch.finfo(torch.float64).eps
        return G.stats_need_float64(stats, self.covariance_type, eps, G.RECENTRING_TOLERANCE)

    def portable_aux(self, aux):
        return aux if isinstance(aux, M.Conditional) else None

    def stats(self, X, resp, prepared, aux, sample_weight):
        if isinstance(aux, M.Conditional) or (self.marginalize and aux is None and M.has_missing(X)):
            cond = aux.params if isinstance(aux, M.Conditional) else prepared
            centred = bool(prepared.get("centred"))
            about = prepared["means"].double() if centred else G._centre(prepared["means"]).double()
            stats = M.gaussian_stats_missing(X, resp, cond["means"], cond["prec_chol"], self.covariance_type, about,
                                             sample_weight=sample_weight,
                                             kept=aux.kept if isinstance(aux, M.Conditional) else None,
                                             entropy=self.missing_entropy)
            if centred:  # the marker of the precise pass (see gaussian_stats_centred)
                stats["centred"] = stats["nk"].new_ones(stats["nk"].shape[:-1])
            return stats
        if prepared.get("centred"):
            return G.gaussian_stats_centred(X, resp, prepared["means"], self.covariance_type, sample_weight=sample_weight)
        return G.gaussian_stats(
            X, resp, prepared["means"], prepared["prec_chol"], self.covariance_type, sample_weight=sample_weight, aux=aux
        )

    def m_step(self, stats, params):
        log_weights, means, prec_chol, failed = G.gaussian_m_step(
            stats, params["means"], self.covariance_type, self.reg_covar
        )
        return {"log_weights": log_weights, "means": means, "prec_chol": prec_chol}, self.table.per_problem(failed)


class GaussianMixture(BaseMixture):
    """Gaussian mixture model fitted by EM, with scikit-learn's interface.

    Example:
        >>> import numpy as np
        >>> from torchem import GaussianMixture
        >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]], dtype=float)
        >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
        >>> gm.means_
        array([[10.,  2.],
               [ 1.,  2.]])
        >>> gm.predict([[0, 0], [12, 3]])
        array([1, 0])

    A drop-in replacement for ``sklearn.mixture.GaussianMixture``: the same constructor
    arguments, methods and fitted attributes, computed by stacked torch kernels on the CPU or
    on CUDA. numpy input gives numpy output; tensor input gives tensors on the input's device.

    Beyond scikit-learn:

    * ``X`` may be ``[B, N, D]``: ``B`` independent problems fitted at once; every fitted
      attribute then has a leading ``B``.
    * The ``n_init`` restarts run together, as one more dimension of the same tensors.
    * The data is read in chunks of ``chunk_size`` samples (chosen from the available memory
      when ``None``), so memory does not grow with ``N·K·D``.
    * The model is an ``nn.Module``: ``.to("cuda")`` makes it fit and predict on the GPU,
      ``.double()`` in float64; ``state_dict``/``load_state_dict`` save and restore a fitted
      model; ``forward(x)`` returns the per-sample log-likelihood.

    The fitted state is stored unconstrained (so it can later be trained by gradient):

    * ``logits`` ``[K]``: normalised log mixing weights;
    * ``loc`` ``[K, D]``: means;
    * ``precision_cholesky_unconstrained``: the precision Cholesky factor with its diagonal
      replaced by its log (``full`` ``[K, D, D]``, ``tied`` ``[D, D]``), or the log of the
      factor (``diag`` ``[K, D]``, ``spherical`` ``[K]``).

    ``weights_``, ``means_``, ``covariances_``, ``precisions_`` and ``precisions_cholesky_`` are
    derived from them.

    Args:
        n_components: number of mixture components ``K``.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        tol: convergence threshold on the change of the mean log-likelihood.
        reg_covar: non-negative value added to the diagonal of every covariance.
        max_iter: the most EM iterations per restart.
        n_init: number of restarts; the best is kept.
        init_params: ``"kmeans"``, ``"k-means++"``, ``"random"`` or ``"random_from_data"``.
        weights_init: ``[K]`` (or ``[B, K]``) initial weights.
        means_init: ``[K, D]`` (or ``[B, K, D]``) initial means.
        precisions_init: initial precisions, shaped as ``precisions_``.
        random_state: ``None``, an int, a ``torch.Generator`` or a numpy random state.
        warm_start: continue from the previous fit's parameters (with one restart).
        verbose: 0 silent, 1 a summary, 2 progress every ``verbose_interval`` iterations.
        verbose_interval: iterations between progress lines.
        chunk_size: samples per chunk; ``None`` picks one from the available memory.
        hard: classification EM: each E-step assigns every sample wholly to its most
            probable component (the lower bound is then the classification log-likelihood).
        nan_policy: what a NaN in the data means (scipy's name). ``"raise"`` (the default):
            it is refused. ``"omit"``: ``fit`` and ``partial_fit`` leave out every row that
            holds one, with a warning that counts them (a stream's rows as they are read;
            ``[B, N, D]`` data gives them weight 0). ``"marginalize"``: a NaN entry is missing
            at random: EM reads the density of each row's observed entries (for full and
            tied covariances, one factorisation per distinct missingness pattern of a block
            of rows) and expects the missing ones, given the observed ones and the component,
            in its statistics, so the fit is the maximum-likelihood fit of the observed data;
            the initialisation (``init_params``) runs with each missing entry at its
            feature's observed mean. Under either of the last two, ``predict``,
            ``predict_proba``, ``score_samples``, ``score``, ``bic`` and ``aic`` use the
            likelihood of each row's observed entries (a row with none is an error).
            Infinity is refused under every policy. See the user guide's "Missing values".
    """

    _param_names = ("logits", "loc", "precision_cholesky_unconstrained")
    _fitted_attributes = BaseMixture._fitted_attributes + (
        "means_",
        "covariances_",
        "precisions_",
        "precisions_cholesky_",
    )
    _init_methods = ("kmeans", "k-means++", "random", "random_from_data")
    _init_arguments = ("weights_init", "means_init", "precisions_init")
    _statistics_read_reference = True

    def _component_shapes(self, k: int, d: int) -> dict[str, tuple]:
        return {"logits": (k,), "loc": (k, d), "precision_cholesky_unconstrained": tuple(self._covariance.factor_shape(k, d))}

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
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        chunk_size: int | None = None,
        hard: bool = False,
        nan_policy: str = "raise",
    ):
        super().__init__(
            n_components,
            tol=tol,
            max_iter=max_iter,
            n_init=n_init,
            init_params=init_params,
            random_state=random_state,
            warm_start=warm_start,
            verbose=verbose,
            verbose_interval=verbose_interval,
            chunk_size=chunk_size,
            hard=hard,
            nan_policy=nan_policy,
        )
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init

    # ----------------------------------------------------------------------------------------
    # Hooks
    # ----------------------------------------------------------------------------------------

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        if self.covariance_type not in G.COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {list(G.COVARIANCE_TYPES)}; got {self.covariance_type!r}."
            )
        if isinstance(self.reg_covar, bool) or not isinstance(self.reg_covar, (int, float, np.floating, np.integer)):
            raise ValueError(f"reg_covar must be a non-negative number; got {self.reg_covar!r}.")
        if not math.isfinite(self.reg_covar) or self.reg_covar < 0:
            raise ValueError(f"reg_covar must be a finite non-negative number; got {self.reg_covar!r}.")

    @property
    def _covariance(self) -> C.CovarianceType:
        """The entry of :data:`~torchem.functional.covariance.COVARIANCE_TYPES` for
        ``covariance_type``."""
        return C.lookup(self.covariance_type)

    def _structural_hyperparameters(self) -> dict:
        return {"n_components": self.n_components, "covariance_type": self.covariance_type}

    def _family(self, n_features: int) -> _GaussianFamily:
        return _GaussianFamily(self.covariance_type, float(self.reg_covar), self._marginalizes)

    def _failure_message(self) -> str:
        return G.COLLAPSED_MESSAGE

    def _bytes_per_sample(self, n_features: int, n_restarts: int, itemsize: int) -> int:
        k, d = self.n_components, n_features
        # the feature work, log-probs, exponentials and responsibilities, the centred chunk.
        per = self._covariance.workspace_width(d) + 4 * k + d
        return itemsize * n_restarts * per

    def _n_parameters(self) -> int:
        return G.n_parameters(self.n_components, self.n_features_in_, self.covariance_type)

    def _store(self, params: dict[str, Tensor]) -> None:
        self._set_parameter("logits", params["log_weights"])
        self._set_parameter("loc", params["means"])
        self._set_parameter("precision_cholesky_unconstrained", self._covariance.to_unconstrained(params["prec_chol"]))

    def _constrained(self) -> dict[str, Tensor]:
        return {
            "log_weights": torch.log_softmax(self.logits, -1),
            "means": self.loc,
            "prec_chol": self._covariance.from_unconstrained(self.precision_cholesky_unconstrained),
        }

    # ----------------------------------------------------------------------------------------
    # User-given initial parameters
    # ----------------------------------------------------------------------------------------

    def _user_initial_params(self, n_features: int, n_problems: int) -> dict[str, Tensor]:
        k, d, ct = self.n_components, n_features, self._covariance
        user: dict[str, Tensor] = {}
        log_weights = self._init_weights(n_problems)
        if log_weights is not None:
            user["log_weights"] = log_weights
        if self.means_init is not None:
            user["means"] = self._init_array("means_init", (k, d), n_problems)
        if self.precisions_init is not None:
            p = self._init_array("precisions_init", ct.factor_shape(k, d), n_problems)
            invalid = f"'{ct.name} precision' should be {ct.precision_requirement}: check precisions_init."
            if not ct.is_symmetric(p):
                raise ValueError(invalid)
            prec_chol, failed = ct.factor_from_precisions(p)
            if bool(failed.any()):
                raise ValueError(invalid)
            user["prec_chol"] = prec_chol
        return user

    # ----------------------------------------------------------------------------------------
    # Initialisation
    # ----------------------------------------------------------------------------------------

    _init_smoothing = False  # chosen samples start as one-hot responsibilities, as in scikit-learn

    def _init_reference(self, source: TensorSource, n_init: int) -> dict[str, Tensor]:
        """The initial statistics are taken about the first chunk's mean (as ``K`` identical
        reference means, read by the M-step as the centre of the moments), in float64."""
        k, d = self.n_components, source.n_features
        X0 = next(iter(source.chunks()))[1]
        means = X0.double().mean(-2, keepdim=True).unsqueeze(1).expand(source.n_problems, n_init, k, d)
        eye = self._covariance.identity_factor(means.shape[:-2], k, d, source.device, torch.float64)
        return {"log_weights": means.new_zeros(means.shape[:-1]), "means": means, "prec_chol": eye}

    # ----------------------------------------------------------------------------------------
    # Fitted attributes
    # ----------------------------------------------------------------------------------------

    def _prec_chol(self) -> Tensor:
        return self._covariance.from_unconstrained(self.precision_cholesky_unconstrained.detach())

    @property
    def means_(self):
        """Component means ``[K, D]`` (``[B, K, D]``)."""
        check_fitted(self)
        return self._attr(self.loc)

    @property
    def precisions_cholesky_(self):
        """Cholesky factors ``U`` of the precisions (``P = U U^T``, upper triangular)."""
        check_fitted(self)
        return self._attr(self._prec_chol())

    @property
    def precisions_(self):
        """Precision matrices (inverse covariances), shaped per ``covariance_type``."""
        check_fitted(self)
        return self._attr(self._covariance.precisions(self._prec_chol()))

    @property
    def covariances_(self):
        """Covariances: ``full`` ``[K, D, D]``, ``tied`` ``[D, D]``, ``diag`` ``[K, D]``,
        ``spherical`` ``[K]`` (with a leading ``B`` for ``B`` problems)."""
        check_fitted(self)
        return self._attr(self._covariance.covariances(self._prec_chol()))

    # ----------------------------------------------------------------------------------------
    # Sampling
    # ----------------------------------------------------------------------------------------

    def rsample(self, n_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised samples ``x = mu_z + A_z eps`` (``A_z A_z^T = Sigma_z``,
        ``eps ~ N(0, I)``), differentiable with respect to the means and the covariance
        factors (``loc`` and ``precision_cholesky_unconstrained``).

        The component ``z`` is drawn from the mixing weights, a discrete choice with no
        pathwise derivative: the samples carry no gradient to ``logits`` (the same holds for
        ``torch.distributions.MixtureSameFamily``, which has no ``rsample`` at all). To train
        the weights, use the log-likelihood ``model(x)`` (for instance on these samples), or a
        score-function estimator.

        Args:
            n_samples: number of samples.
            generator: a ``torch.Generator`` on the model's device; ``None`` uses torch's
                global random state (fresh samples at every call, unlike ``sample``, which
                follows ``random_state``).

        Returns:
            a tensor ``[n_samples, D]`` (``[B, n_samples, D]`` for ``B`` problems), in random order.
        """
        check_fitted(self)
        n_samples = check_n_samples(n_samples)
        weights = torch.softmax(self.logits.detach(), -1)
        if not self._stacked:
            weights = weights.unsqueeze(0)
        labels = torch.multinomial(weights, n_samples, replacement=True, generator=generator)
        X = self._draw(labels, generator)
        return X if self._stacked else X.squeeze(0)

    def _draw(self, labels: Tensor, generator: torch.Generator | None) -> Tensor:
        """``[B, n, D]`` samples of the given components ``labels [B, n]``, differentiable with
        respect to ``loc`` and ``precision_cholesky_unconstrained``."""
        means = self.loc
        prec_chol = self._covariance.from_unconstrained(self.precision_cholesky_unconstrained)
        if not self._stacked:
            means, prec_chol = means.unsqueeze(0), prec_chol.unsqueeze(0)
        b, k, d = means.shape
        n = labels.shape[1]
        device = means.device
        gen_device = generator.device if generator is not None else device
        z = torch.randn(b, n, d, generator=generator, device=gen_device, dtype=means.dtype).to(device)
        noise = self._covariance.draw_noise(z, prec_chol, labels)
        return torch.gather(means, 1, labels.unsqueeze(-1).expand(b, n, d)) + noise

    # ----------------------------------------------------------------------------------------
    # torch.distributions
    # ----------------------------------------------------------------------------------------

    def _component_distribution(self, params: dict[str, Tensor]) -> D.Distribution:
        """``MultivariateNormal`` with ``scale_tril = U^{-T}`` for ``full`` and ``tied`` (``U``
        the precision Cholesky factor), ``Independent(Normal)`` for ``diag`` and ``spherical``."""
        return self._covariance.component_distribution(params["means"], params["prec_chol"])

    @classmethod
    def _params_from_components(cls, comp: D.Distribution, shape: tuple[int, ...], kwargs: dict) -> dict[str, Tensor]:
        """Components may be ``MultivariateNormal`` (``covariance_type`` ``"full"``, or ``"tied"``
        if every component has the same covariance) or ``Independent(Normal, 1)`` (``"diag"``,
        or ``"spherical"`` if each component's scales are equal); ``covariance_type`` is
        inferred (``full`` / ``diag``) unless given."""
        mvn = isinstance(comp, D.MultivariateNormal)
        if mvn:
            loc, inferred = comp.loc, "full"
        elif isinstance(comp, D.Independent) and isinstance(comp.base_dist, D.Normal) and comp.reinterpreted_batch_ndims == 1:
            loc, inferred = comp.base_dist.loc, "diag"
        else:
            raise TypeError(
                "The components must be MultivariateNormal or Independent(Normal, 1); got "
                f"{type(comp).__name__}. Use BernoulliMixture.from_distribution for Bernoulli/Binomial components."
            )
        ct = C.lookup(kwargs.setdefault("covariance_type", inferred))
        d = comp.event_shape[0]
        if mvn:  # U = L^{-T}
            prec_chol = ct.factor_from_scale_tril(comp.scale_tril.expand(*shape, d, d))
        else:
            prec_chol = ct.factor_from_scale(comp.base_dist.scale.expand(*shape, d))
        return {"means": loc.expand(*shape, d), "prec_chol": prec_chol}

    def _n_features_of(self, params: dict[str, Tensor]) -> int:
        return params["means"].shape[-1]

    def _far_log_resp(self, X, params):
        """Rows beyond ``1/sqrt(eps)`` times the components' spread (about the means' centre
        ``r``): the log-densities ``-q_k/2 + c_k`` there round away (or overflow) the terms that
        decide the posterior. In units ``s`` of the row's largest coordinate, ``x - r = s u``
        and ``q_k = s^2 u P_k u - 2 s u P_k m_k + m_k P_k m_k`` (``m_k = mu_k - r``): the
        components are ordered by the quadratic term, then the linear one (a tied covariance:
        equal quadratic terms), then the rest; differences that big are one-hot posteriors."""
        eps = torch.finfo(X.dtype).eps
        means = params["means"].double()
        ct = self._covariance
        k, d = means.shape[-2:]
        prec_chol = params["prec_chol"].double()
        prec = ct.dense_covariances(ct.precisions(prec_chol), k, d)  # [.., K, D, D]
        ref = means.mean(-2, keepdim=True)
        xc, mc = X.double() - ref, means - ref
        spread = torch.maximum(mc.abs().amax((-2, -1)), ct.dense_covariances(ct.covariances(prec_chol), k, d)
                               .diagonal(dim1=-2, dim2=-1).amax((-2, -1)).sqrt())
        s = xc.abs().amax(-1, keepdim=True)  # [.., n, 1]
        rows = (s > spread.reshape(spread.shape + (1, 1)) / eps**0.5).squeeze(-1)
        if not bool(rows.any()):
            return None
        s = s.clamp_min(1.0)
        u = xc / s
        pm = (prec @ mc.unsqueeze(-1)).squeeze(-1)  # [.., K, D]
        quad = torch.einsum("...nd,...kde,...ne->...nk", u, prec, u)
        lin = u @ pm.mT
        rest = (-0.5 * (mc * pm).sum(-1) + G.log_det_precision_cholesky(prec_chol, self.covariance_type, d)
                + params["log_weights"].double()).unsqueeze(-2)
        # the joint log-densities divided by s, then their differences times s (-inf where they overflow)
        z = -0.5 * (quad - quad.amin(-1, keepdim=True)) * s + lin + rest / s
        z = (z - z.amax(-1, keepdim=True)) * s
        return rows, torch.log_softmax(z, -1)

    def _moment_points(self, params: dict[str, Tensor], origin: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Sigma points: ``mu_k +- sqrt(D) a_i`` for the columns ``a_i`` of a square root of
        ``Sigma_k - reg_covar I`` (the M-step adds ``reg_covar`` back), each with weight
        ``w_k / (2 D)``: their weight, mean and covariance are exactly the component's.
        ``origin`` ``[B, R, K, D]``: each component's points less its own origin."""
        cov = self._covariance.covariances(params["prec_chol"].double())
        return self._sigma_points(params["log_weights"], params["means"], cov, origin)

    def _moment_points_about(self, params, about):
        # the points less each component's reference mean, about zero means: the re-centred
        # running statistics of partial_fit keep their precision however far the means lie
        # from the origin (points formed at 1e8 would round the covariances by eps * 1e8)
        points, weights = self._moment_points(params, about["means"].double())
        return points, weights, {**about, "means": torch.zeros_like(about["means"])}

    def _sigma_points(self, log_weights: Tensor, means: Tensor, cov: Tensor, origin: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The moment points of components of these weights, means and covariances (each
        component's less its ``origin``, when given)."""
        means = means.double() if origin is None else means.double() - origin
        *lead, k, d = means.shape
        root = self._covariance.square_roots(cov, float(self.reg_covar), k, d)  # [..., K, D, D], columns a_i
        offsets = math.sqrt(d) * root.mT  # [..., K, D, D]: row i is sqrt(D) a_i
        centre = means.unsqueeze(-2)
        points = torch.cat([centre + offsets, centre - offsets], -2).reshape(*lead, k * 2 * d, d)
        weights = log_weights.double().exp() / (2 * d)  # [..., K]
        onehot = torch.eye(k, dtype=torch.float64, device=means.device).repeat_interleave(2 * d, 0)  # [K 2D, K]
        return points, onehot * weights.unsqueeze(-2)

    def _event_ndims(self) -> dict[str, int]:
        """Dimensions of one problem's parameters (without the batch and restart dims)."""
        return {"log_weights": 1, "means": 2, "prec_chol": self._covariance.event_ndim}
