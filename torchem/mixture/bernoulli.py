"""Bernoulli mixtures (binary vectors) and Binomial mixtures (counts out of ``n_trials``)."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import Tensor
from torch import distributions as D

from .._utils import check_fitted, check_n_samples
from ..functional import bernoulli as F
from ..functional import missing as M
from ..em import Family
from .base import BaseMixture

__all__ = ["BernoulliMixture", "BinomialMixture"]

class _BernoulliFamily(Family):
    """EM hooks of a Bernoulli (``n_trials is None``) or Binomial mixture."""

    parallel_chunks = True  # pure per-chunk hooks: an in-memory CPU pass runs on worker threads

    def __init__(self, n_trials: Tensor | None, marginalize: bool = False):
        self.n_trials = n_trials
        self.marginalize = marginalize  # NaN entries are missing at random (nan_policy="marginalize")
        self._trials_on: dict = {}  # n_trials moved to each device once, not once per chunk

    def trials(self, device: torch.device) -> Tensor:
        """``n_trials [D]`` (float64) on ``device``."""
        key = str(device)
        if key not in self._trials_on:
            self._trials_on[key] = self.n_trials.to(device)
        return self._trials_on[key]

    def prepare(self, params, precise=False):
        logits = params["logits"]
        log1m = torch.nn.functional.logsigmoid(-logits.double())
        if self.n_trials is not None:
            log1m = log1m * self.trials(logits.device)
        k = logits.shape[-2]
        # BLAS kernels are several times slower for an output width that is not a multiple
        # of 8 (K=10: 3x): pad the weights with zero columns and slice the product.
        padded = -(-k // 8) * 8
        w = logits.new_zeros(*logits.shape[:-2], logits.shape[-1], padded)
        w[..., :k] = logits.mT
        return {"w": w, "k": k, "const": log1m.sum(-1).to(logits.dtype).unsqueeze(-2), "logits": logits}

    def _trials64(self, like: Tensor) -> Tensor | float:
        return 1.0 if self.n_trials is None else self.trials(like.device).double()

    def log_prob(self, X, prepared):
        if self.marginalize and M.has_missing(X):
            # the observed entries' terms only: x log p + (n - x) log(1 - p) + log C(n, x), the
            # last 0 where the entry is missing (x0 = 0 there)
            logits = prepared["logits"].double()
            o, x0 = M.observed(X)
            n = self._trials64(logits)
            lp = x0 @ logits.mT + o @ (torch.nn.functional.logsigmoid(-logits) * n).mT
            if self.n_trials is not None:
                lp = lp + F.binomial_log_coefficient(x0, self.trials(x0.device)).unsqueeze(-1)
            return lp.to(X.dtype), M.Conditional({"mean": torch.sigmoid(logits) * n})
        lp = (X @ prepared["w"].to(X.dtype))[..., : prepared["k"]] + prepared["const"].to(X.dtype)
        if self.n_trials is not None:
            lp = lp + F.binomial_log_coefficient(X, self.trials(X.device)).unsqueeze(-1)
        return lp, None

    def portable_aux(self, aux):
        return aux if isinstance(aux, M.Conditional) else None

    def stats(self, X, resp, prepared, aux, sample_weight):
        if isinstance(aux, M.Conditional) or (self.marginalize and aux is None and M.has_missing(X)):
            logits = prepared["logits"].double()
            mean = aux.params["mean"] if isinstance(aux, M.Conditional) else torch.sigmoid(logits) * self._trials64(logits)
            nk, sx = M.expected_sums(X, resp, mean, sample_weight)
            return {"nk": nk, "sx": sx}
        return F.bernoulli_stats(X, resp, sample_weight)

    def m_step(self, stats, params):
        n = None if self.n_trials is None else self.trials(stats["sx"].device)
        log_weights, logits = F.bernoulli_m_step(stats, n)
        failed = torch.zeros(log_weights.shape[:-1], dtype=torch.bool, device=log_weights.device)
        return {"log_weights": log_weights, "logits": logits}, failed


class BernoulliMixture(BaseMixture):
    """Mixture of multivariate Bernoulli distributions for binary vectors, fitted by EM.

    Example:
        >>> import numpy as np
        >>> from torchem import BernoulliMixture
        >>> X = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]])
        >>> bm = BernoulliMixture(n_components=2, random_state=0).fit(X)
        >>> bm.predict(X)
        array([1, 1, 1, 0, 0, 0])
        >>> bm.probs_.round(2)
        array([[0.  , 0.33, 0.67, 1.  ],
               [1.  , 0.67, 0.33, 0.  ]])

    The interface of :class:`torchem.GaussianMixture` where it applies: numpy or tensors in
    (``[N, D]`` or ``[B, N, D]``), the same kind out, restarts as a batch, ``nn.Module``
    state. Component ``k`` has success probabilities ``probs_[k]``; they are stored as logits
    (``component_logits``) and kept in ``[1e-10, 1 - 1e-10]``, so no log-probability is
    infinite. The E-step is one matrix product in log space.

    Args:
        n_components: number of components ``K``.
        tol: convergence threshold on the change of the mean log-likelihood.
        max_iter: the most EM iterations per restart.
        n_init: number of restarts (run in parallel); the best is kept.
        init_params: ``"kmeans"`` (k-means++ then Lloyd, as hard responsibilities),
            ``"random"`` (random responsibilities), ``"k-means++"`` or
            ``"random_from_data"`` (chosen samples, averaged half-and-half with the mean of
            the data so no probability starts at 0 or 1).
        weights_init: ``[K]`` initial weights.
        probs_init: ``[K, D]`` initial probabilities.
        binarize: ``None`` (the default) takes binary data as it is and refuses any other
            value; a threshold (a float, as in scikit-learn's ``BernoulliNB``) maps each value
            ``x > binarize`` to 1 and the others to 0 wherever the model reads data: ``fit``,
            ``partial_fit``, every inference method, ``model(x)``, and streamed data chunk by
            chunk. (In-memory training data is held binarised, in the fit's dtype.)
        random_state, warm_start, verbose, verbose_interval, chunk_size, hard: as in
            :class:`torchem.GaussianMixture`.
        nan_policy: as in :class:`torchem.GaussianMixture` (NaN marks a missing entry).
    """

    _param_names = ("logits", "component_logits")
    _fitted_attributes = BaseMixture._fitted_attributes + ("probs_",)
    _init_methods = ("kmeans", "k-means++", "random", "random_from_data")
    _init_arguments = ("weights_init", "probs_init")

    def _component_shapes(self, k: int, d: int) -> dict[str, tuple]:
        return {"logits": (k,), "component_logits": (k, d)}

    def __init__(
        self,
        n_components: int = 1,
        *,
        tol: float = 1e-3,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init=None,
        probs_init=None,
        binarize: float | None = None,
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
        self.weights_init = weights_init
        self.probs_init = probs_init
        self.binarize = binarize  # BinomialMixture: always None (counts are read as they are)

    # ----------------------------------------------------------------------------------------
    # Hooks
    # ----------------------------------------------------------------------------------------

    def _trials(self, n_features: int) -> Tensor | None:
        return None

    def _family(self, n_features: int) -> _BernoulliFamily:
        return _BernoulliFamily(self._trials(n_features), self._marginalizes)

    @property
    def _input_tags(self) -> dict[str, bool]:
        # binary data is non-negative; with a threshold any real values will do
        return {"positive_only": True} if self.binarize is None else {}

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        b = self.binarize
        if b is not None and (isinstance(b, (bool, np.bool_)) or not isinstance(b, numbers.Real) or not math.isfinite(b)):
            raise ValueError(
                f"binarize must be None (binary data) or a finite threshold (values above it become 1, the others "
                f"0); got {b!r}."
            )

    def _value_map(self):
        if self.binarize is None:
            return None
        threshold = float(self.binarize)
        return lambda X: torch.where(torch.isnan(X), X, (X > threshold).to(X.dtype))  # NaN: a missing entry stays so

    def _validate_values(self, X: Tensor, name: str) -> None:
        if self.binarize is not None:
            return  # any finite value: binarised as it is read
        bad = (X != 0) & (X != 1)
        if bool(bad.any()):
            negative = X < 0
            any_negative = bool(negative.any())
            # the example is a negative value where the message leads with them
            example = float(X[negative if any_negative else bad].reshape(-1)[0])
            # scikit-learn's wording for negative input to an estimator of non-negative data
            lead = "Negative values in data passed to BernoulliMixture: " if any_negative else ""
            raise ValueError(
                f"{lead}{type(self).__name__} expects binary data: {name} must contain only 0 and 1, but it "
                f"contains other values (e.g. {example:g}). Binarise it first (for example X > 0.5), pass a "
                "threshold as binarize (e.g. binarize=0.5), or use BinomialMixture for counts."
            )

    def _bytes_per_sample(self, n_features: int, n_restarts: int, itemsize: int) -> int:
        return itemsize * n_restarts * (2 * n_features + 5 * self.n_components)

    def _n_parameters(self) -> int:
        return F.bernoulli_n_parameters(self.n_components, self.n_features_in_)

    def _store(self, params: dict[str, Tensor]) -> None:
        self._set_parameter("logits", params["log_weights"])
        self._set_parameter("component_logits", params["logits"])

    def _constrained(self) -> dict[str, Tensor]:
        return {"log_weights": torch.log_softmax(self.logits, -1), "logits": self.component_logits}

    def _structural_hyperparameters(self) -> dict:
        return {"n_components": self.n_components}

    def _user_initial_params(self, n_features: int, n_problems: int) -> dict[str, Tensor]:
        self._trials(n_features)  # raises if n_trials does not fit the data
        user: dict[str, Tensor] = {}
        log_weights = self._init_weights(n_problems)
        if log_weights is not None:
            user["log_weights"] = log_weights
        if self.probs_init is not None:
            p = self._init_array("probs_init", (self.n_components, n_features), n_problems)
            if bool((p < 0).any()) or bool((p > 1).any()):
                raise ValueError("probs_init should hold probabilities in [0, 1].")
            user["logits"] = F.logits_from_probs(p)
        return user

    # ----------------------------------------------------------------------------------------
    # Attributes and sampling
    # ----------------------------------------------------------------------------------------

    @property
    def probs_(self):
        """Success probabilities ``[K, D]`` (``[B, K, D]``)."""
        check_fitted(self)
        return self._attr(torch.sigmoid(self.component_logits.detach()))

    def _draw(self, labels: Tensor, generator: torch.Generator | None) -> Tensor:
        probs = torch.sigmoid(self.component_logits.detach())
        if not self._stacked:
            probs = probs.unsqueeze(0)
        b, _, d = probs.shape
        device = probs.device
        p = torch.gather(probs, 1, labels.unsqueeze(-1).expand(b, labels.shape[1], d))
        gen_device = generator.device if generator is not None else device
        trials = self._trials(d)
        if trials is None:
            return (torch.rand(p.shape, generator=generator, device=gen_device, dtype=p.dtype).to(device) < p).to(p.dtype)
        n = trials.to(device=device, dtype=p.dtype).expand_as(p)
        return torch.binomial(n.to(gen_device), p.to(gen_device), generator=generator).to(device)

    def rsample(self, n_samples: int = 1, temperature: float | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Relaxed samples, differentiable with respect to ``component_logits``.

        Binary vectors have no reparameterisation, so this draws from the Concrete
        (Gumbel-sigmoid) relaxation ``RelaxedBernoulli(temperature, logits)`` of the chosen
        component: values in ``(0, 1)`` that approach binary samples as ``temperature -> 0``
        (lower temperatures give higher-variance gradients). The component is drawn from the
        mixing weights and carries no gradient to ``logits``.

        Args:
            n_samples: number of samples.
            temperature: relaxation temperature (required, > 0).
            generator: unused by the relaxation's noise (torch's ``rsample`` draws from the
                global random state); the component choice uses it.

        Returns:
            a tensor ``[n_samples, D]`` (``[B, n_samples, D]`` for ``B`` problems).
        """
        check_fitted(self)
        n_samples = check_n_samples(n_samples)
        if self._trials(self.n_features_in_) is not None:
            raise ValueError(
                "BinomialMixture has no reparameterised sampler: counts are discrete. Use sample() for draws, "
                "or score samples with model(x), which is differentiable."
            )
        if temperature is None or isinstance(temperature, bool) or not 0 < float(temperature) < float("inf"):
            raise ValueError(
                "rsample needs a finite temperature > 0: binary samples are not differentiable, so rsample draws from "
                f"the relaxed (Concrete) Bernoulli at that temperature; got temperature={temperature!r}."
            )
        logits = self.component_logits if self._stacked else self.component_logits.unsqueeze(0)
        weights = torch.softmax(self.logits.detach(), -1)
        labels = torch.multinomial(weights if self._stacked else weights.unsqueeze(0), n_samples, replacement=True, generator=generator)
        b, _, d = logits.shape
        chosen = torch.gather(logits, 1, labels.unsqueeze(-1).expand(b, n_samples, d))
        X = D.RelaxedBernoulli(torch.tensor(float(temperature), dtype=logits.dtype, device=logits.device), logits=chosen).rsample()
        return X if self._stacked else X.squeeze(0)

    # ----------------------------------------------------------------------------------------
    # torch.distributions
    # ----------------------------------------------------------------------------------------

    def _component_distribution(self, params: dict[str, Tensor]) -> D.Distribution:
        return D.Independent(D.Bernoulli(logits=params["logits"]), 1)

    @classmethod
    def _params_from_components(cls, comp: D.Distribution, shape: tuple[int, ...], kwargs: dict) -> dict[str, Tensor]:
        """``Independent(Bernoulli, 1)`` components (:class:`BernoulliMixture`) or
        ``Independent(Binomial, 1)`` ones (:class:`BinomialMixture`; ``n_trials`` is read from
        ``total_count``, which must be the same for every component)."""
        base = cls._base_distribution_type()
        if not (isinstance(comp, D.Independent) and isinstance(comp.base_dist, base) and comp.reinterpreted_batch_ndims == 1):
            raise TypeError(
                f"{cls.__name__}.from_distribution needs Independent({base.__name__}, 1) components; got "
                f"{type(comp).__name__}" + (f"({type(comp.base_dist).__name__})" if isinstance(comp, D.Independent) else "") + "."
            )
        cls._trials_from_distribution(comp.base_dist, kwargs)
        return {"logits": comp.base_dist.logits.expand(*shape, comp.event_shape[0])}

    @classmethod
    def _base_distribution_type(cls):
        return D.Bernoulli

    @classmethod
    def _trials_from_distribution(cls, base: D.Distribution, kwargs: dict) -> None:
        """Read the family's fixed settings from the components into the constructor's kwargs."""

    def _n_features_of(self, params: dict[str, Tensor]) -> int:
        return params["logits"].shape[-1]

    def _moment_points(self, params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """One point per component, its expected counts ``n_trials p_k``, with weight ``w_k``."""
        logits = params["logits"].double()
        trials = self._trials(logits.shape[-1])
        points = torch.sigmoid(logits) * (1.0 if trials is None else trials.to(logits.device))
        k = logits.shape[-2]
        weights = params["log_weights"].double().exp()
        return points, torch.eye(k, dtype=torch.float64, device=logits.device) * weights.unsqueeze(-2)

    def _event_ndims(self) -> dict[str, int]:
        return {"log_weights": 1, "logits": 2}


class BinomialMixture(BernoulliMixture):
    """Mixture of independent Binomial distributions: feature ``d`` of a sample counts the
    successes in ``n_trials`` (a scalar, or one value per feature) Bernoulli trials.

    Example:
        >>> import numpy as np
        >>> from torchem import BinomialMixture
        >>> heads = np.array([[1], [2], [1], [9], [8], [9]])  # heads in 10 tosses of one of two coins
        >>> bm = BinomialMixture(n_components=2, n_trials=10, random_state=0).fit(heads)
        >>> bm.probs_.round(2)
        array([[0.87],
               [0.13]])
        >>> bm.predict([[0], [10]])
        array([1, 0])

    Same interface as :class:`BernoulliMixture`; ``probs_[k, d]`` is the success probability
    of a single trial. The log-likelihood includes the binomial coefficients.

    Args:
        n_components: number of components.
        n_trials: number of trials, a positive integer or ``[D]`` positive integers.
        (other arguments as in :class:`BernoulliMixture`)
    """

    _input_tags = {"positive_only": True, "categorical": True}  # counts (no binarize)

    def __init__(
        self,
        n_components: int = 1,
        *,
        n_trials=1,
        tol: float = 1e-3,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init=None,
        probs_init=None,
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
            weights_init=weights_init,
            probs_init=probs_init,
            random_state=random_state,
            warm_start=warm_start,
            verbose=verbose,
            verbose_interval=verbose_interval,
            chunk_size=chunk_size,
            hard=hard,
            nan_policy=nan_policy,
        )
        self.n_trials = n_trials

    def _trials(self, n_features: int) -> Tensor:
        key = (id(self.n_trials), repr(self.n_trials), n_features)  # repr alone abbreviates long arrays
        cached = self.__dict__.get("_trials_cache")
        if cached is not None and cached[0] == key:
            return cached[1]  # also what a traced forward (torch.compile) reads: no numpy there
        t = self._check_trials(n_features)
        self.__dict__["_trials_cache"] = (key, t)
        return t

    def _trials_on(self, n_features: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``n_trials`` on ``device`` in ``dtype``, moved once (the value check runs per chunk)."""
        t = self._trials(n_features)
        key = (id(t), str(device), dtype)
        cached = self.__dict__.get("_trials_moved")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_trials_moved"] = (key, t.to(device=device, dtype=dtype))
        return cached[1]

    def _check_trials(self, n_features: int) -> Tensor:
        raw = self.n_trials.detach().cpu().numpy() if isinstance(self.n_trials, Tensor) else np.asarray(self.n_trials)
        if raw.dtype.kind not in "iuf" or isinstance(self.n_trials, bool):
            raise TypeError(
                f"n_trials must be a positive integer or one positive integer per feature; got {self.n_trials!r}. "
                "Pass the number of trials behind each count (BernoulliMixture models binary data without it)."
            )
        t = torch.as_tensor(raw, dtype=torch.float64)
        if t.ndim == 0:
            t = t.expand(n_features)
        if t.ndim != 1 or t.shape[0] != n_features:
            raise ValueError(
                f"n_trials must be a positive integer or one per feature ({n_features} values); "
                f"got shape {tuple(t.shape)}."
            )
        if not bool(torch.isfinite(t).all()) or bool((t < 1).any()) or bool((t != t.round()).any()):
            raise ValueError(f"n_trials must hold positive integers; got {self.n_trials!r}.")
        return t

    def _value_map(self):
        return None  # counts are read as they are

    def _validate_values(self, X: Tensor, name: str) -> None:
        trials = self._trials_on(X.shape[-1], X.device, X.dtype)
        if bool((X < 0).any()):
            raise ValueError(f"Negative values in data passed to BinomialMixture: {name} holds negative counts; "
                             "BinomialMixture needs counts in [0, n_trials].")
        if bool((X != X.round()).any()):
            raise ValueError(f"{name} holds non-integer values; BinomialMixture needs whole-number counts.")
        if bool((X > trials).any()):
            raise ValueError(f"{name} holds counts above n_trials; each count must be at most its feature's n_trials.")

    def _structural_hyperparameters(self) -> dict:
        return {"n_components": self.n_components, "n_trials": np.asarray(self.n_trials).tolist()}

    def _component_distribution(self, params: dict[str, Tensor]) -> D.Distribution:
        logits = params["logits"]
        trials = self._trials(logits.shape[-1]).to(device=logits.device, dtype=logits.dtype)
        return D.Independent(D.Binomial(total_count=trials.expand_as(logits), logits=logits), 1)

    @classmethod
    def _base_distribution_type(cls):
        return D.Binomial

    @classmethod
    def _trials_from_distribution(cls, base: D.Distribution, kwargs: dict) -> None:
        total = base.total_count.expand(base.batch_shape + base.event_shape)  # [..., K, D]
        first = total[..., :1, :]
        if not bool((total == first).all()) or (total.ndim == 3 and not bool((total == total[:1]).all())):
            raise ValueError("Every component must have the same total_count (n_trials) for each feature.")
        trials = first.reshape(-1, total.shape[-1])[0]
        if "n_trials" in kwargs:
            raise ValueError("n_trials is read from the distribution's total_count; do not pass it.")
        kwargs["n_trials"] = int(trials[0]) if bool((trials == trials[0]).all()) else trials.long().tolist()
