"""The mixture layer: what every mixture family adds to the shared estimator layer.

A family subclasses :class:`BaseMixture` and fills the hooks declared abstract here and in
:class:`torchem.estimator.EMEstimator` (see the page "Write your own family"); the fit
sequence, ``partial_fit``, inference over blocks, the state dict and gradients are inherited:

* ``_family(n_features)``: the driver's hooks (:class:`torchem.em.Family`).
* ``_initial_params(source, n_init, generator)`` and ``_user_initial_params(n_features, B)``:
  starting parameters from the data and from the constructor.
* ``_store(params)`` / ``_constrained()`` / ``_event_ndims()``: the one parametrisation,
  constrained for the driver, unconstrained on the module.
* ``_n_parameters()``, ``_moment_points(params)``, ``_draw(labels, generator)``,
  ``_component_distribution(params)``, ``_params_from_components(...)``, ``_n_features_of``.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch import distributions as D

from ..estimator import EMEstimator
from .._utils import InputKind, as_float_tensor, check_data, check_fitted, check_int, check_n_samples, check_real, make_generator, to_output
from ..data import HOW_TO_WEIGHT, Source, TensorSource, check_batch_weight, check_sample_weight, inference_blocks
from ..em import STEPWISE_SCHEDULE, Family, accumulate, step_size, stepwise_update
from ..functional import missing as M
from ..functional.estep import log_responsibilities
from ..functional.kmeans import assign
from ..init import kmeans_plusplus, labelled_mass, lloyd, random_distinct_indices, random_resp, seeded_kmeans_plusplus

__all__ = ["BaseMixture"]

#: The values of ``nan_policy`` (scipy's name): refuse NaN, leave out the rows that hold it,
#: or treat NaN entries as missing at random and marginalise them.
NAN_POLICIES = ("raise", "omit", "marginalize")

# Lloyd iterations run after k-means++ seeding by init_params="kmeans".
_KMEANS_INIT_ITER = 10


class BaseMixture(EMEstimator):
    """Shared behaviour of torchem's mixture models (not used directly).

    Shapes: a model fitted on ``X [N, D]`` holds parameters for one problem; a model fitted on
    ``X [B, N, D]`` holds ``B`` independent problems, and every fitted attribute and every
    per-sample output gains a leading ``B``.
    """

    _fitted_attributes: tuple[str, ...] = (
        "converged_",
        "n_iter_",
        "lower_bound_",
        "lower_bounds_",
        "n_features_in_",
        "weights_",
    )
    _init_methods: tuple[str, ...] = ()
    #: Constructor arguments that, all given, determine every parameter (the second one
    #: fixes the shape), for gradient training without a fit.
    _init_arguments: tuple[str, ...] = ()

    def __init__(
        self,
        n_components: int,
        *,
        tol: float,
        max_iter: int,
        n_init: int,
        init_params: str,
        random_state,
        warm_start: bool,
        verbose: int,
        verbose_interval: int,
        chunk_size: int | None,
        hard: bool = False,
        nan_policy: str = "raise",
    ):
        super().__init__()
        self.n_components = n_components
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.chunk_size = chunk_size
        self.hard = hard
        self.nan_policy = nan_policy

    # ----------------------------------------------------------------------------------------
    # Hooks of the shared layer
    # ----------------------------------------------------------------------------------------

    @property
    def _n_components(self) -> int:
        return int(self.n_components)

    def _n_restarts(self) -> int:
        return int(self.n_init)

    def _validate_hyperparameters(self) -> None:
        self.n_components = check_int(self.n_components, "n_components", 1)
        check_real(self.tol, "tol")
        check_int(self.max_iter, "max_iter", 0)
        check_int(self.n_init, "n_init", 1)
        check_int(self.verbose, "verbose", 0)
        check_int(self.verbose_interval, "verbose_interval", 1)
        if self.chunk_size is not None:
            check_int(self.chunk_size, "chunk_size", 1)
        for flag in ("hard", "warm_start"):  # (a string such as "False" would read as true)
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise ValueError(f"{flag} must be True or False; got {getattr(self, flag)!r}.")
        if not isinstance(self.nan_policy, str) or self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {list(NAN_POLICIES)}; got {self.nan_policy!r}.")
        if self.init_params not in self._init_methods:
            raise ValueError(
                f"init_params must be one of {list(self._init_methods)}; got {self.init_params!r}."
            )

    def _check_initial_values(self, n_features: int, n_problems: int) -> None:
        self._user_initial_params(n_features, n_problems)

    @property
    def _marginalizes(self) -> bool:
        return self.nan_policy in ("omit", "marginalize")

    # ----------------------------------------------------------------------------------------
    # Hooks of a mixture family
    # ----------------------------------------------------------------------------------------

    #: Chosen-sample initialisations ("k-means++", "random_from_data") give each component half
    #: of its sample and half of the whole data, so that discrete families start with no
    #: probability at 0 or 1; ``False``: the sample alone (scikit-learn's rule for Gaussians).
    _init_smoothing = True
    #: Whether the family's statistics are taken about parameters (a Gaussian's moments about
    #: its means); partial_fit then re-centres its running statistics after every step.
    _statistics_read_reference = False

    def _initial_params(self, source: TensorSource, n_init: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Starting parameters ``[B, R, ...]`` from the data: the M-step of the initial
        responsibilities (:meth:`_init_responsibilities`), as scikit-learn initialises; the
        user's initial values replace them afterwards (:meth:`_user_initial_params`)."""
        resp_fn = self._labelled_init(source, n_init, generator)
        return self._m_step_from(source, resp_fn, self._init_reference(source, n_init))

    def _labelled_init(self, source: TensorSource, n_init: int, generator: torch.Generator):
        """:meth:`_init_responsibilities`, seeded by the source's partial labels: a labelled
        row is one-hot at its class. With ``init_params="kmeans"`` (seeded k-means: clusters
        with labelled rows start at their mean and keep those rows, so component ``k`` is
        class ``k``) and ``"random"``, every unlabelled row takes the usual initialisation's
        responsibilities over all the components, so a class with one labelled row starts
        with the rows near it, not as a ``reg_covar`` spike of weight ``1/N``. With the
        chosen-sample methods (``"k-means++"``, ``"random_from_data"``, whose components
        start from single rows anyway) a component with labelled rows starts from them alone
        and the others take the usual initialisation's responsibilities of the unlabelled
        rows. When every component has labelled rows those methods (and ``"kmeans"``, whose
        seeds are then the labelled means) draw nothing at random."""
        labels = source.labels
        if labels is None:
            return self._init_responsibilities(source, n_init, generator)
        k, b = self.n_components, source.n_problems
        free = (labelled_mass(source, k) == 0).double()[:, None, None, :]  # [B, 1, 1, K]: components without labelled rows
        spread = self.init_params in ("kmeans", "random")  # unlabelled rows over every component
        base = self._init_responsibilities(source, n_init, generator) if spread or bool(free.any()) else None

        def resp_fn(start, X):
            lab = labels[:, start : start + X.shape[-2]]
            one = torch.nn.functional.one_hot(lab.clamp_min(0), k).double().unsqueeze(1)  # [B, 1, n, K]
            known = (lab >= 0)[:, None, :, None]
            rest = torch.zeros_like(one) if base is None else base(start, X) if spread else base(start, X) * free
            return torch.where(known, one, rest).expand(b, n_init, lab.shape[-1], k)

        return resp_fn

    def _init_reference(self, source: TensorSource, n_init: int) -> dict[str, Tensor] | None:
        """Parameters ``[B, R, ...]`` about which the initial statistics are taken, for a family
        whose statistics or M-step read them (Gaussians centre their moments); ``None``."""
        return None

    def _m_step_from(self, source: TensorSource, resp_fn, about: dict[str, Tensor] | None) -> dict[str, Tensor]:
        """Parameters from given responsibilities ``resp_fn(start, X) -> [B, R, n, K]``: one
        pass of :func:`torchem.em.accumulate` (in float64, on data every rank holds alike), then
        the family's M-step."""
        family = self._family(source.n_features)
        stats, _, _ = accumulate(family, source, about or {}, about=about, resp=resp_fn, over_ranks=False)
        params, failed = family.m_step(stats, about or {})
        if about is not None and family.needs_recentring(stats, about):
            # Moments about the reference cancelled (a chosen sample far from it, e.g. a single
            # row 1e5 away whose variance is reg_covar): take them again about the new means.
            about = {k: v.double() for k, v in params.items()}
            stats, _, _ = accumulate(family, source, about, about=about, resp=resp_fn, precise=True, over_ranks=False)
            params, failed = family.m_step(stats, about)
        if bool(failed.any()):
            raise ValueError(self._failure_message())
        return params

    @abstractmethod
    def _user_initial_params(self, n_features: int, n_problems: int) -> dict[str, Tensor]:
        """The constructor's initial values, validated against data of ``n_features`` features
        and ``n_problems`` problems, as constrained parameters (float64, shaped for one problem
        or ``[B, ...]``); an empty dict when none were given. Use :meth:`_init_array` and
        :meth:`_init_weights` for the checks every family shares."""

    @abstractmethod
    def _event_ndims(self) -> dict[str, int]:
        """Dimensions of one problem's constrained parameters, by name."""

    @abstractmethod
    def _n_parameters(self) -> int:
        """Number of free parameters (for BIC and AIC)."""

    @abstractmethod
    def _moment_points(self, params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(points [B, R, M, D], weights [B, R, M, K])``: weighted points, each wholly in one
        component, whose statistics give back ``params`` through the M-step (``partial_fit``
        after ``fit`` starts its running statistics from them)."""

    def _bytes_per_sample(self, n_features: int, n_restarts: int, itemsize: int) -> int:
        """Working memory per sample of a chunk, for the automatic chunk size."""
        k = self.n_components
        return itemsize * n_restarts * (4 * k + 3 * n_features) + 16 * n_restarts * k

    @abstractmethod
    def _n_features_of(self, params: dict[str, Tensor]) -> int:
        """Number of features of constrained parameters."""

    # ----------------------------------------------------------------------------------------
    # Initial values: the checks and initialisations every family shares
    # ----------------------------------------------------------------------------------------

    def _init_array(self, name: str, event_shape: tuple[int, ...], n_problems: int) -> Tensor:
        """The constructor argument ``name`` as a float64 tensor of shape ``event_shape`` (one
        problem) or ``(n_problems, *event_shape)``, finite; scikit-learn's wording otherwise."""
        t, _ = as_float_tensor(getattr(self, name), name)
        t = t.double()
        shapes = [tuple(event_shape), (n_problems, *event_shape)]
        if tuple(t.shape) not in shapes:
            raise ValueError(
                f"The parameter '{name.removesuffix('_init')}' should have the shape of {tuple(event_shape)}, but got "
                f"{tuple(t.shape)}. Pass {name} of that shape (or {(n_problems, *event_shape)} for B problems)."
            )
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or infinity; pass finite initial values.")
        return t

    def _init_weights(self, n_problems: int) -> Tensor | None:
        """``log(weights_init)`` checked as scikit-learn checks it (in ``[0, 1]``, summing to
        one per problem), or ``None`` when not given."""
        if self.weights_init is None:
            return None
        w = self._init_array("weights_init", (self.n_components,), n_problems)
        if bool((w < 0).any()) or bool((w > 1).any()):
            raise ValueError(
                f"The parameter 'weights' should be in the range [0, 1], but got min value {float(w.min()):.5f}, "
                f"max value {float(w.max()):.5f} (weights_init)."
            )
        sums = w.sum(-1).reshape(-1)
        bad = (sums - 1.0).abs() > 1e-6
        if bool(bad.any()):
            raise ValueError(
                "The parameter 'weights' should be normalized, but got sum(weights) = "
                f"{float(sums[int(bad.nonzero()[0, 0])]):.5f} (weights_init): divide it by its sum."
            )
        return w.log()

    def _init_reads_data(self) -> bool:
        """A start the constructor's initial values give whole reads no data, so a large fit
        draws no initial sample for it (a pass over the data saved)."""
        return not (self._init_arguments and all(getattr(self, a) is not None for a in self._init_arguments))

    def _starting_params(self, source: TensorSource, n_init: int, generator: torch.Generator) -> dict[str, Tensor]:
        """``[B, R, ...]`` starting parameters in the source's dtype: the user's initial values
        where given, the family's initialisation from the data for the rest."""
        b = source.n_problems
        user = self._user_initial_params(source.n_features, b)
        event = self._event_ndims()
        params: dict[str, Tensor] = {}
        if len(user) < len(event):
            params = dict(self._initial_params(self._filled_for_init(source), n_init, generator))
        for key, value in user.items():
            if value.ndim == event[key]:
                value = value.unsqueeze(0)
            value = value.unsqueeze(1).to(device=source.device)
            params[key] = value.expand(b, n_init, *value.shape[2:])
        return {key: value.to(source.dtype).contiguous() for key, value in params.items()}

    def _filled_for_init(self, source: TensorSource) -> TensorSource:
        """The initial sample with each missing entry (NaN) replaced by :meth:`_init_fill`
        (``nan_policy="marginalize"``): ``init_params`` then works as on complete data, and
        EM, which marginalises the missing entries, starts from there."""
        X = source.X
        if not self._marginalizes or not M.has_missing(X):
            return source
        fill = self._init_fill(X, source.sample_weight)  # [B, D]
        if bool(torch.isnan(fill).any()):
            d = int(torch.isnan(fill).any(0).nonzero()[0, 0])
            raise ValueError(f"Feature {d} of X has no observed value in the initialisation sample, so it cannot be "
                             "estimated; drop that feature (or pass initial parameters).")
        X = torch.where(torch.isnan(X), fill.to(X.dtype).unsqueeze(-2), X)
        return TensorSource(X, device=source.device, dtype=source.dtype, sample_weight=source.sample_weight,
                            chunk_size=source.chunk_size, labels=getattr(source, "labels", None))

    def _init_fill(self, X: Tensor, sample_weight: Tensor | None) -> Tensor:
        """``[B, D]`` value that stands for a missing entry during initialisation: the
        feature's (weighted) mean of its observed entries; NaN where it has none."""
        o, x0 = M.observed(X)
        w = o if sample_weight is None else o * sample_weight.double().unsqueeze(-1)
        return (w * x0).sum(-2) / w.sum(-2)

    def _chosen_samples(self, source: TensorSource, n_init: int, generator: torch.Generator) -> Tensor:
        """``[B, R, K]`` sample indices for ``init_params`` ``"k-means++"`` or ``"random_from_data"``."""
        if self.init_params == "k-means++":
            return kmeans_plusplus(source.X, self.n_components, n_init, generator, sample_weight=source.sample_weight)
        b, n = source.n_problems, source.n_samples
        return random_distinct_indices(n, self.n_components, (b, n_init), generator, source.device)

    def _init_responsibilities(self, source: TensorSource, n_init: int, generator: torch.Generator):
        """Initial responsibilities as a function ``resp_fn(start, X [B, 1, n, D]) -> [B, R, n, K]``
        (float64) of each chunk: hard k-means labels (k-means++ then a few Lloyd steps; seeded
        k-means, :func:`~torchem.init.seeded_kmeans_plusplus`, when the source has labels) for
        ``"kmeans"``, random ones for ``"random"``, and one-hot at the chosen samples for
        ``"k-means++"`` and ``"random_from_data"`` (half of it, the other half spread over the
        data, with :attr:`_init_smoothing`)."""
        k, b = self.n_components, source.n_problems
        method = self.init_params
        if method == "kmeans":
            # (seeded k-means with labels: labelled clusters start at their means, and their
            # rows stay in them through the Lloyd steps)
            centers = lloyd(source, seeded_kmeans_plusplus(source, k, n_init, generator), _KMEANS_INIT_ITER)

            def resp_fn(start, X):
                return torch.nn.functional.one_hot(assign(X, centers)[0], k).double()

        elif method == "random":
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())

            def resp_fn(start, X):
                return random_resp(seed, start, (b, n_init, X.shape[-2], k), source.device, torch.float64)

        else:
            idx = self._chosen_samples(source, n_init, generator)  # [B, R, K]
            # the chosen row counts as one sample even when it carries a weight (as one copy of
            # a repeated row would); the smoothing share is spread over the whole weight
            own = torch.full(idx.shape, 0.5 if self._init_smoothing else 1.0, dtype=torch.float64, device=source.device)
            if source.sample_weight is not None:
                w = torch.gather(source.sample_weight.double(), 1, idx.reshape(b, -1)).reshape(idx.shape)
                own = torch.where(w > 0, own / w.clamp_min(1e-300), own)
            share = 0.5 / source.total_weight().reshape(b, 1, 1, 1) if self._init_smoothing else None

            def resp_fn(start, X):
                pos = torch.arange(start, start + X.shape[-2], device=source.device)
                chosen = (pos[None, None, :, None] == idx.unsqueeze(-2)).to(torch.float64) * own.unsqueeze(-2)
                return chosen if share is None else chosen.add_(share)

        return resp_fn

    # ----------------------------------------------------------------------------------------
    # Fitting
    # ----------------------------------------------------------------------------------------

    def fit(self, X, y=None, sample_weight=None, *, labels=None, callback=None):
        """Estimate the parameters by EM.

        Runs ``n_init`` restarts as one batch (or continues from the current parameters when
        ``warm_start`` and already fitted) and keeps the restart with the highest lower bound.

        Args:
            X: ``[N, D]`` data, or ``[B, N, D]`` for ``B`` independent problems: a numpy array
                or a tensor on any device; an ``np.memmap`` (or, for a model on CUDA, a host
                array larger than half the free device memory) is streamed chunk by chunk;
                or a re-iterable of ``[n, D]`` batches, e.g. a ``torch.utils.data.DataLoader``,
                read once per iteration: each batch is ``X``, ``(X,)`` or a mapping
                ``{"X": X, "sample_weight": w}`` (weights are read from that key only; a batch
                of two or more items, such as ``TensorDataset(X, y)``'s, is refused, since
                labels are not used). The
                initialisation (``init_params``) runs on a uniform sample of
                :data:`torchem.data.INIT_SAMPLE_SIZE` samples (all of them when there are
                fewer), for in-memory and streamed data alike, so a streamed fit equals the
                in-memory fit and large data is not scanned by k-means++. Under
                ``torch.distributed`` each rank passes its own shard (see
                :mod:`torchem.distributed`).
            y: ignored (scikit-learn compatibility).
            sample_weight: optional ``[N]`` (or ``[B, N]``) non-negative weights: a weight of
                ``w`` counts as the row repeated ``w`` times (the statistics, the lower bound
                and k-means++ seeding are weighted). For a re-iterable ``X``, yield
                ``{"X": X, "sample_weight": w}`` batches instead.
            labels: optional ``[N]`` (or ``[B, N]``) partial labels, whole numbers:
                ``labels[i] = -1`` leaves row ``i`` unlabelled, ``labels[i] = k`` fixes it to
                component ``k`` (its responsibilities are one-hot in every E-step, its
                log-likelihood term is ``log w_k + log p_k(x)``, so ``lower_bound_`` is the
                semi-supervised log-likelihood); the initialisation is seeded by them (seeded
                k-means for ``init_params="kmeans"``), so component ``k`` is class ``k`` (see
                the guide page "Partly labelled data"). For a re-iterable ``X``, yield
                ``{"X": X, "labels": l}`` batches instead. Never read from ``y``, which
                scikit-learn's tools pass.
            callback: optional ``callback(iteration, lower_bound, model) -> bool`` called after
                every EM iteration, with the lower bound of the best restart (a float; ``[B]``
                for a fit of ``B`` problems) and this model holding that restart's current parameters
                (so ``model.score(X_val)`` works); returning ``True`` stops the fit.

        Returns:
            ``self``.
        """
        self._fit(X, sample_weight, callback=callback, labels=labels)
        return self

    def fit_predict(self, X, y=None, sample_weight=None, *, labels=None):
        """Fit, then return the component of each sample (``fit(X).predict(X)``, computed
        from the final parameters; a labelled row gets the most probable component, which
        need not be its label)."""
        self._fit(X, sample_weight, labels=labels)
        return self.predict(X)

    def initialize(self, X):
        """Set the initial parameters from ``X`` by ``init_params`` (or the given initial
        values) without any EM iteration: a starting point for gradient fitting. Returns
        ``self``."""
        self._fit(X, max_iter=0)
        return self

    # ----------------------------------------------------------------------------------------
    # Online (stepwise) EM
    # ----------------------------------------------------------------------------------------

    #: ``(t0, kappa)`` of partial_fit's step size ``eta_t = (t + t0) ** -kappa`` (see
    #: :func:`torchem.em.step_size`); set it on an instance to change the schedule.
    stepwise_schedule = STEPWISE_SCHEDULE

    def partial_fit(self, X, y=None, sample_weight=None, *, labels=None):
        """One step of online (stepwise) EM on a batch, for data that arrives as a stream.

        The model keeps running sufficient statistics ``s``, normalised per sample. For the
        ``t``-th batch it computes responsibilities with the current parameters, the batch's
        normalised statistics ``s_t``, then ``s <- (1 - eta_t) s + eta_t s_t`` with
        ``eta_t = (t + t0) ** -kappa`` (``eta_1 = 1``; ``(t0, kappa) = stepwise_schedule``,
        ``(2, 0.6)`` by default), and the M-step reads ``s`` (Cappé & Moulines, 2009; Liang &
        Klein, 2009). On a stationary stream the parameters approach the batch EM fit's.

        The first call initialises the model from its batch (with ``init_params``, so that
        batch needs at least ``n_components`` samples), unless the model is already fitted,
        in which case the stream continues from the fitted parameters: their sufficient
        statistics start the running average, counted as the first ``ceil(W_fit / w)`` steps,
        per problem (``W_fit`` the weight of the samples the model summarises, ``w`` this
        batch's: their numbers of samples when unweighted, as a weight ``w`` counts as ``w``
        samples), so a small batch moves a model fitted on much data only a little (a model
        built without a fit counts as one step).
        A later ``fit`` restarts from scratch. ``n_iter_`` counts the batches seen,
        ``lower_bound_`` is the mean log-likelihood of the last batch under the parameters
        before its update and ``converged_`` stays False. Under ``torch.distributed`` every
        rank passes its own part of each batch: the statistics are summed over the ranks (and
        the first batch's parts, gathered, initialise the model), so all ranks keep identical
        parameters.

        Args:
            X: ``[n, D]`` (or ``[B, n, D]``) batch, numpy or tensor.
            y: ignored.
            sample_weight: optional ``[n]`` weights.
            labels: optional ``[n]`` partial labels of the batch, as ``fit`` takes them (a
                first batch's labelled rows also seed the initialisation).

        Returns:
            ``self``.
        """
        return super().partial_fit(X, y, sample_weight, labels=labels)

    def _online_step(self, source: Source, params: dict[str, Tensor], state: dict | None, batch_weight: np.ndarray):
        b = source.n_problems
        if state is None:
            # "t": the steps taken, per problem
            state = {"t": [0] * b, "running": None, "reference": {k: v.double() for k, v in params.items()}}
            if self._fitted:
                # The fitted model is the stream's past: its statistics start the running
                # average, weighted as the first ceil(W_fit / w) batches of this batch's
                # weight w, per problem (W_fit: the fit's weight, its samples when unweighted).
                state["running"] = self._implied_statistics(state["reference"])
                past = self._past_weight()
                if past is None:
                    state["t"] = [1] * b
                else:
                    # (at most 2^62 steps: a fit that outweighs the batch past float range takes
                    # steps of about 1e-11)
                    state["t"] = [max(1, math.ceil(min(p / w, 2.0**62))) if w > 0 else 1
                                  for p, w in zip(past.tolist(), batch_weight.tolist())]
        if isinstance(state["t"], int):  # a stream pickled by a torchem with one count for all problems
            state["t"] = [state["t"]] * b
        state["t"] = [t + 1 for t in state["t"]]
        eta = torch.tensor([step_size(t, self.stepwise_schedule) for t in state["t"]], dtype=torch.float64,
                           device=source.device)
        family, hard = self._online_family(source.n_features, batch_weight), bool(self.hard)
        new, running, failed, ll = stepwise_update(family, source, params, state["reference"], state["running"], eta, hard=hard)
        if self._statistics_read_reference and not bool(failed.any()) and family.needs_recentring(running, state["reference"]):
            # The new parameters lie so far from the reference that the batch's statistics
            # about it lost eps * distance^2 (a start far from its cluster): take them again,
            # with the same responsibilities, about the new parameters, and the running
            # statistics too (the old parameters' moments about the new ones: the two groups
            # then combine as Chan et al.'s parallel moments, with no cancelling terms).
            about = {k: v.double() for k, v in new.items()}
            past = None if state["running"] is None else self._implied_statistics(state["reference"], about=about)
            new, running, failed, ll = stepwise_update(family, source, params, about, past, eta, hard=hard)
        if bool(failed.any()):
            raise ValueError(self._failure_message())
        if self._statistics_read_reference:
            # Statistics about a fixed reference lose eps * |mean - reference|^2 to rounding
            # once a component has moved far from where the stream began (a rough means_init,
            # a stream that reaches a far cluster later): carry the running average as the
            # statistics about the new parameters themselves, which have the same M-step.
            state["reference"] = {k: v.double() for k, v in new.items()}
            running = self._implied_statistics(state["reference"])
        state["running"] = running
        return new, ll, state

    def _online_family(self, n_features: int, batch_weight: np.ndarray) -> Family:
        """The hooks of a ``partial_fit`` step on a batch of weight ``batch_weight [B]`` (a
        variational family scales its per-sample running statistics by the weight seen);
        :meth:`_family`."""
        return self._family(n_features)

    def _moment_points_about(self, params: dict[str, Tensor], about: dict[str, Tensor]):
        """``(points, weights, about)``: :meth:`_moment_points` of ``params`` and the parameters
        their statistics are to be taken about. A family whose statistics read a reference may
        return the points less that reference, and the reference moved to the origin (the same
        statistics, without the rounding of points far from the origin)."""
        return (*self._moment_points(params), about)

    def _implied_statistics(self, params: dict[str, Tensor], about: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Per-sample (normalised) sufficient statistics whose M-step gives back ``params``
        (``[B, R, ...]``, float64), computed about ``params`` themselves (or about ``about``,
        parameters of the same shapes): the statistics of a small weighted point set with the
        model's moments (:meth:`_moment_points`)."""
        points, resp, about = self._moment_points_about(params, params if about is None else about)  # [B, R, M, D], [B, R, M, K]
        b, r, m, d = points.shape
        k = resp.shape[-1]
        # the restarts ride in the batch dimension of a source of points; in chunks, since a
        # full covariance's features are ~D^2/2 wide (all 2 K D sigma points at once would
        # take K D^3 memory)
        flat = points.reshape(b * r, m, d)
        source = TensorSource(flat, device=flat.device, dtype=torch.float64, chunk_size=max(1, 2**22 // (d * d)))
        flat_params = {key: v.reshape(b * r, 1, *v.shape[2:]) for key, v in about.items()}
        given = resp.reshape(b * r, 1, m, k)
        stats, _, _ = accumulate(self._family(d), source, flat_params, about=flat_params,
                                 resp=lambda start, X: given[..., start : start + X.shape[-2], :], over_ranks=False)
        return {key: v.reshape(b, r, *v.shape[2:]) for key, v in stats.items()}

    # ----------------------------------------------------------------------------------------
    # Fitted attributes shared by every family
    # ----------------------------------------------------------------------------------------

    @property
    def converged_(self):
        """Whether the best restart converged (``[B]`` for a fit of ``B`` problems)."""
        check_fitted(self)
        return self._scalar_or_array(self._converged, bool)

    @property
    def lower_bound_(self):
        """Mean log-likelihood of the training data under the best restart, as recorded at its
        last iteration (before its last M-step, as in scikit-learn)."""
        check_fitted(self)
        return self._scalar_or_array(self._lower_bound, float)

    @property
    def lower_bounds_(self):
        """The lower bound at every iteration of the best restart (``[B, n_iter]`` for ``B`` problems)."""
        check_fitted(self)
        h = self._history
        if self._stacked:
            return h if self._output_numpy else torch.as_tensor(h)
        return list(h[0, : int(self._n_iter.reshape(-1)[0])]) if h.size else []

    @property
    def weights_(self):
        """Mixing weights ``[K]`` (``[B, K]`` for ``B`` problems)."""
        check_fitted(self)
        return self._attr(self._constrained()["log_weights"].detach().exp())

    # ----------------------------------------------------------------------------------------
    # Inference
    # ----------------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """Per-sample log-likelihood ``[n]`` (``[B, n]``) of a tensor, differentiable with
        respect to the module's parameters when they require gradients."""
        check_fitted(self)
        if not isinstance(x, Tensor):
            raise ValueError("forward expects a torch.Tensor; use score_samples for numpy input.")
        check_data(x, "x", n_features=self.n_features_in_, check_finite=False)
        params = self._constrained()
        dtype = torch.promote_types(x.dtype, next(iter(params.values())).dtype)
        family = self._family(self.n_features_in_)
        params = {k: v.to(dtype) for k, v in params.items()}
        prepared = family.prepare(params)
        prepared.pop("workspace", None)  # plain tensor ops: autograd- and torch.compile-friendly
        x = x.to(dtype)
        convert = self._value_map()  # e.g. BernoulliMixture's binarize, as in score_samples
        log_prob, _ = family.log_prob(x if convert is None else convert(x), prepared)
        return torch.logsumexp(log_prob + family.log_weights(params).unsqueeze(-2), -1)

    def _parameters_from_init(self) -> tuple[dict[str, Tensor], bool] | None:
        """``(constrained params, stacked)`` from the constructor's initial values when they
        determine every parameter, else ``None``; on the module's device and dtype."""
        if not self._init_arguments or any(getattr(self, a) is None for a in self._init_arguments):
            return None
        self._validate_hyperparameters()
        name = self._init_arguments[1]
        ref, _ = as_float_tensor(getattr(self, name), name)
        if ref.ndim not in (2, 3):
            raise ValueError(f"{name} should have the shape (n_components, n_features); got {tuple(ref.shape)}.")
        stacked = ref.ndim == 3
        b = ref.shape[0] if stacked else 1
        user = self._user_initial_params(ref.shape[-1], b)
        lead = (b,) if stacked else ()
        event, anchor = self._event_ndims(), self._anchor
        return {
            key: v.expand(*lead, *v.shape[v.ndim - event[key] :]).to(device=anchor.device, dtype=anchor.dtype).contiguous()
            for key, v in user.items()
        }, stacked

    def _how_to_get_parameters(self) -> str:
        return (" (EM), or initialize(X) (initialisation only), build it with from_distribution(...), or give the "
                "constructor every initial parameter.")

    def _far_log_resp(self, X: Tensor, params) -> tuple[Tensor, Tensor] | None:
        """Posteriors of queries so far from the components that their log-densities round
        away the differences that decide them (or overflow): ``(rows [.., n] bool, log_resp
        [.., n, K])`` for those rows, ``None`` when there are none. Families whose
        log-densities grow linearly in ``x`` need none (the default)."""
        return None

    def _predict_chunk(self, X: Tensor, params, family: Family, prepared) -> Tensor:
        labels = super()._predict_chunk(X, params, family, prepared)
        far = self._far_log_resp(X, params)
        return labels if far is None else torch.where(far[0], far[1].argmax(-1), labels)

    def _log_resp(self, X: Tensor, params, family: Family, prepared, posteriors_only: bool = False) -> tuple[Tensor, Tensor]:
        """``(log_norm [.., n], log_resp [.., n, K])`` of a chunk (finite queries whose
        log-densities overflow float32 are recomputed in float64; a log-density that overflows
        even there is a clear error, never a row of NaN or zeros, unless only the posteriors
        are asked for and :meth:`_far_log_resp` gives them)."""
        log_prob, _ = family.log_prob(X, prepared)
        log_norm, log_resp = log_responsibilities(log_prob, family.log_weights(params).to(log_prob.dtype))
        far = self._far_log_resp(X, params)
        answered = torch.isfinite(log_norm)
        if far is not None:
            rows, far_resp = far
            log_resp = torch.where(rows.unsqueeze(-1), far_resp.to(log_resp.dtype), log_resp)
            if posteriors_only:
                answered = answered | rows
        answered = answered & ~torch.isnan(log_resp).any(-1)
        if bool(answered.all()):
            return log_norm, log_resp
        if X.dtype != torch.float64:
            wide = {k: v.double() for k, v in params.items()}
            norm64, resp64 = self._log_resp(X.double(), wide, family, family.prepare(wide), posteriors_only)
            if not posteriors_only and not bool(torch.isfinite(norm64.to(X.dtype)).all()):
                raise ValueError(
                    f"X holds values whose log-density under this {type(self).__name__} overflows {X.dtype} "
                    f"(the smallest is {float(norm64.min()):.3g}); query a float64 model (model.double()) with "
                    "float64 data, or scale the data."
                )
            return norm64.to(X.dtype), resp64.to(X.dtype)
        bad = ~answered
        big = float(X[bad].abs().max()) if bool(bad.any()) else float("nan")
        raise ValueError(
            f"X holds values (up to {big:.3g} in absolute value) whose log-density under this "
            f"{type(self).__name__} overflows float64 (it is below -1.8e308), so no finite log-likelihood can be "
            "given for them (predict_proba and predict still answer); scale the data (fit and query it in smaller units)."
        )

    @torch.no_grad()
    def score_samples(self, X):
        """Log-likelihood of every sample, ``log p(x)``: ``[N]`` (``[B, N]``). ``X`` may also be
        an ``np.memmap`` (read in blocks) or an iterable of batches (a DataLoader, a generator):
        the outputs of its batches are joined, here and in every inference method."""
        joined = self._blocks(X, self.score_samples, 1)
        if joined is not None:
            return joined
        t, kind = self._check_input(X)
        return to_output(self._map_chunks(t, lambda x, *a: self._log_resp(x, *a)[0]), kind)

    def _total_log_likelihood(self, X, sample_weight=None) -> tuple[Tensor, Tensor, Any]:
        """``(sum of w log p(x), sum of w)``, float64 ``[B]`` (or 0-d), and how outputs go back
        (a stream's ``{"X": X, "sample_weight": w}`` batches carry their weights)."""
        blocks = inference_blocks(X)
        if blocks is None:
            t, kind = self._check_input(X)
            w = check_sample_weight(sample_weight, t.shape)
            with torch.no_grad():
                ll = self._map_chunks(t, lambda x, *a: self._log_resp(x, *a)[0]).double()
            if w is None:
                return ll.sum(-1), torch.tensor(float(t.shape[-2]), dtype=torch.float64), kind
            w = w.to(device=ll.device, dtype=torch.float64)
            return (ll * w).sum(-1), w.sum(-1), kind
        if sample_weight is not None and not isinstance(X, np.memmap):
            raise ValueError(f"sample_weight cannot be combined with an iterable X. {HOW_TO_WEIGHT}.")
        weights = None if sample_weight is None else check_sample_weight(sample_weight, X.shape).double()
        total, mass, start, numpy_out = None, None, 0, True
        for xb, wb in blocks:
            out = self.score_samples(xb)
            numpy_out = isinstance(out, np.ndarray)
            ll = torch.as_tensor(out).double().cpu()
            n = ll.shape[-1]
            if weights is not None:
                wb = weights[..., start : start + n]
            w = torch.ones(n, dtype=torch.float64) if wb is None else check_batch_weight(wb, ll.shape)
            start += n
            total = (ll * w).sum(-1) if total is None else total + (ll * w).sum(-1)
            mass = w.sum(-1) if mass is None else mass + w.sum(-1)
        if total is None:
            raise ValueError("X yielded no samples; pass a non-empty iterable of [n_samples, n_features] batches.")
        if bool((mass <= 0).any()):
            raise ValueError("The sample weights of the stream X sum to zero; give some samples a positive weight.")
        return total, mass, InputKind(numpy_out, None)  # outputs as the batches came

    @staticmethod
    def _scalar_out(value, kind):
        """A float for one problem, else ``[B]``: numpy for numpy input, a tensor for tensors."""
        if not kind.is_numpy:
            return to_output(value, kind)
        value = value.cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        return float(value) if value.ndim == 0 else value

    @torch.no_grad()
    def score(self, X, y=None, sample_weight=None):
        """Mean (weighted) log-likelihood of the samples: a float (``[B]`` for ``B`` problems; a tensor
        for tensor input). With integer ``sample_weight`` it equals the score of the data with
        each row repeated that many times."""
        total, n, kind = self._total_log_likelihood(X, sample_weight)
        return self._scalar_out(total / n.to(total.device), kind)

    @torch.no_grad()
    def predict_proba(self, X):
        """Posterior probability of each component for each sample: ``[N, K]`` (``[B, N, K]``)."""
        joined = self._blocks(X, self.predict_proba, 2)
        if joined is not None:
            return joined
        t, kind = self._check_input(X)
        return to_output(self._map_chunks(t, lambda x, *a: self._log_resp(x, *a, posteriors_only=True)[1].exp(), dim=-2), kind)

    def _information_criterion(self, X, sample_weight, penalty) -> Any:
        total, n, kind = self._total_log_likelihood(X, sample_weight)
        return self._scalar_out(-2.0 * total + penalty(n.to(total.device)) * self._n_parameters(), kind)

    def bic(self, X, sample_weight=None):
        """Bayesian information criterion on ``X`` (lower is better): ``-2 log L + p log n``,
        with ``n`` the total weight when ``sample_weight`` is given (as for repeated rows)."""
        return self._information_criterion(X, sample_weight, torch.log)

    def aic(self, X, sample_weight=None):
        """Akaike information criterion on ``X`` (lower is better): ``-2 log L + 2 p``."""
        return self._information_criterion(X, sample_weight, lambda n: torch.full_like(n, 2.0))

    def _sample_labels(self, n_samples: int, generator: torch.Generator) -> Tensor:
        """Component labels ``[B, n]`` (sorted, as scikit-learn returns them)."""
        n_samples = check_int(n_samples, "n_samples", 1)
        weights = self._constrained()["log_weights"].detach().double().exp()
        if not self._stacked:
            weights = weights.unsqueeze(0)
        labels = torch.multinomial(weights.to(generator.device), n_samples, replacement=True, generator=generator)
        return labels.sort(-1).values.to(weights.device)

    @torch.no_grad()
    def sample(self, n_samples: int = 1):
        """Draw samples from the fitted mixture.

        Returns:
            ``(X, y)``: samples ``[n_samples, D]`` and their component labels ``[n_samples]``
            (sorted by component, as in scikit-learn), with a leading ``B`` for ``B`` problems; numpy
            if the model was fitted on numpy. Randomness comes from ``random_state``.
        """
        check_fitted(self)
        n_samples = check_n_samples(n_samples)
        generator = make_generator(self.random_state, self._anchor.device)
        labels = self._sample_labels(n_samples, generator)  # [B, n], sorted
        X = self._draw(labels, generator)
        if not self._stacked:
            X, labels = X.squeeze(0), labels.squeeze(0)
        return self._attr(X), self._attr(labels)

    @abstractmethod
    def _draw(self, labels: Tensor, generator: torch.Generator | None) -> Tensor:
        """Samples ``[B, n, D]`` of the components ``labels [B, n]``, drawn with ``generator``
        (``None``: torch's global random state) from the module's parameters."""

    # ----------------------------------------------------------------------------------------
    # torch.distributions
    # ----------------------------------------------------------------------------------------

    def to_distribution(self) -> D.MixtureSameFamily:
        """The equivalent ``torch.distributions.MixtureSameFamily``, built from the module's
        parameters so gradients flow back to them; a model of ``B`` problems gives ``batch_shape (B,)``."""
        check_fitted(self)
        p = self._constrained()
        return D.MixtureSameFamily(D.Categorical(logits=p["log_weights"]), self._component_distribution(p))

    @abstractmethod
    def _component_distribution(self, params: dict[str, Tensor]) -> D.Distribution:
        """The components as one ``torch.distributions`` object with batch shape
        ``[..., K]`` and event shape ``(D,)``, from constrained parameters."""

    @classmethod
    def from_distribution(cls, distribution: D.MixtureSameFamily, **kwargs):
        """A model in fitted state equal to a ``MixtureSameFamily`` of this family's
        components (see :meth:`_params_from_components`); ``kwargs`` go to the constructor
        (for later refits). A distribution with ``batch_shape (B,)`` gives a model of ``B`` problems.
        Parameters are copied (the new model's are frozen leaves)."""
        log_weights, comp, batch = cls._mixture_parts(distribution, kwargs)
        params = cls._params_from_components(comp, tuple(log_weights.shape), kwargs)
        return cls._from_constrained({"log_weights": log_weights, **params}, bool(batch), kwargs)

    @classmethod
    @abstractmethod
    def _params_from_components(cls, components: D.Distribution, shape: tuple[int, ...], kwargs: dict) -> dict[str, Tensor]:
        """Constrained parameters (all but ``log_weights``) read off ``components``, expanded
        to ``shape = (*batch, K)``; raises ``TypeError`` for components of another kind.
        Settings the components fix (``covariance_type``, ``n_trials``) go into ``kwargs``."""

    @staticmethod
    def _mixture_parts(distribution, kwargs: dict) -> tuple[Tensor, D.Distribution, tuple[int, ...]]:
        """``(log_weights [*batch, K], components, batch)`` of a ``MixtureSameFamily`` over
        vectors for ``from_distribution``, checked; ``kwargs`` (the constructor's) gets
        ``n_components = K``, and an ``n_components`` given there must agree."""
        if not isinstance(distribution, D.MixtureSameFamily):
            raise TypeError(
                f"from_distribution expects a torch.distributions.MixtureSameFamily; got {type(distribution).__name__}."
            )
        mix = distribution.mixture_distribution
        if not isinstance(mix, D.Categorical):
            raise TypeError("The mixture distribution must be a Categorical.")
        if len(distribution.event_shape) != 1:
            raise ValueError(
                f"The components must be distributions over vectors (event_shape (D,)); got event_shape "
                f"{tuple(distribution.event_shape)}."
            )
        batch = tuple(distribution.batch_shape)
        if len(batch) > 1:
            raise ValueError(f"batch_shape must be () or (B,); got {batch}.")
        k = mix.logits.shape[-1]
        n_components = kwargs.pop("n_components", k)
        if n_components != k:
            raise ValueError(f"n_components={n_components} does not match the distribution's {k} components.")
        kwargs["n_components"] = k
        return torch.log_softmax(mix.logits.expand(*batch, k), -1), distribution.component_distribution, batch

    @classmethod
    def _from_constrained(cls, params: dict[str, Tensor], stacked: bool, kwargs: dict):
        """A model built with ``kwargs`` holding copies of ``params`` (no fit)."""
        model = cls(**kwargs)
        model._set_fitted_parameters({key: v.detach().clone() for key, v in params.items()}, stacked, output_numpy=False)
        return model
