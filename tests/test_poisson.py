"""PoissonMixture against an independent NumPy EM, scipy's log-pmf and known truths, and
through everything the shared estimator layer gives a family (streams, batches, partial_fit,
torch.distributed, gradients, torch.distributions, sampling, state dict, CLI)."""

import datetime
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import distributions as D
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

import torchem
from torchem import ConvergenceWarning, PoissonMixture
from torchem.__main__ import main
from torchem._cli import load_model
from torchem.em import step_size
from torchem.mixture.poisson import RATE_EPS, poisson_log_prob

RATES = np.array([[1.0, 6.0, 12.0, 3.0], [9.0, 1.5, 3.0, 15.0], [4.0, 4.0, 25.0, 0.5]])
WEIGHTS = np.array([0.3, 0.45, 0.25])


def _counts(n=900, seed=0, rates=RATES, weights=WEIGHTS):
    rng = np.random.default_rng(seed)
    z = rng.choice(len(weights), size=n, p=weights)
    return rng.poisson(rates[z]).astype(np.float64), z


def _logpmf(x, rate):
    """``scipy.stats.poisson.logpmf``, imported here: the gloo workers import this module,
    and scipy.stats would add a second to the start of each."""
    from scipy.stats import poisson

    return poisson.logpmf(x, rate)


def _mixture_logpmf(X, weights, rates):
    """``log sum_k w_k prod_d Poisson(x_d | rate_kd)`` with scipy: ``[N]``."""
    joint = _logpmf(X[:, None, :], rates[None]).sum(-1) + np.log(weights)
    m = joint.max(1, keepdims=True)
    return m[:, 0] + np.log(np.exp(joint - m).sum(1))


def _numpy_em(X, weights, rates, n_iter):
    """EM for a mixture of independent Poissons, written directly in NumPy and scipy."""
    history = []
    for _ in range(n_iter):
        joint = _logpmf(X[:, None, :], rates[None]).sum(-1) + np.log(weights)
        m = joint.max(1, keepdims=True)
        norm = m[:, 0] + np.log(np.exp(joint - m).sum(1))
        history.append(norm.mean())
        resp = np.exp(joint - norm[:, None])
        nk = resp.sum(0)
        weights = nk / len(X)
        rates = resp.T @ X / nk[:, None]
    return weights, rates, history


def _fit(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


# --------------------------------------------------------------------------------------------
# The maths: against NumPy, scipy and a known truth
# --------------------------------------------------------------------------------------------


def test_matches_an_independent_numpy_em_iteration_by_iteration():
    X, _ = _counts()
    rng = np.random.default_rng(1)
    w0 = np.array([0.2, 0.5, 0.3])
    r0 = rng.uniform(1.0, 10.0, size=(3, X.shape[1]))
    ref_w, ref_r, ref_hist = _numpy_em(X, w0, r0, 30)
    ours = _fit(PoissonMixture(3, weights_init=w0, rates_init=r0, tol=0.0, max_iter=30), X)
    assert ours.n_iter_ == 30
    np.testing.assert_allclose(ours.weights_, ref_w, rtol=1e-8)
    np.testing.assert_allclose(ours.rates_, ref_r, rtol=1e-8)
    np.testing.assert_allclose(ours.lower_bound_, ref_hist[-1], rtol=1e-8)
    np.testing.assert_allclose(ours.lower_bounds_, ref_hist, rtol=1e-8)
    # score_samples is the full log-pmf of the mixture, lgamma(x + 1) included
    np.testing.assert_allclose(ours.score_samples(X), _mixture_logpmf(X, ours.weights_, ours.rates_), rtol=1e-12)
    np.testing.assert_allclose(ours.score(X), _mixture_logpmf(X, ours.weights_, ours.rates_).mean(), rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 5),
    st.integers(1, 6),
    st.floats(-3.0, 4.0),
    st.integers(0, 2**31 - 1),
)
def test_kernel_equals_scipy_logpmf(k, d, n, log_scale, seed):
    rng = np.random.default_rng(seed)
    rates = np.exp(rng.uniform(-2.0, 2.0, size=(k, d)) + log_scale)
    X = rng.poisson(rates[rng.integers(0, k, n)]).astype(np.float64)
    ours = poisson_log_prob(torch.from_numpy(X), torch.from_numpy(np.log(rates))).numpy()
    want = _logpmf(X[:, None, :], rates[None]).sum(-1)
    np.testing.assert_allclose(ours, want, rtol=1e-11, atol=1e-11)


