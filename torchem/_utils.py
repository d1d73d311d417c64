"""Input checking, conversion between numpy and tensors, and random generators."""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import exceptions

__all__ = [
    "InputKind",
    "as_float_tensor",
    "check_data",
    "check_int",
    "check_n_samples",
    "check_real",
    "full_float32_matmul",
    "make_generator",
    "to_output",
]


@contextlib.contextmanager
def full_float32_matmul():
    """Run float32 matrix products at full float32 precision inside, whatever the user chose
    (``torch.backends.cuda.matmul.allow_tf32 = True``, ``torch.set_float32_matmul_precision``
    ``("high")`` or ``("medium")``, or the per-backend ``fp32_precision`` settings), and restore
    the user's setting on the way out, an exception included. Autocast (``torch.autocast``,
    CPU and CUDA) is off inside too: the passes compute in the data's dtype, on whichever
    thread runs a chunk (autocast is a per-thread setting, see :mod:`torchem._threads`).

    Why: the float64 fall-back bound of the Gaussian E-step and the K-means bound widening
    assume float32's own rounding; TF32 rounds the inputs of a product ~4,000 times more
    coarsely (per-sample log-density errors of 0.26 nats at D=16), so the fits would differ
    from float32 ones without the fall-back noticing. The driver's passes and the estimators'
    fit and inference methods run inside this; ``forward`` does not (it is left to
    ``torch.compile`` and to the caller's setting). Also usable as a decorator. Nothing is
    changed while ``torch.compile`` traces."""
    if torch.compiler.is_compiling():
        yield
        return
    with contextlib.ExitStack() as stack:
        for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
            if torch.is_autocast_enabled(device):
                stack.enter_context(torch.autocast(device, enabled=False))
        with _float32_precision():
            yield


@contextlib.contextmanager
def _float32_precision():
    """The matmul-precision part of :func:`full_float32_matmul`."""
    try:
        legacy = torch.get_float32_matmul_precision()
    except RuntimeError:  # the user mixed the legacy and per-backend settings: restore each backend
        legacy = None
    if legacy == "highest":
        yield
        return
    if legacy is not None:
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(legacy)
        return
    backends = [torch.backends.cuda.matmul, torch.backends.mkldnn.matmul]
    saved = [b.fp32_precision for b in backends]
    for b in backends:
        b.fp32_precision = "ieee"
    try:
        yield
    finally:
        for b, value in zip(backends, saved):
            b.fp32_precision = value


@dataclass(frozen=True)
class InputKind:
    """Where an input came from, so outputs can be returned the same way."""

    is_numpy: bool
    device: torch.device | None = None


def _nullable_frame_array(X, name: str) -> np.ndarray | None:
    """A pandas DataFrame or Series with extension dtypes (the nullable ``Int64``, ``Float64``,
    ``boolean``...) as a float64 array with its missing values (``pd.NA``) as NaN, which the
    estimators' ``nan_policy`` then handles, as scikit-learn reads them; ``None`` for anything
    else (read by ``np.asarray``)."""
    if not type(X).__module__.startswith("pandas"):  # (polars frames and others: np.asarray reads them)
        return None
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(X, "to_numpy"):
        return None
    dtypes = [dtypes] if isinstance(dtypes, np.dtype) or not hasattr(dtypes, "__iter__") else list(dtypes)
    if all(isinstance(dt, np.dtype) for dt in dtypes):
        return None
    try:
        return X.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must contain numbers: {exc}") from None


def as_float_tensor(X, name: str = "X", *, detach: bool = True) -> tuple[Tensor, InputKind]:
    """Convert array-like input to a floating tensor without copying when possible.

    numpy float32/float64 stay as they are, other numeric numpy input becomes float64 (as in
    scikit-learn); float16/bfloat16 tensors become float32 and integer/bool tensors take
    torch's default dtype. Strings, objects and complex numbers are refused.
    """
    if isinstance(X, Tensor):
        kind = InputKind(False, X.device)
        t = X.detach() if detach else X
        if t.is_complex():
            raise ValueError(f"Complex data not supported: {name} must be real-valued; got a tensor of dtype {t.dtype}.")
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        elif not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
        return t, kind
    if isinstance(X, (str, bytes)) or X is None:
        raise ValueError(f"{name} must be an array-like of numbers (numpy array or torch tensor); got {type(X).__name__}.")
    if type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(
            f"{name} is a sparse {type(X).__name__}, but torchem needs dense data. Convert it with "
            f"{name}.toarray() (mixtures of sparse counts: densify by blocks and stream them as a DataLoader)."
        )
    arr = _nullable_frame_array(X, name)
    try:
        arr = np.asarray(X) if arr is None else arr
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be converted to a numeric array: {exc}") from None
    if arr.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} must be real-valued; got values of dtype {arr.dtype}.")
    if arr.dtype.kind == "O":  # numbers held as Python objects (pandas object columns, lists of Decimals)
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name} must contain numbers: {exc}") from None
    if arr.dtype.kind not in "fiub":
        raise ValueError(
            f"{name} must contain numbers; got an array of dtype {arr.dtype}. "
            "Convert it with np.asarray(X, dtype=float) first."
        )
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if not arr.flags.writeable or not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        arr = np.array(arr)
    return torch.from_numpy(arr), InputKind(True, None)


