"""Mixtures as differentiable modules: gradients, optimizer steps, gradient fitting,
torch.distributions interop, rsample, gradcheck and torch.compile."""

import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import distributions as D
from torch.func import functional_call

import torchem
from torchem import BernoulliMixture, BinomialMixture, GaussianMixture, KMeans, NotFittedError

COV_TYPES = ["full", "diag", "spherical", "tied"]
ROOT = Path(__file__).resolve().parents[1]


def _gauss_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 4.0, -1.0]])
    return centres[rng.integers(0, 3, n)] + rng.normal(size=(n, 3)) * np.array([1.0, 0.5, 0.8])


def _binary_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    p = np.array([[0.9, 0.8, 0.1, 0.2], [0.1, 0.3, 0.8, 0.9]])
    return (rng.random((n, 4)) < p[rng.integers(0, 2, n)]).astype(np.float64)


def _count_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    p = np.array([[0.8, 0.7, 0.2], [0.2, 0.4, 0.9]])
    return rng.binomial(6, p[rng.integers(0, 2, n)]).astype(np.float64)


def _models():
    """One fitted float64 model per family and covariance type, with its data."""
    out = []
    for ct in COV_TYPES:
        out.append((f"gmm-{ct}", GaussianMixture(3, covariance_type=ct, random_state=0).fit(_gauss_data()), _gauss_data(seed=1)))
    out.append(("bernoulli", BernoulliMixture(2, random_state=0).fit(_binary_data()), _binary_data(seed=1)))
    out.append(("binomial", BinomialMixture(2, n_trials=6, random_state=0).fit(_count_data()), _count_data(seed=1)))
    return out


MODELS = _models()
IDS = [name for name, _, _ in MODELS]


def _is_valid(model):
    w = np.asarray(model.weights_)
    assert np.all(w > 0) and abs(w.sum() - 1) < 1e-9
    if isinstance(model, GaussianMixture):
        cov = np.asarray(model.covariances_)
        if model.covariance_type in ("full", "tied"):
            assert np.all(np.linalg.eigvalsh(cov) > 0)
        else:
            assert np.all(cov > 0)
        assert np.all(np.isfinite(np.asarray(model.means_)))
    else:
        p = np.asarray(model.probs_)
        assert np.all((p > 0) & (p < 1))


@pytest.mark.parametrize("name,model,X", MODELS, ids=IDS)
def test_frozen_by_default_then_finite_gradients_everywhere(name, model, X):
    assert all(not p.requires_grad for p in model.parameters())
    model.requires_grad_(True)
    try:
        x = torch.tensor(X, requires_grad=True)
        model(x).mean().backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
            assert p.grad.abs().sum() > 0, pname
        assert torch.isfinite(x.grad).all()
        if "binomial" not in name:  # counts: d/dx of log C(n, x) exists through lgamma too
            assert x.grad.abs().sum() > 0
    finally:
        model.requires_grad_(False)
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name,model,X", MODELS, ids=IDS)
def test_optimizer_steps_leave_a_valid_model_and_attributes_follow(name, model, X):
    model = _clone(model)
    model.requires_grad_(True)
    x = torch.tensor(X)
    # large steps on purpose: Adam moves every unconstrained value by about lr per step
    for opt in (torch.optim.SGD(model.parameters(), lr=1.0), torch.optim.Adam(model.parameters(), lr=0.5)):
        for _ in range(5):
            loss = -model(x).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            _is_valid(model)
    # public attributes are views of the current parameters
    np.testing.assert_allclose(model.weights_, torch.softmax(model.logits.detach(), -1).numpy(), rtol=1e-12)
    if isinstance(model, GaussianMixture):
        np.testing.assert_array_equal(model.means_, model.loc.detach().numpy())
        cov = model.to_distribution().component_distribution
        ref = cov.covariance_matrix if isinstance(cov, D.MultivariateNormal) else cov.base_dist.scale ** 2
        ours = np.asarray(model.covariances_)
        if model.covariance_type == "tied":
            ref = ref[0]
        elif model.covariance_type == "spherical":
            ref = ref[:, 0]
        np.testing.assert_allclose(ours, ref.detach().numpy(), rtol=1e-10)
        # and the scores use them: score_samples equals the distribution's log_prob
        np.testing.assert_allclose(model.score_samples(X), model.to_distribution().log_prob(x).detach().numpy(), rtol=1e-10)
    else:
        np.testing.assert_allclose(model.probs_, torch.sigmoid(model.component_logits.detach()).numpy(), rtol=1e-12)


