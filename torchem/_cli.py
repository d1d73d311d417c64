"""``torchem fit`` and ``torchem predict``: fit a model to a data file, save it, apply it;
``torchem select``: the BIC/AIC table of a grid of Gaussian mixtures.

    torchem fit data.csv --model gmm -k 4 --covariance-type full --out gm.pt
    torchem fit data.csv --model bgmm -k 10 --weight-concentration-prior 0.01 --out bgm.pt
    torchem predict gm.pt new.npy --out labels.npy           # or --proba for probabilities
    torchem select data.csv -k 1-8 --out best.pt             # every K and covariance type, one batch

Data files: ``.npy`` (memory-mapped), ``.npz`` (the array named by ``--key``, or its only
array), ``.csv`` (comma-separated numbers, with an optional header line) or ``.parquet``
(numeric columns; needs pyarrow: ``pip install 'torchem[parquet]'``). A saved model is
``torch.save({"model": name, "params": get_params(), "state_dict": state_dict(), ...})``,
readable with ``torch.load(path, weights_only=True)``. Bad input ends with one line on stderr
and exit status 1 (2 for bad options), never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import itertools
import math
import os
import pickle
import sys
import warnings
from collections.abc import Mapping

import numpy as np
import torch

from . import __version__
from .cluster import KMeans
from .data import check_labels
from .functional.covariance import COVARIANCE_TYPES
from .mixture import BayesianGaussianMixture, BernoulliMixture, BinomialMixture, CategoricalMixture, GaussianMixture, PoissonMixture

__all__ = ["CLIError", "add_fit_parser", "add_predict_parser", "add_select_parser", "criterion_table", "load_array", "load_labels",
           "load_model", "save_model"]

MODELS = {
    "gmm": GaussianMixture,
    "bgmm": BayesianGaussianMixture,
    "kmeans": KMeans,
    "bernoulli": BernoulliMixture,
    "binomial": BinomialMixture,
    "poisson": PoissonMixture,
    "categorical": CategoricalMixture,
}
#: GaussianMixture's default, which --covariance-type only changes for --model gmm and bgmm
_DEFAULT_COVARIANCE_TYPE = inspect.signature(GaussianMixture).parameters["covariance_type"].default
_DEFAULT_PRIOR_TYPE = inspect.signature(BayesianGaussianMixture).parameters["weight_concentration_prior_type"].default


class CLIError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _csv_lines(path: str):
    """``(line number, text)`` of the non-blank lines of a CSV file, stripped, read lazily.
    The ``-sig`` codec drops Excel's byte-order mark; ``newline=""`` splits on \\n, \\r\\n
    and a lone \\r alike."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if line:
                yield number, line


def _is_number(field: str) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return False


#: Lines per block when a CSV file is read line by line (after the fast reader failed).
_CSV_BLOCK = 65536