def check_data(
    X: Tensor,
    name: str = "X",
    *,
    min_samples: int = 1,
    n_features: int | None = None,
    allow_stacked: bool = True,
    check_finite: bool = True,
    estimator: str = "this model",
) -> Tensor:
    """Validate a ``[N, D]`` or ``[B, N, D]`` data tensor and return it.

    Raises a ``ValueError`` that names ``name`` and says what to do for: wrong rank, empty
    input, fewer than ``min_samples`` samples, a feature count other than ``n_features``, and
    NaN or infinite values.
    """
    ranks = "2-D [n_samples, n_features] or 3-D [batch, n_samples, n_features]" if allow_stacked else (
        "2-D [n_samples, n_features]"
    )
    if X.ndim == 1:
        raise ValueError(
            f"Expected {name} to be {ranks}; got a 1-D array of shape {tuple(X.shape)}. Reshape your data "
            "with X.reshape(-1, 1) if it has a single feature or X.reshape(1, -1) if it contains a single sample."
        )
    if X.ndim not in ((2, 3) if allow_stacked else (2,)):
        raise ValueError(f"Expected {name} to be {ranks}; got {X.ndim} dimensions (shape {tuple(X.shape)}).")
    n, d = X.shape[-2], X.shape[-1]
    if X.ndim == 3 and X.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch dimension (shape {tuple(X.shape)}); pass at least one problem.")
    shape = tuple(X.shape)
    if d == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={shape}) while a minimum of 1 is required: {name} needs at least one feature.")
    if n < min_samples:
        raise ValueError(
            f"Found array with {n} sample(s) (shape={shape}) while a minimum of {min_samples} is required: "
            f"pass {name} with at least {min_samples} sample(s)."
        )
    if n_features is not None and d != n_features:
        raise ValueError(
            f"{name} has {d} features, but {estimator} is expecting {n_features} features as input; "
            "pass data with the same columns as the training data."
        )
    if check_finite and not all_finite(X):
        raise ValueError(
            f"Input {name} contains NaN or infinity. Remove or impute those values before calling this method."
        )
    return X


def all_finite(X: Tensor, block: int = 2**16) -> bool:
    """Whether every value of ``X [..., N, D]`` is finite, checked ``block`` samples at a time
    (``torch.isfinite`` on the whole would allocate several times the data's size)."""
    return all(_block_finite(X[..., s : s + block, :]) for s in range(0, max(1, X.shape[-2]), block))


def _block_finite(X: Tensor) -> bool:
    """Whether every value of ``X`` is finite. A NaN or an infinity makes the sum NaN or
    infinite, so a finite sum proves every value finite in one vectorised reduction (on CPU
    ``isfinite(X).all()`` costs tens of times more: a boolean tensor written and read); only a
    sum that is not finite (a bad value, or finite values overflowing) is checked exactly."""
    if X.is_floating_point() and bool(torch.isfinite(X.sum())):
        return True
    return bool(torch.isfinite(X).all())


def to_output(t: Tensor, kind: InputKind):
    """Return ``t`` the way the input came: numpy in, numpy out; tensor in, tensor on its device out."""
    t = t.detach()
    if kind.is_numpy:
        return t.cpu().numpy()
    if kind.device is not None and t.device != kind.device:
        return t.to(kind.device)
    return t


def make_generator(random_state, device: torch.device) -> torch.Generator:
    """A ``torch.Generator`` from ``random_state``.

    ``None`` draws a seed from torch's global generator (so ``torch.manual_seed`` makes the fit
    reproducible); an int seeds a new generator on ``device``; a ``torch.Generator`` is used as
    it is (random numbers are drawn on its own device and moved); a numpy ``RandomState`` or
    ``Generator`` supplies a seed.
    """
    if isinstance(random_state, torch.Generator):
        return random_state
    if random_state is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    elif isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0 or random_state >= 2**64:
            raise ValueError(
                f"random_state must be an integer in [0, 2**64 - 1] (a torch.Generator seed); got {random_state}. "
                "Pass a smaller seed (e.g. random_state % 2**64)."
            )
        seed = int(random_state)
    elif isinstance(random_state, np.random.RandomState):
        seed = int(random_state.randint(0, 2**31 - 1))
    elif isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(0, 2**62))
    else:
        raise ValueError(
            "random_state must be None, an int, a torch.Generator or a numpy RandomState/Generator; "
            f"got {type(random_state).__name__}."
        )
    try:
        gen = torch.Generator(device=device)
    except RuntimeError:
        gen = torch.Generator()
    return gen.manual_seed(seed)