def _clone(model):
    new = type(model)(**model.get_params())
    new.load_state_dict(model.state_dict())
    return new


def test_em_runs_without_gradients_and_keeps_parameter_objects():
    X = _gauss_data()
    model = GaussianMixture(3, random_state=0).fit(X)
    model.requires_grad_(True)
    params_before = [id(p) for p in model.parameters()]
    with torch.enable_grad():
        model.fit(X)
    assert [id(p) for p in model.parameters()] == params_before  # optimizers stay valid
    assert all(p.requires_grad and p.grad_fn is None for p in model.parameters())
    ref = GaussianMixture(3, random_state=0).fit(X)
    np.testing.assert_allclose(model.means_, ref.means_, rtol=1e-12)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_gradient_fit_near_em_optimum_reaches_em_likelihood_and_em_does_not_decrease_it(ct):
    X = _gauss_data(300)
    em = GaussianMixture(3, covariance_type=ct, tol=1e-12, max_iter=2000, random_state=0).fit(X)
    target = em.score(X)
    model = _clone(em)
    with torch.no_grad():  # start near the optimum
        gen = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    start = model.score(X)
    assert start < target - 1e-3
    history = torchem.fit_by_gradient(model, X, epochs=400, lr=0.02)
    assert history[-1] < history[0]
    reached = model.score(X)
    assert abs(reached - target) < 2e-3, (start, reached, target)
    # EM warm-started from the gradient-trained model does not decrease the likelihood
    model.set_params(warm_start=True, max_iter=50, tol=1e-10)
    model.fit(X)
    assert model.score(X) >= reached - 1e-10
    assert np.all(np.diff(model.lower_bounds_) >= -1e-10)


def test_gradient_fit_from_scratch_for_bernoulli_and_binomial():
    X = _binary_data()
    model = BernoulliMixture(2, random_state=0)
    history = torchem.fit_by_gradient(model, X, epochs=150, batch_size=100, lr=0.05, generator=torch.Generator().manual_seed(0))
    em = BernoulliMixture(2, random_state=0, tol=1e-10, max_iter=500).fit(X)
    assert history[-1] < history[0]
    assert abs(model.score(X) - em.score(X)) < 5e-3
    Xc = _count_data()
    binom = BinomialMixture(2, n_trials=6, random_state=0)
    torchem.fit_by_gradient(binom, Xc, epochs=200, lr=0.05)
    em = BinomialMixture(2, n_trials=6, random_state=0, tol=1e-10, max_iter=500).fit(Xc)
    assert abs(binom.score(Xc) - em.score(Xc)) < 5e-3


def test_fit_by_gradient_bad_arguments():
    with pytest.raises(ValueError, match="epochs"):
        torchem.fit_by_gradient(GaussianMixture(2), _gauss_data(), epochs=0)
    with pytest.raises(ValueError, match="lr"):
        torchem.fit_by_gradient(GaussianMixture(2), _gauss_data(), lr=0.0)
    binary = _binary_data()
    with pytest.raises(ValueError, match="binary"):  # the model's features, not its values
        torchem.fit_by_gradient(BernoulliMixture(2).fit(binary), binary + 0.5)


def test_fit_by_gradient_that_diverges_raises_and_keeps_the_model():
    """A learning rate too large for the data drives the parameters to NaN: an error naming lr,
    and the model keeps its fit (an unfitted one stays unfitted), never a NaN model."""
    X = np.vstack([_gauss_data(), _gauss_data() + 5.0])
    model = GaussianMixture(2, random_state=0).fit(X)
    before = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    with pytest.raises(ValueError, match=r"diverged in epoch .*Lower lr \(now 1e\+06\)"):
        torchem.fit_by_gradient(model, X, epochs=20, lr=1e6, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if torch.is_tensor(v))
    assert np.isfinite(model.means_).all()
    assert not any(p.requires_grad for p in model.parameters())  # frozen, as before the call
    fresh = GaussianMixture(2, random_state=0)
    with pytest.raises(ValueError, match="diverged"):
        torchem.fit_by_gradient(fresh, X, epochs=20, lr=1e6, generator=torch.Generator().manual_seed(0))
    assert not hasattr(fresh, "means_")
    # a component switched off (logit -inf) is a valid model, not a divergence
    off = GaussianMixture(3, random_state=0).fit(X)
    state = off.state_dict()
    state["logits"] = state["logits"].clone()
    state["logits"][0] = -float("inf")
    off.load_state_dict(state)
    losses = torchem.fit_by_gradient(off, X, epochs=3, lr=1e-2, generator=torch.Generator().manual_seed(0))
    assert np.isfinite(losses).all() and off.weights_[0] == 0.0