def _csv_block(path: str, rows: list[tuple[int, str]], width: int) -> np.ndarray:
    """The numbers of ``rows`` (``(line number, text)``, ``width`` fields each): numpy's C
    reader for the whole block, then Python's ``float`` field by field only if that failed,
    to name the first bad line and column (or to read what only ``float`` reads, such as
    digits grouped with underscores)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            block = np.loadtxt([text for _, text in rows], delimiter=",", comments=None, ndmin=2, dtype=np.float64)
        if block.shape == (len(rows), width):
            return block
    except ValueError:
        pass
    out = np.empty((len(rows), width), dtype=np.float64)
    for r, (line_no, line) in enumerate(rows):
        fields = line.split(",")
        if len(fields) != width:
            raise CLIError(f"{path}, line {line_no}: {len(fields)} values where the first data line has {width}; "
                           "every line needs the same number of columns.")
        for c, field in enumerate(fields):
            try:
                out[r, c] = float(field)
            except ValueError:
                raise CLIError(f"{path}, line {line_no}, column {c + 1}: {field.strip()!r} is not a number; "
                               "the file must hold numbers only (one optional header line).") from None
    return out


def _read_csv(path: str) -> np.ndarray:
    """Comma-separated numbers, one sample per line; blank lines are skipped, and a first line
    in which no field is a number is a header.

    A C reader reads the file into one array: pandas' when it is installed (the csv extra;
    the fastest), pyarrow's when it is (the parquet extra), numpy's ``loadtxt`` otherwise;
    each reads a subset of what Python's ``float`` reads, to the same values. When it fails, the file is read again by
    blocks of lines (:func:`_scan_csv`), so that the error names its line and column.
    """
    lines = _csv_lines(path)
    try:
        first = next(lines, None)
        if first is None:
            raise CLIError(f"{path} is empty; expected comma-separated numbers, one sample per line.")
        header = not any(_is_number(v) for v in first[1].split(","))
        head = next(lines, None) if header else first
        if head is None:
            raise CLIError(f"{path} has a header line but no data.")
        width = len(head[1].split(","))
        X = _fast_csv(path, first[0] if header else 0, width, len(head[1]))
        if X is not None:
            return X
        # a bad value or line; or what only Python reads: a lone \r line end, digits with underscores
        return _scan_csv(path, itertools.chain([head], lines), width)
    finally:
        lines.close()


def _fast_csv(path: str, skip: int, width: int, line_length: int) -> np.ndarray | None:
    """The numbers after the first ``skip`` lines, ``width`` per line (the first about
    ``line_length`` characters long), by a C reader; ``None`` when it cannot read them all.

    The reader is pandas' when pandas is installed (the fastest here), pyarrow's when it is
    (the parquet extra), numpy's ``loadtxt`` otherwise."""
    pandas = _optional("pandas")
    if pandas is not None and int(pandas.__version__.split(".")[0]) < 2:
        pandas = None  # its default float parser was not always the nearest double
    pyarrow = None if pandas is not None else _optional("pyarrow")
    try:
        if pandas is not None:
            X = _pandas_csv(pandas, path, skip, width)
        elif pyarrow is not None:
            from pyarrow import csv as arrow_csv

            X = _arrow_csv(pyarrow, arrow_csv, path, skip, width, line_length)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data"
                X = np.loadtxt(path, delimiter=",", comments=None, skiprows=skip, ndmin=2, dtype=np.float64,
                               encoding="utf-8-sig")
    except ValueError:  # numpy's and pandas' errors, and pyarrow's ArrowInvalid
        return None
    except Exception as exc:
        if pyarrow is not None and isinstance(exc, pyarrow.ArrowException):
            return None
        raise
    return X if X is not None and X.shape[0] > 0 and X.shape[1] == width else None


def _optional(name: str):
    """An optional reader's module, or ``None`` when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _line_count(path: str) -> int:
    """The number of lines of a file (a last line without its line end counts), read in
    blocks: it bounds the rows of the preallocated array."""
    newlines, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            newlines, last = newlines + chunk.count(b"\n"), chunk[-1:]
    return newlines + (last != b"\n")


def _pandas_csv(pandas, path: str, skip: int, width: int) -> np.ndarray | None:
    """pandas' C reader, blocks of rows (an eighth of the file, at most 16 MB) into one
    preallocated array (peak memory: the array and a block, not a frame and its copy). Plain numbers only: no quoting, no
    missing-value spellings (an empty field or "NA" fails, and the line scan names it)."""
    out = np.empty((max(0, _line_count(path) - skip), width), dtype=np.float64)
    reader = pandas.read_csv(
        path, sep=",", header=None, skiprows=skip, names=range(width), dtype=np.float64, engine="c",
        na_filter=False, quoting=csv.QUOTE_NONE, encoding="utf-8-sig", skip_blank_lines=True,
        chunksize=max(1024, min(16 << 20, os.path.getsize(path) // 8) // (8 * width)),
    )
    rows = 0
    with reader:
        for frame in reader:
            stop = rows + len(frame)
            if stop > len(out):  # lines that end in a lone \r: the line scan reads them
                return None
            out[rows:stop] = frame.to_numpy()
            rows = stop
    return out[:rows]


def _arrow_csv(pyarrow, arrow_csv, path: str, skip: int, width: int, line_length: int) -> np.ndarray | None:
    """pyarrow's streaming CSV reader, batch by batch into one preallocated array (peak
    memory: the array and the batches read ahead, not a table and its copy)."""
    out = np.empty((max(0, _line_count(path) - skip), width), dtype=np.float64)
    names = [str(j) for j in range(width)]
    reader = arrow_csv.open_csv(
        path,
        # small blocks: pyarrow decodes several ahead (1 MiB blocks cost ~40 MB more at the peak,
        # for no speed); a line longer than a block would fail (and be read by the line scan)
        read_options=arrow_csv.ReadOptions(skip_rows=skip, column_names=names, block_size=max(1 << 16, 64 * line_length)),
        # plain numbers: no quoting, no escapes, no missing values
        parse_options=arrow_csv.ParseOptions(delimiter=",", quote_char=False, double_quote=False, escape_char=False),
        convert_options=arrow_csv.ConvertOptions(column_types=dict.fromkeys(names, pyarrow.float64()), null_values=[],
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    rows = 0
    for batch in reader:
        stop = rows + batch.num_rows
        if stop > len(out):  # lines that end in a lone \r: the line scan reads them
            return None
        for j, column in enumerate(batch.columns):
            out[rows:stop, j] = column.to_numpy()
        rows = stop
    return out[:rows]


def _scan_csv(path: str, rows, width: int) -> np.ndarray:
    """The numbers of the data lines ``rows`` (``(line number, text)``), by blocks of lines."""
    blocks, block = [], []
    for row in rows:
        block.append(row)
        if len(block) == _CSV_BLOCK:
            blocks.append(_csv_block(path, block, width))
            block = []
    if block:
        blocks.append(_csv_block(path, block, width))
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def _read_parquet(path: str) -> np.ndarray:
    """The numeric columns of a Parquet file as one ``[n_rows, n_columns]`` array (float32 when
    every column is, else float64), read batch by batch into it (peak: the array and one batch)."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise CLIError(f"reading {path} needs pyarrow, which is not installed: "
                       "pip install 'torchem[parquet]' (or pip install pyarrow).") from None
    try:
        source = pyarrow.parquet.ParquetFile(path)
        fields = list(source.schema_arrow)
        for field in fields:
            kind = field.type
            if not (pyarrow.types.is_integer(kind) or pyarrow.types.is_floating(kind) or pyarrow.types.is_boolean(kind)):
                raise CLIError(f"{path}: column {field.name!r} holds {kind} values, not numbers; "
                               "keep the numeric columns only.")
        single = bool(fields) and all(pyarrow.types.is_float16(f.type) or pyarrow.types.is_float32(f.type) for f in fields)
        out = np.empty((source.metadata.num_rows, len(fields)), dtype=np.float32 if single else np.float64)
        row = 0
        for batch in source.iter_batches(batch_size=65536):
            stop = row + batch.num_rows
            for j, column in enumerate(batch.columns):
                if column.null_count:
                    first = row + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
                    raise CLIError(f"{path} has a missing (null) value at row {first + 1}, column {j + 1} "
                                   f"({fields[j].name!r}); remove or impute missing values first.")
                out[row:stop, j] = column.to_numpy(zero_copy_only=False)
            row = stop
    except pyarrow.ArrowException as exc:
        raise CLIError(f"cannot read {path} as a .parquet file: {exc}") from None
    return out


