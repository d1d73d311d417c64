"""The one estimator layer every torchem model shares.

:class:`EstimatorModule` is scikit-learn's parameter protocol on an ``nn.Module``;
:class:`EMEstimator` writes, once for every model (the mixtures and K-means), the whole fit
sequence, ``partial_fit``'s handshake, inference over blocks, attribute output, the versioned
extra state and ``requires_grad_``. A model is its hooks (declared abstract below) and the
methods that are its own.

The fit sequence: open the data (the estimator chooses device, dtype and chunk size first;
:func:`torchem.data.open_source` never calls back) -> check that the ranks agree -> draw the
initial sample -> initialise and broadcast -> run the driver -> select the best restart ->
store.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import warnings
from collections.abc import Mapping
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import data as data_module
from ._utils import InputKind, caller_stacklevel, check_data, check_feature_names, check_fitted, full_float32_matmul, make_generator, to_output
from .data import (DataInfo, Source, TensorSource, auto_chunk_size, check_observed, concat_blocks, describe, inference_blocks,
                   omit_rows, open_source, reservoir_sample, working_dtype)
from .distributed import (all_reduce_sum, broadcast_params, check_consistent, consistent_count, gather_samples, is_distributed,
                          signature, world_size)
from .em import EMResult, Family, run_em, select_best
from . import exceptions

__all__ = ["EMEstimator", "EstimatorModule"]

#: Version of the extra state saved in state dicts (``get_extra_state``).
EXTRA_STATE_VERSION = 2

#: ``nn.Module``'s own bookkeeping in ``__dict__`` (parameters, buffers, hooks): a fit's
#: transaction restores parameters and buffers by hand and leaves the rest alone.
_MODULE_INTERNALS = frozenset(nn.Module().__dict__) | {"_training"}


#: What ``sklearn.base.clone`` keeps besides the hyper-parameters: the metadata requests and
#: the output container of scikit-learn's ``set_fit_request``... and ``set_output``.
_CLONED_SETTINGS = ("_metadata_request", "_sklearn_output_config")

#: The methods whose metadata scikit-learn's routing asks about (those a torchem estimator has).
_ROUTED_METHODS = ("fit", "partial_fit", "predict", "predict_proba", "score", "transform")


@functools.cache
def _request_class(cls: type) -> type:
    """A subclass of scikit-learn's ``BaseEstimator`` named as ``cls``, with the signatures of
    its routed methods (never called): scikit-learn derives from them the metadata requests and
    the ``set_{method}_request`` methods that :meth:`EstimatorModule.get_metadata_routing` and
    its setters use."""
    from sklearn.base import BaseEstimator

    methods = {name: getattr(cls, name) for name in _ROUTED_METHODS if callable(getattr(cls, name, None))}
    return type(cls.__name__, (BaseEstimator,), {**methods, "__module__": cls.__module__, "__qualname__": cls.__qualname__})


class EstimatorModule(nn.Module, metaclass=ABCMeta):
    """``get_params``/``set_params`` from the constructor's signature (so
    ``sklearn.base.clone`` works), a repr of the non-default hyper-parameters,
    ``NotFittedError`` (an ``AttributeError``) for fitted attributes read before ``fit``, and
    ``load_state_dict`` into a fresh model (its parameters, registered as ``None`` until
    fitted, take the saved shapes). Subclasses register an empty ``_anchor`` buffer."""

    #: Fitted attributes that raise NotFittedError (not a bare AttributeError) before fit.
    _fitted_attributes: tuple[str, ...] = ()
    #: scikit-learn's estimator type: "density_estimator" (mixtures) or "clusterer" (K-means).
    _estimator_type: str = "density_estimator"
    #: Names of the registered parameters; the first one locates the model (device, dtype).
    _param_names: tuple[str, ...] = ()

    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's hyper-parameters, as in scikit-learn (so ``sklearn.base.clone`` works)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set hyper-parameters by name; returns ``self``."""
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(
                    f"Invalid parameter {key!r} for estimator {type(self).__name__}. Valid parameters are: {valid}."
                )
            setattr(self, key, value)
        return self

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and init.__doc__ is None:
            # without this, help(cls.__init__) shows nn.Module's "Initialize internal Module state"
            init.__doc__ = (f"Make an unfitted {cls.__name__}; every argument is described in the class "
                            f"docstring (help({cls.__name__})).")

    # nn.Module sets a public ``training`` flag in __init__; scikit-learn allows only the
    # constructor's parameters there, so the flag lives in a private attribute.
    @property
    def training(self) -> bool:
        return self.__dict__.get("_training", True)

    @training.setter
    def training(self, mode: bool) -> None:
        self.__dict__["_training"] = bool(mode)

    # ----------------------------------------------------------------------------------------
    # scikit-learn's estimator protocol (scikit-learn itself is imported only when it asks)
    # ----------------------------------------------------------------------------------------

    #: scikit-learn's input tags that differ from its defaults, for a family that accepts only
    #: some data: ``positive_only`` (no negative values; such a family says "Negative values in
    #: data" when it gets them) and ``categorical`` (whole numbers: scikit-learn's checks then
    #: generate non-negative integers). Read by the tags hooks below.
    _input_tags: dict[str, bool] = {}

    def __sklearn_tags__(self):
        """scikit-learn's tags (1.6 and later): an unsupervised density estimator or clusterer
        of 2-D numeric data (and as :attr:`_input_tags` says), with NaN only when its
        ``nan_policy`` marginalises missing entries; ``y`` is not required."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        tags = Tags(estimator_type=self._estimator_type, target_tags=TargetTags(required=False),
                    input_tags=InputTags(**self._input_tags, allow_nan=bool(getattr(self, "_marginalizes", False))))
        if hasattr(type(self), "transform"):
            tags.transformer_tags = TransformerTags(preserves_dtype=[])
        return tags

    def _more_tags(self) -> dict:
        """The same tags for scikit-learn before 1.6."""
        categorical = ["categorical"] if self._input_tags.get("categorical") else []
        return {"requires_y": False, "allow_nan": bool(getattr(self, "_marginalizes", False)), "X_types": ["2darray", *categorical],
                "requires_positive_X": bool(self._input_tags.get("positive_only"))}

    def __sklearn_clone__(self):
        """``sklearn.base.clone``: a new unfitted model with the same hyper-parameters, on the
        same device and in the same dtype as this one (``.to(device)``, ``.double()``), with
        the same metadata requests (``set_fit_request``...) and output container
        (``set_output``), as scikit-learn's clone keeps them."""
        params = self.get_params(deep=False)
        new = type(self)(**{k: (v.clone() if isinstance(v, Tensor) else copy.deepcopy(v)) for k, v in params.items()})
        for kept in _CLONED_SETTINGS:
            if kept in self.__dict__:
                new.__dict__[kept] = copy.deepcopy(self.__dict__[kept])
        anchor = self._anchor
        return new.to(device=anchor.device, dtype=anchor.dtype)

    # scikit-learn's metadata routing (``sklearn.set_config(enable_metadata_routing=True)``).
    # A torchem estimator is not a subclass of scikit-learn's BaseEstimator (scikit-learn is
    # optional and not imported with torchem), so the requests are kept and answered by
    # scikit-learn's own machinery, on a stand-in class with this class's method signatures
    # (:func:`_request_class`): the same requests, validation and messages as scikit-learn's
    # estimators, and no copy of its logic here.

    def get_metadata_routing(self):
        """scikit-learn's metadata routing of this estimator: which metadata
        (``sample_weight``, ``labels``, ``callback``) its ``fit``, ``partial_fit`` and
        ``score`` take, as requested with :meth:`set_fit_request`, :meth:`set_partial_fit_request`
        and :meth:`set_score_request` (unrequested metadata passed by a meta-estimator raises,
        as for scikit-learn's own estimators). Needs scikit-learn."""
        return self._requests().get_metadata_routing()

    def set_fit_request(self, **requests):
        """Request metadata for ``fit`` when scikit-learn's metadata routing is enabled
        (``sklearn.set_config(enable_metadata_routing=True)``): e.g.
        ``set_fit_request(sample_weight=True)`` lets a ``Pipeline`` or ``GridSearchCV`` pass
        ``sample_weight`` on to this estimator's ``fit``. Each value is ``True``, ``False``,
        ``None`` or an alias, as in scikit-learn. Returns ``self``."""
        return self._set_request("fit", requests)

    def set_partial_fit_request(self, **requests):
        """As :meth:`set_fit_request`, for ``partial_fit``. Returns ``self``."""
        return self._set_request("partial_fit", requests)

    def set_score_request(self, **requests):
        """As :meth:`set_fit_request`, for ``score`` (``sample_weight``). Returns ``self``."""
        return self._set_request("score", requests)

    def _requests(self):
        """A stand-in of :func:`_request_class` holding this estimator's requests."""
        stand_in = object.__new__(_request_class(type(self)))
        if "_metadata_request" in self.__dict__:
            stand_in._metadata_request = self.__dict__["_metadata_request"]
        return stand_in

    def _set_request(self, method: str, requests: dict):
        stand_in = self._requests()
        setter = getattr(stand_in, f"set_{method}_request", None)
        if setter is None:
            raise TypeError(f"{type(self).__name__}.{method} takes no metadata to request.")
        setter(**requests)
        self.__dict__["_metadata_request"] = stand_in._metadata_request
        return self

    def extra_repr(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        shown = []
        for name in self._get_param_names():
            value = getattr(self, name)
            default = defaults.get(name, inspect.Parameter.empty)
            try:
                same = value is default or bool(value == default)
            except Exception:  # arrays
                same = False
            if not same:
                shown.append(f"{name}={value!r}" if not isinstance(value, (np.ndarray, Tensor)) else f"{name}=<array>")
        return ", ".join(shown)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in type(self)._fitted_attributes:
                check = getattr(type(self), "_check_structure", None)
                if check is not None and self.__dict__.get("_fitted"):
                    check(self)  # fitted, then changed by set_params: says so
                raise exceptions.NotFittedError(
                    f"This {type(self).__name__} instance is not fitted yet, so it has no attribute {name!r}. "
                    "Call 'fit' with appropriate arguments before using this estimator."
                ) from None
            raise

    def _set_parameter(self, name: str, value: Tensor) -> None:
        """Store a fitted value: in place when the parameter already has its shape, device and
        dtype (so optimizers and other references to it stay valid across fits), else as a new
        ``nn.Parameter`` that keeps the old one's ``requires_grad`` (frozen by default)."""
        current = self._parameters.get(name)
        value = value.detach()
        # (a parameter made under torch.inference_mode cannot be written outside it: replaced)
        if (current is not None and current.shape == value.shape and current.dtype == value.dtype and current.device == value.device
                and (not current.is_inference() or torch.is_inference_mode_enabled())):
            with torch.no_grad():
                current.copy_(value)
            return
        requires_grad = current.requires_grad if current is not None else False
        self._parameters[name] = nn.Parameter(value.clone(), requires_grad=requires_grad)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # All or nothing for the model's own refusals (also as a submodule of another module): a
        # state dict refused below, by its extra state or by the parameters' shapes, leaves the
        # model as it was. (A parent module's strict-key errors come after its submodules
        # loaded: only this model's own load_state_dict undoes those too.)
        with self._loading_transaction():
            self._load_state(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
            self._check_loaded_shapes(prefix)

    @contextlib.contextmanager
    def _loading_transaction(self):
        """:meth:`EMEstimator._transaction` where the model has one (a plain module loads as
        nn.Module does)."""
        transaction = getattr(self, "_transaction", None)
        if transaction is None:
            yield
        else:
            with transaction():
                yield

    def _check_loaded_shapes(self, prefix: str = "") -> None:
        """Refuse loaded parameters whose shapes do not fit the model they now make up (its
        number of components, features and stacked problems): they would broadcast into wrong
        answers or fail later with torch's own messages."""
        expected = self._parameter_shapes() if self.__dict__.get("_fitted") else {}
        for name, shape in expected.items():
            p = self._parameters.get(name)
            if p is None:
                continue
            if p.ndim != len(shape) or any(e is not None and e != s for e, s in zip(shape, p.shape)):
                want = "(" + ", ".join("any" if e is None else str(e) for e in shape) + ("," if len(shape) == 1 else "") + ")"
                raise ValueError(
                    f"The state dict's {prefix + name!r} has shape {tuple(p.shape)}, but this {type(self).__name__} "
                    f"({self._shape_context()}) needs {want}; load the state dict that model.state_dict() saved, "
                    "unchanged, into a model constructed like the one that saved it."
                )

    def _parameter_shapes(self) -> dict[str, tuple]:
        """The shape each parameter must have in this fitted model (``None``: any size), for
        :meth:`_check_loaded_shapes`; none checked by default."""
        return {}

    def _shape_context(self) -> str:
        return ""

    def _load_state(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # Refused before anything is loaded (the model stays as it was): non-finite parameters
        # would make a model that predicts silently wrong. Logits may be infinite (a
        # probability of exactly 0 or 1), never NaN.
        for name in self._param_names:
            value = state_dict.get(prefix + name)
            if isinstance(value, Tensor) and not value.is_meta:
                bad = _invalid_entries(name, value)
                if bool(bad.any()):
                    raise ValueError(
                        f"The state dict's {prefix + name!r} holds {int(bad.sum())} NaN or infinite value(s), from which no "
                        f"{type(self).__name__} can be built; load the state dict that model.state_dict() saved from a "
                        "fitted model, or fix those entries."
                    )
        # A fresh model has no parameters yet: give them the saved shapes so they can be filled.
        for name in self._param_names:
            key = prefix + name
            if key in state_dict and isinstance(state_dict[key], Tensor):
                current = self._parameters.get(name)
                device = self._anchor.device
                dtype = state_dict[key].dtype if current is None else current.dtype
                if current is None or current.shape != state_dict[key].shape or current.is_inference():
                    self._parameters[name] = nn.Parameter(
                        torch.empty(state_dict[key].shape, device=device, dtype=dtype), requires_grad=False
                    )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        absent = [n for n in self._param_names if self._parameters.get(n) is None]
        if getattr(self, "_fitted", False) and absent:
            self._fitted = False  # a fitted state without its parameters is no fitted state
            raise ValueError(
                f"The state dict marks this {type(self).__name__} fitted but holds no value for its parameter(s) "
                f"{absent} (keys {[prefix + n for n in absent]}); load the complete state dict that "
                "model.state_dict() saved, parameters and extra state together."
            )
        if any(self._parameters.get(n) is not None for n in self._param_names):
            ref = self._parameters[self._param_names[0]]
            self._anchor = self._anchor.to(device=ref.device, dtype=ref.dtype)


def _torchem_class(cls: type) -> str:
    """The name of the nearest torchem estimator class of ``cls`` (itself, or the one a user's
    subclass derives from), which a state dict records and checks."""
    return next((c.__name__ for c in cls.__mro__ if c.__module__.startswith("torchem.")), cls.__name__)


def _invalid_entries(name: str, value: Tensor) -> Tensor:
    """Where a model parameter's ``value`` cannot be: NaN, or infinite except in logits (a
    probability of exactly 0 or 1)."""
    if not value.is_floating_point():
        return torch.zeros_like(value, dtype=torch.bool)
    return torch.isnan(value) if name.endswith("logits") else ~torch.isfinite(value)


@dataclass
class _Fit:
    """The data of one fit or one ``partial_fit`` batch: its source and layout."""

    source: Source
    info: DataInfo
    omitted: Any = 0  # nan_policy="omit": rows left out (a count, or the stream that counts them)

    @property
    def streamed(self) -> bool:
        return not isinstance(self.source, TensorSource)


class EMEstimator(EstimatorModule):
    """What every torchem estimator shares (not used directly).

    Shapes: a model fitted on ``X [N, D]`` holds parameters for one problem; a model fitted on
    ``X [B, N, D]`` holds ``B`` independent problems, and every fitted attribute and every
    per-sample output gains a leading ``B``.
    """

    _fitted_attributes: tuple[str, ...] = ("n_iter_", "n_features_in_")
    #: Hyper-parameters that do not change the fit (left out of the distributed handshake).
    _cosmetic: tuple[str, ...] = ("verbose", "verbose_interval", "random_state", "chunk_size")
    #: Warn (ConvergenceWarning) when the best restart ran out of iterations.
    _warn_not_converged = True

    def __init__(self) -> None:
        super().__init__()
        for name in self._param_names:
            self.register_parameter(name, None)
        # An empty buffer that follows .to(device) / .double(): where and in which dtype to fit.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        self._fitted = False
        self._stacked = False
        self._n_problems = 1
        self._output_numpy = True

    # ----------------------------------------------------------------------------------------
    # Hooks
    # ----------------------------------------------------------------------------------------

    @property
    @abstractmethod
    def _n_components(self) -> int:
        """The number of components (clusters) ``K``."""

    @abstractmethod
    def _validate_hyperparameters(self) -> None:
        """Check the constructor's arguments (raise ``ValueError`` naming the argument)."""

    @abstractmethod
    def _n_restarts(self) -> int:
        """Restarts of a fresh fit (``n_init``)."""

    @abstractmethod
    def _family(self, n_features: int) -> Family:
        """The driver's hooks for data of ``n_features`` features (see :class:`torchem.em.Family`)."""

    def _fit_family(self, source: Source) -> Family:
        """The family a fit runs with (K-means: one that knows its data); by default
        :meth:`_family`."""
        return self._family(source.n_features)

    @abstractmethod
    def _starting_params(self, source: Source, n_init: int, generator: torch.Generator) -> dict[str, Tensor]:
        """``[B, R, ...]`` starting parameters in the source's dtype, from the data (an
        in-memory sample of it, ``source.X``) and the constructor's initial values."""

    def _check_initial_values(self, n_features: int, n_problems: int) -> None:
        """Check the constructor's initial values against the data (a warm start, which does
        not use them, still refuses bad ones)."""

    @abstractmethod
    def _store(self, params: dict[str, Tensor]) -> None:
        """Save constrained parameters (one problem, or ``[B, ...]``) as the module's
        unconstrained ``nn.Parameter`` s (with :meth:`_set_parameter`)."""

    @abstractmethod
    def _constrained(self) -> dict[str, Tensor]:
        """The module's parameters as the driver's constrained parameters (differentiable)."""

    @abstractmethod
    def _bytes_per_sample(self, n_features: int, n_restarts: int, itemsize: int) -> int:
        """Working memory per sample of a chunk, for the automatic chunk size."""

    def _nan_policy(self) -> str:
        """``nan_policy`` (``"raise"`` for a model without one)."""
        return getattr(self, "nan_policy", "raise")

    @property
    def _marginalizes(self) -> bool:
        """Whether NaN entries are missing values the model's family marginalises (inference
        reads them so under ``nan_policy`` ``"omit"`` too: its outputs keep every row)."""
        return False

    def _warn_omitted(self, fit: _Fit) -> None:
        """``nan_policy="omit"``: warn with the number of rows left out, over every rank (a
        stream's count is known after its first pass)."""
        if self._nan_policy() != "omit":
            return
        count = fit.omitted if isinstance(fit.omitted, int) else fit.omitted.omitted
        if is_distributed():
            count = int(all_reduce_sum([torch.tensor(float(count), dtype=torch.float64, device=fit.source.device)])[0])
        if count:
            warnings.warn(f"{count} row(s) of X hold NaN and were left out of the fit (nan_policy='omit').", UserWarning,
                          stacklevel=caller_stacklevel())

    def _validate_values(self, X: Tensor, name: str) -> None:
        """Family-specific checks of the data's values (e.g. binary for Bernoulli); raise a
        ``ValueError`` that names ``name`` and says what to do."""

    def _em_settings(self) -> dict:
        """``tol``, ``max_iter``, ``hard`` and ``verbose`` of the driver."""
        return {"tol": float(self.tol), "max_iter": int(self.max_iter), "hard": bool(getattr(self, "hard", False)),
                "verbose": int(self.verbose), "verbose_interval": int(getattr(self, "verbose_interval", 10))}

    def _failure_message(self) -> str:
        return "EM failed: an M-step produced invalid parameters; check the input data for extreme values, or scale it."

    def _select(self, result: EMResult, source: Source) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor, list[Tensor]]:
        """The best restart of every problem: the highest lower bound (:func:`torchem.em.select_best`)."""
        return select_best(result)

    def _prepare_fit(self, source: Source) -> None:
        """Settings a model takes from the whole data before it initialises (the data-dependent
        priors of BayesianGaussianMixture): called on every rank by every ``fit`` and by the
        ``partial_fit`` that starts a model, with that fit's data (summing over the ranks is
        the model's to do, e.g. with :func:`torchem.em.accumulate`)."""

    def _after_fit(self, source: Source, params: dict[str, Tensor]) -> None:
        """Anything a model computes from its fitted parameters and the data (K-means: the
        labels and inertia of the training data)."""

    def _past_weight(self) -> np.ndarray | None:
        """``[B]`` float64: the sample weight the fitted parameters summarise, per problem (their
        samples when unweighted), for ``partial_fit``; ``None`` for a model not fitted by EM
        (unfitted, or only initialised)."""
        if not self._fitted:
            return None
        if "_fit_weight" not in self.__dict__:  # saved or pickled by a torchem that kept only the samples
            n = getattr(self, "_fit_samples", None)
            return np.full(int(self._n_problems), float(n)) if n else None
        return self._fit_weight

    @abstractmethod
    def _online_step(self, source: Source, params: dict[str, Tensor], state: dict | None, batch_weight: np.ndarray):
        """One ``partial_fit`` update: ``(new params [B, 1, ...], lower bound [B, 1], state)``;
        ``batch_weight`` is the ``[B]`` weight of the batch over every rank (its samples when
        unweighted)."""

    def _structural_hyperparameters(self) -> dict:
        """Hyper-parameters a fitted state depends on (a state dict of another is refused)."""
        return {"n_components": self._n_components}

    def _extra_state(self) -> dict:
        """What a model saves beyond the shared fitted state (tensors, for ``weights_only`` loads)."""
        return {}

    def _load_extra_state(self, state: dict) -> None:
        """Restore :meth:`_extra_state`."""

    # ----------------------------------------------------------------------------------------
    # Transactions and structure: a failed fit changes nothing; a changed structure is refused
    # ----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self):
        """Run a fit (or a ``partial_fit`` step) as a transaction: on any exception, a
        ``KeyboardInterrupt`` too, every parameter (in place, so optimizers' references stay
        valid; frozen or not as it was), buffer and attribute is put back as it was, so a fitted model keeps its fit
        (and ``partial_fit``'s running state) and an unfitted one stays unfitted."""
        params = {name: (p, None if p is None else (p.detach().clone(), p.requires_grad)) for name, p in self._parameters.items()}
        buffers = dict(self._buffers)
        # dicts and lists (partial_fit's running state) are changed in place by a step: copied
        attrs = {key: copy.deepcopy(value) if isinstance(value, (dict, list)) else value
                 for key, value in self.__dict__.items() if key not in _MODULE_INTERNALS}
        try:
            yield
        except BaseException:
            self._parameters.clear()
            for name, (p, kept) in params.items():
                if p is not None:
                    # (a parameter made under torch.inference_mode is written back under it)
                    with torch.inference_mode() if p.is_inference() else torch.no_grad():
                        p.copy_(kept[0])
                    p.requires_grad_(kept[1])  # frozen or trained, as it was
                self._parameters[name] = p
            self._buffers.clear()
            self._buffers.update(buffers)
            for key in [k for k in self.__dict__ if k not in _MODULE_INTERNALS and k not in attrs]:
                del self.__dict__[key]
            self.__dict__.update(attrs)
            raise

    def _structure_change(self) -> tuple[str, Any, Any] | None:
        """``(name, fitted value, current value)`` of the first structural hyper-parameter
        (:meth:`_structural_hyperparameters`) changed since the fit, or ``None``."""
        fitted = self.__dict__.get("_fitted_structure")
        if fitted is None:
            return None
        now = self._structural_hyperparameters()
        for key, value in fitted.items():
            if now.get(key) != value:
                return key, value, now.get(key)
        return None

    def _check_structure(self) -> None:
        """Refuse to use a fitted model whose structure was changed by ``set_params``: its
        parameters belong to the old structure, so it is not fitted as it stands
        (:class:`~torchem.NotFittedError`, a ``ValueError`` and an ``AttributeError``:
        ``hasattr(model, "means_")`` is False)."""
        change = self._structure_change()
        if change is not None:
            key, old, new = change
            raise exceptions.NotFittedError(
                f"This {type(self).__name__} was fitted with {key}={old!r}, but {key} is now {new!r} (changed by "
                f"set_params after the fit), so its fitted parameters no longer match it. Call fit (or partial_fit) "
                f"again before using the model, or set {key}={old!r} back."
            )

    def _restart_on_structure_change(self, what: str) -> bool:
        """Warn and forget the fit when the structure changed since it (a warm start or a
        ``partial_fit`` then starts afresh); whether it did."""
        change = self._structure_change()
        if change is None or not self._fitted:
            return False
        key, old, new = change
        warnings.warn(
            f"{key} changed from {old!r} to {new!r} since this {type(self).__name__} was fitted, so {what} cannot "
            "continue the fitted parameters: it starts afresh.",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )
        self._fitted = False
        self._online = None
        self._fit_samples = self._fit_weight = None
        return True

    # ----------------------------------------------------------------------------------------
    # Opening data: the estimator decides device, dtype and chunk size; the data layer opens
    # ----------------------------------------------------------------------------------------

    def _compute_device_dtype(self, info: DataInfo, fitted: bool) -> tuple[torch.device, torch.dtype]:
        """A fresh fit computes where the model is (``.to(device)``), or where tensor input
        lives when the model is on the CPU, in the wider of the data's and the model's dtype;
        a fitted model computes where its parameters are."""
        if fitted:
            ref = getattr(self, self._param_names[0])
            return ref.device, working_dtype(info, ref.device, ref.dtype)
        anchor = self._anchor
        device = anchor.device if anchor.device.type != "cpu" else info.device
        return device, working_dtype(info, device, anchor.dtype)

    def _chunk_size(self, n_features: int, n_restarts: int, device, dtype, n_samples: int | None) -> int:
        if self.chunk_size is not None:
            return int(self.chunk_size)
        per = self._bytes_per_sample(n_features, n_restarts, torch.finfo(dtype).bits // 8)
        return auto_chunk_size(per, torch.device(device), n_samples if n_samples is not None else 2**62)

    def _open(self, X, sample_weight, *, fitted: bool, n_restarts: int, labels=None) -> _Fit:
        policy, omitted = self._nan_policy(), 0
        if policy == "omit":
            X, sample_weight, labels, omitted = omit_rows(X, sample_weight, labels)
        info = describe(X, "X")
        device, dtype = self._compute_device_dtype(info, fitted)
        chunk = self._chunk_size(info.n_features, n_restarts * info.n_problems, device, dtype, info.n_samples)
        source = open_source(info, sample_weight, device=device, dtype=dtype, chunk_size=chunk, check=self._value_check(),
                             convert=self._value_map(), labels=labels, n_components=self._n_components,
                             allow_nan=policy == "marginalize")
        return _Fit(source, info, omitted)

    def _value_check(self):
        def check(chunk: Tensor) -> None:
            self._validate_values(chunk, "X")

        return check

    def _value_map(self):
        """``None``, or a function mapping a checked chunk (in the compute dtype) to the values
        the model reads (BernoulliMixture's ``binarize``): fitting, ``partial_fit`` and inference
        apply it chunk by chunk, where they convert the data."""
        return None

    def _in_memory(self, X: Tensor, w: Tensor | None, device, dtype, n_restarts: int, labels: Tensor | None = None) -> TensorSource:
        """A source of data already on the device (an initial sample, a gathered batch)."""
        chunk = self._chunk_size(X.shape[-1], n_restarts * X.shape[0], device, dtype, X.shape[-2])
        return TensorSource(X, device=device, dtype=dtype, sample_weight=w, chunk_size=chunk, labels=labels)

    def _collective_device(self, fit: _Fit | None) -> torch.device:
        """Where this rank's collectives run: its data's compute device (the model's when
        its data could not be read)."""
        if fit is not None:
            return fit.source.device
        if self._fitted:
            return getattr(self, self._param_names[0]).device
        return self._anchor.device

    def _signature(self, fit: _Fit | None, state: dict) -> dict:
        """What every rank of a distributed fit must agree on: the data's layout, the
        hyper-parameters and ``state`` (whether the fit continues the fitted parameters, how
        far a stream has gone), so ranks never take different paths through the collectives."""
        if fit is None:
            return {}
        sig = signature(self, fit.source.n_features, fit.source.dtype, fit.info.n_problems, fit.info.stacked,
                        skip=self._cosmetic)
        sig.update(state)
        return sig

    # ----------------------------------------------------------------------------------------
    # Fitting
    # ----------------------------------------------------------------------------------------

    def _continues(self) -> bool:
        if not (bool(getattr(self, "warm_start", False)) and self._fitted):
            return False
        return not self._restart_on_structure_change("a warm start (warm_start=True)")

    def _fitted_params(self, device, dtype) -> dict[str, Tensor]:
        """The fitted parameters as ``[B, 1, ...]`` driver parameters."""
        params = {k: v.detach().to(device=device, dtype=dtype) for k, v in self._constrained().items()}
        if not self._stacked:
            params = {k: v.unsqueeze(0) for k, v in params.items()}
        return {k: v.unsqueeze(1) for k, v in params.items()}

    def _check_layout(self, fit: _Fit, what: str) -> None:
        s = fit.source
        if s.n_features != self.n_features_in_:
            raise ValueError(
                f"X has {s.n_features} features, but {type(self).__name__} is expecting {self.n_features_in_} features "
                f"as input ({what} continues the fitted model); pass data with the same columns."
            )
        if fit.info.stacked != self._stacked or fit.info.n_problems != self._n_problems:
            def layout(stacked: bool, b: int, d: int) -> str:
                return f"stacked data (B, N, D) of {b} problem(s) with {d} features" if stacked else f"2-D data (N, D) of {d} features"

            raise ValueError(
                f"{what} continues a model fitted on {layout(self._stacked, self._n_problems, self.n_features_in_)}; "
                f"X is {layout(fit.info.stacked, fit.info.n_problems, s.n_features)}. Pass data of the same layout"
                + (" or set warm_start=False." if what == "warm_start=True" else ".")
            )

    @torch.no_grad()
    @full_float32_matmul()  # exact whatever the user's TF32 setting (docs/scale.md)
    def _fit(self, X, sample_weight=None, callback=None, max_iter: int | None = None, labels=None) -> None:
        """The fit sequence, as a transaction (:meth:`_transaction`)."""
        with self._transaction():
            self._fit_sequence(X, sample_weight, callback, max_iter, labels)

    @torch.no_grad()
    def _fit_sequence(self, X, sample_weight, callback, max_iter: int | None, labels=None) -> None:
        self._validate_hyperparameters()
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable as callback(iteration, lower_bound, model); got {callback!r}.")
        settings = self._em_settings()
        if max_iter is not None:
            settings["max_iter"] = max_iter
        k = self._n_components
        continuing = self._continues()
        n_init = 1 if continuing else self._n_restarts()
        fit, error, sample = None, None, None
        try:
            fit = self._open(X, sample_weight, fitted=continuing, n_restarts=n_init, labels=labels)
            check_feature_names(self, X, reset=True)
            source = fit.source
            generator = make_generator(self.random_state, source.device)
            if continuing:
                self._check_layout(fit, "warm_start=True")
            if not continuing and (fit.streamed or is_distributed()
                                   or (source.n_samples > data_module.INIT_SAMPLE_SIZE and self._init_reads_data())):
                # initialise from a uniform sample (the whole data when it is small): streamed,
                # sharded and large in-memory data alike, so they give the same fit
                sample = reservoir_sample(source, -(-data_module.INIT_SAMPLE_SIZE // world_size()), generator, labels=True)
            elif fit.streamed:
                for _ in source.chunks():  # a first pass: counts an iterable, checks values
                    pass
        except (ValueError, TypeError) as exc:
            if not is_distributed():
                raise
            error = exc
        # every rank raises, or none (on the device the data is on, whatever CUDA device is current)
        check_consistent(self._signature(fit, {"continues_fit": continuing}), error, self._collective_device(fit))
        self._warn_omitted(fit)
        info, device, dtype = fit.info, source.device, source.dtype
        n = int(all_reduce_sum([torch.tensor(float(source.n_samples), dtype=torch.float64, device=device)])[0])
        if n < k:
            raise ValueError(self._too_few_samples(n, k))
        # on every rank, whatever its source (a shard may weigh nothing; the whole data may not)
        total_weight = all_reduce_sum([source.total_weight().double()])[0]  # [B], every rank's
        if bool((total_weight <= 0).any()):
            raise ValueError(
                "Sample weights must contain at least one non-zero number: the sample weights of "
                f"{'the stream X' if fit.streamed else 'X'} sum to zero; give some samples a positive weight."
            )
        self._prepare_fit(source)
        if continuing:
            self._check_initial_values(source.n_features, info.n_problems)
            params = self._fitted_params(device, dtype)
            lb = torch.as_tensor(np.asarray(self._lower_bound, dtype=np.float64), device=device)
            lower_bound = lb.reshape(info.n_problems, 1)
        else:
            init_source = source
            if sample is not None:
                sx, sw, sl = gather_samples(*sample)
                sx, sw, sl = self._with_distinct_rows(source, sx, sw, sl, n)
                init_source = self._in_memory(sx, sw, device, dtype, n_init, sl)
            params = broadcast_params(self._restart_params(init_source, n_init, generator))
            lower_bound = None
        params = {key: v.to(dtype) for key, v in params.items()}
        stopped: list[int] = []

        def report(it, lb, params_now):
            # the model holds the current best restart while the user's callback runs
            best = self._record(EMResult(params_now, lb, torch.full_like(lb, it, dtype=torch.int64),
                                         torch.zeros_like(lb, dtype=torch.bool)), fit, source)
            if callback(it, best, self):
                stopped.append(it)
            return bool(stopped)

        family = self._fit_family(source)
        if settings["max_iter"] > 0:
            result = run_em(
                family, source, params, tol=settings["tol"], max_iter=settings["max_iter"], lower_bound=lower_bound,
                callback=None if callback is None else report, verbose=settings["verbose"],
                verbose_interval=settings["verbose_interval"], failure_message=self._failure_message(),
                hard=settings["hard"], freeze_failed=settings.get("freeze_failed", False),
            )
        else:
            lead = next(iter(params.values())).shape[:2]  # [B, R]
            lb0 = lower_bound if lower_bound is not None else torch.full(lead, -torch.inf, dtype=torch.float64, device=device)
            zeros = torch.zeros(lead, dtype=torch.int64, device=device)
            result = EMResult(params, lb0, zeros, zeros.bool())
        best = self._record(result, fit, source, select=True)
        self._online = None  # a new fit: partial_fit starts its running statistics afresh
        # how many samples the fitted parameters summarise, and their weight per problem (a
        # weight w counts as w samples), for partial_fit (none after an initialisation
        # without EM iterations, e.g. initialize(X))
        self._fit_samples = n if settings["max_iter"] > 0 else None
        self._fit_weight = total_weight.cpu().numpy() if settings["max_iter"] > 0 else None
        self._after_fit(source, best)
        # warn only when EM ran out of iterations: not when a callback (on any rank) stopped it
        ran_out = int(result.n_iter.max()) >= settings["max_iter"] and not stopped
        if self._warn_not_converged and settings["max_iter"] > 0 and not bool(self._converged.all()) and ran_out:
            which = "" if not info.stacked else f" ({int((~self._converged).sum())} of {info.n_problems} problems)"
            warnings.warn(
                f"Best performing initialization did not converge{which}. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                exceptions.ConvergenceWarning,
                stacklevel=caller_stacklevel(),
            )

    def _init_reads_data(self) -> bool:
        """Whether the initialisation reads the data (a K-means start from given centres does
        not, so large in-memory data is then not sampled for it)."""
        return True

    #: Distinct rows the initialisation needs (K-means: ``n_clusters``); 0: none.
    def _distinct_rows_needed(self) -> int:
        return 0

    def _with_distinct_rows(self, source: Source, sx: Tensor, sw: Tensor | None, sl: Tensor | None,
                            n: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The initial sample ``sx [B, m, D]`` (weights ``sw``, labels ``sl``), with up to ``k`` distinct rows
        of the data appended when a sample of fewer than ``n`` samples holds fewer than the
        ``k`` distinct rows the initialisation needs, so that a rare point the sample missed can
        still seed a centre (one more pass, only then; data with fewer than ``k`` distinct points
        pays it too, and its centres then repeat points)."""
        k = self._distinct_rows_needed()
        # the sample is every rank's (gathered), and so is each decision below
        if k == 0 or sx.shape[1] >= n:
            return sx, sw, sl
        if all(_count_distinct_up_to(sx[b], k) >= k for b in range(sx.shape[0])):
            return sx, sw, sl
        found = _distinct_rows(source, k)
        if is_distributed():  # the distinct rows of every rank's shard, then of their union
            found = _distinct_rows_over_ranks(found, sx, k)
        if any(f.shape[0] < k for f in found):
            return sx, sw, sl  # the data itself has too few: the initialisation repeats points (and the fit warns)
        extra = torch.stack(found).to(device=sx.device, dtype=sx.dtype)
        sx = torch.cat([sx, extra], 1)
        if sw is not None:
            sw = torch.cat([sw, torch.ones(extra.shape[:2], device=sw.device, dtype=sw.dtype)], 1)
        if sl is not None:  # the appended rows count as unlabelled
            sl = torch.cat([sl, torch.full(extra.shape[:2], -1, device=sl.device, dtype=sl.dtype)], 1)
        return sx, sw, sl

    def _restart_params(self, source: Source, n_init: int, generator: torch.Generator) -> dict[str, Tensor]:
        """``[B, R, ...]`` starting parameters of ``R`` restarts, each drawn on its own, so that
        restart 0 is exactly the start of an ``n_init=1`` fit with the same ``random_state``
        (more restarts never make a fit worse): restart 0 draws from ``generator``, the others
        from generators seeded by it afterwards."""
        first = self._starting_params(source, 1, generator)
        if n_init == 1:
            return first
        seeds = torch.randint(0, 2**62, (n_init - 1,), generator=generator, device=generator.device).tolist()
        parts = [first]
        for seed in seeds:
            parts.append(self._starting_params(source, 1, torch.Generator(generator.device).manual_seed(int(seed))))
        return {key: torch.cat([p[key] for p in parts], 1) for key in first}

    def _k_name(self) -> str:
        return "n_components"

    def _too_few_samples(self, n: int, k: int) -> str:
        return (f"Expected n_samples >= n_components but got n_components = {k}, n_samples = {n}. "
                "Reduce n_components or pass more data.")

    def _record(self, result: EMResult, fit: _Fit, source: Source, select: bool = False):
        """Store the best restart of ``result`` as the fitted state; returns its lower bound
        (a float, or ``[B]`` for a fit of ``B`` problems) and, with ``select``, its parameters."""
        if select:
            best, lower_bound, n_iter, converged, history = self._select(result, source)
        else:
            best, lower_bound, n_iter, converged, history = select_best(result)
        stacked = fit.info.stacked
        stored = best if stacked else {k: v.squeeze(0) for k, v in best.items()}
        self._stacked = stacked
        self._n_problems = fit.info.n_problems
        self._output_numpy = fit.info.kind.is_numpy
        self.n_features_in_ = int(source.n_features)
        self._anchor = self._anchor.to(device=source.device, dtype=source.dtype)
        self._store(stored)
        self._lower_bound = lower_bound.cpu().numpy()
        self._n_iter = n_iter.cpu().numpy()
        self._converged = converged.cpu().numpy()
        self._history = torch.stack(history, -1).cpu().numpy() if history else np.zeros((fit.info.n_problems, 0))
        self._fitted = True
        self._fitted_structure = self._structural_hyperparameters()
        return best if select else self._scalar_or_array(self._lower_bound, float)

    # ----------------------------------------------------------------------------------------
    # Online fitting: partial_fit's handshake (the update rule is the model's)
    # ----------------------------------------------------------------------------------------

    @torch.no_grad()
    @full_float32_matmul()  # exact whatever the user's TF32 setting (docs/scale.md)
    def partial_fit(self, X, y=None, sample_weight=None, *, labels=None):
        """One online update on a batch of a stream (see the model's ``_online_step``): the
        first call initialises the model from its batch unless it is already fitted, in which
        case the stream continues from the fitted parameters. Under ``torch.distributed`` every
        rank passes its own part of each batch; all ranks keep identical parameters.

        Args:
            X: ``[n, D]`` (or ``[B, n, D]``) batch, numpy or tensor, or one batch of a stream
                as ``fit`` reads it: a mapping ``{"X": X, "sample_weight": w, "labels": l}``.
            y: ignored.
            sample_weight: optional ``[n]`` weights.
            labels: optional ``[n]`` partial labels, as ``fit`` takes them.

        Returns:
            ``self``.
        """
        with self._transaction():
            self._partial_fit_step(X, sample_weight, labels)
        return self

    @torch.no_grad()
    def _partial_fit_step(self, X, sample_weight, labels=None) -> None:
        self._validate_hyperparameters()
        self._restart_on_structure_change("partial_fit")
        state = getattr(self, "_online", None)
        fit, error = None, None
        try:
            if isinstance(X, Mapping):  # one batch of a stream, as fit reads them
                if sample_weight is not None or labels is not None:
                    raise ValueError("sample_weight and labels cannot be combined with a mapping batch; put them under "
                                     "its keys 'sample_weight' and 'labels'.")
                labels = data_module.batch_labels(X)
                X, sample_weight = data_module.split_batch(X)
            if isinstance(X, np.memmap):
                X = np.asarray(X)  # one batch: read it into memory
            elif data_module.is_iterable_data(X):
                raise ValueError(
                    "partial_fit takes one batch [n_samples, n_features] (an array or a tensor, or a mapping "
                    "{'X': X, 'sample_weight': w}); call it once per batch of a stream, or pass the whole re-iterable "
                    "to fit. Labels are not used, and weights go in sample_weight."
                )
            check_feature_names(self, X, reset=not self._fitted)
            fit = self._open(X, sample_weight, fitted=self._fitted, n_restarts=1, labels=labels)
            if fit.streamed:  # a host batch larger than half a CUDA device's free memory
                raise ValueError(
                    "This partial_fit batch does not fit in the device's memory at once; split it into smaller batches "
                    "(or pass the whole data to fit, which streams it)."
                )
            if self._fitted:
                self._check_layout(fit, "partial_fit")
        except (ValueError, TypeError) as exc:
            if not is_distributed():
                raise
            error = exc
        stream = {"fitted": bool(self._fitted), "stream_batches": 0 if state is None else state.get("batches", 0)}
        signature, where = self._signature(fit, stream), self._collective_device(fit)
        if state is None:  # a stream's first batch: the full handshake (every rank raises, or none)
            check_consistent(signature, error, where)
            n_batch = consistent_count(signature, None, fit.source.n_samples, where)
        else:  # later batches: one small all-reduce, which also sums the batch's size
            n_batch = consistent_count(signature, error, 0 if fit is None else fit.source.n_samples, where)
        self._warn_omitted(fit)
        source = fit.source
        device, dtype = source.device, source.dtype
        if self._fitted:
            params = self._fitted_params(device, dtype)
        else:
            # initialise from the first batch (of every rank, under torch.distributed)
            sx, sw, sl = gather_samples(source.X, source.sample_weight, source.labels)
            if sx.shape[1] < self._n_components:
                raise ValueError(
                    f"The first batch given to partial_fit initialises the model and needs at least "
                    f"{self._k_name()} = {self._n_components} samples; got {sx.shape[1]}."
                )
            init_source = self._in_memory(sx, sw, device, dtype, 1, sl) if is_distributed() else source
            self._prepare_fit(source)
            generator = make_generator(self.random_state, device)
            params = broadcast_params(self._starting_params(init_source, 1, generator))
            state = None
        if state is not None:
            state = _to_device(state, device)  # the model may have been moved with .to(device)
        # [B] float64 on the host: the batch's weight per problem, over every rank
        batch_weight = all_reduce_sum([source.total_weight().double()])[0].cpu().numpy()
        was_fitted = bool(self._fitted)
        new, ll, state = self._online_step(source, {k: v.to(dtype) for k, v in params.items()}, state, batch_weight)
        state["batches"] = state.get("batches", 0) + 1
        # the samples and weight the parameters now summarise (a reloaded model continues from
        # there; the step's parameters stand for this batch alone when it started the model)
        past_samples = getattr(self, "_fit_samples", None) if was_fitted else None
        self._fit_samples = (past_samples or 0) + n_batch
        past = self._past_weight() if was_fitted else None
        self._fit_weight = batch_weight if past is None else past + batch_weight
        steps = torch.full(ll.shape, state["batches"], dtype=torch.int64, device=ll.device)
        self._record(EMResult({k: v.to(dtype) for k, v in new.items()}, ll, steps,
                              torch.zeros_like(steps, dtype=torch.bool), [ll]), fit, source)
        self._online = state

    # ----------------------------------------------------------------------------------------
    # Inference over blocks
    # ----------------------------------------------------------------------------------------

    def _check_input(self, X, name: str = "X") -> tuple[Tensor, InputKind]:
        """Convert and validate data given to a fitted model."""
        check_fitted(self)
        check_feature_names(self, X, reset=False)
        info = describe(X, name)
        t, kind = info.data, info.kind
        if isinstance(t, np.ndarray):  # a memmap read whole by a caller that asked for it
            t = torch.from_numpy(np.array(t, dtype=np.float32 if t.dtype == np.float32 else np.float64))
        if info.integral:  # integers on a CUDA model: its dtype, as in fitting (data.working_dtype)
            ref = getattr(self, self._param_names[0])
            t = t.to(working_dtype(info, ref.device, ref.dtype))
        marginal = self._marginalizes  # NaN entries are missing values: inf is still refused
        check_data(t, name, n_features=self.n_features_in_, allow_stacked=True, estimator=type(self).__name__,
                   check_finite=not marginal)
        if t.ndim == 3 and not self._stacked:
            raise ValueError(
                f"{name} is 3-D (shape {tuple(t.shape)}) but this model was fitted on a single 2-D problem; "
                "pass a 2-D array [n_samples, n_features]."
            )
        if t.ndim == 3 and t.shape[0] != self._n_problems:
            raise ValueError(
                f"{name} holds {t.shape[0]} problems (shape {tuple(t.shape)}) but this model was fitted on "
                f"{self._n_problems}; pass [{self._n_problems}, n_samples, n_features] or a 2-D array to score "
                "the same samples under every problem."
            )
        for s in range(0, t.shape[-2], 2**16):
            block = t[..., s : s + 2**16, :]
            self._validate_values(check_observed(block, name, "calling this method") if marginal else block, name)
        return t, kind

    def _model_dtype(self, X: Tensor) -> tuple[torch.device, torch.dtype]:
        ref = getattr(self, self._param_names[0])
        return ref.device, torch.promote_types(X.dtype, ref.dtype)

    @full_float32_matmul()  # exact whatever the user's TF32 setting (docs/scale.md)
    def _map_chunks(self, X: Tensor, fn, dim: int = -1) -> Tensor:
        """``fn(X_chunk [.., n, D], params, family, prepared)`` over chunks of samples on the
        model's device, joined along ``dim`` (their sample dimension)."""
        device, dtype = self._model_dtype(X)
        params = {k: v.detach().to(dtype) for k, v in self._constrained().items()}
        family = self._family(X.shape[-1])
        prepared = family.prepare(params)
        step = self._chunk_size(X.shape[-1], self._n_problems, device, dtype, X.shape[-2])
        convert = self._value_map() or (lambda chunk: chunk)
        # host input on a CUDA model: each chunk's output goes back to the host as it is made,
        # so device memory holds one chunk's outputs (an [N, K] output joined on the device
        # would grow with N); the host is where they are returned anyway
        back = X.device if X.device != device else None
        outs = []
        for s in range(0, X.shape[-2], step):
            out = fn(convert(X[..., s : s + step, :].to(device=device, dtype=dtype)), params, family, prepared)
            outs.append(out if back is None else out.to(back))
        return torch.cat(outs, dim=dim)

    @staticmethod
    def _joint(X: Tensor, params, family: Family, prepared) -> Tensor:
        """``log w_k + log p_k(x)`` of a chunk: ``[.., n, K]``."""
        log_prob, _ = family.log_prob(X, prepared)
        return log_prob + family.log_weights(params).to(log_prob.dtype).unsqueeze(-2)

    def _blocks(self, X, method, axis_from_end: int):
        """``method`` applied to each block of a stream or memmap, joined; ``None`` for
        in-memory data."""
        blocks = inference_blocks(X)
        if blocks is None:
            return None
        return concat_blocks([method(xb) for xb, _ in blocks], axis_from_end)

    @torch.no_grad()
    def predict(self, X):
        """The most probable component (nearest centre) of each sample: ``[N]`` (``[B, N]``)
        int64 (int32 for KMeans, as its ``labels_`` and scikit-learn's). ``X`` may also be an
        ``np.memmap`` (read in blocks) or an iterable of batches (a DataLoader, a generator):
        the outputs of its batches are joined, here and in every inference method."""
        joined = self._blocks(X, self.predict, 1)
        if joined is not None:
            return joined
        t, kind = self._check_input(X)
        return to_output(self._map_chunks(t, self._predict_chunk), kind)

    def _predict_chunk(self, X: Tensor, params, family: Family, prepared) -> Tensor:
        """The labels ``[.., n]`` of a chunk."""
        return self._joint(X, params, family, prepared).argmax(-1)

    # ----------------------------------------------------------------------------------------
    # Attributes
    # ----------------------------------------------------------------------------------------

    def _attr(self, t: Tensor):
        """Fitted attributes come back as numpy when the model was fitted on numpy."""
        t = t.detach()
        return t.cpu().numpy() if self._output_numpy else t

    def _scalar_or_array(self, value: np.ndarray, cast):
        if not self._stacked:
            return cast(np.asarray(value).reshape(-1)[0])
        return value if self._output_numpy else torch.as_tensor(value)

    @property
    def n_iter_(self):
        """EM iterations of the best restart, or batches seen by ``partial_fit`` (``[B]`` for ``B``
        problems)."""
        check_fitted(self)
        return self._scalar_or_array(self._n_iter, int)

    # ----------------------------------------------------------------------------------------
    # Gradients
    # ----------------------------------------------------------------------------------------

    def _parameters_from_init(self) -> tuple[dict[str, Tensor], bool] | None:
        """``(constrained params, stacked)`` from the constructor's initial values when they
        determine every parameter, else ``None``."""
        return None

    def requires_grad_(self, requires_grad: bool = True):
        """Enable (or disable) gradients on every parameter, as ``nn.Module.requires_grad_``.

        The parameters are frozen after ``fit``; enabling gradients makes the model trainable
        by any ``torch.optim`` optimizer (see :func:`torchem.fit_by_gradient`). An unfitted
        model gets its parameters from the constructor's initial values when they determine
        all of them; otherwise there is nothing to train yet and this raises
        :class:`NotFittedError` saying how to get parameters."""
        if requires_grad and not self._fitted:
            found = self._parameters_from_init()
            if found is None:
                raise exceptions.NotFittedError(
                    f"This {type(self).__name__} has no parameters to train yet. Call fit(X) first"
                    + self._how_to_get_parameters()
                )
            params, stacked = found
            self._set_fitted_parameters(params, stacked, output_numpy=False)
        return super().requires_grad_(requires_grad)

    def _how_to_get_parameters(self) -> str:
        return "."

    def _set_fitted_parameters(self, params: dict[str, Tensor], stacked: bool, output_numpy: bool) -> None:
        """Make the model usable from given constrained parameters (no EM). Fit diagnostics
        are empty (``n_iter_ == 0``, ``converged_`` False, ``lower_bound_`` NaN)."""
        ref = next(iter(params.values()))
        b = ref.shape[0] if stacked else 1
        self._store(params)
        self._stacked, self._n_problems, self._output_numpy = stacked, b, output_numpy
        self.n_features_in_ = int(self._n_features_of(params))
        self._anchor = self._anchor.to(device=ref.device, dtype=ref.dtype)
        self._lower_bound = np.full(b, np.nan)
        self._n_iter = np.zeros(b, dtype=np.int64)
        self._converged = np.zeros(b, dtype=bool)
        self._history = np.zeros((b, 0))
        self._fitted = True
        self._fitted_structure = self._structural_hyperparameters()

    def _n_features_of(self, params: dict[str, Tensor]) -> int:
        return next(iter(params.values())).shape[-1]

    # ----------------------------------------------------------------------------------------
    # State dict: the versioned extra state
    # ----------------------------------------------------------------------------------------

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, all or nothing: a state dict refused for any reason
        (keys missing or unexpected with ``strict``, another model's structure or class,
        parameters of the wrong shape, NaN entries) leaves the model exactly as it was."""
        with self._transaction():
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _parameter_shapes(self) -> dict[str, tuple]:
        lead = (self._n_problems,) if self._stacked else ()
        k, d = self._n_components, self.n_features_in_
        return {name: lead + shape for name, shape in self._component_shapes(k, d).items()}

    def _component_shapes(self, k: int, d: int) -> dict[str, tuple]:
        """One problem's parameter shapes for ``k`` components of ``d`` features (``None``:
        any size); none checked by default."""
        return {}

    def _shape_context(self) -> str:
        problems = f", {self._n_problems} stacked problems" if self._stacked else ""
        return f"{self._k_name()}={self._n_components}, {self.n_features_in_} features{problems}"

    def get_extra_state(self) -> dict:
        state = {"version": EXTRA_STATE_VERSION, "fitted": self._fitted, "estimator": _torchem_class(type(self))}
        if self._fitted:
            state.update(
                stacked=self._stacked,
                n_problems=self._n_problems,
                output_numpy=self._output_numpy,
                n_features_in=self.n_features_in_,
                # tensors, not numpy arrays, so torch.load(..., weights_only=True) accepts them
                lower_bound=torch.as_tensor(self._lower_bound),
                n_iter=torch.as_tensor(self._n_iter),
                converged=torch.as_tensor(self._converged),
                history=torch.as_tensor(self._history),
                hyper=self.__dict__.get("_fitted_structure") or self._structural_hyperparameters(),
                fit_samples=int(getattr(self, "_fit_samples", None) or 0),
                fit_weight=None if getattr(self, "_fit_weight", None) is None else torch.as_tensor(self._fit_weight),
                feature_names=None if self.__dict__.get("feature_names_in_") is None else [str(n) for n in self.feature_names_in_],
                model=self._extra_state(),
            )
        return state

    def set_extra_state(self, state: dict) -> None:
        version = state.get("version", 0)
        if version > EXTRA_STATE_VERSION:
            raise ValueError(
                f"This state dict was saved by a newer torchem (extra state version {version}; this one reads up "
                f"to {EXTRA_STATE_VERSION}); upgrade torchem to load it."
            )
        saved_by, mine = state.get("estimator"), _torchem_class(type(self))
        if saved_by is not None and saved_by != mine:
            raise ValueError(
                f"The state dict was saved by a {saved_by}; load it into a {saved_by} (a {mine} has other parameters "
                "and extra state)."
            )
        self._fitted = bool(state.get("fitted", False))
        if not self._fitted:  # an unfitted model: partial_fit starts afresh
            self._online = None
            self._fit_samples = self._fit_weight = None
            return
        if "stacked" not in state:  # saved by torchem 0.1, which called B problems a "batch"
            state = dict(state, stacked=state["batched"], n_problems=state["batch_size"])
        if "lower_bound" not in state:  # saved by torchem 0.1's KMeans: its own fields only
            b = int(state["n_problems"])
            state = dict(state, lower_bound=np.full(b, np.nan), converged=np.zeros(b, dtype=bool),
                         history=np.zeros((b, 0)), hyper={"n_clusters": state["n_clusters"]}, model=state)
        hyper = state.get("hyper", {})
        mine = self._structural_hyperparameters()
        for key, value in hyper.items():
            if mine.get(key) != value:
                raise ValueError(
                    f"The state dict was saved from a model with {key}={value!r}, but this model has "
                    f"{key}={mine.get(key)!r}; construct the model with the same {key} before loading."
                )
        self._stacked = state["stacked"]
        self._n_problems = state["n_problems"]
        self._output_numpy = state["output_numpy"]
        self.n_features_in_ = state["n_features_in"]
        self._lower_bound = np.asarray(state["lower_bound"])
        self._n_iter = np.asarray(state["n_iter"])
        self._converged = np.asarray(state["converged"])
        self._history = np.asarray(state["history"])
        self._fitted_structure = self._structural_hyperparameters()
        names = state.get("feature_names")
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        else:
            self.__dict__.pop("feature_names_in_", None)
        # a loaded model is a new starting point: partial_fit continues from its parameters
        self._online = None
        self._fit_samples = int(state.get("fit_samples", 0)) or None
        if state.get("fit_weight") is None:  # saved before the weight was kept: _past_weight reads the samples
            self.__dict__.pop("_fit_weight", None)
        else:
            self._fit_weight = np.asarray(state["fit_weight"], dtype=np.float64)
        try:
            self._load_extra_state(state.get("model", {}))
        except KeyError as missing:
            raise ValueError(
                f"The state dict's extra state has no entry {missing}, which a fitted {type(self).__name__} keeps; load "
                f"the state dict that a {type(self).__name__}'s state_dict() saved."
            ) from None


def _count_distinct_up_to(X: Tensor, k: int) -> int:
    """The number of distinct rows of ``X [N, D]``, counted only as far as ``k``: growing
    prefixes are examined, so data with many distinct points costs a sort of ``8k`` rows."""
    m = 8 * k
    while True:
        distinct = torch.unique(X[:m], dim=0).shape[0]
        if distinct >= k or m >= X.shape[0]:
            return distinct
        m *= 8


def _distinct_rows(source: Source, k: int) -> list[Tensor]:
    """Up to ``k`` distinct rows of each problem, ``[m_b, D]``, found by one pass over the data."""
    found: list[Tensor | None] = [None] * source.n_problems
    for _, X, _ in source.chunks():
        for b in range(X.shape[0]):
            if found[b] is not None and found[b].shape[0] >= k:
                continue
            rows = X[b] if found[b] is None else torch.cat([found[b], X[b]])
            found[b] = torch.unique(rows, dim=0)[:k]
    return found


def _distinct_rows_over_ranks(found: list[Tensor | None], like: Tensor, k: int) -> list[Tensor]:
    """Up to ``k`` distinct rows of each problem over all the ranks, the same on every rank,
    from each rank's own (``found``, ``None`` for a rank without samples)."""
    b, d = like.shape[0], like.shape[-1]
    m = max((0 if f is None else f.shape[0]) for f in found)
    mine = like.new_zeros(b, m, d)
    for i, f in enumerate(found):
        if f is not None and f.shape[0]:
            # padded by repeating a row: a repeat adds no distinct row
            mine[i] = torch.cat([f, f[:1].expand(m - f.shape[0], d)]).to(mine.dtype)
    everyone = gather_samples(mine, None)[0]
    return [torch.unique(everyone[i], dim=0)[:k] for i in range(b)]


def _to_device(tree, device):
    """A copy of nested dicts of tensors on ``device`` (partial_fit's state after ``.to``)."""
    if isinstance(tree, dict):
        return {k: _to_device(v, device) for k, v in tree.items()}
    return tree.to(device) if isinstance(tree, Tensor) else tree