@pytest.mark.parametrize("name,model,X", MODELS, ids=IDS)
def test_gradcheck_inputs_and_parameters(name, model, X):
    model = _clone(model).double()
    names = [n for n, _ in model.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
    x = torch.tensor(X[:6], dtype=torch.float64, requires_grad="binomial" not in name)

    def f(x, *params):
        return functional_call(model, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(f, (x, *values), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,model,X", MODELS, ids=IDS)
def test_to_distribution_matches_and_keeps_gradients(name, model, X):
    model = _clone(model)
    model.requires_grad_(True)
    x = torch.tensor(X)
    dist = model.to_distribution()
    assert isinstance(dist, D.MixtureSameFamily)
    np.testing.assert_allclose(dist.log_prob(x).detach().numpy(), model(x).detach().numpy(), rtol=1e-10, atol=1e-10)
    dist.log_prob(x).sum().backward()
    via_dist = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for a, b in zip(via_dist, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    back = type(model).from_distribution(dist, **({"covariance_type": model.covariance_type} if "gmm" in name else {}))
    np.testing.assert_allclose(back.score_samples(x).numpy(), model.score_samples(X), rtol=1e-10, atol=1e-10)
    assert all(not p.requires_grad for p in back.parameters())


def test_from_distribution_builds_models_of_hand_made_mixtures():
    gen = torch.Generator().manual_seed(0)
    k, d = 3, 2
    a = torch.randn(2, k, d, d, generator=gen, dtype=torch.float64)
    cov = a @ a.mT + 0.5 * torch.eye(d, dtype=torch.float64)
    loc = torch.randn(2, k, d, generator=gen, dtype=torch.float64)
    logits = torch.randn(2, k, generator=gen, dtype=torch.float64)
    dist = D.MixtureSameFamily(D.Categorical(logits=logits), D.MultivariateNormal(loc, covariance_matrix=cov))
    model = GaussianMixture.from_distribution(dist)
    assert model.covariance_type == "full" and model.weights_.shape == (2, k)
    x = torch.randn(2, 50, d, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(model.score_samples(x), dist.log_prob(x.transpose(0, 1)).transpose(0, 1))
    torch.testing.assert_close(model.covariances_, cov)
    torch.testing.assert_close(model.weights_, torch.softmax(logits, -1))
    # EM can continue from it
    model.set_params(warm_start=True, max_iter=100, tol=1e-3)
    model.fit(torch.randn(2, 200, d, generator=gen, dtype=torch.float64))
    # Bernoulli and Binomial
    bl = torch.randn(k, 4, generator=gen, dtype=torch.float64)
    bern = D.MixtureSameFamily(D.Categorical(logits=logits[0]), D.Independent(D.Bernoulli(logits=bl), 1))
    xb = (torch.rand(20, 4, generator=gen) < 0.5).double()
    torch.testing.assert_close(BernoulliMixture.from_distribution(bern).score_samples(xb), bern.log_prob(xb))
    binom = D.MixtureSameFamily(
        D.Categorical(logits=logits[0]), D.Independent(D.Binomial(total_count=torch.tensor([3.0, 5.0, 5.0, 7.0]).expand(k, 4), logits=bl), 1)
    )
    m = BinomialMixture.from_distribution(binom)
    assert m.n_trials == [3, 5, 5, 7]
    xc = torch.tensor([[0.0, 5.0, 2.0, 7.0], [3.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(m.score_samples(xc.double()), binom.log_prob(xc.double()))


def test_from_distribution_bad_input():
    loc = torch.zeros(3, 2)
    good = D.MixtureSameFamily(D.Categorical(logits=torch.zeros(3)), D.MultivariateNormal(loc, torch.eye(2).expand(3, 2, 2)))
    with pytest.raises(TypeError, match="MixtureSameFamily"):
        GaussianMixture.from_distribution(D.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="n_components=4"):
        GaussianMixture.from_distribution(good, n_components=4)
    with pytest.raises(ValueError, match="event_shape"):
        GaussianMixture.from_distribution(D.MixtureSameFamily(D.Categorical(logits=torch.zeros(3)), D.Normal(torch.zeros(3), 1.0)))
    with pytest.raises(TypeError, match="MultivariateNormal or Independent"):
        GaussianMixture.from_distribution(
            D.MixtureSameFamily(D.Categorical(logits=torch.zeros(3)), D.Independent(D.Laplace(torch.zeros(3, 2), 1.0), 1))
        )
    with pytest.raises(ValueError, match="event_shape"):
        GaussianMixture.from_distribution(
            D.MixtureSameFamily(D.Categorical(logits=torch.zeros(3)), D.Independent(D.Normal(torch.zeros(3, 2, 2), 1.0), 2))
        )
    unequal = D.MixtureSameFamily(
        D.Categorical(logits=torch.zeros(2)), D.MultivariateNormal(torch.zeros(2, 2), torch.stack([torch.eye(2), 2 * torch.eye(2)]))
    )
    with pytest.raises(ValueError, match="same covariance"):
        GaussianMixture.from_distribution(unequal, covariance_type="tied")
    with pytest.raises(ValueError, match="'full' or 'tied'"):
        GaussianMixture.from_distribution(good, covariance_type="diag")
    with pytest.raises(TypeError, match="Independent\\(Bernoulli"):
        BernoulliMixture.from_distribution(good)
    counts = D.MixtureSameFamily(
        D.Categorical(logits=torch.zeros(2)),
        D.Independent(D.Binomial(total_count=torch.tensor([[3.0, 4.0], [5.0, 4.0]]), logits=torch.zeros(2, 2)), 1),
    )
    with pytest.raises(ValueError, match="same total_count"):
        BinomialMixture.from_distribution(counts)


def test_rsample_is_reparameterised():
    model = _clone(MODELS[0][1])  # full covariances
    model.requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    x = model.rsample(200_000, generator=gen)
    # moments of the samples match the mixture's
    w = torch.softmax(model.logits.detach(), -1)
    mean = (w[:, None] * model.loc.detach()).sum(0)
    torch.testing.assert_close(x.detach().mean(0), mean, atol=0.03, rtol=0)
    cov = model.to_distribution().variance.detach()
    torch.testing.assert_close(x.detach().var(0), cov, atol=0.05, rtol=0.02)
    # d mean(x) / d loc_k = fraction of samples from component k (per coordinate)
    x.mean(0).sum().backward()
    frac = model.loc.grad[:, 0]
    torch.testing.assert_close(model.loc.grad, frac[:, None].expand(3, 3))
    torch.testing.assert_close(frac.sum(), torch.tensor(1.0, dtype=frac.dtype))
    torch.testing.assert_close(frac, w, atol=0.01, rtol=0)
    assert model.precision_cholesky_unconstrained.grad.abs().sum() > 0
    assert model.logits.grad is None  # the component choice carries no gradient
    for ct in ("diag", "spherical", "tied"):
        m = GaussianMixture(2, covariance_type=ct, random_state=0).fit(_gauss_data()).requires_grad_(True)
        m.rsample(1000).pow(2).mean().backward()
        assert torch.isfinite(m.precision_cholesky_unconstrained.grad).all()


def test_bernoulli_rsample_is_relaxed_and_binomial_has_none():
    model = _clone(MODELS[4][1]).requires_grad_(True)
    x = model.rsample(5000, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5000, 4) and bool(((x > 0) & (x < 1)).all())
    x.sum().backward()
    assert torch.isfinite(model.component_logits.grad).all() and model.component_logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="temperature"):
        model.rsample(10)
    with pytest.raises(ValueError, match="no reparameterised sampler"):
        MODELS[5][1].rsample(10, temperature=0.5)
    with pytest.raises(ValueError, match="n_samples"):
        model.rsample(0, temperature=0.5)


def test_requires_grad_on_unfitted_models():
    for model in (GaussianMixture(2), BernoulliMixture(2), KMeans(2)):
        with pytest.raises(NotFittedError, match="fit"):
            model.requires_grad_(True)
    # disabling is always allowed
    GaussianMixture(2).requires_grad_(False)
    # a model whose constructor holds every initial parameter can be trained from scratch
    model = GaussianMixture(2, weights_init=[0.3, 0.7], means_init=[[0.0, 0.0], [2.0, 1.0]], precisions_init=[[1.0, 2.0], [3.0, 4.0]], covariance_type="diag")
    model.requires_grad_(True)
    assert model.n_iter_ == 0 and model.n_features_in_ == 2 and model.loc.requires_grad
    ref = D.MixtureSameFamily(
        D.Categorical(probs=torch.tensor([0.3, 0.7])),
        D.Independent(D.Normal(torch.tensor([[0.0, 0.0], [2.0, 1.0]]), torch.tensor([[1.0, 2.0], [3.0, 4.0]]) ** -0.5), 1),
    )
    x = torch.randn(10, 2)
    torch.testing.assert_close(model(x), ref.log_prob(x))
    with pytest.raises(ValueError, match="means_init"):
        GaussianMixture(2, weights_init=[0.5, 0.5], means_init=[[0.0, 0.0, 0.0]], precisions_init=[1.0, 1.0], covariance_type="spherical").requires_grad_(True)
    b = BernoulliMixture(2, weights_init=[0.5, 0.5], probs_init=[[0.2, 0.9], [0.7, 0.1]]).requires_grad_(True)
    torch.testing.assert_close(b.probs_, torch.tensor([[0.2, 0.9], [0.7, 0.1]]))


def test_kmeans_forward_hard_and_soft():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2)) + rng.integers(0, 3, (300, 1)) * 5.0
    km = KMeans(3, random_state=0, n_init=1).fit(X)
    x = torch.tensor(X)
    hard = km(x)
    np.testing.assert_allclose(hard.sum().item(), km.score(X), rtol=1e-12)
    d2 = ((x[:, None, :] - torch.as_tensor(km.cluster_centers_)[None]) ** 2).sum(-1)
    for t in (1.0, 0.1):
        np.testing.assert_allclose(km(x, temperature=t).numpy(), (t * torch.logsumexp(-d2 / t, -1)).numpy(), rtol=1e-9)
    assert (km(x, temperature=1e-3) - hard).abs().max() < 1e-2
    km.requires_grad_(True)
    km(x, temperature=1.0).mean().backward()
    assert torch.isfinite(km.centers.grad).all() and (km.centers.grad.abs().sum(-1) > 0).all()
    for bad in (0.0, float("inf"), float("nan")):  # (inf gave inf scores: found by fuzzing)
        with pytest.raises(ValueError, match="temperature"):
            km(x, temperature=bad)


class _Flow(torch.nn.Module):
    """x -> z = A x + b with a learnable GaussianMixture prior on z: the exact log-likelihood
    of x is prior(z) + log|det A| (a one-layer normalising flow)."""

    def __init__(self, prior, d):
        super().__init__()
        self.A = torch.nn.Parameter(torch.eye(d, dtype=torch.float64) * 0.3)
        self.b = torch.nn.Parameter(torch.zeros(d, dtype=torch.float64))
        self.prior = prior

    def forward(self, x):
        z = x @ self.A.T + self.b
        return self.prior(z) + torch.linalg.slogdet(self.A).logabsdet


def test_mixture_prior_trained_end_to_end_inside_a_model():
    gen = torch.Generator().manual_seed(0)
    rot = torch.tensor([[2.0, 1.0], [-0.5, 1.5]], dtype=torch.float64)
    x = (torch.randn(600, 2, generator=gen, dtype=torch.float64) + 3.0 * torch.randint(0, 2, (600, 1), generator=gen)) @ rot.T
    prior = GaussianMixture(2, covariance_type="diag", init_params="random", random_state=0).initialize(x * 0.3)
    model = _Flow(prior, 2)
    model.prior.requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(300):
        loss = -model(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    assert np.mean(losses[-20:]) < np.mean(losses[100:120])
    _is_valid(model.prior)
    # a trained model still answers every estimator method
    assert model.prior.predict(x @ model.A.detach().T + model.b.detach()).shape == (600,)


@pytest.mark.parametrize("index", [0, 1, 4], ids=["gmm-full", "gmm-diag", "bernoulli"])
def test_torch_compile_whole_graph_agrees_with_eager(index):
    """The log-likelihood compiles as one graph (fullgraph=True: no graph breaks) and gives
    the eager values and gradients."""
    _, model, X = MODELS[index]
    model = _clone(model).requires_grad_(True)
    x = torch.tensor(X)
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, model(x))
    out.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for a, b in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b)


def test_example_script_runs():
    module = runpy.run_path(str(ROOT / "examples" / "mixture_prior.py"))
    first = module["main"](["--steps", "1", "--n", "400", "--device", "cpu"])
    last = module["main"](["--steps", "60", "--n", "400", "--device", "cpu"])
    assert math.isfinite(last) and last < first


def _compile_matrix():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    data = {
        "gmm": X, "bernoulli": (rng.random((300, 5)) < 0.4).astype(float), "binomial": rng.binomial(4, 0.3, (300, 3)).astype(float),
        "poisson": rng.poisson(2.0, (300, 3)).astype(float), "categorical": rng.integers(0, 3, (300, 3)).astype(float),
        "kmeans": X,
    }
    makers = {
        **{f"gmm-{ct}": (lambda ct=ct: torchem.GaussianMixture(2, covariance_type=ct, random_state=0), "gmm")
           for ct in ("full", "tied", "diag", "spherical")},
        "bernoulli": (lambda: torchem.BernoulliMixture(2, random_state=0), "bernoulli"),
        "binomial": (lambda: torchem.BinomialMixture(2, n_trials=4, random_state=0), "binomial"),
        "poisson": (lambda: torchem.PoissonMixture(2, random_state=0), "poisson"),
        "categorical": (lambda: torchem.CategoricalMixture(2, random_state=0), "categorical"),
        "kmeans": (lambda: torchem.KMeans(2, random_state=0), "kmeans"),
    }
    return makers, data


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("trainable", [False, True], ids=["frozen", "trainable"])
@pytest.mark.parametrize("name", list(_compile_matrix()[0]))
def test_forward_of_every_model_captures_one_graph(name, trainable, dtype):
    """The promise: torch.compile(model, fullgraph=True) works for every model, frozen or
    trainable, float32 or float64, and gives eager's values (graph capture checked with the
    eager backend; test_torch_compile_whole_graph_agrees_with_eager runs inductor on some)."""
    makers, data = _compile_matrix()
    make, kind = makers[name]
    x = torch.from_numpy(data[kind]).to(dtype)
    model = make().to(dtype).fit(x)
    model.requires_grad_(trainable)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x[:50]), model(x[:50]))


def test_compiled_float32_forward_takes_the_float64_fall_back_where_eager_does():
    """Two tight components far apart: eager float32 computes this model's log-densities in
    float64; the traced forward makes the same choice with torch.where, not a host decision."""
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(size=(200, 2)) * 1e-3 + 1e4, rng.normal(size=(200, 2)) * 1e-3 - 1e4]).astype(np.float32)
    model = torchem.GaussianMixture(2, covariance_type="full", random_state=0).fit(X)
    x = torch.from_numpy(X[:20])
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x).double(), model(x).double(), rtol=1e-6, atol=1e-4)


