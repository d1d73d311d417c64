"""CategoricalMixture (latent class analysis) against an independent NumPy EM, known latent
classes, and every path of the estimator layer: batches, streams, partial_fit, two ranks,
gradients, torch.distributions, the state dict, the command line and bad input."""

import datetime
import itertools
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scipy.special import logsumexp
from torch import distributions as D
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

import torchem.data
from torchem.em import step_size
from torchem import CategoricalMixture, ConvergenceWarning, NotFittedError
from torchem.__main__ import main as cli_main
from torchem._cli import load_model

N_CATEGORIES = [2, 3, 4, 5, 3, 2]  # six survey questions with 2 to 5 answers
WEIGHTS = np.array([0.5, 0.3, 0.2])


def _profiles():
    """Three latent classes' answer probabilities ``[3, 6, 5]``, zero beyond each question's answers."""
    rng = np.random.default_rng(42)
    probs = np.zeros((3, 6, 5))
    for k in range(3):
        for d, c in enumerate(N_CATEGORIES):
            favourite = (k + d) % c  # each class has its own likely answer to every question
            probs[k, d, :c] = rng.dirichlet(np.ones(c)) * 0.3
            probs[k, d, favourite] += 0.7
    return probs


PROBS = _profiles()


def _survey(n, seed=0, probs=PROBS, weights=WEIGHTS):
    rng = np.random.default_rng(seed)
    z = rng.choice(len(weights), n, p=weights)
    cum = probs[z].cumsum(-1)  # [n, D, C]
    return (rng.random((n, probs.shape[1], 1)) > cum).sum(-1).clip(max=probs.shape[2] - 1).astype(np.float64), z


def _numpy_lca(X, weights, probs, n_iter):
    """EM for latent class analysis written directly in NumPy (no torchem code)."""
    codes = X.astype(int)
    n, d = codes.shape
    mask = probs > 0
    history = []
    for _ in range(n_iter):
        log_p = np.log(probs[:, np.arange(d), codes]).sum(-1).T + np.log(weights)  # [n, K]
        norm = logsumexp(log_p, axis=1)
        history.append(norm.mean())
        resp = np.exp(log_p - norm[:, None])
        nk = resp.sum(0)
        weights = nk / n
        counts = np.zeros_like(probs)
        for j in range(d):
            for c in range(probs.shape[2]):
                counts[:, j, c] = resp[codes[:, j] == c].sum(0)
        probs = np.where(mask, np.maximum(counts / nk[:, None, None], 1e-10), 0.0)
        probs = probs / probs.sum(-1, keepdims=True)
    return weights, probs, history


def _start(seed=1):
    rng = np.random.default_rng(seed)
    p0 = np.zeros((3, 6, 5))
    for d, c in enumerate(N_CATEGORIES):
        p0[:, d, :c] = rng.dirichlet(np.ones(c) * 3, size=3)
    return np.array([0.3, 0.3, 0.4]), p0


