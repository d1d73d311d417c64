"""Categorical mixtures (latent class analysis): features that each take one of a few
unordered categories, independent given the component.

Feature ``d`` is an integer code in ``0 .. C_d - 1``; component ``k`` holds ``log_probs
[K, D, C]`` (``C = max_d C_d``). On one-hot codes ``[n, D C]`` the E-step is one GEMM,
``log p_k(x) = onehot(x) @ log_probs[k].reshape(D C)``, and the statistics another,
``counts = resp^T onehot``. Beyond a feature's categories a log-probability holds
:data:`MASKED`, finite (no ``0 * inf`` NaN, no gradient): the parameters carry their
support, and the hooks need no other state.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch import distributions as D

from .._utils import as_float_tensor, check_fitted
from ..data import Source, TensorSource
from ..distributed import all_reduce_sum, is_distributed, rank, world_size
from ..em import Family
from ..functional import missing as M
from ..functional.bernoulli import PROB_EPS
from .base import BaseMixture

__all__ = [
    "MASKED",
    "CategoricalMixture",
    "categorical_m_step",
    "categorical_stats",
    "categories_of",
    "check_codes",
    "log_probs_from",
    "moment_points",
    "one_hot_codes",
    "support_mask",
]

#: Log-probability of a category beyond its feature's ``n_categories`` (probability 0).
MASKED = -1e30


def support_mask(n_categories: Tensor, width: int) -> Tensor:
    """``[D, width]`` mask of the categories ``c < n_categories[d]``."""
    return torch.arange(width, device=n_categories.device) < n_categories.unsqueeze(-1)


def categories_of(probs: Tensor) -> Tensor:
    """``[D]`` categories of each feature: up to its last one with a positive value in some
    component of ``probs [..., K, D, C]`` (or of a support mask)."""
    positive = (probs > 0).flatten(0, -3).any(0)
    return torch.where(positive, torch.arange(1, probs.shape[-1] + 1, device=probs.device), 0).amax(-1)


def one_hot_codes(X: Tensor, width: int, dtype: torch.dtype) -> Tensor:
    """One-hot rows ``[..., n, D width]`` of codes ``X [..., n, D]``."""
    idx = X.long() + torch.arange(X.shape[-1], device=X.device) * width
    return torch.zeros(*X.shape[:-1], X.shape[-1] * width, dtype=dtype, device=X.device).scatter_(-1, idx, 1.0)


def log_probs_from(probs: Tensor, mask: Tensor, eps: float = PROB_EPS) -> Tensor:
    """Log of ``probs [..., D, C]`` floored at ``eps`` and renormalised inside ``mask``; MASKED beyond."""
    p = torch.where(mask, probs.clamp_min(eps), 0.0)
    return torch.where(mask, (p / p.sum(-1, keepdim=True)).log(), MASKED)


def categorical_stats(onehot: Tensor, resp: Tensor, sample_weight: Tensor | None = None) -> dict[str, Tensor]:
    """Float64 ``nk [..., K]`` and ``counts [..., K, D C]`` (``resp^T onehot``)."""
    r = resp if sample_weight is None else resp * sample_weight.unsqueeze(-1)
    return {"nk": r.sum(-2).double(), "counts": (r.mT @ onehot.to(r.dtype)).double()}


def categorical_m_step(stats: dict[str, Tensor], mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(log_weights [..., K], log_probs [..., K, D, C])``: ``w_k = N_k / N``, ``p_kdc = counts_kdc / N_k``."""
    nk = stats["nk"] + 10.0 * torch.finfo(torch.float64).eps
    counts = stats["counts"].unflatten(-1, mask.shape[-2:])
    return nk.log() - nk.sum(-1, keepdim=True).log(), log_probs_from(counts / nk[..., None, None], mask)