def test_log_likelihood_never_decreases():
    X, _ = _counts(seed=2)
    for init in ("random", "random_from_data"):
        est = _fit(PoissonMixture(4, init_params=init, tol=0.0, max_iter=40, random_state=0), X)
        assert len(est.lower_bounds_) == 40
        assert np.all(np.diff(est.lower_bounds_) >= -1e-12)


def test_recovers_a_known_mixture():
    X, _ = _counts(n=6000, seed=3)
    gm = PoissonMixture(3, n_init=2, random_state=0, tol=1e-8, max_iter=500).fit(X)
    order = np.argsort(gm.rates_[:, 0])
    truth = np.argsort(RATES[:, 0])
    np.testing.assert_allclose(gm.rates_[order], RATES[truth], rtol=0.04)  # within 2.5% here
    np.testing.assert_allclose(gm.weights_[order], WEIGHTS[truth], atol=0.02)
    assert gm.converged_
    labels = gm.predict(X)
    assert labels.shape == (6000,) and gm.predict_proba(X).shape == (6000, 3)


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_init_method_gives_positive_finite_rates(init):
    X, _ = _counts(300, seed=4)
    X[:, 3] = 0.0  # a feature that is always zero: its rates are floored, not 0
    gm = PoissonMixture(3, init_params=init, n_init=2, random_state=0).fit(X)
    assert gm.rates_.shape == (3, 4) and np.all(gm.rates_ >= RATE_EPS * (1 - 1e-9))
    np.testing.assert_allclose(gm.rates_[:, 3], RATE_EPS, rtol=1e-6)
    assert np.isfinite(gm.lower_bound_) and np.isfinite(gm.score_samples(X)).all()
    # a count in that feature is very unlikely, but its log-probability is finite
    assert np.isfinite(gm.score_samples(np.array([[1.0, 1.0, 1.0, 1.0]]))).all()


@pytest.mark.parametrize("init", ["k-means++", "random_from_data"])
def test_chosen_samples_start_halfway_to_the_data_mean(init):
    """So a chosen sample's zero counts do not start any rate at 0."""
    X, _ = _counts(200, seed=18)
    X[:, 1] = np.where(np.arange(200) % 2 == 0, 0.0, X[:, 1])
    gm = PoissonMixture(3, init_params=init, random_state=0).initialize(X)
    rows = 2 * gm.rates_ - X.mean(0)
    assert all(np.isclose(X, row, rtol=1e-12, atol=1e-12).all(1).any() for row in rows)
    assert gm.rates_.min() > 0.1


def test_hard_em_is_classification_em():
    """With hard=True one iteration assigns every sample to its most probable component, the
    rates become the means of the assigned samples, and the lower bound is the mean of
    max_k log w_k p_k(x) under the starting parameters."""
    X, _ = _counts(seed=5)
    w0, r0 = np.full(3, 1 / 3), np.array([[2.0, 5.0, 10.0, 2.0], [8.0, 2.0, 4.0, 12.0], [4.0, 4.0, 20.0, 1.0]])
    gm = _fit(PoissonMixture(3, weights_init=w0, rates_init=r0, hard=True, tol=0.0, max_iter=1), X)
    joint = _logpmf(X[:, None, :], r0[None]).sum(-1) + np.log(w0)
    labels = joint.argmax(1)
    np.testing.assert_allclose(gm.lower_bound_, joint.max(1).mean(), rtol=1e-12)
    np.testing.assert_allclose(gm.rates_, np.stack([X[labels == j].mean(0) for j in range(3)]), rtol=1e-10)
    np.testing.assert_allclose(gm.weights_, np.bincount(labels, minlength=3) / len(X), rtol=1e-10)
    full = PoissonMixture(3, hard=True, random_state=0).fit(X)
    assert full.converged_ and np.isfinite(full.lower_bound_)


# --------------------------------------------------------------------------------------------
# What the estimator layer gives: batches, streams, partial_fit, torch.distributed
# --------------------------------------------------------------------------------------------


