"""The one EM driver shared by every mixture family.

Only this module knows about restarts, chunks, convergence, warnings, progress and the choice
of the best restart. A family supplies four stateless hooks (see :class:`Family`) that work
on a dict of parameter tensors whose leading dimensions are ``[B, R]``: ``B`` independent
problems and ``R`` restarts, all advanced together by the same tensor operations.

One EM iteration is one pass over the chunks of the data: the E-step of each chunk produces
responsibilities, which are turned into additive sufficient statistics at once and summed
(in float64), together with the log-likelihood; the M-step then reads only the summed
statistics. As in scikit-learn, the lower bound recorded at iteration ``t`` is the mean
log-likelihood of the parameters *before* that iteration's M-step (or what the family's
:meth:`Family.lower_bound` makes of it), and a restart stops when its change falls below ``tol``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from abc import ABC, abstractmethod
from typing import Callable

import torch
from torch import Tensor

from .data import Source, TensorSource
from . import _threads
from ._threads import run_ordered, slot
from ._utils import full_float32_matmul
from .distributed import all_reduce_sum, is_distributed, rank, world_size
from .functional.estep import responsibilities

__all__ = [
    "Family",
    "EMResult",
    "STEPWISE_SCHEDULE",
    "accumulate",
    "e_step_pass",
    "hard_responsibilities",
    "labelled_e_step",
    "run_em",
    "select_best",
    "step_size",
    "stepwise_update",
]

Params = dict[str, Tensor]

#: Called with ``0`` when :func:`run_em` starts its loop and with ``it`` after each iteration
#: (private: ``torchem bench`` times iterations from inside one fit; see
#: :class:`_clock_iterations`).
_iteration_clock: Callable[[int], None] | None = None


class _clock_iterations:
    """Context manager (private, for benchmarks) that has :func:`run_em` call ``tick(it)``
    as its loop starts (``it = 0``) and after each iteration (``it = 1, 2, ...``), so that an
    iteration is timed from inside one fit."""

    def __init__(self, tick: Callable[[int], None]):
        self.tick = tick

    def __enter__(self):
        global _iteration_clock
        self.saved, _iteration_clock = _iteration_clock, self.tick
        return self

    def __exit__(self, *exc):
        global _iteration_clock
        _iteration_clock = self.saved


class Family(ABC):
    """The contract between a model family and the driver.

    A family object is made for one fit (or one inference call) from the estimator's
    hyper-parameters; the driver calls its hooks on a dict of parameter tensors whose leading
    dimensions are ``[B, R]`` (``B`` problems, ``R`` restarts). The four abstract hooks are
    pure functions of their arguments; the optional ones have defaults, so the driver never
    asks whether a hook exists.
    """

    #: The per-chunk hooks (:meth:`log_prob`, :meth:`stats`, :meth:`fused_e_step`,
    #: :meth:`portable_aux`) may run on several threads at once, each on its own chunks: the
    #: calling thread reads :meth:`prepare`'s dict itself, each worker a shallow copy made at
    #: its first chunk, whose ``"workspace"`` dict (if any) is the worker's own. The hooks may
    #: add entries to the dict (caches) but must not change a tensor in it in place, nor write
    #: into anything else shared (the family object included); what they return must not be
    #: a view of their workspace (the driver may add it after the thread's next chunk). The
    #: driver then shares an in-memory CPU pass out among threads (:mod:`torchem._threads`).
    #: Subclasses inherit the promise.
    parallel_chunks: bool = False

    #: What the lower bound is, for the message of a fit whose lower bound became NaN.
    objective: str = "log-likelihood"

    @abstractmethod
    def prepare(self, params: Params, precise: bool = False) -> dict:
        """Whatever the per-chunk hooks need that depends on the parameters only (computed
        once per pass). ``precise=True`` asks for a pass computed in float64 whatever the
        data's dtype (see :meth:`needs_precise_pass`)."""

    @abstractmethod
    def log_prob(self, X: Tensor, prepared: dict) -> tuple[Tensor, object]:
        """Component log-densities ``[B, R, n, K]`` of a chunk ``X [B, 1, n, D]``, and an
        opaque value passed on to :meth:`stats` (e.g. features computed once for both)."""

    @abstractmethod
    def stats(self, X: Tensor, resp: Tensor, prepared: dict, aux: object, sample_weight: Tensor | None) -> Params:
        """Additive float64 sufficient statistics of a chunk ``X [B, 1, n, D]`` with
        responsibilities ``resp [B, R, n, K]`` (``aux`` may be ``None``: compute what is
        needed from ``X``). Statistics of disjoint chunks add up."""

    @abstractmethod
    def m_step(self, stats: Params, params: Params) -> tuple[Params, Tensor]:
        """New parameters from summed statistics (taken about ``params``), and a ``[B, R]``
        mask of restarts whose update failed (e.g. a covariance that is not positive
        definite)."""

    def log_weights(self, params: Params) -> Tensor:
        """Log mixing weights ``[B, R, K]``."""
        return params["log_weights"]

    def fused_e_step(
        self, X: Tensor, prepared: dict, log_weights: Tensor, sample_weight: Tensor | None
    ) -> tuple[Tensor, Params] | None:
        """The soft E-step of a chunk ``X [B, 1, n, D]`` and its statistics in one go, for a
        family that computes them faster together: ``(log_norm [B, R, n], stats)``, the
        per-sample log-likelihoods under ``log_weights [B, R, K]`` and what :meth:`stats` would
        return for the responsibilities of :func:`~torchem.functional.estep.responsibilities`.
        ``None`` (the default) lets the driver run :meth:`log_prob`, the E-step and
        :meth:`stats` (it also does so for hard and labelled E-steps)."""
        return None

    def portable_aux(self, aux: object) -> object:
        """The part of :meth:`log_prob`'s ``aux`` that stays valid for statistics taken about
        other parameters (stepwise EM): a family that marginalises missing entries passes on
        the E-step's parameters, under which its statistics expect those entries. ``None``
        (the default): the statistics are recomputed from ``X``."""
        return None

    def needs_precise_pass(self, stats: Params, params: Params) -> bool:
        """Whether rounding in the working dtype spoilt this pass's statistics; the driver
        then redoes the pass with ``prepare(params, precise=True)``."""
        return False

    def needs_recentring(self, stats: Params, params: Params) -> bool:
        """Whether float64 statistics taken about ``params`` (stepwise EM's reference, see
        :func:`stepwise_update`) lost precision to rounding because the parameters their
        M-step gives lie far from ``params``: the step is then redone with the statistics
        taken about those new parameters. ``False`` (the default) for a family whose
        statistics read no parameters."""
        return False

    def lower_bound(self, stats: Params, params: Params, ll: Tensor) -> Tensor:
        """The ``[B, R]`` lower bound the driver records (and tests for convergence) after an
        M-step, from the pass's summed statistics, the new ``params`` and the pass's mean
        log-likelihood ``ll`` (under the parameters before the M-step). The default is ``ll``
        (maximum likelihood, as scikit-learn's GaussianMixture); a variational family returns
        its evidence lower bound (scikit-learn's BayesianGaussianMixture computes it from the
        parameters after the M-step and the responsibilities' entropy, a statistic)."""
        return ll

    def converged(self, old: Params, new: Params) -> Tensor | None:
        """A ``[B, R]`` convergence test on the parameters, replacing the driver's test on the
        change of the lower bound (K-means stops on the movement of its centres); ``None``
        keeps the driver's test."""
        return None

    def run_pass(self, source: Source, params: Params, hard: bool) -> tuple[Params, Tensor] | None:
        """A whole pass computed by the family itself (summed statistics and the ``[B, R]``
        mean log-likelihood, over this process's data), e.g. K-means skipping with bounds the
        distances that cannot change an assignment; ``None`` (the default) lets the driver run
        its generic pass. A family that keeps state between passes here is made for one fit."""
        return None