def rand(generator: torch.Generator, *shape, device, dtype=torch.float64) -> Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device and moved to ``device``."""
    return torch.rand(*shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def check_real(value, name: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number >= {minimum}; got {value!r}.")
    if not math.isfinite(float(value)) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}; got {value!r}.")
    return float(value)


def check_fitted(model, attribute: str = "_fitted") -> None:
    if not getattr(model, attribute, False):
        raise exceptions.NotFittedError(
            f"This {type(model).__name__} instance is not fitted yet. Call 'fit' with appropriate "
            "arguments before using this estimator."
        )
    check_structure = getattr(model, "_check_structure", None)
    if check_structure is not None:  # fitted, but set_params changed its structure since
        check_structure()


def feature_names(X) -> np.ndarray | None:
    """The column names of a DataFrame (pandas, or any object with ``columns``) as scikit-learn
    reads them: an object array when every name is a string, ``None`` when there are no names
    or none is a string; a mix of strings and other names is a ``TypeError``."""
    if isinstance(X, (Tensor, np.ndarray)) or not hasattr(X, "columns") or not hasattr(X, "__array__"):
        return None
    names = np.asarray(list(X.columns), dtype=object)
    if len(names) == 0:
        return None
    types = sorted(t.__qualname__ for t in {type(v) for v in names})
    if len(types) > 1 and "str" in types:
        raise TypeError(
            "Feature names are only supported if all input features have string names, "
            f"but your input has {types} as feature name / column name types. "
            "If you want feature names to be stored and validated, you must convert "
            "them all to strings, by using X.columns = X.columns.astype(str) for "
            "example. Otherwise you can remove feature / column names from your input "
            "data, or convert them all to a non-string data type."
        )
    return names if types == ["str"] else None


def check_feature_names(model, X, *, reset: bool) -> None:
    """scikit-learn's rule for ``feature_names_in_``: a fit (``reset``) stores the column
    names of a DataFrame (and forgets earlier ones otherwise); later calls must pass the same
    names in the same order (``ValueError``), and a warning says when names are present on one
    side only."""
    names = feature_names(X)
    name = type(model).__name__
    if reset:
        if names is not None:
            model.feature_names_in_ = names
        elif "feature_names_in_" in model.__dict__:
            del model.feature_names_in_
        return
    fitted = model.__dict__.get("feature_names_in_")
    if fitted is None and names is None:
        return
    if names is not None and fitted is None:
        warnings.warn(f"X has feature names, but {name} was fitted without feature names", UserWarning, stacklevel=caller_stacklevel())
        return
    if names is None:
        warnings.warn(f"X does not have valid feature names, but {name} was fitted with feature names", UserWarning,
                      stacklevel=caller_stacklevel())
        return
    if len(fitted) == len(names) and bool(np.all(fitted == names)):
        return
    message = "The feature names should match those that were passed during fit.\n"
    unexpected = sorted(set(names) - set(fitted))
    missing = sorted(set(fitted) - set(names))

    def listed(items) -> str:
        shown = "".join(f"- {item}\n" for item in items[:5])
        return shown + ("- ...\n" if len(items) > 5 else "")

    if unexpected:
        message += "Feature names unseen at fit time:\n" + listed(unexpected)
    if missing:
        message += "Feature names seen at fit time, yet now missing:\n" + listed(missing)
    if not unexpected and not missing:
        message += "Feature names must be in the same order as they were in fit.\n"
    raise ValueError(message)


def check_n_samples(n_samples) -> int:
    """``n_samples`` for ``sample``/``rsample``: a positive integer (scikit-learn's message)."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at least one sample.")
    return int(n_samples)


def caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the user's line: the first frame above
    the function that warns which is neither torchem's nor torch's (decorators such as
    ``torch.no_grad`` add frames of their own)."""
    import contextlib
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    stdlib_wrappers = {os.path.abspath(contextlib.__file__)}  # context managers used as decorators

    def internal(filename: str) -> bool:
        return filename.startswith((here + os.sep, torch_dir + os.sep)) or os.path.abspath(filename) in stdlib_wrappers

    frame, level = sys._getframe(2), 2  # 1 is the function that warns
    while frame is not None and internal(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level