def moment_points(log_weights: Tensor, log_probs: Tensor) -> tuple[Tensor, Tensor]:
    """Points ``[..., K M, D]`` and weights ``[..., K M, K]`` (``M = D C``) whose statistics are
    exactly ``w_k p_kdc``: per component, the quantile coupling of its features. The sorted
    cumulative probabilities of all features cut ``[0, 1]`` into ``M`` intervals; an interval
    is a point whose feature ``d`` takes the category whose cumulative range holds it,
    weighted ``w_k`` times its length, so feature ``d`` shows category ``c`` with weight
    ``w_k p_kdc`` whatever the other features do."""
    cum = log_probs.double().exp().cumsum(-1)
    cum = cum / cum[..., -1:]  # x / x == 1 exactly: every feature ends at 1
    ends = cum.flatten(-2).sort(-1).values  # [..., K, M]
    lengths = torch.diff(ends, dim=-1, prepend=torch.zeros_like(ends[..., :1]))
    mid = (ends - lengths / 2).unsqueeze(-2).expand(*cum.shape[:-1], -1).contiguous()  # [..., K, D, M]
    points = torch.searchsorted(cum.contiguous(), mid).mT.double()  # [..., K, M, D]
    eye = torch.eye(log_probs.shape[-3], dtype=torch.float64, device=cum.device).unsqueeze(-2)
    resp = (log_weights.double().exp()[..., None] * lengths).unsqueeze(-1) * eye
    return points.flatten(-3, -2), resp.flatten(-3, -2)


#: The most indicator columns (features times the most categories of any feature) a
#: categorical mixture encodes a row into: a chunk of the E-step holds 256 rows or more of
#: them in float64 (4 GiB at this width), the parameters K times as many. Wide coded data
#: (100,000 features of 3 categories) stays well inside; a stray code such as 1e10 does not.
_MAX_WIDTH = 2**21


def _check_width(n_features: int | None, most: float, what: str) -> None:
    """Refuse a support of ``most`` categories for some feature of ``n_features`` (``None``: not
    known yet, one at least) whose one-hot rows would be wider than ``_MAX_WIDTH``; ``what``
    names where ``most`` comes from."""
    if (n_features or 1) * most > _MAX_WIDTH:
        many = f"{most:,.0f}" if most < 1e12 else f"{most:.3g}"
        raise ValueError(
            f"{what} makes {many} categories for a feature: a CategoricalMixture encodes each row as one indicator "
            f"column per category of each feature{f' ({n_features} x {many})' if n_features else ''}, more than the "
            f"{_MAX_WIDTH:,} it handles. "
            "Encode each feature's categories as 0, 1, ..., n_categories - 1 (e.g. with "
            "sklearn.preprocessing.OrdinalEncoder), merging rare ones."
        )


def check_codes(X: Tensor, n_categories: Tensor) -> None:
    """Refuse what is not a code ``0 .. n_categories[d] - 1`` of a category the model knows: a
    fraction, NaN, or a code out of range."""
    other = X != X.floor()  # fractions, and NaN (a missing answer)
    if bool(other.any()):
        value = float(X[other][0])
        raise ValueError(
            f"Category codes are whole numbers 0, 1, ..., n_categories - 1, but X holds {value:g}"
            + (": a missing answer, which only a model fitted with nan_policy='marginalize' reads (or encode it as "
               "a category of its own)." if math.isnan(value) else ".")
        )
    limits = n_categories.to(X.device, X.dtype)
    low, high = torch.aminmax(X, dim=-2)  # one pass, no [n, D] temporaries
    if bool(((high >= limits) | (low < 0)).any()):
        at = ((X >= limits) | (X < 0)).nonzero()[0]
        d, code, known = int(at[-1]), float(X[tuple(at)]), n_categories.tolist()
        fix = known[:d] + [max(int(code) + 1, known[d])] + known[d + 1 :] if 0 <= code < _MAX_WIDTH else None
        raise ValueError(
            f"Feature {d} holds code {code:g}, a category this model has not seen: it knows codes 0..{known[d] - 1} "
            f"(n_categories_[{d}] = {known[d]}). "
            + (f"Refit with n_categories covering it (e.g. n_categories={fix}), or map" if fix else "Map")
            + " the code to a known category."
        )