@dataclass
class EMResult:
    """What :func:`run_em` returns; every tensor is ``[B, R]`` unless stated."""

    params: Params
    lower_bound: Tensor  # float64
    n_iter: Tensor  # int64
    converged: Tensor  # bool
    history: list[Tensor] = field(default_factory=list)  # one [B, R] lower bound per iteration
    failed: Tensor | None = None  # bool [B, R]: restarts frozen by a failed M-step (``freeze_failed``)


def _add_into(total: Params | None, part: Params) -> Params:
    if total is None:
        return dict(part)
    for key, value in part.items():
        total[key] = total[key] + value
    return total


def hard_responsibilities(
    component_log_prob: Tensor, log_weights: Tensor, *, inplace: bool = False
) -> tuple[Tensor, Tensor]:
    """Classification E-step: each sample goes wholly to its most probable component (the
    first on ties). Returns ``(log_joint_max [..., n], one_hot [..., n, K])``; the first is
    the sample's term of the classification log-likelihood ``max_k log w_k p_k(x)``. With
    ``inplace=True`` the one-hot matrix is written over ``component_log_prob``."""
    if inplace:
        joint = component_log_prob.add_(log_weights.unsqueeze(-2))
    else:
        joint = component_log_prob + log_weights.unsqueeze(-2)
    best, labels = joint.max(-1)
    resp = joint.zero_().scatter_(-1, labels.unsqueeze(-1), 1.0)
    return best, resp


