"""The estimator layer every mixture family shares: a thin ``nn.Module`` around the EM driver.

A family subclasses :class:`BaseMixture` and fills a few hooks; everything else (input
checking, restarts, warm starts, the final E-step, numpy-or-tensor outputs, the state dict,
BIC/AIC) lives here once:

* ``_family()``: the stateless hooks the EM driver calls (see :class:`torchem.em.EMFamily`).
* ``_initial_params(source, n_init, generator)``: starting parameters ``[B, R, ...]``.
* ``_store(params)`` / ``_constrained()``: move parameters between the driver's constrained
  form and the module's unconstrained ``nn.Parameter`` s.
* ``_n_parameters()``, ``_bytes_per_sample(n_features, n_restarts)``, ``_sample(...)``.

Fitted parameters are registered on the module (so ``.to(device)``, ``.double()`` and
``state_dict`` work); everything else a fit produces travels in the module's extra state.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch import distributions as D

from .._utils import InputKind, as_float_tensor, check_data, check_fitted, check_int, check_n_samples, check_real, make_generator, to_output
from .._estimator import EstimatorModule
from .. import data as data_module
from ..data import TensorSource, auto_chunk_size, check_sample_weight, concat_blocks, inference_blocks, open_stream, reservoir_sample
from ..distributed import all_reduce_sum, broadcast_params, check_consistent, gather_samples, is_distributed, signature, world_size
from ..em import STEPWISE_SCHEDULE, EMResult, Family, run_em, select_best, step_size, stepwise_update
from ..exceptions import ConvergenceWarning, NotFittedError
from ..functional.estep import log_responsibilities
from ..functional.kmeans import assign
from ..init import gather_rows, kmeans_plusplus, lloyd, random_distinct_indices, random_resp

__all__ = ["BaseMixture"]

_EXTRA_STATE_VERSION = 1

# Lloyd iterations run after k-means++ seeding by init_params="kmeans".
_KMEANS_INIT_ITER = 10


@dataclass
class _FitData:
    """The data of a fit: its chunk source, how outputs come back, and its layout."""

    source: Any
    kind: InputKind
    batched: bool
    b: int
    streamed: bool


class BaseMixture(EstimatorModule):
    """Shared behaviour of torchem's mixture models (not used directly).

    Shapes: a model fitted on ``X [N, D]`` holds parameters for one problem; a model fitted on
    ``X [B, N, D]`` holds ``B`` independent problems, and every fitted attribute and every
    per-sample output gains a leading ``B``.
    """

    #: Fitted attributes that raise NotFittedError (not a bare AttributeError) before fit.
    _fitted_attributes: tuple[str, ...] = (
        "converged_",
        "n_iter_",
        "lower_bound_",
        "lower_bounds_",
        "n_features_in_",
        "weights_",
    )
    _init_methods: tuple[str, ...] = ()

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
        for name in self._param_names:
            self.register_parameter(name, None)
        # An empty buffer that follows .to(device) / .double(): where and in which dtype to fit.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        self._fitted = False
        self._batched = False
        self._batch_size = 1
        self._output_numpy = True

    # ----------------------------------------------------------------------------------------
    # Hooks for the families
    # ----------------------------------------------------------------------------------------

    def _validate_hyperparameters(self) -> None:
        self.n_components = check_int(self.n_components, "n_components", 1)
        check_real(self.tol, "tol")
        check_int(self.max_iter, "max_iter", 0)
        check_int(self.n_init, "n_init", 1)
        check_int(self.verbose, "verbose", 0)
        check_int(self.verbose_interval, "verbose_interval", 1)
        if self.chunk_size is not None:
            check_int(self.chunk_size, "chunk_size", 1)
        if not isinstance(self.hard, (bool, np.bool_)):
            raise ValueError(f"hard must be True or False; got {self.hard!r}.")
        if self.init_params not in self._init_methods:
            raise ValueError(
                f"init_params must be one of {list(self._init_methods)}; got {self.init_params!r}."
            )

    def _validate_values(self, X: Tensor, name: str) -> None:
        """Family-specific checks of the data's values (e.g. binary for Bernoulli); raise a
        ``ValueError`` that names ``name`` and says what to do."""

    @abstractmethod
    def _family(self, n_features: int) -> Family:
        """The driver's hooks for data of ``n_features`` features (see :class:`torchem.em.Family`)."""

    @abstractmethod
    def _initial_params(self, source: TensorSource, n_init: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Starting parameters ``[B, R, ...]`` from the data (``init_params``), in any dtype;
        user-given initial values replace them afterwards (:meth:`_user_initial_params`)."""

    @abstractmethod
    def _user_initial_params(self, n_features: int, batch_size: int) -> dict[str, Tensor]:
        """The constructor's initial values, validated against data of ``n_features`` features
        and ``batch_size`` problems, as constrained parameters (float64, shaped for one problem
        or ``[B, ...]``); an empty dict when none were given. Use :meth:`_init_array` and
        :meth:`_init_weights` for the checks every family shares."""

    @abstractmethod
    def _store(self, params: dict[str, Tensor]) -> None:
        """Save constrained parameters (one problem, or ``[B, ...]``) as the module's
        unconstrained ``nn.Parameter`` s (with :meth:`_set_parameter`)."""

    @abstractmethod
    def _constrained(self) -> dict[str, Tensor]:
        """The module's parameters as the driver's constrained parameters (differentiable)."""

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

    # ----------------------------------------------------------------------------------------
    # Initial values given to the constructor: the checks every family shares
    # ----------------------------------------------------------------------------------------

    def _init_array(self, name: str, event_shape: tuple[int, ...], batch_size: int) -> Tensor:
        """The constructor argument ``name`` as a float64 tensor of shape ``event_shape`` (one
        problem) or ``(batch_size, *event_shape)``, finite; scikit-learn's wording otherwise."""
        t, _ = as_float_tensor(getattr(self, name), name)
        t = t.double()
        shapes = [tuple(event_shape), (batch_size, *event_shape)]
        if tuple(t.shape) not in shapes:
            raise ValueError(
                f"The parameter '{name.removesuffix('_init')}' should have the shape of {tuple(event_shape)}, but got "
                f"{tuple(t.shape)}. Pass {name} of that shape (or {(batch_size, *event_shape)} for a batch of problems)."
            )
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or infinity; pass finite initial values.")
        return t

    def _init_weights(self, batch_size: int) -> Tensor | None:
        """``log(weights_init)`` checked as scikit-learn checks it (in ``[0, 1]``, summing to
        one per problem), or ``None`` when not given."""
        if self.weights_init is None:
            return None
        w = self._init_array("weights_init", (self.n_components,), batch_size)
        if bool((w < 0).any()) or bool((w > 1).any()):
            raise ValueError(
                f"The parameter 'weights' should be in the range [0, 1], but got min value {float(w.min()):.5f}, "
                f"max value {float(w.max()):.5f}"
            )
        sums = w.sum(-1).reshape(-1)
        bad = (sums - 1.0).abs() > 1e-6
        if bool(bad.any()):
            raise ValueError(
                "The parameter 'weights' should be normalized, but got sum(weights) = "
                f"{float(sums[int(bad.nonzero()[0, 0])]):.5f}"
            )
        return w.log()

    def _starting_params(self, source: TensorSource, n_init: int, generator: torch.Generator) -> dict[str, Tensor]:
        """``[B, R, ...]`` starting parameters in the source's dtype: the user's initial values
        where given, the family's initialisation from the data for the rest."""
        b = source.batch_size
        user = self._user_initial_params(source.n_features, b)
        event = self._event_ndims()
        params: dict[str, Tensor] = {}
        if len(user) < len(event):
            params = dict(self._initial_params(source, n_init, generator))
        for key, value in user.items():
            if value.ndim == event[key]:
                value = value.unsqueeze(0)
            value = value.unsqueeze(1).to(device=source.device)
            params[key] = value.expand(b, n_init, *value.shape[2:])
        return {key: value.to(source.dtype).contiguous() for key, value in params.items()}

    # ----------------------------------------------------------------------------------------
    # Data handling
    # ----------------------------------------------------------------------------------------

    def _fit_device_dtype(self, X: Tensor) -> tuple[torch.device, torch.dtype]:
        anchor = self._anchor
        device = anchor.device if anchor.device.type != "cpu" else X.device
        dtype = torch.promote_types(X.dtype, anchor.dtype)
        if not dtype.is_floating_point:
            dtype = torch.get_default_dtype()
        return device, dtype

    def _model_device_dtype(self, X: Tensor) -> tuple[torch.device, torch.dtype]:
        ref = getattr(self, self._param_names[0])
        return ref.device, torch.promote_types(X.dtype, ref.dtype)

    def _source(self, X: Tensor, device, dtype, n_restarts: int, sample_weight=None) -> TensorSource:
        source = TensorSource(X, device=device, dtype=dtype, sample_weight=sample_weight)
        if self.chunk_size is not None:
            source.chunk_size = int(self.chunk_size)
        else:
            per = self._bytes_per_sample(source.n_features, n_restarts * source.batch_size, source.X.element_size())
            source.chunk_size = auto_chunk_size(per, source.device, source.n_samples)
        return source

    def _check_input(self, X, name: str = "X") -> tuple[Tensor, InputKind]:
        """Convert and validate data given to a fitted model."""
        check_fitted(self)
        t, kind = as_float_tensor(X, name)
        check_data(t, name, n_features=self.n_features_in_, allow_batch=True)
        if t.ndim == 3 and not self._batched:
            raise ValueError(
                f"{name} is 3-D (shape {tuple(t.shape)}) but this model was fitted on a single 2-D problem; "
                "pass a 2-D array [n_samples, n_features]."
            )
        if t.ndim == 3 and t.shape[0] != self._batch_size:
            raise ValueError(
                f"{name} holds {t.shape[0]} problems (shape {tuple(t.shape)}) but this model was fitted on "
                f"{self._batch_size}; pass [{self._batch_size}, n_samples, n_features] or a 2-D array to score "
                "the same samples under every problem."
            )
        self._validate_values(t, name)
        return t, kind

    def _map_chunks(self, X: Tensor, fn, dim: int = -1) -> Tensor:
        """Apply ``fn(X_chunk, params)`` to chunks of samples on the model's device and
        concatenate the results along ``dim`` (their sample dimension)."""
        device, dtype = self._model_device_dtype(X)
        params = {k: v.to(dtype) for k, v in self._constrained().items()}
        params = (params, self._family(X.shape[-1]).prepare(params))
        n = X.shape[-2]
        if self.chunk_size is not None:
            step = int(self.chunk_size)
        else:
            step = auto_chunk_size(
                self._bytes_per_sample(X.shape[-1], self._batch_size, torch.finfo(dtype).bits // 8), device, n
            )
        outs = [fn(X[..., s : s + step, :].to(device=device, dtype=dtype), params) for s in range(0, n, step)]
        return torch.cat(outs, dim=dim)

    def _log_resp(self, X: Tensor, state) -> tuple[Tensor, Tensor]:
        """``(log_norm, log_resp)`` of a chunk; ``state`` is ``(params, prepared)``."""
        params, prepared = state
        family = self._family(X.shape[-1])
        log_prob, _ = family.log_prob(X, prepared)
        return log_responsibilities(log_prob, family.log_weights(params).to(log_prob.dtype))

    def _out(self, t: Tensor, kind: InputKind):
        return to_output(t, kind)

    def _attr(self, t: Tensor):
        """Fitted attributes come back as numpy when the model was fitted on numpy."""
        t = t.detach()
        return t.cpu().numpy() if self._output_numpy else t

    # ----------------------------------------------------------------------------------------
    # Fitting
    # ----------------------------------------------------------------------------------------

    def fit(self, X, y=None, *, callback=None):
        """Estimate the parameters by EM.

        Runs ``n_init`` restarts as one batch (or continues from the current parameters when
        ``warm_start`` and already fitted) and keeps the restart with the highest lower bound.

        Args:
            X: ``[N, D]`` data, or ``[B, N, D]`` for ``B`` independent problems: a numpy array
                or a tensor on any device; an ``np.memmap`` (or, for a model on CUDA, a host
                array larger than half the free device memory) is streamed chunk by chunk;
                or a re-iterable of ``[n, D]`` batches (``X`` or ``(X, sample_weight)``), e.g.
                a ``torch.utils.data.DataLoader``, read once per iteration. The
                initialisation (``init_params``) runs on a uniform sample of
                :data:`torchem.data.INIT_SAMPLE_SIZE` samples (all of them when there are
                fewer), for in-memory and streamed data alike, so a streamed fit equals the
                in-memory fit and large data is not scanned by k-means++. Under ``torch.distributed`` each rank passes its own shard
                (see :mod:`torchem.distributed`).
            y: ignored (scikit-learn compatibility).
            callback: optional ``callback(iteration, lower_bound, model) -> bool`` called after
                every EM iteration, with the lower bound of the best restart (a float; ``[B]``
                for a batched fit) and this model holding that restart's current parameters
                (so ``model.score(X_val)`` works); returning ``True`` stops the fit.

        Returns:
            ``self``.
        """
        self._fit(X, callback=callback)
        return self

    def fit_predict(self, X, y=None):
        """Fit, then return the component of each sample (``fit(X).predict(X)``, computed
        from the final parameters)."""
        self._fit(X)
        return self.predict(X)

    def _chunk_check(self, name: str = "X"):
        """The value checks of ``check_data`` and the family, for one streamed chunk."""

        def check(chunk: Tensor) -> None:
            if not bool(torch.isfinite(chunk).all()):
                raise ValueError(f"Input {name} contains NaN or infinity. Remove or impute those values before fitting.")
            self._validate_values(chunk, name)

        return check

    def _open_data(self, X, sample_weight, do_init: bool) -> _FitData:
        """Wrap ``X`` in a chunk source on the compute device, with the layout checks."""
        anchor = self._anchor if do_init else getattr(self, self._param_names[0])
        stream = open_stream(
            X,
            sample_weight,
            anchor_device=anchor.device,
            resolve=self._fit_device_dtype if do_init else self._model_device_dtype,
            bytes_per_sample=lambda d, b, itemsize: self._bytes_per_sample(d, self.n_init * b, itemsize),
            chunk_size=self.chunk_size,
            check=self._chunk_check(),
        )
        if stream is not None:
            source, is_numpy, batched, b = stream
            return _FitData(source, InputKind(is_numpy, None), batched, b, True)
        t, kind = as_float_tensor(X, "X")
        check_data(t, "X", min_samples=1, allow_batch=True)
        self._validate_values(t, "X")
        device, dtype = self._fit_device_dtype(t) if do_init else self._model_device_dtype(t)
        n_init = self.n_init if do_init else 1
        source = self._source(t, device, dtype, n_init, sample_weight)
        return _FitData(source, kind, t.ndim == 3, t.shape[0] if t.ndim == 3 else 1, False)

    def _fit_signature(self, data: _FitData | None, state: dict) -> dict:
        """What every rank of a distributed fit must agree on: the data's layout, the
        hyper-parameters and ``state`` (whether the fit continues the fitted parameters, how
        far a stream has gone), so ranks never take different paths through the collectives."""
        if data is None:
            return {}
        sig = signature(self, data.source.n_features, data.source.dtype, data.b, data.batched,
                        skip=("verbose", "verbose_interval", "random_state", "chunk_size"))
        sig.update(state)
        return sig

    @torch.no_grad()
    def _fit(self, X, sample_weight=None, callback=None) -> None:
        self._validate_hyperparameters()
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable as callback(iteration, lower_bound, model); got {callback!r}.")
        do_init = not (self.warm_start and self._fitted)
        n_init = self.n_init if do_init else 1
        data, error, sample = None, None, None
        try:
            data = self._open_data(X, sample_weight, do_init)
            source = data.source
            generator = make_generator(self.random_state, source.device)
            if do_init and (data.streamed or is_distributed() or source.n_samples > data_module.INIT_SAMPLE_SIZE):
                # initialise from a uniform sample (the whole data when it is small): streamed,
                # sharded and large in-memory data alike, so they give the same fit
                size = -(-data_module.INIT_SAMPLE_SIZE // world_size())
                sample = reservoir_sample(source, size, generator)
            elif data.streamed:
                for _ in source.chunks():  # a first pass: counts an iterable, checks values
                    pass
        except (ValueError, TypeError) as exc:
            if not is_distributed():
                raise
            error = exc
        check_consistent(self._fit_signature(data, {"continues_fit": not do_init}), error)  # every rank raises, or none
        batched, b, device, dtype = data.batched, data.b, source.device, source.dtype
        n = int(all_reduce_sum([torch.tensor(float(source.n_samples), device=source.device)])[0])
        if n < self.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                f"n_samples = {n}. Reduce n_components or pass more data."
            )
        if not do_init:
            if source.n_features != self.n_features_in_ or batched != self._batched or b != self._batch_size:
                raise ValueError(
                    f"warm_start=True continues the previous fit, which had {self._batch_size} problem(s) with "
                    f"{self.n_features_in_} features; X has {b} problem(s) with {source.n_features} features. "
                    "Pass data of the same layout or set warm_start=False."
                )
        init_source = source
        if sample is not None:
            sx, sw = gather_samples(*sample)
            init_source = self._source(sx, device, dtype, n_init, None if sw is None else sw)
        if do_init:
            params = broadcast_params(self._starting_params(init_source, n_init, generator))
            lower_bound = None
        else:
            params = {k: v.to(device=device, dtype=dtype) for k, v in self._constrained().items()}
            if not self._batched:
                params = {k: v.unsqueeze(0) for k, v in params.items()}
            params = {k: v.unsqueeze(1) for k, v in params.items()}
            lb = torch.as_tensor(np.asarray(self._lower_bound, dtype=np.float64), device=device)
            lower_bound = lb.reshape(b, 1)
        params = {k: v.to(dtype) for k, v in params.items()}
        record = lambda result: self._record(result, data, device, dtype)  # noqa: E731
        stopped = []

        def report(it, lb, params_now):
            # the model holds the current best restart while the user's callback runs
            best_lb = record(EMResult(params_now, lb, torch.full_like(lb, it, dtype=torch.int64),
                                      torch.zeros_like(lb, dtype=torch.bool)))
            if callback(it, best_lb, self):
                stopped.append(it)
            return bool(stopped)

        if self.max_iter > 0:
            result = run_em(
                self._family(source.n_features),
                source,
                params,
                tol=self.tol,
                max_iter=self.max_iter,
                lower_bound=lower_bound,
                callback=None if callback is None else report,
                verbose=self.verbose,
                verbose_interval=self.verbose_interval,
                failure_message=self._failure_message(),
                hard=bool(self.hard),
            )
        else:
            batch = next(iter(params.values())).shape[:2]
            lb0 = lower_bound if lower_bound is not None else torch.full(batch, -torch.inf, dtype=torch.float64, device=device)
            result = EMResult(
                params,
                lb0,
                torch.zeros(batch, dtype=torch.int64, device=device),
                torch.zeros(batch, dtype=torch.bool, device=device),
            )
        record(result)
        self._stepwise = None  # a new fit: partial_fit starts its running statistics afresh
        # how many samples the fitted parameters summarise, for partial_fit (none after an
        # initialisation without EM iterations, e.g. initialize(X))
        self._fit_samples = n if self.max_iter > 0 else None
        converged = self._converged
        # warn only when EM ran out of iterations: not when a callback (on any rank) stopped it
        stopped = stopped or int(result.n_iter.max()) < self.max_iter
        if self.max_iter > 0 and not bool(converged.all()) and not stopped:
            which = "" if not batched else f" ({int((~converged).sum())} of {b} problems)"
            warnings.warn(
                f"Best performing initialization did not converge{which}. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=4,  # _fit <- no_grad wrapper <- fit/fit_predict <- caller
            )

    def _record(self, result: EMResult, data: _FitData, device, dtype):
        """Store the best restart of ``result`` as the fitted state; returns its lower bound
        (a float, or ``[B]`` for a batched fit)."""
        best, lower_bound, n_iter, converged, history = select_best(result)
        if not data.batched:
            best = {k: v.squeeze(0) for k, v in best.items()}
        self._batched = data.batched
        self._batch_size = data.b
        self._output_numpy = data.kind.is_numpy
        self.n_features_in_ = int(data.source.n_features)
        self._anchor = self._anchor.to(device=device, dtype=dtype)
        self._store(best)
        self._lower_bound = lower_bound.cpu().numpy()
        self._n_iter = n_iter.cpu().numpy()
        self._converged = converged.cpu().numpy()
        self._history = torch.stack(history, -1).cpu().numpy() if history else np.zeros((data.b, 0))
        self._fitted = True
        return self._scalar_or_array(self._lower_bound, float)

    # ----------------------------------------------------------------------------------------
    # Online (stepwise) EM
    # ----------------------------------------------------------------------------------------

    #: ``(t0, kappa)`` of partial_fit's step size ``eta_t = (t + t0) ** -kappa`` (see
    #: :func:`torchem.em.step_size`); set it on an instance to change the schedule.
    stepwise_schedule = STEPWISE_SCHEDULE

    @torch.no_grad()
    def partial_fit(self, X, y=None, sample_weight=None):
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
        statistics start the running average, counted as the first ``ceil(N_fit / n)`` steps
        (``N_fit`` samples in the fit, ``n`` in this batch), so a small batch moves a model
        fitted on much data only a little (a model built without a fit counts as one step). A later ``fit``
        restarts from scratch. ``n_iter_`` counts the batches seen, ``lower_bound_`` is the
        mean log-likelihood of the last batch under the parameters before its update and
        ``converged_`` stays False. Under ``torch.distributed`` every rank passes its own part
        of each batch: the statistics are summed over the ranks (and the first batch's parts,
        gathered, initialise the model), so all ranks keep identical parameters.

        Args:
            X: ``[n, D]`` (or ``[B, n, D]``) batch, numpy or tensor.
            y: ignored.
            sample_weight: optional ``[n]`` weights.

        Returns:
            ``self``.
        """
        self._validate_hyperparameters()
        state = getattr(self, "_stepwise", None)
        data, error = None, None
        try:
            t, kind = as_float_tensor(X, "X")
            check_data(t, "X", min_samples=1, allow_batch=True)
            self._validate_values(t, "X")
            batched, b = t.ndim == 3, (t.shape[0] if t.ndim == 3 else 1)
            if self._fitted:
                if t.shape[-1] != self.n_features_in_ or batched != self._batched or b != self._batch_size:
                    raise ValueError(
                        f"partial_fit continues a model of {self._batch_size} problem(s) with {self.n_features_in_} "
                        f"features; X has shape {tuple(t.shape)}. Pass batches of the same layout."
                    )
                device, dtype = self._model_device_dtype(t)
            else:
                device, dtype = self._fit_device_dtype(t)
            source = self._source(t, device, dtype, 1, check_sample_weight(sample_weight, t.shape))
            data = _FitData(source, kind, batched, b, False)
        except (ValueError, TypeError) as exc:
            if not is_distributed():
                raise
            error = exc
        stream = {"fitted": bool(self._fitted), "stream_batches": 0 if state is None else state.get("batches", 0)}
        check_consistent(self._fit_signature(data, stream), error)  # every rank raises, or none
        if state is not None and state["params"]["log_weights"].device != device:
            state = _to_device(state, device)  # the model was moved with .to(device)
        continuing = state is None and self._fitted
        n_batch = int(all_reduce_sum([torch.tensor(float(source.n_samples), device=device)])[0])  # over the ranks
        if state is None:
            if continuing:
                params = {k: v.to(device=device, dtype=dtype) for k, v in self._constrained().items()}
                if not self._batched:
                    params = {k: v.unsqueeze(0) for k, v in params.items()}
                params = {k: v.unsqueeze(1) for k, v in params.items()}
            else:
                # initialise from the first batch (of every rank, under torch.distributed)
                sx, sw = gather_samples(source.X, source.sample_weight)
                if sx.shape[1] < self.n_components:
                    raise ValueError(
                        f"The first batch given to partial_fit initialises the model and needs at least n_components = "
                        f"{self.n_components} samples; got {sx.shape[1]}."
                    )
                init_source = self._source(sx, device, dtype, 1, sw) if is_distributed() else source
                generator = make_generator(self.random_state, device)
                params = broadcast_params(self._starting_params(init_source, 1, generator))
            state = {"t": 0, "running": None, "reference": {k: v.double() for k, v in params.items()}, "params": params}
            if continuing:
                # The fitted model is the stream's past: its statistics start the running
                # average, weighted as the first ceil(N_fit / n) batches of this batch's size.
                state["running"] = self._implied_statistics(state["reference"])
                n_fit = getattr(self, "_fit_samples", None)
                state["t"] = max(1, math.ceil(n_fit / n_batch)) if n_fit else 1
        state["t"] += 1
        eta = step_size(state["t"], self.stepwise_schedule)
        params = {k: v.to(dtype) for k, v in state["params"].items()}
        new, running, failed, ll = stepwise_update(
            self._family(source.n_features), source, params, state["reference"], state["running"], eta, hard=bool(self.hard)
        )
        if bool(failed.any()):
            raise ValueError(self._failure_message())
        state["running"], state["params"] = running, {k: v.to(dtype) for k, v in new.items()}
        state["batches"] = state.get("batches", 0) + 1
        # the samples the parameters now summarise (a reloaded model continues from there)
        self._fit_samples = (getattr(self, "_fit_samples", None) or 0) + n_batch
        steps = torch.full(ll.shape, state["batches"], dtype=torch.int64, device=ll.device)
        self._record(EMResult(state["params"], ll, steps, torch.zeros_like(steps, dtype=torch.bool), [ll]), data, device, dtype)
        self._stepwise = state
        return self

    def _implied_statistics(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-sample (normalised) sufficient statistics whose M-step gives back ``params``
        (``[B, R, ...]``, float64), computed about ``params`` themselves: the statistics of a
        small weighted point set with the model's moments (:meth:`_moment_points`)."""
        points, resp = self._moment_points(params)
        family = self._family(points.shape[-1])
        prepared = family.prepare(params)
        # in blocks of points: the statistics add, and a full covariance's features are
        # ~D^2/2 wide, so all 2 K D sigma points at once would take K D^3 memory
        d = points.shape[-1]
        step = max(1, 2**22 // (d * d))
        stats = None
        for start in range(0, points.shape[-2], step):
            part = family.stats(points[..., start : start + step, :], resp[..., start : start + step, :], prepared, None, None)
            stats = part if stats is None else {k: stats[k] + part[k] for k in part}
        return stats

    def _chosen_samples(self, source: TensorSource, n_init: int, generator: torch.Generator) -> Tensor:
        """``[B, R, K]`` sample indices for ``init_params`` ``"k-means++"`` or ``"random_from_data"``."""
        if self.init_params == "k-means++":
            return kmeans_plusplus(source.X, self.n_components, n_init, generator)
        b, n = source.batch_size, source.n_samples
        return random_distinct_indices(n, self.n_components, (b, n_init), generator, source.device)

    def _init_responsibilities(self, source: TensorSource, n_init: int, generator: torch.Generator):
        """Initial responsibilities as a function ``resp_fn(start, X [B, 1, n, D]) -> [B, R, n, K]``
        (float64) of each chunk: hard k-means labels (k-means++ then a few Lloyd steps) for
        ``"kmeans"``, random ones for ``"random"``, and one-hot at the chosen samples for
        ``"k-means++"`` and ``"random_from_data"``."""
        k, b = self.n_components, source.batch_size
        method = self.init_params
        if method == "kmeans":
            idx = kmeans_plusplus(source.X, k, n_init, generator)
            centers = lloyd(source, gather_rows(source.X, idx), _KMEANS_INIT_ITER)

            def resp_fn(start, X):
                return torch.nn.functional.one_hot(assign(X, centers)[0], k).double()

        elif method == "random":
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())

            def resp_fn(start, X):
                return random_resp(seed, start, (b, n_init, X.shape[-2], k), source.device, torch.float64)

        else:
            idx = self._chosen_samples(source, n_init, generator)

            def resp_fn(start, X):
                pos = torch.arange(start, start + X.shape[-2], device=source.device)
                return (pos[None, None, :, None] == idx.unsqueeze(-2)).to(torch.float64)

        return resp_fn

    def _failure_message(self) -> str:
        return "EM failed: an M-step produced invalid parameters."

    # ----------------------------------------------------------------------------------------
    # Fitted attributes shared by every family
    # ----------------------------------------------------------------------------------------

    def _scalar_or_array(self, value: np.ndarray, cast):
        if not self._batched:
            return cast(value.reshape(-1)[0])
        return value if self._output_numpy else torch.as_tensor(value)

    @property
    def converged_(self):
        """Whether the best restart converged (``[B]`` for a batched fit)."""
        check_fitted(self)
        return self._scalar_or_array(self._converged, bool)

    @property
    def n_iter_(self):
        """EM iterations of the best restart (``[B]`` for a batched fit)."""
        check_fitted(self)
        return self._scalar_or_array(self._n_iter, int)

    @property
    def lower_bound_(self):
        """Mean log-likelihood of the training data under the best restart, as recorded at its
        last iteration (before its last M-step, as in scikit-learn)."""
        check_fitted(self)
        return self._scalar_or_array(self._lower_bound, float)

    @property
    def lower_bounds_(self):
        """The lower bound at every iteration of the best restart (``[B, n_iter]`` if batched)."""
        check_fitted(self)
        h = self._history
        if self._batched:
            return h if self._output_numpy else torch.as_tensor(h)
        return list(h[0, : int(self._n_iter.reshape(-1)[0])]) if h.size else []

    @property
    def weights_(self):
        """Mixing weights ``[K]`` (``[B, K]`` if batched)."""
        check_fitted(self)
        return self._attr(torch.softmax(self.logits.detach(), -1))

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
        log_prob, _ = family.log_prob(x.to(dtype), prepared)
        return torch.logsumexp(log_prob + family.log_weights(params).unsqueeze(-2), -1)

    def requires_grad_(self, requires_grad: bool = True):
        """Enable (or disable) gradients on every parameter, as ``nn.Module.requires_grad_``.

        The parameters are frozen after ``fit``; enabling gradients makes the mixture
        trainable by any ``torch.optim`` optimizer (see :func:`torchem.fit_by_gradient`). An
        unfitted model gets its parameters from the constructor's initial values when they
        determine all of them; otherwise there is nothing to train yet and this raises
        :class:`NotFittedError` saying how to get parameters."""
        if requires_grad and not self._fitted:
            found = self._parameters_from_init()
            if found is None:
                raise NotFittedError(
                    f"This {type(self).__name__} has no parameters to train yet. Call fit(X) (EM) or "
                    "initialize(X) (initialisation only) first, build it with from_distribution(...), or give "
                    "the constructor every initial parameter."
                )
            params, batched = found
            self._set_fitted_parameters(params, batched, output_numpy=False)
        return super().requires_grad_(requires_grad)

    def initialize(self, X):
        """Set the initial parameters from ``X`` by ``init_params`` (or the given initial
        values) without any EM iteration: a starting point for gradient fitting. Returns
        ``self``."""
        saved = self.max_iter
        self.max_iter = 0
        try:
            self._fit(X)
        finally:
            self.max_iter = saved
        return self

    @torch.no_grad()
    def score_samples(self, X):
        """Log-likelihood of every sample, ``log p(x)``: ``[N]`` (``[B, N]``). ``X`` may also be
        an ``np.memmap`` (read in blocks) or an iterable of batches (a DataLoader, a generator):
        the outputs of its batches are joined, here and in every inference method."""
        blocks = inference_blocks(X)
        if blocks is not None:
            return concat_blocks([self.score_samples(xb) for xb, _ in blocks], 1)
        t, kind = self._check_input(X)
        out = self._map_chunks(t, lambda x, p: self._log_resp(x, p)[0])
        return self._out(out, kind)

    @torch.no_grad()
    def score(self, X, y=None):
        """Mean log-likelihood of the samples: a float (``[B]`` if batched; a tensor for tensor input)."""
        if inference_blocks(X) is not None:
            ll = self.score_samples(X)
            out = np.asarray(ll, dtype=np.float64).mean(-1) if isinstance(ll, np.ndarray) else ll.double().mean(-1)
            return float(out) if isinstance(out, (np.ndarray, np.floating)) and np.ndim(out) == 0 else out
        t, kind = self._check_input(X)
        out = self._map_chunks(t, lambda x, p: self._log_resp(x, p)[0]).double().mean(-1)
        if kind.is_numpy:
            return float(out) if out.ndim == 0 else out.cpu().numpy()
        return to_output(out, kind)

    @torch.no_grad()
    def predict_proba(self, X):
        """Posterior probability of each component for each sample: ``[N, K]`` (``[B, N, K]``)."""
        blocks = inference_blocks(X)
        if blocks is not None:
            return concat_blocks([self.predict_proba(xb) for xb, _ in blocks], 2)
        t, kind = self._check_input(X)
        out = self._map_chunks(t, lambda x, p: self._log_resp(x, p)[1].exp(), dim=-2)
        return self._out(out, kind)

    @torch.no_grad()
    def predict(self, X):
        """The most probable component of each sample: ``[N]`` (``[B, N]``) int64 labels."""
        blocks = inference_blocks(X)
        if blocks is not None:
            return concat_blocks([self.predict(xb) for xb, _ in blocks], 1)
        t, kind = self._check_input(X)
        out = self._map_chunks(t, lambda x, p: self._log_resp(x, p)[1].argmax(-1))
        return self._out(out, kind)

    def _information_criterion(self, X, penalty) -> Any:
        if inference_blocks(X) is not None:
            ll = self.score_samples(X)
            n = ll.shape[-1]
            total = np.asarray(ll, dtype=np.float64).sum(-1) if isinstance(ll, np.ndarray) else ll.double().sum(-1)
            value = -2.0 * total + penalty(n) * self._n_parameters()
            return float(value) if isinstance(value, (np.ndarray, np.floating)) and np.ndim(value) == 0 else value
        t, kind = self._check_input(X)
        n = t.shape[-2]
        with torch.no_grad():
            ll = self._map_chunks(t, lambda x, p: self._log_resp(x, p)[0]).double().mean(-1)
        value = -2.0 * ll * n + penalty(n) * self._n_parameters()
        if kind.is_numpy:
            return float(value) if value.ndim == 0 else value.cpu().numpy()
        return to_output(value, kind)

    def bic(self, X):
        """Bayesian information criterion on ``X`` (lower is better)."""
        return self._information_criterion(X, lambda n: math.log(n))

    def aic(self, X):
        """Akaike information criterion on ``X`` (lower is better)."""
        return self._information_criterion(X, lambda n: 2.0)

    def _sample_labels(self, n_samples: int, generator: torch.Generator) -> Tensor:
        """Component labels ``[B, n]`` (sorted, as scikit-learn returns them)."""
        n_samples = check_int(n_samples, "n_samples", 1)
        weights = torch.softmax(self.logits.detach().double(), -1)
        if not self._batched:
            weights = weights.unsqueeze(0)
        labels = torch.multinomial(weights.to(generator.device), n_samples, replacement=True, generator=generator)
        return labels.sort(-1).values.to(weights.device)

    @torch.no_grad()
    def sample(self, n_samples: int = 1):
        """Draw samples from the fitted mixture.

        Returns:
            ``(X, y)``: samples ``[n_samples, D]`` and their component labels ``[n_samples]``
            (sorted by component, as in scikit-learn), with a leading ``B`` if batched; numpy
            if the model was fitted on numpy. Randomness comes from ``random_state``.
        """
        check_fitted(self)
        n_samples = check_n_samples(n_samples)
        generator = make_generator(self.random_state, self._anchor.device)
        labels = self._sample_labels(n_samples, generator)  # [B, n], sorted
        X = self._draw(labels, generator)
        if not self._batched:
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
        parameters so gradients flow back to them; a batched model gives ``batch_shape (B,)``."""
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
        (for later refits). A distribution with ``batch_shape (B,)`` gives a batched model.
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

    # ----------------------------------------------------------------------------------------
    # State dict
    # ----------------------------------------------------------------------------------------

    def get_extra_state(self) -> dict:
        state = {"version": _EXTRA_STATE_VERSION, "fitted": self._fitted}
        if self._fitted:
            state.update(
                batched=self._batched,
                batch_size=self._batch_size,
                output_numpy=self._output_numpy,
                n_features_in=self.n_features_in_,
                # tensors, not numpy arrays, so torch.load(..., weights_only=True) accepts them
                lower_bound=torch.as_tensor(self._lower_bound),
                n_iter=torch.as_tensor(self._n_iter),
                converged=torch.as_tensor(self._converged),
                history=torch.as_tensor(self._history),
                hyper=self._structural_hyperparameters(),
                fit_samples=int(getattr(self, "_fit_samples", None) or 0),
            )
        return state

    def set_extra_state(self, state: dict) -> None:
        self._fitted = bool(state.get("fitted", False))
        if not self._fitted:
            return
        hyper = state["hyper"]
        mine = self._structural_hyperparameters()
        for key, value in hyper.items():
            if mine.get(key) != value:
                raise ValueError(
                    f"The state dict was saved from a model with {key}={value!r}, but this model has "
                    f"{key}={mine.get(key)!r}; construct the model with the same {key} before loading."
                )
        self._batched = state["batched"]
        self._batch_size = state["batch_size"]
        self._output_numpy = state["output_numpy"]
        self.n_features_in_ = state["n_features_in"]
        self._lower_bound = np.asarray(state["lower_bound"])
        self._n_iter = np.asarray(state["n_iter"])
        self._converged = np.asarray(state["converged"])
        self._history = np.asarray(state["history"])
        # a loaded model is a new starting point: partial_fit continues from its parameters
        self._stepwise = None
        self._fit_samples = int(state.get("fit_samples", 0)) or None

    def _structural_hyperparameters(self) -> dict:
        return {"n_components": self.n_components}

    def _set_fitted_parameters(self, params: dict[str, Tensor], batched: bool, output_numpy: bool) -> None:
        """Make the model usable from given constrained parameters (no EM): from
        ``from_distribution`` or the constructor's initial values. Fit diagnostics are empty
        (``n_iter_ == 0``, ``converged_`` False, ``lower_bound_`` NaN)."""
        ref = next(iter(params.values()))
        b = ref.shape[0] if batched else 1
        self._store(params)
        self._batched, self._batch_size, self._output_numpy = batched, b, output_numpy
        self.n_features_in_ = int(self._n_features_of(params))
        self._anchor = self._anchor.to(device=ref.device, dtype=ref.dtype)
        self._lower_bound = np.full(b, np.nan)
        self._n_iter = np.zeros(b, dtype=np.int64)
        self._converged = np.zeros(b, dtype=bool)
        self._history = np.zeros((b, 0))
        self._fitted = True

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
    def _from_constrained(cls, params: dict[str, Tensor], batched: bool, kwargs: dict):
        """A model built with ``kwargs`` holding copies of ``params`` (no fit)."""
        model = cls(**kwargs)
        model._set_fitted_parameters({key: v.detach().clone() for key, v in params.items()}, batched, output_numpy=False)
        return model

    @abstractmethod
    def _n_features_of(self, params: dict[str, Tensor]) -> int:
        """Number of features of constrained parameters."""

    #: Constructor arguments that, all given, determine every parameter (the second one
    #: fixes the shape), for gradient training without a fit.
    _init_arguments: tuple[str, ...] = ()

    def _parameters_from_init(self) -> tuple[dict[str, Tensor], bool] | None:
        """``(constrained params, batched)`` from the constructor's initial values when they
        determine every parameter, else ``None``; on the module's device and dtype."""
        if not self._init_arguments or any(getattr(self, a) is None for a in self._init_arguments):
            return None
        self._validate_hyperparameters()
        name = self._init_arguments[1]
        ref, _ = as_float_tensor(getattr(self, name), name)
        if ref.ndim not in (2, 3):
            raise ValueError(f"{name} should have the shape (n_components, n_features); got {tuple(ref.shape)}.")
        batched = ref.ndim == 3
        b = ref.shape[0] if batched else 1
        user = self._user_initial_params(ref.shape[-1], b)
        lead = (b,) if batched else ()
        event, anchor = self._event_ndims(), self._anchor
        return {
            key: v.expand(*lead, *v.shape[v.ndim - event[key] :]).to(device=anchor.device, dtype=anchor.dtype).contiguous()
            for key, v in user.items()
        }, batched


def _to_device(tree, device):
    """A copy of nested dicts of tensors on ``device`` (partial_fit's state after ``.to``)."""
    if isinstance(tree, dict):
        return {k: _to_device(v, device) for k, v in tree.items()}
    return tree.to(device) if isinstance(tree, Tensor) else tree