class _CategoricalFamily(Family):
    """EM hooks of a categorical mixture; the support is read off ``log_probs``.

    ``check=False`` skips the test of each chunk's codes against the support in
    :meth:`log_prob` (a host-device synchronisation per chunk of every pass): for a fit whose
    data were all checked against the starting support before EM (see
    :meth:`CategoricalMixture._fit_family`)."""

    parallel_chunks = True  # pure per-chunk hooks: an in-memory CPU pass runs on worker threads

    def __init__(self, check: bool = True, marginalize: bool = False):
        self.check = check
        self.marginalize = marginalize  # NaN entries are missing at random (nan_policy="marginalize")

    def prepare(self, params, precise=False):
        log_probs = params["log_probs"].double() if precise else params["log_probs"]
        mask = log_probs > MASKED / 2
        w = torch.where(mask, log_probs, 0.0).flatten(-2).mT  # [..., D C, K]
        return {"w": w, "width": log_probs.shape[-1], "n_categories": categories_of(mask), "log_probs": log_probs}

    def _observed_codes(self, X, prepared) -> tuple[Tensor, Tensor]:
        """``(one-hot [..., n, D C] float64 with zero blocks for missing entries, mask [..., n, D])``."""
        o, x0 = M.observed(X)
        if self.check and not torch.compiler.is_compiling():
            check_codes(x0, prepared["n_categories"])
        width = prepared["width"]
        return one_hot_codes(x0, width, torch.float64) * o.repeat_interleave(width, -1), o

    def log_prob(self, X, prepared):
        if self.marginalize and M.has_missing(X):
            onehot, _ = self._observed_codes(X, prepared)  # a missing feature's block is 0: no term
            probs = prepared["log_probs"].double().exp()  # [..., K, D, C], 0 beyond the support
            return (onehot @ prepared["w"].double()).to(X.dtype), M.Conditional({"probs": probs})
        if self.check and not torch.compiler.is_compiling():  # a traced forward cannot raise on values
            check_codes(X, prepared["n_categories"])
        onehot = one_hot_codes(X, prepared["width"], prepared["w"].dtype)
        return onehot @ prepared["w"], onehot

    def portable_aux(self, aux):
        return aux if isinstance(aux, M.Conditional) else None

    def stats(self, X, resp, prepared, aux, sample_weight):
        if isinstance(aux, M.Conditional) or (self.marginalize and aux is None and M.has_missing(X)):
            # a missing feature counts each category at its probability under the component
            probs = aux.params["probs"] if isinstance(aux, M.Conditional) else prepared["log_probs"].double().exp()
            onehot, o = self._observed_codes(X, prepared)
            r = resp.double() if sample_weight is None else resp.double() * sample_weight.double().unsqueeze(-1)
            counts = r.mT @ onehot + ((r.mT @ (1.0 - o)).unsqueeze(-1) * probs).flatten(-2)
            return {"nk": r.sum(-2), "counts": counts}
        onehot = aux if aux is not None else one_hot_codes(X, prepared["width"], resp.dtype)
        return categorical_stats(onehot, resp, sample_weight)

    def m_step(self, stats, params):
        log_weights, log_probs = categorical_m_step(stats, params["log_probs"] > MASKED / 2)
        failed = torch.zeros(log_weights.shape[:-1], dtype=torch.bool, device=log_weights.device)
        return {"log_weights": log_weights, "log_probs": log_probs}, failed