def labelled_e_step(
    component_log_prob: Tensor, log_weights: Tensor, labels: Tensor | None, *, hard: bool = False
) -> tuple[Tensor, Tensor]:
    """The E-step of a chunk with partial labels: ``(log_norm [B, R, n], resp [B, R, n, K])``
    from ``component_log_prob [B, R, n, K]`` (overwritten) and ``log_weights [B, R, K]``.

    A row with ``labels [B, n]`` equal to ``k >= 0`` is known to come from component ``k``:
    its responsibilities are one-hot at ``k`` and its term of the log-likelihood is the
    complete-data ``log w_k + log p_k(x)``; a row labelled ``-1`` (or every row when
    ``labels`` is ``None``) takes the usual E-step (soft, or ``hard``). EM then maximises the
    semi-supervised log-likelihood ``sum_unlabelled log p(x) + sum_labelled log w_y p_y(x)``."""
    pick = hard_responsibilities if hard else responsibilities
    if labels is None:
        return pick(component_log_prob, log_weights, inplace=True)
    b, r, n, _ = component_log_prob.shape
    cls = labels.clamp_min(0).unsqueeze(1).expand(b, r, n)  # [B, R, n]
    known = (labels >= 0).unsqueeze(1)  # [B, 1, n]
    fixed = component_log_prob.gather(-1, cls.unsqueeze(-1)).squeeze(-1) + log_weights.gather(-1, cls)
    log_norm, resp = pick(component_log_prob, log_weights, inplace=True)
    # in place on the chunk-sized responsibilities: a labelled row's entries become 0, then 1
    # at its class (an unlabelled row's entry at index 0 is written back unchanged)
    kept = torch.where(known, 1.0, resp.gather(-1, cls.unsqueeze(-1)).squeeze(-1)).to(resp.dtype)
    resp.masked_fill_(known.unsqueeze(-1), 0.0).scatter_(-1, cls.unsqueeze(-1), kept.unsqueeze(-1))
    return torch.where(known, fixed, log_norm), resp