def load_array(path: str, key: str | None = None, name: str = "data", dtype: torch.dtype | None = None,
               allow_nan: bool = False) -> np.ndarray:
    """The ``[n_samples, n_features]`` array in ``path`` (``.npy``, ``.npz``, ``.csv``,
    ``.parquet``): float, except that an ``.npy`` file comes back as a read-only
    ``np.memmap`` in its own numeric dtype, read from disk as it is used.

    Args:
        dtype: the dtype the values will be computed in; values beyond its range are refused.
        allow_nan: NaN marks a missing entry (a model with a ``nan_policy``); infinity is
            refused all the same.

    Raises:
        CLIError: the file is missing, unreadable, not numeric, not 2-D, empty or holds NaN
            or infinite values (or values too large for ``dtype``); the message says which
            and what to do.
    """
    if not os.path.exists(path):
        raise CLIError(f"{name} file {path} does not exist.")
    if os.path.isdir(path):
        raise CLIError(f"{name} file {path} is a directory; give a .npy, .npz, .csv or .parquet file.")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".csv":
            X = _read_csv(path)
        elif ext == ".npy":
            X = np.load(path, mmap_mode="r", allow_pickle=False)  # read as used: larger than memory is fine
            if not isinstance(X, np.ndarray):  # np.load reads a zip archive whatever its name
                X.close()
                raise CLIError(f"{path} is an .npz archive, not an .npy array; rename it to .npz.")
        elif ext == ".parquet":
            X = _read_parquet(path)
        elif ext == ".npz":
            archive = np.load(path, allow_pickle=False)
            if isinstance(archive, np.ndarray):
                raise CLIError(f"{path} is an .npy array, not an .npz archive; rename it to .npy.")
            with archive:
                names = list(archive.keys())
                if key is None:
                    if len(names) != 1:
                        raise CLIError(f"{path} holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                                       "choose one with --key.")
                    key = names[0]
                if key not in names:
                    raise CLIError(f"{path} has no array named {key!r}; it holds: {', '.join(names) or 'none'}.")
                X = archive[key]
        else:
            raise CLIError(f"{path}: unknown file type {ext or '(no extension)'!r}; use .npy, .npz, .csv or .parquet.")
    except CLIError:
        raise
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise CLIError(f"cannot read {path} as a {ext} file: {exc}") from None
    if key is not None and ext != ".npz":
        raise CLIError("--key applies to .npz files only.")
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise CLIError(f"{path} holds {X.dtype} values, not numbers.")
    if np.iscomplexobj(X):
        raise CLIError(f"{path} holds complex numbers; torchem fits real-valued data.")
    if X.ndim != 2:
        hint = " (reshape it to (-1, 1) for a single feature)" if X.ndim == 1 else ""
        raise CLIError(f"{path} holds an array of shape {X.shape}; expected 2-D [n_samples, n_features]{hint}.")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise CLIError(f"{path} holds an empty array of shape {X.shape}.")
    _check_values(path, X, dtype, allow_nan)
    if isinstance(X, np.memmap) or np.issubdtype(X.dtype, np.floating):
        return X
    return X.astype(np.float64)


#: Rows per block when values are checked or a memory-mapped file is read.
_ROWS = 65536


def _check_values(path: str, X: np.ndarray, dtype: torch.dtype | None, allow_nan: bool = False) -> None:
    """Refuse NaN (unless ``allow_nan``), infinity and values beyond ``dtype``'s range, block
    by block (one pass over a memory-mapped file, no data-sized temporaries)."""
    if not np.issubdtype(X.dtype, np.floating):
        return  # integers and booleans: finite, and within float32's range
    limit = None if dtype is None else float(torch.finfo(dtype).max)
    if limit is not None and float(np.finfo(X.dtype).max) <= limit:
        limit = None  # every value of X's dtype fits
    count, first, too_large = 0, None, False
    for start in range(0, X.shape[0], _ROWS):
        block = X[start : start + _ROWS]
        bad = np.isinf(block) if allow_nan else ~np.isfinite(block)
        if bad.any():
            if first is None:
                row, col = np.argwhere(bad)[0]
                first = (start + row, col)
            count += int(bad.sum())
        elif limit is not None and not too_large:
            too_large = bool((np.abs(block) > limit).any())  # NaN compares False
    if count:
        what = "infinite" if allow_nan else "NaN or infinite"
        hint = "" if allow_nan else " (for missing entries written as NaN, fit with --nan-policy omit or marginalize)"
        raise CLIError(f"{path} holds {count} {what} value(s) (first at row {first[0] + 1}, column "
                       f"{first[1] + 1}); remove or impute them first{hint}.")
    if too_large:
        raise CLIError(f"{path} holds values too large for {str(dtype)[6:]}; fit with --double to compute in float64.")


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def save_model(model, name: str, path: str) -> None:
    """``torch.save`` the model's name, hyper-parameters and state dict to ``path``."""
    params = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in model.get_params().items()}
    state = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in model.state_dict().items()}
    torch.save({"model": name, "params": params, "state_dict": state, "torchem": __version__}, path)