def test_stacked_problems_equal_separate_fits():
    X = np.stack([_counts(400, seed=s)[0] for s in range(3)])
    w0 = np.full(3, 1 / 3)
    r0 = np.random.default_rng(6).uniform(1.0, 10.0, size=(3, 3, 4))
    kw = dict(tol=0.0, max_iter=15)
    batched = _fit(PoissonMixture(3, weights_init=w0, rates_init=r0, **kw), X)
    assert batched.rates_.shape == (3, 3, 4) and batched.score_samples(X).shape == (3, 400)
    for b in range(3):
        single = _fit(PoissonMixture(3, weights_init=w0, rates_init=r0[b], **kw), X[b])
        np.testing.assert_allclose(batched.rates_[b], single.rates_, rtol=1e-10)
        np.testing.assert_allclose(batched.weights_[b], single.weights_, rtol=1e-10)
        np.testing.assert_allclose(batched.lower_bound_[b], single.lower_bound_, rtol=1e-12)


@pytest.mark.parametrize("kind", ["memmap", "dataloader"])
def test_streamed_fit_equals_in_memory_fit(kind, tmp_path):
    X, _ = _counts(600, seed=7)
    make = lambda: PoissonMixture(3, random_state=0, chunk_size=128)  # noqa: E731
    ref = make().fit(X)
    if kind == "memmap":
        np.save(tmp_path / "X.npy", X)
        data = np.load(tmp_path / "X.npy", mmap_mode="r")
    else:
        data = DataLoader(TensorDataset(torch.from_numpy(X)), batch_size=50)
    ours = make().fit(data)
    rates = ours.rates_.numpy() if isinstance(ours.rates_, torch.Tensor) else ours.rates_
    assert isinstance(ours.rates_, np.ndarray if kind == "memmap" else torch.Tensor)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(rates, ref.rates_, rtol=1e-10)
    assert ours.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-12)
    np.testing.assert_allclose(np.asarray(ours.score_samples(data)), ref.score_samples(X), rtol=1e-12)


def test_sample_weights_count_as_repeated_samples():
    X, _ = _counts(300, seed=17)
    w = np.random.default_rng(17).integers(1, 4, len(X))
    start = dict(weights_init=np.full(3, 1 / 3), rates_init=np.array([[2.0, 5.0, 10.0, 2.0], [8.0, 2.0, 4.0, 12.0], [4.0, 4.0, 20.0, 1.0]]))
    ref = _fit(PoissonMixture(3, tol=0.0, max_iter=10, **start), np.repeat(X, w, axis=0))
    ours = _fit(PoissonMixture(3, tol=0.0, max_iter=10, **start), DataLoader([{"X": x, "sample_weight": wi} for x, wi in zip(torch.from_numpy(X), torch.from_numpy(w.astype(np.float64)))], batch_size=64))
    np.testing.assert_allclose(ours.rates_.numpy(), ref.rates_, rtol=1e-10)
    np.testing.assert_allclose(ours.weights_.numpy(), ref.weights_, rtol=1e-10)
    assert ours.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-12)
    online = PoissonMixture(3, **start).partial_fit(X, sample_weight=w)
    np.testing.assert_allclose(online.rates_, PoissonMixture(3, **start).partial_fit(np.repeat(X, w, axis=0)).rates_, rtol=1e-10)


def test_partial_fit_starts_with_an_em_step_and_approaches_the_batch_fit():
    rng = np.random.default_rng(8)
    draw = lambda n: _counts(n, seed=int(rng.integers(2**31)))[0]  # noqa: E731
    first = draw(600)
    a = PoissonMixture(3, random_state=0).partial_fit(first)
    b = _fit(PoissonMixture(3, random_state=0, max_iter=1), first)
    np.testing.assert_allclose(a.rates_, b.rates_, rtol=1e-10)
    assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=1e-12)
    test = draw(10000)
    best = PoissonMixture(3, random_state=0, tol=1e-8, max_iter=500).fit(test).score(test)
    for _ in range(60):
        a.partial_fit(draw(250))
    assert a.n_iter_ == 61 and not a.converged_
    assert a.score(test) == pytest.approx(best, abs=0.01)