def _parallel(family: Family, source: Source) -> bool:
    """Whether a pass shares its chunks among threads (:func:`torchem._threads.run_ordered`):
    in-memory CPU data of more than one chunk and at least :data:`torchem._threads.MIN_ROWS`
    rows, read by a family whose hooks are :attr:`Family.parallel_chunks`. (Other passes, and
    passes on a GPU, run in the caller.)"""
    return (family.parallel_chunks and isinstance(source, TensorSource)
            and _threads.shares(source.device, source.n_samples, -(-source.n_samples // source.chunk_size)))


def _own(prepared: dict | None, i: int) -> dict | None:
    """The copy of a family's prepared dict that the worker of slot ``i`` of a pass reads:
    its own keys, and its own workspace (kept inside the shared one, so that it too lasts from
    pass to pass)."""
    if prepared is None:
        return None
    own = dict(prepared)
    if isinstance(prepared.get("workspace"), dict):
        own["workspace"] = prepared["workspace"].setdefault(("worker", i), {})
    return own


@full_float32_matmul()
def accumulate(
    family: Family,
    source: Source,
    params: Params,
    *,
    hard: bool = False,
    precise: bool = False,
    about: Params | None = None,
    resp: Callable[[int, Tensor], Tensor] | None = None,
    over_ranks: bool = True,
) -> tuple[Params, Tensor | None, Tensor]:
    """The one pass that sums a family's statistics over a source's chunks (and over the
    ranks of a torch.distributed job): batch EM, stepwise EM, initialisation, the statistics
    implied by a model and K-means all read their data through it.

    Args:
        family: the model family's hooks.
        source: the data, chunk by chunk.
        params: ``[B, R, ...]`` parameters of the E-step (unused with ``resp``).
        hard: classification E-step (each sample wholly to its most probable component).
            Rows the source labels keep their component in either E-step
            (:func:`labelled_e_step`).
        precise: compute the pass in float64 (:meth:`Family.needs_precise_pass`).
        about: parameters about which the statistics are taken, in float64, instead of
            ``params`` (stepwise EM averages statistics across changing parameters).
        resp: ``resp(start, X [B, 1, n, D]) -> [B, R, n, K]`` responsibilities given for each
            chunk instead of an E-step (initialisation, implied statistics): the statistics are
            taken in float64, about ``about`` (``None`` for a family whose statistics read no
            parameters); no log-likelihood is computed.
        over_ranks: sum over the ranks of a process group (when there is one).

    Returns:
        ``(stats, ll_sum [B, R] or None, total [B])``: the summed statistics, the (weighted)
        sum of the samples' log-likelihoods, both float64, and the total weight.
    """
    stats, ll = None, None
    done = None if (about is not None or precise or resp is not None) else family.run_pass(source, params, hard)
    if done is not None:
        stats, ll_mean = done
        total = source.total_weight()
        ll = ll_mean * total.unsqueeze(-1)
    else:
        prepared = lw = None
        if resp is None:
            prepared = family.prepare(params, precise)
            lw = family.log_weights(params)
        about_prep = None if about is None else family.prepare({k: v.double() for k, v in about.items()}, True)

        owned: dict[int, tuple] = {0: (prepared, about_prep)}  # per thread of the pass (see _own)

        def one_chunk(chunk):
            start, X, w, labels = chunk
            at = slot()
            if at not in owned:
                owned[at] = (_own(prepared, at), _own(about_prep, at))
            prep, aprep = owned[at]
            X = X.unsqueeze(1)  # [B, 1, n, D]: broadcasts against the restarts
            w = None if w is None else w.unsqueeze(1)
            fused, ll_part = None, None
            if resp is not None:
                r, aux = resp(start, X), None
            else:
                if about is None and labels is None and not hard:
                    fused = family.fused_e_step(X, prep, lw, w)
                if fused is None:
                    log_prob, aux = family.log_prob(X, prep)
                    log_norm, r = labelled_e_step(log_prob, lw.to(log_prob.dtype), labels, hard=hard)
                else:
                    log_norm, part = fused  # the statistics came with the E-step
                ll_part = log_norm.sum(-1, dtype=torch.float64) if w is None else (log_norm.double() * w.double()).sum(-1)
            if fused is None and about is None and resp is None:
                part = family.stats(X, r, prep, aux, w)
            elif fused is None:
                kept = None if resp is not None else family.portable_aux(aux)
                part = family.stats(X.double(), r.double(), aprep, kept, None if w is None else w.double())
            return part, ll_part

        def add(result):  # in the chunks' order, whichever thread computed them
            nonlocal stats, ll
            part, ll_part = result
            stats = _add_into(stats, part)
            if ll_part is not None:
                ll = ll_part if ll is None else ll + ll_part

        chunks = source.chunks(labels=True)
        if resp is None and _parallel(family, source):
            run_ordered(chunks, one_chunk, add)  # chunks side by side on threads (torchem._threads)
        else:
            for chunk in chunks:
                add(one_chunk(chunk))
        total = source.total_weight()
    if over_ranks and is_distributed():
        keys = sorted(stats)
        extra = [total] + ([] if ll is None else [ll])
        reduced = all_reduce_sum([stats[k] for k in keys] + extra)
        stats = dict(zip(keys, reduced[: len(keys)]))
        total = reduced[len(keys)]
        ll = None if ll is None else reduced[len(keys) + 1]
    return stats, ll, total


def e_step_pass(family: Family, source: Source, params: Params, *, hard: bool = False, precise: bool = False) -> tuple[Params, Tensor]:
    """One EM pass: summed statistics and the ``[B, R]`` mean log-likelihood, over every rank
    (see :func:`accumulate`)."""
    stats, ll_sum, total = accumulate(family, source, params, hard=hard, precise=precise)
    return stats, ll_sum / total.unsqueeze(-1)


def _where(mask: Tensor, new: Params, old: Params) -> Params:
    out = {}
    for key, value in new.items():
        m = mask.reshape(mask.shape + (1,) * (value.ndim - mask.ndim))
        out[key] = torch.where(m, value.to(old[key].dtype), old[key])
    return out


@full_float32_matmul()
def run_em(
    family: Family,
    source: TensorSource,
    params: Params,
    *,
    tol: float,
    max_iter: int,
    lower_bound: Tensor | None = None,
    callback: Callable[[int, Tensor, Params], bool | None] | None = None,
    verbose: int = 0,
    verbose_interval: int = 10,
    failure_message: str = "EM failed.",
    hard: bool = False,
    freeze_failed: bool = False,
) -> EMResult:
    """Run batched EM from ``params`` until every restart has converged or ``max_iter``.

    Args:
        family: the model family's hooks.
        source: the data, read chunk by chunk.
        params: initial parameters with leading dims ``[B, R]``.
        tol: a restart has converged once ``|lower_bound - previous| < tol``.
        max_iter: the most EM iterations.
        lower_bound: ``[B, R]`` starting lower bound (for warm starts); ``-inf`` by default.
        callback: called after each iteration with ``(iteration, lower_bound [B, R], params)``;
            returning ``True`` stops the fit.
        verbose: 0 silent; 1 a progress bar (tqdm, on standard error, when installed: iteration,
            lower bound, its change and points per second) and a summary line; 2 also a line
            every ``verbose_interval`` iterations. Under ``torch.distributed`` only rank 0
            reports.
        failure_message: the ``ValueError`` raised if an active restart's M-step fails.
        hard: classification EM: each sample is assigned wholly to its most probable
            component, and the lower bound is the mean classification log-likelihood.
        freeze_failed: a restart whose M-step fails keeps its last parameters and stops
            (marked in ``EMResult.failed``, not converged) instead of failing the whole fit:
            for batches of independent models, e.g. a grid of models compared on a criterion.

    Returns:
        :class:`EMResult`; restarts that converged keep the parameters of their last update.
    """
    any_param = next(iter(params.values()))
    lead = any_param.shape[:2]  # [B, R]
    device = any_param.device
    if lower_bound is None:
        lower_bound = torch.full(lead, -torch.inf, dtype=torch.float64, device=device)
    n_iter = torch.zeros(lead, dtype=torch.int64, device=device)
    converged = torch.zeros(lead, dtype=torch.bool, device=device)
    active = torch.ones(lead, dtype=torch.bool, device=device)
    dead = torch.zeros(lead, dtype=torch.bool, device=device)
    history = []
    start = time.perf_counter()
    verbose = verbose if rank() == 0 else 0
    bar = _progress_bar(max_iter) if verbose >= 1 else None
    tick = _iteration_clock
    if tick is not None:
        tick(0)
    try:
        for it in range(1, max_iter + 1):
            previous = lower_bound
            stats, ll = e_step_pass(family, source, params, hard=hard)
            precise = family.needs_precise_pass(stats, params)
            if precise:
                # The family found that rounding in the working dtype spoilt the statistics
                # (e.g. float32 second moments that cancel): redo this pass in float64.
                stats, ll = e_step_pass(family, source, params, hard=hard, precise=True)
            new_params, failed = family.m_step(stats, params)
            if precise and not bool(failed.any()) and family.needs_recentring(stats, params):
                # The precise pass took its moments about the old parameters, and the new ones
                # lie so far from them (a start far from the data) that those moments lost
                # eps * distance^2: take them again, with the same E-step, about the new ones.
                about = {k: v.double() for k, v in new_params.items()}
                stats = accumulate(family, source, params, hard=hard, precise=True, about=about)[0]
                new_params, failed = family.m_step(stats, about)
                new_params = {k: v.to(params[k].dtype) if k in params else v for k, v in new_params.items()}
            if freeze_failed:
                dead = dead | (failed & active)
                active = active & ~dead
            elif bool((failed & active).any()):
                raise ValueError(failure_message)
            old_params = params
            params = _where(active, new_params, params)
            lower_bound = torch.where(active, family.lower_bound(stats, new_params, ll), lower_bound)
            n_iter = torch.where(active, torch.full_like(n_iter, it), n_iter)
            history.append(lower_bound)
            change = lower_bound - previous
            if bool(torch.isnan(lower_bound).any()):
                raise ValueError(f"The {family.objective} became NaN during the fit. {failure_message}")
            own = family.converged(old_params, params)
            newly = active & ((change.abs() < tol) if own is None else own)
            converged = converged | newly
            active = active & ~newly
            if verbose >= 1:
                moving = change[active | newly].abs().max().item() if bool((active | newly).any()) else 0.0
                elapsed = time.perf_counter() - start
                if bar is not None:
                    rate = _points(source) * it / max(elapsed, 1e-9)
                    bar.set_postfix(lower_bound=f"{lower_bound.max().item():.6g}", change=f"{moving:.3g}", points_per_s=f"{rate:.3g}", refresh=False)
                    bar.update(1)
                if verbose >= 2 and it % verbose_interval == 0:
                    print(
                        f"  Iteration {it}\t time lapse {elapsed:.5f}s\t ll change {moving:.5g}\t "
                        f"active {int(active.sum())}/{active.numel()}"
                    )
            if tick is not None:
                tick(it)
            stop = callback is not None and bool(callback(it, lower_bound, params))
            if is_distributed():  # a stop on any rank stops every rank (none is left in a collective)
                stop = bool(all_reduce_sum([torch.tensor(float(stop), dtype=torch.float64, device=device)])[0] > 0)
            if stop:
                break
            if not bool(active.any()):
                break
    finally:  # the bar is closed however the loop ends (a failed M-step, a callback error)
        if bar is not None:
            bar.close()
    if verbose >= 1:
        print(
            f"EM finished after {int(n_iter.max()) if n_iter.numel() else 0} iterations in "
            f"{time.perf_counter() - start:.3f}s: {int(converged.sum())}/{converged.numel()} converged, "
            f"best lower bound {lower_bound.max().item():.6g}"
        )
    return EMResult(params, lower_bound, n_iter, converged, history, dead if freeze_failed else None)


def _progress_bar(max_iter: int):
    """A tqdm bar over the iterations, or None when tqdm is not installed (the printed lines
    of ``verbose`` remain)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=max_iter, desc="EM", unit="it")


def _points(source) -> int:
    """Samples read per pass, over all ranks (for the throughput shown by the progress bar)."""
    try:
        n = source.n_samples * source.n_problems
    except RuntimeError:  # an iterable before its first pass
        return 0
    return n * world_size()


# --------------------------------------------------------------------------------------------
# Stepwise (online) EM
# --------------------------------------------------------------------------------------------

#: ``(t0, kappa)`` of the step size ``eta_t = (t + t0) ** -kappa`` of stepwise EM.
STEPWISE_SCHEDULE = (2.0, 0.6)


def step_size(t: int, schedule: tuple[float, float] = STEPWISE_SCHEDULE) -> float:
    """Step of the ``t``-th update (``t = 1, 2, ...``) of stepwise EM: 1 for the first (the
    running statistics start as the first batch's), then ``(t + t0) ** -kappa``.

    With ``kappa`` in ``(0.5, 1]`` the steps sum to infinity while their squares do not, the
    condition under which stepwise EM converges (Cappé & Moulines, 2009); a smaller ``kappa``
    forgets old batches faster, a larger one averages more."""
    t0, kappa = schedule
    if not (0.5 < kappa <= 1.0) or t0 < 0:
        raise ValueError(f"the stepwise schedule needs t0 >= 0 and kappa in (0.5, 1]; got t0={t0}, kappa={kappa}.")
    return 1.0 if t <= 1 else float((t + t0) ** -kappa)


def stepwise_update(
    family: Family,
    source: TensorSource,
    params: Params,
    reference: Params,
    running: Params | None,
    eta: float | Tensor,
    *,
    hard: bool = False,
) -> tuple[Params, Params, Tensor, Tensor]:
    """One step of stepwise EM on a batch.

    The E-step uses ``params``; the batch's statistics are taken about the fixed
    ``reference`` parameters (in float64) so they can be averaged with the running ones, and
    normalised by the batch's weight: ``running <- (1 - eta) running + eta batch`` (``eta`` a
    number, or ``[B]``: a step per problem). The
    M-step reads the running statistics. Under ``torch.distributed`` the batch statistics are
    summed over the ranks, whose batches together make the step's batch.

    Returns:
        ``(new_params, running, failed [B, R], mean log-likelihood [B, R] of the batch under params)``.
    """
    ref64 = {k: v.double() for k, v in reference.items()}
    # every rank's batch is part of one global batch
    stats, ll, total = accumulate(family, source, params, hard=hard, about=ref64)
    scale = total.reshape(total.shape + (1,))
    batch = {k: v / scale.reshape(scale.shape + (1,) * (v.ndim - scale.ndim)) for k, v in stats.items()}
    if running is None:
        running = batch
    else:
        def step(v: Tensor):  # eta broadcast over the statistics' trailing dims
            return eta if not isinstance(eta, Tensor) else eta.to(v).reshape(eta.shape + (1,) * (v.ndim - eta.ndim))

        running = {k: (1.0 - step(v)) * running[k] + step(v) * v for k, v in batch.items()}
    new_params, failed = family.m_step(running, ref64)
    return new_params, running, failed, ll / scale


def select_best(result: EMResult) -> tuple[Params, Tensor, Tensor, Tensor, list[Tensor]]:
    """Keep, for every problem, the restart with the highest lower bound (the first on ties).

    Returns:
        ``(params [B, ...], lower_bound [B], n_iter [B], converged [B], history)`` where
        ``history`` holds one ``[B]`` tensor per iteration of the chosen restarts.
    """
    best = result.lower_bound.argmax(-1)  # [B]; -inf everywhere picks restart 0
    idx = best.unsqueeze(-1)

    def pick(t: Tensor) -> Tensor:
        index = idx.reshape(idx.shape + (1,) * (t.ndim - 2)).expand(t.shape[0], 1, *t.shape[2:])
        return torch.gather(t, 1, index).squeeze(1)

    params = {k: pick(v) for k, v in result.params.items()}
    n_iter = pick(result.n_iter)
    history = [pick(h) for h in result.history]
    return params, pick(result.lower_bound), n_iter, pick(result.converged), history