def test_fit_by_gradient_refuses_arguments_it_cannot_use_and_takes_lbfgs():
    """Found by fuzzing: a string or an optimizer class, an int generator and a non-callable
    callback raised bare internal errors; an optimizer over another model's parameters trained
    nothing without a word; L-BFGS (whose step needs a closure) failed. Now clear errors, and
    L-BFGS steps as it should (its loss falls)."""
    X = np.random.default_rng(0).normal(size=(100, 2))
    model = GaussianMixture(2, random_state=0).fit(X)
    for kwargs, error, match in [
        ({"optimizer": "adam"}, TypeError, "optimizer must be a torch.optim.Optimizer"),
        ({"optimizer": torch.optim.Adam}, TypeError, "optimizer must be a torch.optim.Optimizer"),
        ({"generator": 0}, TypeError, "generator must be a torch.Generator"),
        ({"callback": 3}, TypeError, "callback must be a function"),
        ({"X": X[:, :1]}, ValueError, "X has 1 features, but GaussianMixture is expecting 2"),
        ({"optimizer": torch.optim.SGD(GaussianMixture(2, random_state=0).fit(X).parameters(), lr=0.1)}, ValueError,
         "holds none of the model's parameters"),
    ]:
        before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
        with pytest.raises(error, match=match):
            torchem.fit_by_gradient(model, **{"X": X, "epochs": 2, **kwargs})
        for k, v in before.items():
            assert torch.equal(model.state_dict()[k], v)
    model.requires_grad_(True)
    history = torchem.fit_by_gradient(model, X, epochs=3, optimizer=torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5))
    assert len(history) == 3 and history[-1] < history[0]

    class NoClosure(torch.optim.SGD):  # a step without a closure argument: stepped plainly
        def step(self):
            return super().step()

    class Ignores(torch.optim.SGD):  # a step that never evaluates the closure would train nothing
        def step(self, closure=None):
            return None

    assert len(torchem.fit_by_gradient(model, X, epochs=2, optimizer=NoClosure(model.parameters(), lr=0.01))) == 2
    with pytest.raises(TypeError, match="did not evaluate the closure"):
        torchem.fit_by_gradient(model, X, epochs=2, optimizer=Ignores(model.parameters(), lr=0.01))