def test_partial_fit_after_fit_continues_it_from_its_moment_points():
    X, _ = _counts(6000, seed=9)
    gm = PoissonMixture(3, random_state=0).fit(X)
    before, score = gm.rates_.copy(), gm.score(X)
    # the fit counts as the first ceil(6000 / 2) steps of the running average, so a batch of
    # two samples moves it by step_size(3001) of the way to the batch's own statistics
    w, resp = gm.weights_.copy(), gm.predict_proba(X[:2])
    eta = step_size(3001)
    nk = (1 - eta) * w + eta * resp.sum(0) / 2
    sx = (1 - eta) * w[:, None] * before + eta * resp.T @ X[:2] / 2
    gm.partial_fit(X[:2])
    assert gm.n_iter_ == 1
    np.testing.assert_allclose(gm.rates_, sx / nk[:, None], rtol=1e-10)
    np.testing.assert_allclose(gm.weights_, nk / nk.sum(), rtol=1e-10)
    assert np.abs(gm.rates_ - before).max() < 0.1 and gm.score(X) > score - 1e-3
    with pytest.raises(ValueError, match="X has 2 features, but PoissonMixture is expecting 4 features"):
        gm.partial_fit(X[:, :2])
    with pytest.raises(ValueError, match="non-integer"):
        gm.partial_fit(X[:10] + 0.5)