def load_model(path: str):
    """``(name, model)`` from a file written by :func:`save_model` (on the CPU)."""
    if not os.path.exists(path):
        raise CLIError(f"model file {path} does not exist.")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many kinds (pickle, zip, runtime) for a bad file
        raise CLIError(f"{path} is not a model saved by torchem fit (torch.load failed with "
                       f"{type(exc).__name__}).") from None
    if not isinstance(saved, dict) or saved.get("model") not in MODELS or not isinstance(saved.get("params"), dict):
        raise CLIError(f"{path} is not a model saved by torchem fit.")
    if not isinstance(saved.get("state_dict"), Mapping):
        raise CLIError(f"{path} holds a damaged model: it has no state dict (the fitted parameters).")
    try:
        model = MODELS[saved["model"]](**saved["params"])
    except TypeError as exc:  # a parameter the model does not take
        raise CLIError(f"{path} holds a damaged model: its parameters do not make a {saved['model']} ({exc}).") from None
    try:
        model.load_state_dict(saved["state_dict"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CLIError(f"{path} holds a damaged model: {exc}") from None
    if not getattr(model, "_fitted", False):
        raise CLIError(f"{path} holds an unfitted model: write it with torchem fit.")
    return saved["model"], model


def _device(text: str | None) -> torch.device:
    try:
        device = torch.device(text or "cpu")
    except RuntimeError:
        raise CLIError(f"unknown device {text!r}; use cpu or cuda (cuda:1, ...).") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {text}: CUDA is not available on this machine; use --device cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CLIError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 to "
                       f"cuda:{torch.cuda.device_count() - 1}.")
    if device.type not in ("cpu", "cuda"):
        raise CLIError(f"unsupported device {text!r}; use cpu or cuda.")
    return device


def _check_writable(path: str) -> None:
    """Fail before the work, not after it: the file must be creatable (it is created empty
    when it did not exist, and left as it was otherwise)."""
    if not path:
        raise CLIError("the output path is empty; give a file name.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CLIError(f"cannot write {path}: the folder {folder} does not exist.")
    if os.path.isdir(path):
        raise CLIError(f"cannot write {path}: it is a folder; give a file name.")
    existed = os.path.exists(path)
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}.") from None
    if not existed:
        os.remove(path)


#: The extensions each output option accepts (its name says what the file holds).
MODEL_EXTENSIONS = (".pt", ".pth")  # torch.save
RESULT_EXTENSIONS = (".npy", ".csv")  # np.save, or comma-separated text


def _check_output(option: str, path: str, extensions: tuple[str, ...], inputs: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output whose extension would misname what is written
    (``labels.txt`` holding .npy bytes), one that is an input of the same command, or one
    that cannot be written."""
    ext = os.path.splitext(path)[1].lower()
    if path and ext not in extensions:
        allowed = " or ".join(extensions)
        raise CLIError(f"{option} {path}: unsupported output type {ext or '(no extension)'!r}; "
                       f"give a file name ending in {allowed}.")
    for source in inputs:
        if os.path.exists(path) and os.path.exists(source) and os.path.samefile(path, source):
            raise CLIError(f"{option} {path} is also an input of this command; write to another file.")
    _check_writable(path)


def _build(args) -> object:
    common = {"max_iter": args.max_iter, "random_state": args.seed, "nan_policy": args.nan_policy}
    if args.n_init is not None:
        common["n_init"] = args.n_init
    if args.tol is not None:
        common["tol"] = args.tol
    if args.model == "kmeans":
        return KMeans(args.k, **common)
    if args.model == "gmm":
        return GaussianMixture(args.k, covariance_type=args.covariance_type, **common)
    if args.model == "bgmm":
        return BayesianGaussianMixture(args.k, covariance_type=args.covariance_type,
                                       weight_concentration_prior_type=args.weight_concentration_prior_type,
                                       weight_concentration_prior=args.weight_concentration_prior, **common)
    if args.model == "binomial":
        return BinomialMixture(args.k, n_trials=args.n_trials, **common)
    if args.model == "poisson":
        return PoissonMixture(args.k, **common)
    if args.model == "categorical":
        return CategoricalMixture(args.k, n_categories=args.n_categories, **common)
    return BernoulliMixture(args.k, **common)


class _Rows:
    """A memory-mapped ``[n, d]`` array as a re-iterable of row blocks, as CPU tensors in
    ``dtype``: the estimators read it once per pass without a full copy. (Given the memmap
    itself they would compute in its own dtype, a float64 file in float64 without --double,
    and the fitted model would answer in numpy, unlike one fitted from any other file.)"""

    def __init__(self, X: np.memmap, dtype: torch.dtype, labels: np.ndarray | None = None):
        self.X = X
        self.dtype = np.dtype(np.float64 if dtype == torch.float64 else np.float32)
        self.labels = labels  # carried in {"X", "labels"} batches

    def __iter__(self):
        for start in range(0, self.X.shape[0], _ROWS):
            block = torch.from_numpy(np.array(self.X[start : start + _ROWS], dtype=self.dtype))
            if self.labels is None:
                yield block
            else:
                yield {"X": block, "labels": torch.from_numpy(self.labels[start : start + _ROWS])}


def _model_input(X: np.ndarray, device: torch.device, dtype: torch.dtype, labels: np.ndarray | None = None):
    """``X`` as the estimators should read it, in ``dtype``: data in memory as one tensor on
    ``device``; a memory-mapped file streamed pass after pass (:class:`_Rows`, whose batches
    carry ``labels`` when given), unless it fits in half the free memory of a CUDA device: it
    is then copied there once, block by block, as in-memory data is."""
    if not isinstance(X, np.memmap):
        return torch.from_numpy(np.ascontiguousarray(X)).to(device=device, dtype=dtype)
    rows = _Rows(X, dtype, labels)
    if device.type == "cuda" and X.size * rows.dtype.itemsize <= torch.cuda.mem_get_info(device)[0] // 2:
        out = torch.empty(X.shape, dtype=dtype, device=device)
        start = 0
        for block in _Rows(X, dtype):
            out[start : start + len(block)] = block
            start += len(block)
        return out
    return rows


def load_labels(path: str, n_samples: int, n_components: int) -> np.ndarray:
    """Partial labels for ``torchem fit --labels``: one whole number per sample in a ``.npy``
    file (``[n]`` or ``[n, 1]``) or a ``.csv`` file (one per line, optional header line),
    ``-1`` for an unlabelled sample and ``k`` for one known to come from component ``k``."""
    if not os.path.exists(path):
        raise CLIError(f"--labels file {path} does not exist.")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            labels = np.load(path, allow_pickle=False)
        elif ext == ".csv":
            labels = _read_csv(path)
        else:
            raise CLIError(f"--labels {path}: unknown file type {ext or '(no extension)'!r}; use .npy or .csv.")
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise CLIError(f"cannot read {path} as a {ext} file: {exc}") from None
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise CLIError(f"--labels {path} holds an array of shape {labels.shape}; give one label per sample "
                       f"({n_samples} numbers, one per line in a .csv).")
    return check_labels(labels, (n_samples,), n_components, f"--labels {path}").numpy()


def _summary(name: str, model, X, shape: tuple[int, int], labels: np.ndarray | None = None) -> list[str]:
    lines = [f"model            {type(model).__name__}" + (f" ({model.covariance_type})" if name in ("gmm", "bgmm") else ""),
             f"data             {shape[0]:,} samples, {shape[1]} features",
             f"iterations       {model.n_iter_} (at most {model.max_iter})"]
    if labels is not None:
        lines.insert(2, f"labelled         {int((labels >= 0).sum()):,} samples (their components fixed)")
    if name == "kmeans":
        lines.append(f"inertia          {float(model.inertia_):.6g}")
        return lines
    lines.append(f"converged        {'yes' if model.converged_ else 'no (raise --max-iter)'}")
    if name == "bgmm":
        used = int((np.asarray(model.weights_) > 0.01).sum())
        lines.append(f"components used  {used} of {model.n_components} (weight above 0.01)")
        lines.append(f"lower bound      {float(model.lower_bound_):.6g} (variational, as scikit-learn's)")
    lines.append(f"log-likelihood   {float(model.score(X)):.6f} per sample (mean)")
    lines.append(f"BIC              {float(model.bic(X)):.6g}")
    return lines


def fit_command(args) -> int:
    if args.model not in ("gmm", "bgmm") and args.covariance_type != _DEFAULT_COVARIANCE_TYPE:
        raise CLIError(f"--covariance-type applies to --model gmm and bgmm only, not {args.model}.")
    if args.model != "bgmm" and (args.weight_concentration_prior is not None
                                 or args.weight_concentration_prior_type != _DEFAULT_PRIOR_TYPE):
        raise CLIError(f"--weight-concentration-prior(-type) applies to --model bgmm only, not {args.model}.")
    if args.model != "binomial" and args.n_trials != 1:
        raise CLIError(f"--n-trials applies to --model binomial only, not {args.model}.")
    if args.model != "categorical" and args.n_categories is not None:
        raise CLIError(f"--n-categories applies to --model categorical only, not {args.model}.")
    if args.model == "kmeans" and args.nan_policy != "raise":
        raise CLIError("--nan-policy applies to the mixtures only: K-means has no model of missing entries (fit --model "
                       "gmm --covariance-type spherical --nan-policy marginalize instead).")
    _check_output("--out", args.out, MODEL_EXTENSIONS, (args.file,))
    device = _device(args.device)
    dtype = torch.float64 if args.double else torch.float32
    X_np = load_array(args.file, args.key, dtype=dtype, allow_nan=args.nan_policy != "raise")
    labels = None if args.labels is None else load_labels(args.labels, X_np.shape[0], args.k)
    X = _model_input(X_np, device, dtype, labels)
    model = _build(args)
    model.to(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, labels=None if isinstance(X, _Rows) or labels is None else torch.from_numpy(labels).to(device))
    for w in caught:
        print(f"torchem fit: warning: {w.message}", file=sys.stderr)
    save_model(model, args.model, args.out)
    for line in _summary(args.model, model, X, X_np.shape, labels):
        print(line)
    print(f"saved to         {args.out}")
    return 0


def predict_command(args) -> int:
    if args.out is not None:
        _check_output("--out", args.out, RESULT_EXTENSIONS, (args.model_file, args.file))
    name, model = load_model(args.model_file)
    if args.proba and name == "kmeans":
        raise CLIError("K-means gives no probabilities; drop --proba to get labels.")
    device = _device(args.device)
    dtype = next(model.parameters()).dtype
    X_np = load_array(args.file, args.key, dtype=dtype, allow_nan=getattr(model, "nan_policy", "raise") != "raise")
    expected = model.n_features_in_
    if X_np.shape[1] != expected:
        raise CLIError(f"{args.file} has {X_np.shape[1]} features but the model was fitted on {expected}.")
    model.to(device)
    X = _model_input(X_np, device, dtype)
    out = (model.predict_proba(X) if args.proba else model.predict(X)).cpu().numpy()
    if args.out is not None:
        if args.out.lower().endswith(".csv"):
            np.savetxt(args.out, out, delimiter=",", fmt="%.8g" if args.proba else "%d")
        else:
            with open(args.out, "wb") as fh:  # np.save(name) would append .npy to other names
                np.save(fh, out)
        print(f"{'probabilities' if args.proba else 'labels'} of {len(out):,} samples written to {args.out}")
    else:
        np.savetxt(sys.stdout, out, delimiter=",", fmt="%.8g" if args.proba else "%d")
    return 0


# --------------------------------------------------------------------------------------------
# Argument parsers
# --------------------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _trials(text: str):
    values = [_positive(v.strip()) for v in text.split(",")]
    return values[0] if len(values) == 1 else values


def _positive_real(text: str) -> float:
    value = _non_negative_real(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative_real(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite non-negative number, got {text!r}")
    return value


def _guarded(command):
    def run(args) -> int:
        try:
            return command(args)
        except (CLIError, ValueError, TypeError) as exc:  # estimators report bad input as ValueError
            print(f"torchem {args.command}: error: {exc}", file=sys.stderr)
            return 1
        except BrokenPipeError:  # stdout closed by its reader: main ends quietly
            raise
        except OSError as exc:
            print(f"torchem {args.command}: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
            return 1
        except torch.cuda.OutOfMemoryError:  # before RuntimeError, its base class
            print(f"torchem {args.command}: error: out of GPU memory; use --device cpu or a smaller file.",
                  file=sys.stderr)
            return 1
        except RuntimeError as exc:  # torch.save reports write failures as RuntimeError
            print(f"torchem {args.command}: error: {(str(exc).splitlines() or [type(exc).__name__])[0]}", file=sys.stderr)
            return 1

    return run


def _add_fit_options(p) -> None:
    """The options every fitting command shares (fit, select)."""
    p.add_argument("--max-iter", type=_positive, default=100, help="most iterations (default 100)")
    p.add_argument("--tol", type=_non_negative_real, default=None, help="convergence threshold (default: the model's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--double", action="store_true", help="fit in float64 instead of float32")
    p.add_argument("--seed", type=int, default=0, help="random seed of the initialisation (default 0)")
    p.add_argument("--key", help="name of the array in a .npz file holding several")


def add_fit_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("fit", help="fit a model to a .npy/.npz/.csv/.parquet file and save it",
                       description="Fit a mixture model or K-means to a data file and save it with torch.save.")
    p.add_argument("file", help="data: .npy, .npz (see --key), .csv (numbers, optional header line) or "
                                ".parquet (numeric columns; needs pyarrow)")
    p.add_argument("--model", required=True, choices=list(MODELS))
    p.add_argument("-k", "--n-components", dest="k", type=_positive, required=True,
                   help="number of components (clusters)")
    p.add_argument("--covariance-type", default=_DEFAULT_COVARIANCE_TYPE, choices=list(COVARIANCE_TYPES),
                   help=f"for --model gmm and bgmm (default {_DEFAULT_COVARIANCE_TYPE})")
    p.add_argument("--weight-concentration-prior", type=_positive_real, default=None,
                   help="for --model bgmm: the weights' prior concentration; small values switch unneeded "
                        "components off (default 1 / k)")
    p.add_argument("--weight-concentration-prior-type", default=_DEFAULT_PRIOR_TYPE,
                   choices=["dirichlet_process", "dirichlet_distribution"],
                   help=f"for --model bgmm (default {_DEFAULT_PRIOR_TYPE})")
    p.add_argument("--n-trials", type=_trials, default=1,
                   help="for --model binomial: trials per count, or one per feature comma-separated (default 1)")
    p.add_argument("--n-categories", type=_trials, default=None,
                   help="for --model categorical: categories per feature, one number or one per feature "
                        "comma-separated (default: the largest code of each feature + 1)")
    p.add_argument("--n-init", type=_positive, default=None, help="restarts, run as one batch (default: the model's)")
    _add_fit_options(p)
    p.add_argument("--nan-policy", default="raise", choices=["raise", "omit", "marginalize"],
                   help="NaN in the data: refuse it (raise, the default), leave out the rows holding it (omit), or "
                        "treat NaN entries as missing at random and fit the observed entries exactly (marginalize); "
                        "a model fitted with omit or marginalize predicts rows with NaN from their observed entries")
    p.add_argument("--labels", metavar="FILE",
                   help="partial labels: a .npy or .csv file of one whole number per sample, -1 for unlabelled, "
                        "k to fix the sample to component k (semi-supervised fit)")
    p.add_argument("--out", required=True, help="where to save the fitted model: a .pt or .pth file")
    p.set_defaults(func=_guarded(fit_command))
    return p


def add_predict_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="apply a model saved by 'torchem fit' to a data file",
                       description="Labels (or, with --proba, component probabilities) of the samples in a file.")
    p.add_argument("model_file", help="a model saved by torchem fit")
    p.add_argument("file", help="data: .npy, .npz (see --key), .csv or .parquet")
    p.add_argument("--out", help="write to this .npy or .csv file instead of printing")
    p.add_argument("--proba", action="store_true", help="probabilities of the components instead of labels")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--key", help="name of the array in a .npz file holding several")
    p.set_defaults(func=_guarded(predict_command))
    return p


# --------------------------------------------------------------------------------------------
# torchem select: the criterion table of a GaussianMixtureIC
# --------------------------------------------------------------------------------------------


def _components(text: str) -> tuple[int, ...]:
    """``"1-8"``, ``"2,4,8"`` or both (``"1-4,8"``) as distinct positive ints, in order."""
    values: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        first, last = _positive(lo), _positive(hi) if sep else None
        if last is not None and last < first:
            raise argparse.ArgumentTypeError(f"expected a range low-high with low <= high, got {part!r}")
        values += range(first, (last if last is not None else first) + 1)
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"n_components listed twice in {text!r}")
    return tuple(values)


def _covariance_types(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(","))
    bad = [n for n in names if n not in COVARIANCE_TYPES]
    if bad or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct names from {', '.join(COVARIANCE_TYPES)}; got {text!r}")
    return names


def criterion_table(ic) -> list[str]:
    """The fitted ``GaussianMixtureIC``'s criterion as text: one row per covariance type, one
    column per ``n_components``, the chosen model marked with ``*``."""
    ks, types = ic.n_components_grid_, ic.covariance_types_
    width = max(12, *(len(f"{v:.6g}") + 2 for v in ic.criterion_.ravel()))
    lines = [f"{'n_components':<12}" + "".join(f"{k:>{width}}" for k in ks)]
    for row, name in enumerate(types):
        cells = []
        for col, value in enumerate(ic.criterion_[row]):
            text = "failed" if not np.isfinite(value) else f"{value:.6g}"
            cells.append(f"{text + ('*' if (row, col) == ic.best_index_ else ' '):>{width}}")
        lines.append(f"{name:<12}" + "".join(cells))
    return lines


def select_command(args) -> int:
    from .mixture import GaussianMixtureIC

    if args.out is not None:
        _check_output("--out", args.out, MODEL_EXTENSIONS, (args.file,))
    device = _device(args.device)
    dtype = torch.float64 if args.double else torch.float32
    X_np = load_array(args.file, args.key, dtype=dtype)
    X = _model_input(X_np, device, dtype)
    kwargs = {"n_init": args.n_init, "max_iter": args.max_iter}
    if args.tol is not None:
        kwargs["tol"] = args.tol
    ic = GaussianMixtureIC(args.n_components, covariance_type=args.covariance_types, criterion=args.criterion,
                           random_state=args.seed, **kwargs).to(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ic.fit(X)
    for w in caught:
        print(f"torchem select: warning: {w.message}", file=sys.stderr)
    name = args.criterion.upper()
    print(f"{name} (lower is better) of {len(ic.covariance_types_) * len(ic.n_components_grid_)} Gaussian mixtures "
          f"on {X_np.shape[0]:,} samples, {X_np.shape[1]} features; * the chosen one")
    for line in criterion_table(ic):
        print(line)
    print(f"chosen           covariance_type={ic.covariance_type_}, n_components={ic.n_components_} "
          f"({name} {ic.criterion_[ic.best_index_]:.6g})")
    if args.out is not None:
        save_model(ic.best_estimator_, "gmm", args.out)
        print(f"saved to         {args.out}")
    return 0


def add_select_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("select", help="choose n_components and covariance_type of a Gaussian mixture by BIC or AIC",
                       description="Fit every Gaussian mixture of a grid of n_components and covariance types as one "
                                   "batch (GaussianMixtureIC) and print the criterion table.")
    p.add_argument("file", help="data: .npy, .npz (see --key), .csv or .parquet")
    p.add_argument("-k", "--n-components", type=_components, default=tuple(range(1, 11)),
                   help="numbers of components to compare: a range and/or a list, e.g. 1-10 or 1-4,8 (default 1-10)")
    p.add_argument("--covariance-types", type=_covariance_types, default=tuple(COVARIANCE_TYPES),
                   help=f"comma-separated (default {','.join(COVARIANCE_TYPES)})")
    p.add_argument("--criterion", choices=["bic", "aic"], default="bic", help="default bic")
    p.add_argument("--n-init", type=_positive, default=1, help="restarts of every model (default 1)")
    _add_fit_options(p)
    p.add_argument("--out", help="save the chosen model (a .pt or .pth file) for torchem predict")
    p.set_defaults(func=_guarded(select_command))
    return p
