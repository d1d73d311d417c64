"""What every torchem estimator shares: scikit-learn's parameter protocol on an nn.Module."""

from __future__ import annotations

import inspect
from abc import ABCMeta
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .exceptions import NotFittedError

__all__ = ["EstimatorModule"]


class EstimatorModule(nn.Module, metaclass=ABCMeta):
    """``get_params``/``set_params`` from the constructor's signature (so
    ``sklearn.base.clone`` works), a repr of the non-default hyper-parameters,
    ``NotFittedError`` (an ``AttributeError``) for fitted attributes read before ``fit``, and
    ``load_state_dict`` into a fresh model (its parameters, registered as ``None`` until
    fitted, take the saved shapes). Subclasses register an empty ``_anchor`` buffer."""

    #: Fitted attributes that raise NotFittedError (not a bare AttributeError) before fit.
    _fitted_attributes: tuple[str, ...] = ()
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
                raise NotFittedError(
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
        if current is not None and current.shape == value.shape and current.dtype == value.dtype and current.device == value.device:
            with torch.no_grad():
                current.copy_(value)
            return
        requires_grad = current.requires_grad if current is not None else False
        self._parameters[name] = nn.Parameter(value.clone(), requires_grad=requires_grad)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # A fresh model has no parameters yet: give them the saved shapes so they can be filled.
        for name in self._param_names:
            key = prefix + name
            if key in state_dict and isinstance(state_dict[key], Tensor):
                current = self._parameters.get(name)
                device = self._anchor.device
                dtype = state_dict[key].dtype if current is None else current.dtype
                if current is None or current.shape != state_dict[key].shape:
                    self._parameters[name] = nn.Parameter(
                        torch.empty(state_dict[key].shape, device=device, dtype=dtype), requires_grad=False
                    )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if any(self._parameters.get(n) is not None for n in self._param_names):
            ref = self._parameters[self._param_names[0]]
            self._anchor = self._anchor.to(device=ref.device, dtype=ref.dtype)