def _distributed_worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=20))
    X, _ = _counts(600, seed=10)
    half = X[rank * 300 : (rank + 1) * 300]
    fitted = PoissonMixture(3, n_init=2, random_state=0, chunk_size=64).fit(
        DataLoader(TensorDataset(torch.from_numpy(half)), batch_size=40)
    )
    online = PoissonMixture(3, random_state=0)
    for b in range(4):
        online.partial_fit(X[b * 150 : (b + 1) * 150][rank * 75 : (rank + 1) * 75])
    out = {name: {"rates": m.rates_.numpy() if isinstance(m.rates_, torch.Tensor) else m.rates_,
                  "weights": np.asarray(m.weights_), "lb": np.asarray(m.lower_bound_)}
           for name, m in (("fit", fitted), ("partial", online))}
    torch.save(out, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_gloo_processes_equal_one_process(tmp_path):
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    X, _ = _counts(600, seed=10)
    fitted = PoissonMixture(3, n_init=2, random_state=0, chunk_size=64).fit(X)
    online = PoissonMixture(3, random_state=0)
    for b in range(4):
        online.partial_fit(X[b * 150 : (b + 1) * 150])
    for name, single in (("fit", fitted), ("partial", online)):
        want = {"rates": single.rates_, "weights": single.weights_, "lb": np.asarray(single.lower_bound_)}
        for key, value in want.items():
            np.testing.assert_array_equal(ranks[0][name][key], ranks[1][name][key])  # identical on every rank
            np.testing.assert_allclose(ranks[0][name][key], value, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Gradients, torch.distributions, sampling, saving, criteria
# --------------------------------------------------------------------------------------------


def test_gradcheck_with_respect_to_the_parameters():
    X, _ = _counts(200, seed=11)
    model = PoissonMixture(3, random_state=0).fit(X).double()
    names = [n for n, _ in model.named_parameters()]
    assert sorted(names) == ["log_rates", "logits"]
    values = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
    x = torch.tensor(X[:6])

    def f(*params):
        return functional_call(model, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(f, values, eps=1e-6, atol=1e-6)


def test_gradients_reach_the_parameters_and_gradient_fitting_works():
    X, _ = _counts(400, seed=12)
    model = PoissonMixture(3, random_state=0).fit(X)
    assert all(not p.requires_grad for p in model.parameters())
    model.requires_grad_(True)
    (-model(torch.tensor(X)).mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    # from the constructor's values alone: trainable without a fit, towards the EM optimum
    scratch = PoissonMixture(3, weights_init=np.full(3, 1 / 3), rates_init=np.full((3, 4), 5.0) + np.arange(3)[:, None])
    history = torchem.fit_by_gradient(scratch, X, epochs=150, lr=0.1)
    em = PoissonMixture(3, random_state=0, tol=1e-10, max_iter=500).fit(X)
    assert history[-1] < history[0]
    assert abs(scratch.score(X) - em.score(X)) < 0.02


def test_to_and_from_distribution():
    X, _ = _counts(300, seed=13)
    model = PoissonMixture(3, random_state=0).fit(X)
    x = torch.tensor(X)
    dist_ = model.to_distribution()
    assert isinstance(dist_.component_distribution, D.Independent)
    assert isinstance(dist_.component_distribution.base_dist, D.Poisson)
    np.testing.assert_allclose(dist_.log_prob(x).detach().numpy(), model.score_samples(X), rtol=1e-12)
    back = PoissonMixture.from_distribution(dist_)
    np.testing.assert_allclose(back.score_samples(x).numpy(), model.score_samples(X), rtol=1e-12)
    np.testing.assert_allclose(back.rates_.numpy(), model.rates_, rtol=1e-12)
    # a hand-made batch of mixtures gives a batched model; EM continues from it
    gen = torch.Generator().manual_seed(0)
    rate = torch.rand(2, 3, 4, generator=gen, dtype=torch.float64) * 10 + 0.5
    logits = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    made = D.MixtureSameFamily(D.Categorical(logits=logits), D.Independent(D.Poisson(rate), 1))
    m = PoissonMixture.from_distribution(made)
    assert m.rates_.shape == (2, 3, 4)
    xb = torch.poisson(torch.full((2, 20, 4), 3.0, dtype=torch.float64), generator=gen)
    torch.testing.assert_close(m.score_samples(xb), made.log_prob(xb.transpose(0, 1)).transpose(0, 1))
    m.set_params(warm_start=True, max_iter=20)
    m.fit(xb)
    with pytest.raises(TypeError, match=r"Independent\(Poisson, 1\)"):
        PoissonMixture.from_distribution(D.MixtureSameFamily(D.Categorical(logits=logits[0]), D.Independent(D.Normal(rate[0], 1.0), 1)))


def test_sample_has_the_closed_form_means():
    model = PoissonMixture.from_distribution(
        D.MixtureSameFamily(D.Categorical(probs=torch.tensor(WEIGHTS)), D.Independent(D.Poisson(torch.tensor(RATES)), 1)),
        random_state=0,
    )
    S, y = model.sample(60000)
    S, y = S.numpy(), y.numpy()
    assert S.shape == (60000, 4) and np.all(S >= 0) and np.all(S == np.round(S))
    assert np.all(np.diff(y) >= 0)  # sorted by component, as scikit-learn returns them
    se = np.sqrt((WEIGHTS @ (RATES + RATES**2)) - (WEIGHTS @ RATES) ** 2) / np.sqrt(60000)
    np.testing.assert_allclose(S.mean(0), WEIGHTS @ RATES, atol=5 * se.max())
    for k in range(3):
        part = S[y == k]
        np.testing.assert_allclose(part.mean(0), RATES[k], atol=5 * np.sqrt(RATES[k].max() / len(part)))
        np.testing.assert_allclose(part.var(0), RATES[k], rtol=0.1)  # Poisson: variance = mean
    np.testing.assert_array_equal(model.sample(10)[0], model.sample(10)[0])  # random_state fixes the draws


def test_state_dict_round_trip_and_criteria(tmp_path):
    X, _ = _counts(500, seed=14)
    Xt = torch.from_numpy(X).float()
    gm = PoissonMixture(3, random_state=0).fit(Xt)
    assert isinstance(gm.rates_, torch.Tensor) and gm.rates_.dtype == torch.float32
    torch.save(gm.state_dict(), tmp_path / "gm.pt")
    fresh = PoissonMixture(3)
    fresh.load_state_dict(torch.load(tmp_path / "gm.pt", weights_only=True))
    torch.testing.assert_close(fresh.rates_, gm.rates_)
    torch.testing.assert_close(fresh.score_samples(Xt), gm.score_samples(Xt))
    assert fresh.n_iter_ == gm.n_iter_ and fresh.lower_bound_ == gm.lower_bound_
    with pytest.raises(ValueError, match="n_components"):
        PoissonMixture(2).load_state_dict(gm.state_dict())
    # BIC and AIC from the score and K D + K - 1 free parameters
    g64 = PoissonMixture(3, random_state=0).fit(X)
    np.testing.assert_allclose(gm.rates_.numpy(), g64.rates_, rtol=1e-5)  # float32 fits as float64 does
    assert gm.lower_bound_ == pytest.approx(g64.lower_bound_, rel=1e-6)
    n, d = X.shape
    ll = _mixture_logpmf(X, g64.weights_, g64.rates_).sum()
    assert g64.bic(X) == pytest.approx(-2 * ll + (3 * d + 2) * np.log(n), rel=1e-12)
    assert g64.aic(X) == pytest.approx(-2 * ll + 2 * (3 * d + 2), rel=1e-12)


def test_command_line_fit_and_predict(tmp_path, capsys):
    X, z = _counts(600, seed=15)
    path, out = tmp_path / "counts.npy", tmp_path / "pm.pt"
    np.save(path, X)
    assert main(["fit", str(path), "--model", "poisson", "-k", "3", "--double", "--out", str(out)]) == 0
    printed = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines() if line.strip())
    assert printed["model"] == "PoissonMixture"
    name, model = load_model(str(out))
    assert name == "poisson" and isinstance(model, PoissonMixture)
    weights, rates = model.weights_.numpy(), model.rates_.numpy()
    loglik = float(printed["log-likelihood"].split()[0])
    np.testing.assert_allclose(loglik, _mixture_logpmf(X, weights, rates).mean(), rtol=1e-6)
    labels = tmp_path / "labels.npy"
    assert main(["predict", str(out), str(path), "--out", str(labels)]) == 0
    joint = _logpmf(X[:, None, :], rates[None]).sum(-1) + np.log(weights)
    np.testing.assert_array_equal(np.load(labels), joint.argmax(1))
    np.save(path, X - 1.0)
    assert main(["fit", str(path), "--model", "poisson", "-k", "3", "--out", str(out)]) == 1
    assert "negative values" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------

GOOD = np.random.default_rng(16).poisson(3.0, size=(20, 3)).astype(np.float64)


@pytest.mark.parametrize(
    "est, X, match",
    [
        (PoissonMixture(2), -GOOD - 1, "X must hold non-negative whole numbers, but it holds negative values"),
        (PoissonMixture(2), GOOD + 0.5, "X must hold non-negative whole numbers, but it holds non-integer values"),
        (PoissonMixture(2), np.where(np.eye(20, 3) > 0, np.nan, GOOD), "X contains NaN or infinity"),
        (PoissonMixture(2), np.where(np.eye(20, 3) > 0, np.inf, GOOD), "X contains NaN or infinity"),
        (PoissonMixture(2), GOOD[:, 0], "1-D"),
        (PoissonMixture(30), GOOD, "n_samples >= n_components"),
        (PoissonMixture(2, rates_init=np.ones((3, 3))), GOOD, r"'rates' should have the shape of \(2, 3\), but got \(3, 3\). Pass rates_init"),
        (PoissonMixture(2, rates_init=np.ones((2, 4))), GOOD, r"Pass rates_init"),
        (PoissonMixture(2, rates_init=np.array([[1.0, 0.0, 2.0], [1.0, 1.0, 1.0]])), GOOD, "rates_init must hold positive rates"),
        (PoissonMixture(2, rates_init=-np.ones((2, 3))), GOOD, "rates_init must hold positive rates"),
        (PoissonMixture(2, rates_init=np.full((2, 3), np.nan)), GOOD, "rates_init contains NaN"),
        (PoissonMixture(2, weights_init=[0.2, 0.2]), GOOD, "'weights' should be normalized"),
        (PoissonMixture(2, weights_init=[1.5, -0.5]), GOOD, r"'weights' should be in the range \[0, 1\]"),
        (PoissonMixture(2, weights_init=[0.2, 0.3, 0.5]), GOOD, r"'weights' should have the shape of \(2,\)"),
        (PoissonMixture(2, init_params="spectral"), GOOD, "init_params must be one of"),
    ],
)
def test_bad_input_to_fit(est, X, match):
    with pytest.raises(ValueError, match=match):
        est.fit(X)


def test_bad_input_to_a_fitted_model():
    gm = PoissonMixture(2, random_state=0).fit(GOOD)
    for method in (gm.predict, gm.score_samples, gm.predict_proba, gm.score):
        with pytest.raises(ValueError, match="X must hold non-negative whole numbers"):
            method(GOOD - 5)
    with pytest.raises(ValueError, match="non-integer"):
        gm.bic(GOOD * 0.5 + 0.25)
    with pytest.raises(ValueError, match="X has 2 features"):
        gm.predict(GOOD[:, :2])
    with pytest.raises(torchem.NotFittedError):
        PoissonMixture(2).predict(GOOD)
    with pytest.raises(torchem.NotFittedError):
        PoissonMixture(2).rates_


def test_bad_values_in_a_stream(tmp_path):
    bad = GOOD.copy()
    bad[15, 2] = 1.5
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="X must hold non-negative whole numbers, but it holds non-integer values"):
        PoissonMixture(2, chunk_size=8).fit(np.load(tmp_path / "bad.npy", mmap_mode="r"))
    with pytest.raises(ValueError, match="negative values"):
        PoissonMixture(2).fit(DataLoader(TensorDataset(torch.from_numpy(-GOOD - 1)), batch_size=8))