def _fit(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


def _matched(model_probs, true_probs):
    """The permutation of the fitted components closest to the true ones."""
    return min(itertools.permutations(range(len(true_probs))), key=lambda p: np.abs(model_probs[list(p)] - true_probs).sum())


X_SURVEY, Z_SURVEY = _survey(600)


def test_matches_numpy_em_iteration_by_iteration():
    w0, p0 = _start()
    ref_w, ref_p, ref_hist = _numpy_lca(X_SURVEY, w0, p0, 30)
    ours = _fit(CategoricalMixture(3, weights_init=w0, probs_init=p0, tol=0.0, max_iter=30), X_SURVEY)
    np.testing.assert_allclose(ours.weights_, ref_w, rtol=1e-8)
    np.testing.assert_allclose(ours.probs_, ref_p, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(ours.lower_bounds_, ref_hist, rtol=1e-8)
    assert ours.lower_bound_ == pytest.approx(ref_hist[-1], rel=1e-8)
    # score_samples: log sum_k w_k prod_d p_kd(x_d), computed directly
    codes = X_SURVEY.astype(int)
    direct = logsumexp(np.log(ours.probs_[:, np.arange(6), codes]).sum(-1).T + np.log(ours.weights_), axis=1)
    np.testing.assert_allclose(ours.score_samples(X_SURVEY), direct, rtol=1e-12)
    assert ours.score(X_SURVEY) == pytest.approx(direct.mean(), rel=1e-12)


def test_log_likelihood_never_decreases_and_hard_em_runs():
    soft = _fit(CategoricalMixture(4, init_params="random", tol=0.0, max_iter=40, random_state=0), X_SURVEY)
    assert np.all(np.diff(soft.lower_bounds_) >= -1e-12)
    hard = _fit(CategoricalMixture(3, hard=True, tol=0.0, max_iter=20, random_state=0), X_SURVEY)
    assert np.all(np.diff(hard.lower_bounds_) >= -1e-12)  # the classification likelihood rises too
    assert hard.lower_bound_ < soft.lower_bound_ and np.isfinite(hard.score(X_SURVEY))


def test_recovers_three_latent_classes_with_different_numbers_of_answers():
    X, z = _survey(4000, seed=3)
    model = CategoricalMixture(3, n_init=2, random_state=0, tol=1e-6).fit(X)
    np.testing.assert_array_equal(model.n_categories_, N_CATEGORIES)
    assert model.probs_.shape == (3, 6, 5) and model.n_categories is None  # the hyper-parameter is untouched
    order = list(_matched(model.probs_, PROBS))
    np.testing.assert_allclose(model.probs_[order], PROBS, atol=0.06)
    np.testing.assert_allclose(model.weights_[order], WEIGHTS, atol=0.03)
    for d, c in enumerate(N_CATEGORIES):
        assert np.all(model.probs_[:, d, c:] == 0) and np.all(model.probs_[:, d, :c] >= 0.99e-10)
    assert np.mean(np.argsort(order)[model.predict(X)] == z) > 0.9
    # a category given by n_categories that the data never shows gets the probability floor
    wider = CategoricalMixture(3, n_categories=[2, 3, 4, 5, 3, 4], random_state=0).fit(X)
    np.testing.assert_array_equal(wider.n_categories_, [2, 3, 4, 5, 3, 4])
    assert np.all(wider.probs_[:, 5, 2:4] < 1e-9) and np.all(wider.probs_[:, 5, 2:4] > 0)
    np.testing.assert_allclose(wider.probs_.sum(-1), 1.0, rtol=0, atol=1e-14)  # the floor is renormalised


def test_stacked_problems_equal_separate():
    X = np.stack([_survey(300, seed=s)[0] for s in range(3)])
    w0, p0 = _start()
    p0 = np.stack([p0, _start(2)[1], _start(3)[1]])
    kw = dict(tol=0.0, max_iter=8)
    batched = _fit(CategoricalMixture(3, weights_init=w0, probs_init=p0, **kw), X)
    for b in range(3):
        single = _fit(CategoricalMixture(3, weights_init=w0, probs_init=p0[b], **kw), X[b])
        np.testing.assert_allclose(batched.probs_[b], single.probs_, rtol=1e-10, atol=1e-15)
        assert batched.lower_bound_[b] == pytest.approx(single.lower_bound_, rel=1e-12)
    assert batched.predict(X).shape == (3, 300) and batched.sample(4)[0].shape == (3, 4, 6)


@pytest.mark.parametrize("kind", ["memmap", "dataloader"])
def test_streamed_fit_equals_in_memory_fit(kind, tmp_path):
    make = lambda: CategoricalMixture(3, random_state=0, chunk_size=128)  # noqa: E731
    ref = make().fit(X_SURVEY)
    if kind == "memmap":
        np.save(tmp_path / "X.npy", X_SURVEY)
        data = np.load(tmp_path / "X.npy", mmap_mode="r")
    else:
        data = DataLoader(TensorDataset(torch.from_numpy(X_SURVEY)), batch_size=50)
    ours = make().fit(data)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(np.asarray(ours.probs_), ref.probs_, rtol=1e-10, atol=1e-14)
    assert ours.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-12)


def test_sample_weights_count_like_repeated_samples():
    w0, p0 = _start()
    weights = np.random.default_rng(8).integers(0, 3, len(X_SURVEY)).astype(np.float64)
    kw = dict(weights_init=w0, probs_init=p0, tol=0.0, max_iter=10)
    repeated = _fit(CategoricalMixture(3, **kw), np.repeat(X_SURVEY, weights.astype(int), axis=0))
    loader = DataLoader([{"X": x, "sample_weight": w} for x, w in zip(torch.from_numpy(X_SURVEY), torch.from_numpy(weights))], batch_size=64)
    weighted = _fit(CategoricalMixture(3, **kw), loader)
    np.testing.assert_allclose(weighted.probs_.numpy(), repeated.probs_, rtol=1e-10, atol=1e-14)
    assert weighted.lower_bound_ == pytest.approx(repeated.lower_bound_, rel=1e-12)


def test_a_code_outside_the_initialisation_sample_is_counted(tmp_path, monkeypatch):
    """A streamed fit initialises from a sample, but n_categories is inferred from every chunk."""
    monkeypatch.setattr(torchem.data, "INIT_SAMPLE_SIZE", 50)
    X = X_SURVEY.copy()
    X[-1, 0] = 4  # the only 4 of feature 0, in the last chunk
    np.save(tmp_path / "X.npy", X)
    model = CategoricalMixture(2, random_state=0, chunk_size=100).fit(np.load(tmp_path / "X.npy", mmap_mode="r"))
    assert model.n_categories_[0] == 5 and model.probs_[:, 0, 4].sum() > 0
    assert CategoricalMixture(2, random_state=0).fit(X).n_categories_[0] == 5  # in memory too


def test_partial_fit_from_scratch_and_after_fit():
    big, _ = _survey(6000, seed=5)
    batch_ll = CategoricalMixture(3, random_state=0, tol=1e-7).fit(big).score(big)
    online = CategoricalMixture(3, n_categories=N_CATEGORIES, random_state=0)
    rng = np.random.default_rng(6)
    for t in range(30):
        online.partial_fit(big[rng.integers(0, len(big), 1000 if t == 0 else 200)])
    assert online.n_iter_ == 30 and not online.converged_
    assert online.score(big) == pytest.approx(batch_ll, abs=0.02)
    # after fit: the moment points give back the fitted parameters, so a small batch barely moves them
    fitted = CategoricalMixture(3, random_state=0).fit(big)
    before, w = fitted.probs_.copy(), fitted.weights_.copy()
    batch = _survey(200, seed=7)[0]
    resp = fitted.predict_proba(batch)
    eta = step_size(len(big) // 200 + 1)  # the fit counts as 30 batches of 200
    onehot = np.eye(before.shape[-1])[batch.astype(int)]  # [n, D, C]
    nk = (1 - eta) * w + eta * resp.sum(0) / len(batch)
    counts = (1 - eta) * w[:, None, None] * before + eta * np.einsum("nk,ndc->kdc", resp, onehot) / len(batch)
    fitted.partial_fit(batch)
    assert fitted.n_iter_ == 1 and np.abs(fitted.probs_ - before).max() < 0.03
    expected = np.where(before > 0, np.maximum(counts / nk[:, None, None], 1e-10), 0.0)
    np.testing.assert_allclose(fitted.probs_, expected / expected.sum(-1, keepdims=True), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(fitted.weights_, nk / nk.sum(), rtol=1e-10)
    with pytest.raises(ValueError, match="Feature 1 holds code 3, a category this model has not seen"):
        fitted.partial_fit(np.array([[0, 3, 0, 0, 0, 0]] * 5, dtype=float))


def _dist_worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=30))
    X = _dist_data()
    half = X[rank * 300 : (rank + 1) * 300]
    model = CategoricalMixture(3, n_init=2, random_state=0, chunk_size=64).fit(half)
    online = CategoricalMixture(3, random_state=0)
    for start in range(0, 600, 200):
        online.partial_fit(X[start : start + 200][rank * 100 : (rank + 1) * 100])
    torch.save({"fit": (model.probs_, model.weights_, model.lower_bound_, model.n_categories_),
                "partial": (online.probs_, online.weights_)}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def _dist_data():
    X = X_SURVEY.copy()
    X[X[:, 3] == 4, 3] = 3
    X[150, 3] = 4  # feature 3's largest code: on rank 0 only in fit, on rank 1 only in partial_fit
    return X


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_processes_agree_with_one(tmp_path):
    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    X = _dist_data()
    single = CategoricalMixture(3, n_init=2, random_state=0, chunk_size=64).fit(X)
    online = CategoricalMixture(3, random_state=0)
    for start in range(0, 600, 200):
        online.partial_fit(X[start : start + 200])
    for got in ranks:
        for a, b in zip(got["fit"], (single.probs_, single.weights_, single.lower_bound_, single.n_categories_)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
        for a, b in zip(got["partial"], (online.probs_, online.weights_)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
    np.testing.assert_array_equal(ranks[0]["fit"][0], ranks[1]["fit"][0])


def test_gradcheck_and_gradients_do_not_reach_missing_categories():
    model = CategoricalMixture(3, random_state=0).fit(X_SURVEY).double()
    names = [n for n, _ in model.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
    x = torch.tensor(X_SURVEY[:6])

    def f(*params):
        return functional_call(model, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(f, values, eps=1e-6, atol=1e-6)
    # the parameters are unconstrained: shifting the logits of a feature (or the mixing logits) changes nothing
    before = model.score_samples(X_SURVEY)
    with torch.no_grad():
        model.logits += 3.0
        model.component_logits[:, 2, :4] -= 2.0
    np.testing.assert_allclose(model.score_samples(X_SURVEY), before, rtol=1e-12)
    model.requires_grad_(True)
    model(torch.tensor(X_SURVEY)).mean().backward()
    grad = model.component_logits.grad
    assert torch.isfinite(grad).all() and grad[:, 0, 2:].abs().max() == 0 and grad[:, 3, :5].abs().sum() > 0


def test_state_dict_distribution_and_sampling():
    X = torch.from_numpy(X_SURVEY).float()
    model = CategoricalMixture(3, random_state=0).fit(X)
    assert isinstance(model.probs_, torch.Tensor) and isinstance(model.predict(X), torch.Tensor)
    fresh = CategoricalMixture(3)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.probs_, model.probs_)
    np.testing.assert_array_equal(fresh.n_categories_, N_CATEGORIES)
    with pytest.raises(ValueError, match="n_categories"):
        CategoricalMixture(3, n_categories=5).load_state_dict(model.state_dict())
    # torch.distributions: the same log-likelihood, and back
    dist_ = model.to_distribution()
    torch.testing.assert_close(dist_.log_prob(X), model(X))
    back = CategoricalMixture.from_distribution(dist_)
    torch.testing.assert_close(back.score_samples(X), model.score_samples(X), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(back.n_categories_, N_CATEGORIES)
    hand = D.MixtureSameFamily(D.Categorical(probs=torch.tensor([0.4, 0.6])),
                               D.Independent(D.Categorical(probs=torch.tensor([[[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]],
                                                                              [[0.9, 0.1, 0.0], [0.1, 0.1, 0.8]]])), 1))
    made = CategoricalMixture.from_distribution(hand)
    np.testing.assert_array_equal(made.n_categories_, [2, 3])
    x = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    torch.testing.assert_close(made.score_samples(x), hand.log_prob(x))
    with pytest.raises(TypeError, match="Independent\\(Categorical, 1\\)"):
        CategoricalMixture.from_distribution(D.MixtureSameFamily(D.Categorical(probs=torch.ones(2) / 2),
                                                                  D.Independent(D.Bernoulli(probs=torch.rand(2, 3)), 1)))
    # samples: integer codes whose frequencies per component are probs_
    model = CategoricalMixture(3, random_state=0).fit(X_SURVEY)
    S, y = model.sample(30000)
    assert S.dtype == np.int64 and np.all(S < model.n_categories_)
    for k in range(3):
        freq = np.stack([np.bincount(S[y == k, d], minlength=5) for d in range(6)]) / (y == k).sum()
        np.testing.assert_allclose(freq, model.probs_[k], atol=0.03)
    np.testing.assert_allclose(np.bincount(y) / len(y), model.weights_, atol=0.02)


def test_bic_aic_and_number_of_parameters():
    model = CategoricalMixture(3, random_state=0).fit(X_SURVEY)
    n_params = 2 + 3 * sum(c - 1 for c in N_CATEGORIES)
    ll = model.score(X_SURVEY) * len(X_SURVEY)
    assert model.bic(X_SURVEY) == pytest.approx(-2 * ll + n_params * np.log(len(X_SURVEY)), rel=1e-12)
    assert model.aic(X_SURVEY) == pytest.approx(-2 * ll + 2 * n_params, rel=1e-12)


def test_command_line(tmp_path, capsys):
    path, out = tmp_path / "survey.npy", tmp_path / "lca.pt"
    np.save(path, X_SURVEY)
    assert cli_main(["fit", str(path), "--model", "categorical", "-k", "3", "--double", "--out", str(out)]) == 0
    assert "CategoricalMixture" in capsys.readouterr().out
    _, model = load_model(str(out))
    np.testing.assert_array_equal(model.n_categories_, N_CATEGORIES)
    assert cli_main(["predict", str(out), str(path)]) == 0
    labels = np.array(capsys.readouterr().out.split(), dtype=int)
    np.testing.assert_array_equal(labels, model.predict(torch.from_numpy(X_SURVEY)).numpy())
    assert cli_main(["fit", str(path), "--model", "categorical", "-k", "2", "--n-categories", "6", "--out", str(out)]) == 0
    _, model = load_model(str(out))
    assert model.n_categories == 6 and list(model.n_categories_) == [6] * 6
    assert cli_main(["fit", str(path), "--model", "categorical", "-k", "2", "--n-categories", "2,2", "--out", str(out)]) == 1
    assert "one per feature" in capsys.readouterr().err
    assert cli_main(["fit", str(path), "--model", "gmm", "-k", "2", "--n-categories", "3", "--out", str(out)]) == 1
    assert "--n-categories applies to --model categorical only" in capsys.readouterr().err


def test_bench_case():
    from torchem.bench import bytes_per_iter, flops_per_iter
    from torchem.bench._cases import MODELS, RUNNERS, make_problem

    assert flops_per_iter("categorical", 100, 4, 3) == 4 * 100 * 3 * 4 * 5 + 8 * 100 * 3 + 4 * 3 * 4 * 5
    assert bytes_per_iter("categorical", 100, 4, 3, 4) == 4 * 100 * 4  # the codes read once
    spec = MODELS["categorical"]
    problem = make_problem(spec, 500, 4, 3, np.float32)
    assert problem.X.dtype == np.float32 and problem.X.min() == 0 and problem.X.max() == 4
    runner = RUNNERS["torchem"]
    fitted = runner.fit(spec, runner.prepare(problem.X, "cpu"), problem.init, 3)
    assert fitted.n_iter_ == 3 and np.isfinite(runner.quality(spec, "torchem", fitted, torch.from_numpy(problem.X)))


def _bad_probs(kind):
    _, p0 = _start()
    if kind == "shape":
        return p0[:, :4]
    if kind == "sum":
        return p0 * 0.9
    p0[0, 0, 3] = 0.1  # beyond feature 0's two categories
    p0[0, 0, 0] -= 0.1
    return p0


X_BAD_CODE = X_SURVEY.copy()
X_BAD_CODE[7, 2] = 9


@pytest.mark.parametrize(
    "est, X, match",
    [
        (CategoricalMixture(2), -X_SURVEY, "X holds negative codes"),
        (CategoricalMixture(2), X_SURVEY + 0.5, "integer category codes, but X holds non-integer values \\(e.g. 0.5\\)"),
        (CategoricalMixture(2), np.where(X_SURVEY == 1, np.nan, X_SURVEY), "X contains NaN"),
        (CategoricalMixture(2, n_categories=4), X_SURVEY, "X holds code 4 in feature 3, but n_categories gives that feature 4 categories. Raise n_categories"),
        (CategoricalMixture(2, n_categories=0), X_SURVEY, "n_categories must be a positive integer"),
        (CategoricalMixture(2, n_categories=2.5), X_SURVEY, "n_categories must be a positive integer"),
        (CategoricalMixture(2, n_categories=[3, 3]), X_SURVEY, "n_categories has 2 values but X has 6 features"),
        (CategoricalMixture(3, probs_init=_bad_probs("shape")), X_SURVEY, "'probs' should have the shape of \\(3, 6, 5\\)"),
        (CategoricalMixture(3, probs_init=np.ones((3, 6))), X_SURVEY, "'probs' should have the shape of \\(3, 6, n_categories\\)"),
        (CategoricalMixture(3, probs_init=_bad_probs("sum")), X_SURVEY, "probs_init must hold"),
        (CategoricalMixture(3, n_categories=N_CATEGORIES, probs_init=_bad_probs("beyond")), X_SURVEY, "zeros beyond its n_categories"),
        (CategoricalMixture(3, probs_init=_start()[1][..., :4]), X_SURVEY, "X holds code 4 in feature 3, but probs_init gives"),
        (CategoricalMixture(3, weights_init=[0.5, 0.6, 0.1]), X_SURVEY, "'weights' should be normalized"),
        (CategoricalMixture(3, weights_init=[0.5, 0.5]), X_SURVEY, "'weights' should have the shape of \\(3,\\)"),
        (CategoricalMixture(2, init_params="kmeans++"), X_SURVEY, "init_params must be one of"),
        # codes whose indicator columns could not be held: refused before anything is allocated
        (CategoricalMixture(2), np.where(np.arange(6) == 2, 1e10, X_SURVEY), "X's code 1e\\+10 in feature 2 makes "
         "10,000,000,001 categories for a feature.*\\(6 x 10,000,000,001\\), more than the 2,097,152"),
        (CategoricalMixture(2), np.where(np.arange(6) == 0, 1e30, X_SURVEY), "code 1e\\+30 in feature 0 makes 1e\\+30 categories"),
        (CategoricalMixture(2, n_categories=10**12), X_SURVEY, "n_categories=1000000000000 makes 1e\\+12 categories"),
        (CategoricalMixture(2, n_categories=[2, 3, 4, 5, 3, 500_000]), X_SURVEY, "\\(6 x 500,000\\), more than"),
    ],
)
def test_bad_input(est, X, match):
    with pytest.raises(ValueError, match=match):
        est.fit(X)


def test_unseen_code_at_prediction_says_which_and_what_to_do():
    model = CategoricalMixture(2, random_state=0).fit(X_SURVEY)
    for method in (model.predict, model.score_samples, model.predict_proba, model.score, model.bic):
        with pytest.raises(ValueError, match=r"Feature 2 holds code 9, a category this model has not seen: it knows "
                                             r"codes 0..3 \(n_categories_\[2\] = 4\). Refit with n_categories covering "
                                             r"it \(e.g. n_categories=\[2, 3, 10, 5, 3, 2\]\)"):
            method(X_BAD_CODE)
    with pytest.raises(ValueError, match="has not seen"):
        model(torch.from_numpy(X_BAD_CODE))
    # the module's forward reads codes too: NaN, fractions and infinities are refused, not read as codes
    for value, match in ((np.nan, "whole numbers .* holds nan: a missing answer"), (0.5, "whole numbers .* holds 0.5"),
                         (np.inf, "Feature 0 holds code inf, a category this model has not seen.*Map the code")):
        x = torch.from_numpy(X_SURVEY[:3].copy())
        x[0, 0] = value
        with pytest.raises(ValueError, match=match):
            model(x)
    with pytest.raises(NotFittedError):
        CategoricalMixture(2).n_categories_