class CategoricalMixture(BaseMixture):
    """Mixture of independent categorical distributions (latent class analysis), fitted by EM.

    Example:
        >>> import numpy as np
        >>> from torchem import CategoricalMixture
        >>> answers = np.array([[0, 1, 2], [0, 1, 2], [0, 1, 1], [1, 0, 0], [1, 0, 0], [1, 2, 0]])
        >>> cm = CategoricalMixture(n_components=2, random_state=0).fit(answers)
        >>> cm.predict(answers)
        array([1, 1, 1, 0, 0, 0])
        >>> cm.n_categories_
        array([2, 3, 3])

    ``X`` holds non-negative integer codes: feature ``d`` takes values ``0 .. C_d - 1`` (encode
    answers with e.g. ``sklearn.preprocessing.OrdinalEncoder``). Component ``k`` gives feature
    ``d`` category ``c`` with probability ``probs_[k, d, c]``, at least ``1e-10`` inside the
    feature's categories and 0 beyond them. They are stored as log-probabilities
    (``component_logits [K, D, C]``, ``-1e30`` beyond a feature's categories, where no
    gradient flows). The rest of the interface is :class:`torchem.BernoulliMixture`'s;
    ``sample`` returns int64 codes.

    Args:
        n_components: number of components (latent classes) ``K``.
        n_categories: categories per feature, an integer (all features) or one per feature.
            ``None`` takes each feature's largest code + 1 in the data at ``fit`` (every
            problem and chunk), or reads it off ``probs_init`` (up to each feature's last
            category with a positive probability). The result is ``n_categories_``. Give it
            for ``partial_fit``: the first batch may not show every code.
        init_params: ``"kmeans"`` (on one-hot codes), ``"random"``, ``"k-means++"`` or
            ``"random_from_data"`` (chosen samples averaged half-and-half with the category
            frequencies of the data).
        weights_init: ``[K]`` initial weights.
        probs_init: ``[K, D, C]`` initial probabilities, summing to 1 over each feature's
            categories and 0 beyond them.
        tol, max_iter, n_init, random_state, warm_start, verbose, verbose_interval, chunk_size, hard: as in
            :class:`torchem.GaussianMixture`.
        nan_policy: as in :class:`torchem.GaussianMixture` (NaN marks a missing entry).
    """

    _param_names = ("logits", "component_logits")
    _fitted_attributes = BaseMixture._fitted_attributes + ("probs_", "n_categories_")
    _init_methods = ("kmeans", "k-means++", "random", "random_from_data")
    _input_tags = {"positive_only": True, "categorical": True}  # integer codes

    def _component_shapes(self, k: int, d: int) -> dict[str, tuple]:
        return {"logits": (k,), "component_logits": (k, d, None)}  # (the categories: the widest feature's)

    def __init__(self, n_components: int = 1, *, n_categories=None, tol: float = 1e-3, max_iter: int = 100,
                 n_init: int = 1, init_params: str = "kmeans", weights_init=None, probs_init=None, random_state=None,
                 warm_start: bool = False, verbose: int = 0, verbose_interval: int = 10, chunk_size: int | None = None,
                 hard: bool = False, nan_policy: str = "raise"):
        super().__init__(n_components, tol=tol, max_iter=max_iter, n_init=n_init, init_params=init_params,
                         random_state=random_state, warm_start=warm_start, verbose=verbose,
                         verbose_interval=verbose_interval, chunk_size=chunk_size, hard=hard, nan_policy=nan_policy)
        self.n_categories = n_categories
        self.weights_init = weights_init
        self.probs_init = probs_init
        self._seen = None


    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        self._given(None)
        self._seen = None  # fit and partial_fit start here; their value check (_value_check) fills it

    def _given(self, n_features: int | None) -> Tensor | None:
        """``n_categories`` as ``[D]`` int64, or ``None`` (inferred); checked."""
        if self.n_categories is None:
            return None
        c = np.asarray(self.n_categories)
        if c.ndim > 1 or c.size == 0 or not np.issubdtype(c.dtype, np.integer) or (c < 1).any():
            raise ValueError(f"n_categories must be a positive integer or one per feature; got {self.n_categories!r}.")
        if n_features is not None and c.ndim == 1 and c.size != n_features:
            raise ValueError(f"n_categories has {c.size} values but X has {n_features} features; give one per feature.")
        _check_width(n_features, float(c.max()), f"n_categories={self.n_categories!r}")
        return None if n_features is None else torch.as_tensor(np.broadcast_to(c, (n_features,)).astype(np.int64))

    def _validate_values(self, X: Tensor, name: str) -> None:
        self._codes_range(X, name)

    def _value_check(self):
        # fit and partial_fit check every chunk of their data here before initialising, and
        # keep the largest code of each feature (_initial_params is given only a sample of the
        # data); inference only checks, so predicting leaves the model as it was
        def check(chunk: Tensor) -> None:
            top = self._codes_range(chunk, "X")
            self._seen = top if self._seen is None or self._seen.shape != top.shape else torch.maximum(self._seen, top)

        return check

    def _codes_range(self, X: Tensor, name: str) -> Tensor:
        """Refuse values that are not category codes; the largest code of each feature, ``[D]``."""
        fraction = X != X.floor()
        if bool(fraction.any()):
            raise ValueError(
                f"{type(self).__name__} expects integer category codes, but {name} holds non-integer values (e.g. "
                f"{float(X[fraction][0]):g}). Encode each feature's categories as 0, 1, ..., n_categories - 1 "
                "(for example with sklearn.preprocessing.OrdinalEncoder)."
            )
        low, top = torch.aminmax(X.reshape(-1, X.shape[-1]), dim=0)
        if bool((low < 0).any()):
            raise ValueError(f"Negative values in data passed to {type(self).__name__}: {name} holds negative codes "
                             f"(e.g. {float(low.min()):g}); category codes must be 0, 1, ..., n_categories - 1. Encode a "
                             "missing answer as a category of its own.")
        if top.numel():
            d = int(top.argmax())
            _check_width(X.shape[-1], float(top[d]) + 1.0, f"{name}'s code {float(top[d]):g} in feature {d}")
        return top.long().cpu()

    def _support(self, n_features: int, device, probs: Tensor | None = None) -> Tensor:
        """``[D]`` categories per feature for a new fit; the data's codes must fit them."""
        seen = self._seen
        if seen is not None and is_distributed():  # the largest code of every rank's shard
            rows = torch.zeros(world_size(), n_features, dtype=torch.float64, device=device)
            rows[rank()] = seen.to(device=device, dtype=torch.float64)
            seen = all_reduce_sum([rows])[0].amax(0).long().cpu()
        support, by = self._given(n_features), "n_categories"
        if support is None:
            support, by = (seen + 1, "") if probs is None else (categories_of(probs).cpu(), "probs_init")
        if seen is not None and bool((seen >= support).any()):
            d = int((seen >= support).nonzero()[0, 0])
            raise ValueError(f"X holds code {int(seen[d])} in feature {d}, but {by} gives that feature {int(support[d])} "
                             "categories. Raise n_categories (or leave it None to infer it from the data), or cover the "
                             "code in probs_init.")
        return support.to(device)


    def _family(self, n_features: int) -> _CategoricalFamily:
        return _CategoricalFamily(marginalize=self._marginalizes)

    def _fit_family(self, source: Source) -> _CategoricalFamily:
        # A new fit checked every chunk's codes when it opened the data (_value_check) and the
        # support against the largest of them (_support): the EM loop checks nothing more, so
        # it makes no host-device synchronisation per chunk. A warm start keeps the check.
        return _CategoricalFamily(check=self._continues(), marginalize=self._marginalizes)

    def _bytes_per_sample(self, n_features: int, n_restarts: int, itemsize: int) -> int:
        # the one-hot width; 8 is a guess before any data is seen (a stream's chunk size is set then)
        given, seen = self._given(n_features), self._seen
        known = ([int(given.max())] if given is not None else []) + ([int(seen.max()) + 1] if seen is not None else [])
        width = max(known + ([self.component_logits.shape[-1]] if self._fitted else []), default=8)
        return itemsize * n_restarts * (2 * n_features * width + 5 * self.n_components)

    def _n_parameters(self) -> int:
        return self.n_components - 1 + self.n_components * int((self.n_categories_ - 1).sum())

    def _store(self, params: dict[str, Tensor]) -> None:
        self._set_parameter("logits", params["log_weights"])
        self._set_parameter("component_logits", params["log_probs"])

    def _constrained(self) -> dict[str, Tensor]:
        return {"log_weights": torch.log_softmax(self.logits, -1), "log_probs": torch.log_softmax(self.component_logits, -1)}

    def _event_ndims(self) -> dict[str, int]:
        return {"log_weights": 1, "log_probs": 3}

    def _n_features_of(self, params: dict[str, Tensor]) -> int:
        return params["log_probs"].shape[-2]

    def _structural_hyperparameters(self) -> dict:
        c = self.n_categories
        return {"n_components": self.n_components, "n_categories": None if c is None else np.asarray(c).tolist()}

    def _user_initial_params(self, n_features: int, n_problems: int) -> dict[str, Tensor]:
        user: dict[str, Tensor] = {}
        log_weights = self._init_weights(n_problems)
        if log_weights is not None:
            user["log_weights"] = log_weights
        if self.probs_init is not None:
            given, (raw, _) = self._given(n_features), as_float_tensor(self.probs_init, "probs_init")
            if given is None and raw.ndim < 3:
                raise ValueError(f"The parameter 'probs' should have the shape of ({self.n_components}, {n_features}, "
                                 f"n_categories), but got {tuple(raw.shape)}. Pass probs_init of that shape.")
            width = int(given.max()) if given is not None else raw.shape[-1]
            p = self._init_array("probs_init", (self.n_components, n_features, width), n_problems)
            mask = support_mask(self._support(n_features, p.device, p), width)
            if bool((p < 0).any() | ((p > 0) & ~mask).any() | ((p.sum(-1) - 1).abs() > 1e-6).any()):
                raise ValueError("probs_init must hold, for each component and feature, probabilities over that "
                                 "feature's categories that sum to 1, and zeros beyond its n_categories.")
            user["log_probs"] = log_probs_from(p, mask)
        return user

    def _initial_params(self, source: TensorSource, n_init: int, generator: torch.Generator) -> dict[str, Tensor]:
        d, b = source.n_features, source.n_problems
        support = self._support(d, source.device)
        width = int(support.max())
        # k-means and the chosen samples work on the one-hot codes; the statistics of those
        # responsibilities are taken on the codes themselves, about the support
        coded = TensorSource(one_hot_codes(source.X, width, source.dtype), device=source.device, dtype=source.dtype,
                             sample_weight=source.sample_weight, chunk_size=source.chunk_size, labels=source.labels)
        on_codes = self._labelled_init(coded, n_init, generator)

        def resp_fn(start, X):
            return on_codes(start, one_hot_codes(X, width, X.dtype))

        log_probs = torch.where(support_mask(support, width), 0.0, MASKED).to(torch.float64, copy=True)
        about = {"log_weights": log_probs.new_zeros(b, n_init, self.n_components),
                 "log_probs": log_probs.to(source.device).expand(b, n_init, self.n_components, d, width)}
        return self._m_step_from(source, resp_fn, about)

    def _init_fill(self, X: Tensor, sample_weight: Tensor | None) -> Tensor:
        """The feature's most frequent observed code (weighted): a mean is no category."""
        o, x0 = M.observed(X)
        width = int(x0.max()) + 1
        w = o if sample_weight is None else o * sample_weight.double().unsqueeze(-1)
        counts = (one_hot_codes(x0, width, torch.float64).unflatten(-1, (X.shape[-1], width)) * w.unsqueeze(-1)).sum(-3)
        return torch.where(counts.sum(-1) > 0, counts.argmax(-1).double(), torch.nan)  # [B, D]

    @property
    def probs_(self):
        """Probabilities ``[K, D, C]`` (``[B, K, D, C]``); 0 beyond a feature's ``n_categories_``."""
        check_fitted(self)
        return self._attr(torch.softmax(self.component_logits.detach(), -1))

    @property
    def n_categories_(self) -> np.ndarray:
        """Categories of each feature, ``[D]`` int64 (read off the parameters)."""
        check_fitted(self)
        return categories_of(self.component_logits.detach() > MASKED / 2).cpu().numpy()

    def _draw(self, labels: Tensor, generator: torch.Generator | None) -> Tensor:
        probs = torch.softmax(self.component_logits.detach().double(), -1)
        probs = probs if self._stacked else probs.unsqueeze(0)
        b, _, d, c = probs.shape
        p = probs[torch.arange(b, device=probs.device)[:, None], labels.to(probs.device)]  # [B, n, D, C]
        on = generator.device if generator is not None else probs.device
        return torch.multinomial(p.reshape(-1, c).to(on), 1, generator=generator).reshape(b, -1, d).to(probs.device)

    def _component_distribution(self, params: dict[str, Tensor]) -> D.Distribution:
        return D.Independent(D.Categorical(logits=params["log_probs"]), 1)

    @classmethod
    def _params_from_components(cls, comp: D.Distribution, shape: tuple[int, ...], kwargs: dict) -> dict[str, Tensor]:
        """``Independent(Categorical, 1)`` components; a feature's categories run up to its last
        one with a positive probability in some component (zeros before it are floored)."""
        if not (isinstance(comp, D.Independent) and isinstance(comp.base_dist, D.Categorical)
                and comp.reinterpreted_batch_ndims == 1):
            raise TypeError(f"{cls.__name__}.from_distribution needs Independent(Categorical, 1) components; got {comp!r}.")
        probs = comp.base_dist.probs
        probs = probs.expand(*shape, *probs.shape[-2:])
        return {"log_probs": log_probs_from(probs, support_mask(categories_of(probs), probs.shape[-1]))}

    def _moment_points(self, params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return moment_points(params["log_weights"], params["log_probs"])
