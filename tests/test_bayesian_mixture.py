"""BayesianGaussianMixture: scikit-learn's variational mixture from the same start, its lower
bound, components switched off by a Dirichlet-process prior, priors, and the driver's
features (streaming, B problems, sample weights, partial_fit, state dict)."""

import copy
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

sklearn = pytest.importorskip("sklearn")
from sklearn.mixture import BayesianGaussianMixture as SkBGMM  # noqa: E402

from torchem import BayesianGaussianMixture, NotFittedError  # noqa: E402

# several fits stop at a small max_iter on purpose (the comparisons hold at every iteration)
pytestmark = pytest.mark.filterwarnings("ignore::torchem.ConvergenceWarning")

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
CENTRES = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 5.0, 5.0]])


def _blobs(n, seed=0, scales=(1.0, 0.6, 1.4)):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    return rng.normal(size=(n, 3)) * np.asarray(scales)[labels, None] + CENTRES[labels]


def _resp(n, k, seed):
    return np.random.default_rng(seed).dirichlet(np.ones(k), size=n)


class _GivenStart(BayesianGaussianMixture):
    """Starts from given responsibilities ``[N, K]`` (``[B, N, K]``) through the mixture's
    initialisation hook, as scikit-learn's ``_initialize(X, resp)`` does below."""

    resp = None

    def _init_responsibilities(self, source, n_init, generator):
        given = torch.as_tensor(self.resp, dtype=torch.float64, device=source.device)
        if given.ndim == 2:
            given = given.expand(source.n_problems, *given.shape)

        def resp_fn(start, X):
            return given[:, None, start : start + X.shape[-2]].expand(-1, n_init, -1, -1)

        return resp_fn


def _given_start(resp, **kwargs):
    model = _GivenStart(**kwargs)
    model.resp = resp
    return model


class _SkGivenStart(SkBGMM):
    resp = None

    def _initialize_parameters(self, X, random_state, xp=None):
        self._initialize(X, self.resp)


ATTRIBUTES = ("weights_", "means_", "covariances_", "precisions_cholesky_", "mean_precision_", "degrees_of_freedom_")


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_matches_sklearn_from_the_same_responsibilities(covariance_type, prior_type):
    X = _blobs(150)
    resp = _resp(len(X), 5, seed=1)
    kwargs = dict(n_components=5, covariance_type=covariance_type, weight_concentration_prior_type=prior_type,
                  weight_concentration_prior=0.1, max_iter=40, tol=1e-6)
    ours = _given_start(resp, **kwargs).fit(X)
    ref = _SkGivenStart(**kwargs)
    ref.resp = resp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's ConvergenceWarning when max_iter ends it
        ref.fit(X)
    assert ours.n_iter_ == ref.n_iter_
    assert ours.converged_ == ref.converged_
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-6)
    for name in ATTRIBUTES:
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-6, atol=1e-9, err_msg=name)
    for mine, theirs in zip(np.atleast_2d(ours.weight_concentration_), np.atleast_2d(ref.weight_concentration_)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6)
    np.testing.assert_allclose(ours.covariance_prior_, ref.covariance_prior_, rtol=1e-10)
    np.testing.assert_allclose(ours.mean_prior_, ref.mean_prior_, rtol=1e-10)
    assert ours.degrees_of_freedom_prior_ == ref.degrees_of_freedom_prior_
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-6)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_lower_bound_never_decreases(covariance_type):
    X = _blobs(200, seed=2)
    model = BayesianGaussianMixture(n_components=6, covariance_type=covariance_type, weight_concentration_prior=0.01,
                                    init_params="random", tol=1e-8, max_iter=60, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X)
    bounds = np.asarray(model.lower_bounds_)
    assert len(bounds) > 5
    assert np.all(np.diff(bounds) >= -1e-9 * np.abs(bounds[1:]))


def test_dirichlet_process_switches_off_unneeded_components_as_sklearn():
    X = _blobs(300, seed=3, scales=(0.5, 0.5, 0.5))
    kwargs = dict(n_components=10, weight_concentration_prior_type="dirichlet_process",
                  weight_concentration_prior=0.01, max_iter=500, random_state=0)
    ours = BayesianGaussianMixture(**kwargs).fit(X)
    ref = SkBGMM(**kwargs).fit(X)
    assert int((ref.weights_ > 0.02).sum()) == 3
    assert int((ours.weights_ > 0.02).sum()) == 3
    np.testing.assert_allclose(np.sort(ours.weights_)[-3:], np.sort(ref.weights_)[-3:], atol=0.01)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight_concentration_prior": 0.0}, "weight_concentration_prior"),
        ({"weight_concentration_prior": -1.0}, "weight_concentration_prior"),
        ({"mean_precision_prior": 0.0}, "mean_precision_prior"),
        ({"degrees_of_freedom_prior": 1.5}, "degrees_of_freedom_prior"),
        ({"degrees_of_freedom_prior": float("nan")}, "degrees_of_freedom_prior"),
        ({"weight_concentration_prior_type": "dirichlet"}, "weight_concentration_prior_type"),
        ({"mean_prior": [0.0, 0.0]}, "mean_prior"),
        ({"mean_prior": [0.0, np.nan, 0.0]}, "mean_prior"),
        ({"covariance_prior": np.eye(2)}, "covariance_prior"),
        ({"covariance_prior": -np.eye(3)}, "covariance_prior"),
        ({"covariance_prior": np.array([[1.0, 2, 0], [0, 1, 0], [0, 0, 1]])}, "covariance_prior"),
        ({"covariance_type": "diag", "covariance_prior": [1.0, 0.0, 1.0]}, "covariance_prior"),
        ({"covariance_type": "spherical", "covariance_prior": -1.0}, "covariance_prior"),
    ],
)
def test_bad_priors_name_the_argument(kwargs, match):
    X = _blobs(30)
    model = BayesianGaussianMixture(2, random_state=0, **kwargs)
    with pytest.raises(ValueError, match=match):
        model.fit(X)
    with pytest.raises(NotFittedError):  # the failed fit left the model unfitted
        model.weights_


def test_given_priors_are_used_and_reported():
    X = _blobs(120)
    resp = _resp(len(X), 3, seed=4)
    kwargs = dict(n_components=3, covariance_type="diag", mean_prior=[1.0, 2.0, 3.0], covariance_prior=[0.5, 1.0, 2.0],
                  mean_precision_prior=10.0, degrees_of_freedom_prior=5.0, weight_concentration_prior=2.0, max_iter=20)
    ours = _given_start(resp, **kwargs).fit(X)
    ref = _SkGivenStart(**kwargs)
    ref.resp = resp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(X)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-6)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-6)
    np.testing.assert_allclose(ours.covariance_prior_, [0.5, 1.0, 2.0])
    assert (ours.mean_precision_prior_, ours.degrees_of_freedom_prior_, ours.weight_concentration_prior_) == (10.0, 5.0, 2.0)


def test_streamed_fit_equals_in_memory(tmp_path):
    X = _blobs(400, seed=5)
    path = tmp_path / "X.npy"
    np.save(path, X)
    kwargs = dict(n_components=4, covariance_type="full", random_state=0, chunk_size=64, max_iter=8)
    memory = BayesianGaussianMixture(**kwargs).fit(X)
    streamed = BayesianGaussianMixture(**kwargs).fit(np.load(path, mmap_mode="r"))
    batches = BayesianGaussianMixture(**kwargs).fit(DataLoader(torch.as_tensor(X), batch_size=100))
    for other in (streamed, batches):
        np.testing.assert_allclose(np.asarray(other.covariance_prior_), memory.covariance_prior_, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(other.means_), memory.means_, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(other.lower_bound_, memory.lower_bound_, rtol=1e-10)
        assert other.n_iter_ == memory.n_iter_


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_stacked_problems_equal_separate_fits(covariance_type):
    X = np.stack([_blobs(100, seed=6), 3.0 * _blobs(100, seed=7) + 1.0])
    resp = np.stack([_resp(100, 3, seed=8), _resp(100, 3, seed=9)])
    kwargs = dict(n_components=3, covariance_type=covariance_type, max_iter=25, tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = _given_start(resp, **kwargs).fit(X)
        alone = [_given_start(resp[b], **kwargs).fit(X[b]) for b in range(2)]
    for b in range(2):
        assert both.n_iter_[b] == alone[b].n_iter_
        np.testing.assert_allclose(both.lower_bound_[b], alone[b].lower_bound_, rtol=1e-9)
        for name in ATTRIBUTES + ("mean_prior_", "covariance_prior_"):
            np.testing.assert_allclose(getattr(both, name)[b], getattr(alone[b], name), rtol=1e-8, atol=1e-10, err_msg=name)
        np.testing.assert_allclose(both.weight_concentration_[1][b], alone[b].weight_concentration_[1], rtol=1e-8)


def test_integer_sample_weight_equals_repeated_rows():
    X = _blobs(60, seed=10)
    w = np.random.default_rng(11).integers(1, 4, len(X))
    resp = _resp(len(X), 3, seed=12)
    kwargs = dict(n_components=3, covariance_type="tied", max_iter=20, tol=1e-6)
    weighted = _given_start(resp, **kwargs).fit(X, sample_weight=w)
    repeated = _given_start(np.repeat(resp, w, 0), **kwargs).fit(np.repeat(X, w, 0))
    np.testing.assert_allclose(weighted.covariance_prior_, repeated.covariance_prior_, rtol=1e-10)
    np.testing.assert_allclose(weighted.lower_bound_, repeated.lower_bound_, rtol=1e-9)
    for name in ATTRIBUTES:
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-8, err_msg=name)


def test_restarts_keep_the_highest_lower_bound():
    X = _blobs(150, seed=13)
    kwargs = dict(n_components=4, init_params="random", max_iter=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        best = BayesianGaussianMixture(n_init=3, random_state=0, **kwargs).fit(X)
        first = BayesianGaussianMixture(n_init=1, random_state=0, **kwargs).fit(X)
    assert best.lower_bound_ >= first.lower_bound_


def test_partial_fit_runs_and_improves():
    X_test = _blobs(300, seed=15)
    model = BayesianGaussianMixture(n_components=3, random_state=0)
    model.partial_fit(_blobs(20, seed=16))
    first = model.score(X_test)
    for i in range(25):
        model.partial_fit(_blobs(60, seed=100 + i))
    assert model.n_iter_ == 26
    fitted = BayesianGaussianMixture(n_components=3, random_state=0).fit(_blobs(1500, seed=17))
    assert model.score(X_test) > first + 1.0
    assert model.score(X_test) > fitted.score(X_test) - 0.02  # stochastic VI reaches the batch fit
    np.testing.assert_allclose(np.sort(model.weights_), np.sort(fitted.weights_), atol=0.05)


def test_weighted_partial_fit_equals_repeated_rows():
    """Stochastic VI scales its running averages (per unit of weight) by the samples they
    stand for, which counted rows: a batch of weight 2 gave mean_precision_ [21, 21] where its
    rows repeated give [41, 41]. Now the total weight, per problem, on a fresh model (labelled
    rows: one start for both) and after a weighted fit."""
    X, X2 = _blobs(40, seed=30), _blobs(100, seed=31)
    labels = np.arange(40) % 3
    w = np.random.default_rng(32).integers(1, 4, 40)
    for weights in (np.full(40, 2), w):
        weighted = BayesianGaussianMixture(n_components=3).partial_fit(X, sample_weight=weights, labels=labels)
        repeated = BayesianGaussianMixture(n_components=3).partial_fit(np.repeat(X, weights, 0),
                                                                       labels=np.repeat(labels, weights))
        np.testing.assert_allclose(weighted.mean_precision_, repeated.mean_precision_, rtol=1e-12)
        np.testing.assert_allclose(weighted.covariances_, repeated.covariances_, rtol=1e-10)
    stacked = BayesianGaussianMixture(n_components=3).partial_fit(np.stack([X, X]), sample_weight=np.stack([w, 2 * w]),
                                                                  labels=labels)
    for b, scale in enumerate((1, 2)):
        alone = BayesianGaussianMixture(n_components=3).partial_fit(np.repeat(X, scale * w, 0),
                                                                    labels=np.repeat(labels, scale * w))
        np.testing.assert_allclose(stacked.mean_precision_[b], alone.mean_precision_, rtol=1e-12)
    # after a weighted fit the posterior stands for the fit's weight, not its rows (a batch of
    # at least as many rows as that weight: the stream's step count is the same on both sides)
    fitted = _given_start(_resp(40, 3, seed=34), n_components=3, max_iter=30, tol=1e-8).fit(X, sample_weight=w)
    ref = _given_start(np.repeat(_resp(40, 3, seed=34), w, 0), n_components=3, max_iter=30, tol=1e-8).fit(np.repeat(X, w, 0))
    np.testing.assert_allclose(fitted.mean_precision_, ref.mean_precision_, rtol=1e-9)
    assert w.sum() <= len(X2)
    fitted.partial_fit(X2)
    ref.partial_fit(X2)
    np.testing.assert_allclose(fitted.mean_precision_, ref.mean_precision_, rtol=1e-9)


def test_state_dict_round_trip(tmp_path):
    X = _blobs(100, seed=18)
    model = BayesianGaussianMixture(n_components=3, covariance_type="tied", random_state=0).fit(X)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    loaded = BayesianGaussianMixture(n_components=3, covariance_type="tied")
    loaded.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), rtol=1e-12)
    np.testing.assert_allclose(loaded.covariance_prior_, model.covariance_prior_)
    assert loaded.degrees_of_freedom_ == model.degrees_of_freedom_
    assert isinstance(model.degrees_of_freedom_, float)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_float32_tight_components_far_apart_match_float64(covariance_type):
    """Tight clusters far from their common centre: the float32 second moments cancel, and
    the Gaussian family's precise pass (float64, about each component's mean) keeps the
    variational fit equal to the float64 one."""
    rng = np.random.default_rng(10)
    centres = np.array([[-300.0, 0.0], [300.0, 0.0], [0.0, 300.0]])
    X = np.concatenate([rng.normal(size=(300, 2)) * 0.05 + c for c in centres])
    resp = np.repeat(np.eye(3), 300, 0)
    kwargs = dict(n_components=3, covariance_type=covariance_type, max_iter=10, mean_precision_prior=1e-3,
                  covariance_prior=np.eye(2) * 1e-4 if covariance_type == "full" else np.full(2, 1e-4))
    f64 = _given_start(resp, **kwargs).fit(X)
    f32 = _given_start(resp, **kwargs).fit(X.astype(np.float32))
    np.testing.assert_allclose(f32.covariances_, f64.covariances_, rtol=1e-3, atol=1e-8)  # variances ~2.5e-3
    np.testing.assert_allclose(f32.lower_bound_, f64.lower_bound_, rtol=1e-5)


def test_float32_tensor_input_matches_float64():
    X = _blobs(200, seed=19) + 1000.0
    kwargs = dict(n_components=3, random_state=0, max_iter=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m64 = BayesianGaussianMixture(**kwargs).fit(X)
        m32 = BayesianGaussianMixture(**kwargs).fit(torch.as_tensor(X, dtype=torch.float32))
    assert isinstance(m32.means_, torch.Tensor) and m32.means_.dtype == torch.float32
    np.testing.assert_allclose(m32.means_.numpy(), m64.means_, rtol=1e-5)
    np.testing.assert_allclose(m32.covariances_.numpy(), m64.covariances_, rtol=1e-3)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_partial_fit_after_fit_continues_the_posterior(covariance_type):
    """A converged fit on X, continued by partial_fit on X itself: the stream has now seen X
    twice, so the update equals one batch iteration on X repeated twice from the fitted
    posterior (the running statistics start as the statistics the fit implies; the batch fit's
    covariance prior, of 2N rows, differs by its 1/(2N) unbiasing, hence atol)."""
    X = _blobs(300, seed=20)
    model = BayesianGaussianMixture(n_components=3, covariance_type=covariance_type, tol=1e-10, max_iter=500,
                                    random_state=0).fit(X)
    batch = copy.deepcopy(model).set_params(warm_start=True, max_iter=1).fit(np.concatenate([X, X]))
    model.partial_fit(X)
    for name in ("means_", "weights_", "covariances_", "mean_precision_", "degrees_of_freedom_"):
        np.testing.assert_allclose(getattr(model, name), getattr(batch, name), rtol=1e-3, atol=1e-4, err_msg=name)


def test_point_estimate_as_a_distribution_and_no_from_distribution():
    X = _blobs(150, seed=21)
    model = BayesianGaussianMixture(n_components=3, covariance_type="diag", random_state=0).fit(X)
    dist = model.to_distribution()  # the point estimate: weights_, means_, covariances_
    np.testing.assert_allclose(dist.mixture_distribution.probs.detach().numpy(), model.weights_, rtol=1e-12)
    np.testing.assert_allclose(dist.component_distribution.base_dist.scale.detach().numpy() ** 2, model.covariances_,
                               rtol=1e-10)
    samples, labels = model.sample(50)
    assert samples.shape == (50, 3) and labels.shape == (50,)
    with pytest.raises(TypeError, match="GaussianMixture.from_distribution"):
        BayesianGaussianMixture.from_distribution(dist)


def test_fully_labelled_fit_has_the_posterior_of_the_classes():
    """With every sample labelled, the posterior is closed-form: nk are the class counts."""
    rng = np.random.default_rng(22)
    y = rng.integers(0, 3, 200)
    X = rng.normal(size=(200, 2)) + np.array([[0, 0], [3, 0], [0, 3]])[y]
    model = BayesianGaussianMixture(3, covariance_type="diag", random_state=0).fit(X, labels=y)
    counts = np.bincount(y, minlength=3)
    np.testing.assert_allclose(model.mean_precision_, 1.0 + counts, rtol=1e-12)
    np.testing.assert_allclose(model.degrees_of_freedom_, 2.0 + counts, rtol=1e-12)
    class_means = np.stack([X[y == k].mean(0) for k in range(3)])
    np.testing.assert_allclose(model.means_, (X.mean(0) + counts[:, None] * class_means) / (1.0 + counts[:, None]),
                               rtol=1e-10)
    np.testing.assert_allclose(model.weight_concentration_[0], 1.0 + counts, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Missing values (nan_policy="marginalize"): mean-field variational EM with q(z, x_m) q(theta)
# --------------------------------------------------------------------------------------------


def _holes(X, fraction, seed):
    """``X`` with ``fraction`` of its entries NaN at random, every row keeping one entry."""
    rng = np.random.default_rng(seed)
    X = X.copy()
    holes = rng.random(X.shape) < fraction
    holes[holes.all(1), 0] = False
    X[holes] = np.nan
    return X


def _np_expected_log_weights(conc, process):
    from scipy.special import digamma

    if not process:
        return digamma(conc) - digamma(conc.sum())
    a, b = conc
    tail = np.concatenate([[0.0], np.cumsum(digamma(b) - digamma(a + b))[:-1]])
    return digamma(a) - digamma(a + b) + tail


def _np_variational_em_missing(X, resp, n_iter, covariance_type, process, reg=1e-6):
    """Variational EM for a Bayesian Gaussian mixture (full or diag) with entries missing at
    random, written from the expected log joint row by row: ``q(x_m | z = k)`` is Gaussian
    with precision ``E[Lambda_k]_mm`` and the conditional mean; ``log q(z = k)`` is the log of
    the integral over ``x_m`` of ``exp E[log pi_k N(x | mu_k, Lambda_k^-1)]``. Starts from the
    M-step of ``resp`` on the data with each missing entry at its feature's observed mean (and
    the priors taken from that data). Returns the parameters and the lower bounds."""
    from scipy.special import betaln, digamma, gammaln

    n, d = X.shape
    k = resp.shape[1]
    obs = ~np.isnan(X)
    filled = np.where(obs, X, np.nanmean(X, 0))
    m0, beta0, nu0, gamma0 = filled.mean(0), 1.0, float(d), 1.0 / k
    full = covariance_type == "full"
    cov0 = np.cov(filled.T) if full else np.var(filled, 0, ddof=1)
    ex = np.repeat(filled[:, None, :], k, 1)  # E[x_i | z = k]
    ecov = np.zeros((n, k, d, d))  # Cov[x_i | z = k] (missing block)
    history = []
    for it in range(n_iter + 1):
        # M-step
        nk = resp.sum(0) + 10 * np.finfo(float).eps
        xk = np.einsum("nk,nkd->kd", resp, ex) / nk[:, None]
        dev = ex - xk[None]
        sk = (np.einsum("nk,nkd,nke->kde", resp, dev, dev) + np.einsum("nk,nkde->kde", resp, ecov)) / nk[:, None, None]
        sk = sk + reg * np.eye(d) if full else np.einsum("kdd->kd", sk) + reg
        conc = np.stack([1.0 + nk, gamma0 + np.concatenate([np.cumsum(nk[::-1])[::-1][1:], [0.0]])]) if process else gamma0 + nk
        beta, nu = beta0 + nk, nu0 + nk
        means = (beta0 * m0 + nk[:, None] * xk) / beta[:, None]
        diff = xk - m0
        if full:
            scale = cov0 + nk[:, None, None] * (sk + (beta0 / beta)[:, None, None] * np.einsum("kd,ke->kde", diff, diff))
        else:
            scale = cov0 + nk[:, None] * (sk + (beta0 / beta)[:, None] * diff**2)
        covs = scale / (nu[:, None, None] if full else nu[:, None])
        W = np.linalg.inv(scale) if full else np.array([np.diag(1.0 / s) for s in scale])  # Wishart scale
        log_det_w = np.linalg.slogdet(W)[1]
        if it > 0:  # the lower bound after the M-step: normalisers and the entropy of q(z, x_m)
            log_wishart = -(nu * 0.5 * log_det_w + nu * d * 0.5 * np.log(2)
                            + gammaln(0.5 * (nu[:, None] - np.arange(d))).sum(1))
            log_norm_weight = -betaln(*conc).sum() if process else gammaln(conc.sum()) - gammaln(conc).sum()
            history.append(-(resp * np.log(resp)).sum() + (resp * entropy).sum() - log_wishart.sum()
                           - log_norm_weight - 0.5 * d * np.log(beta).sum())
        # E-step (after the last M-step too: the fitted model's expected log-densities)
        e_log_det = d * np.log(2) + digamma(0.5 * (nu[:, None] - np.arange(d))).sum(1) + log_det_w
        log_rho = np.zeros((n, k)) + _np_expected_log_weights(conc, process)
        entropy = np.zeros((n, k))
        for i in range(n):
            o, mis = obs[i], ~obs[i]
            dm = mis.sum()
            for j in range(k):
                P = nu[j] * W[j]  # E[Lambda_j]
                P_mm = P[np.ix_(mis, mis)]
                delta = X[i, o] - means[j, o]
                schur = P[np.ix_(o, o)] - P[np.ix_(o, mis)] @ np.linalg.solve(P_mm, P[np.ix_(mis, o)]) if dm else P
                log_det_mm = np.linalg.slogdet(P_mm)[1] if dm else 0.0
                log_rho[i, j] += (0.5 * e_log_det[j] - 0.5 * d / beta[j] - 0.5 * (d - dm) * np.log(2 * np.pi)
                                  - 0.5 * delta @ schur @ delta - 0.5 * log_det_mm)
                ex[i, j] = X[i] if not dm else np.where(o, X[i], 0.0)
                ecov[i, j] = 0.0
                if dm:
                    ex[i, j, mis] = means[j, mis] - np.linalg.solve(P_mm, P[np.ix_(mis, o)] @ delta)
                    ecov[i, j][np.ix_(mis, mis)] = np.linalg.inv(P_mm)
                entropy[i, j] = 0.5 * dm * (1 + np.log(2 * np.pi)) - 0.5 * log_det_mm
        if it == n_iter:
            break
        resp = np.exp(log_rho - np.logaddexp.reduce(log_rho, 1)[:, None])
    return {"means_": means, "covariances_": covs, "mean_precision_": beta, "degrees_of_freedom_": nu}, np.array(history), log_rho


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_missing_values_fit_equals_numpy_variational_em(covariance_type, prior_type):
    X = _holes(_blobs(120, seed=7), 0.3, seed=8)
    resp = _resp(len(X), 3, seed=9)
    model = _given_start(resp, n_components=3, covariance_type=covariance_type, weight_concentration_prior_type=prior_type,
                         nan_policy="marginalize", tol=0, max_iter=20).fit(X)
    ref, history, log_rho = _np_variational_em_missing(X, resp, 20, covariance_type, prior_type == "dirichlet_process")
    for name, value in ref.items():
        np.testing.assert_allclose(getattr(model, name), value, rtol=0, atol=1e-8, err_msg=name)
    np.testing.assert_allclose(model.lower_bounds_, history, rtol=0, atol=1e-8)
    assert np.diff(history).min() > -1e-9  # a valid lower bound: coordinate ascent never lowers it
    # inference reads the E-step's expected log-densities of the observed entries
    np.testing.assert_allclose(model.score_samples(X), np.logaddexp.reduce(log_rho, 1), rtol=0, atol=1e-8)
    np.testing.assert_array_equal(model.predict(X), log_rho.argmax(1))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_missing_values_lower_bound_never_decreases(covariance_type):
    """The bound counts the entropy of q(x_m | x_o, z): without it the bound drops at times."""
    X = _holes(_blobs(150, seed=10), 0.3, seed=11)
    model = BayesianGaussianMixture(n_components=5, covariance_type=covariance_type, weight_concentration_prior=0.05,
                                    nan_policy="marginalize", init_params="random", tol=0, max_iter=25,
                                    random_state=0).fit(X)
    bounds = np.asarray(model.lower_bounds_)
    assert len(bounds) == 25 and bounds[-1] > bounds[0] + 1.0
    assert np.all(np.diff(bounds) >= -1e-9 * np.abs(bounds[1:]))


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_missing_values_policy_without_nan_is_bitwise_the_plain_fit(covariance_type):
    X = _blobs(120, seed=12)
    kwargs = dict(n_components=3, covariance_type=covariance_type, random_state=0, max_iter=10)
    plain, other = BayesianGaussianMixture(**kwargs).fit(X), BayesianGaussianMixture(nan_policy="marginalize", **kwargs).fit(X)
    for key, value in plain.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other.state_dict()[key]), key
    assert plain.lower_bounds_ == other.lower_bounds_
    np.testing.assert_array_equal(plain.score_samples(X), other.score_samples(X))


def test_missing_values_streamed_fit_equals_in_memory(tmp_path):
    X = _blobs(240, seed=13)
    X[80:] = _holes(X[80:], 0.3, seed=14)  # the first chunks hold no NaN, the later ones do
    path = tmp_path / "X.npy"
    np.save(path, X)
    kwargs = dict(n_components=4, covariance_type="full", random_state=0, chunk_size=40, max_iter=8,
                  nan_policy="marginalize")
    memory = BayesianGaussianMixture(**kwargs).fit(X)
    streamed = BayesianGaussianMixture(**kwargs).fit(np.load(path, mmap_mode="r"))
    batches = BayesianGaussianMixture(**kwargs).fit(DataLoader(torch.as_tensor(X), batch_size=60))
    for other in (streamed, batches):
        np.testing.assert_allclose(np.asarray(other.mean_prior_), memory.mean_prior_, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(other.covariance_prior_), memory.covariance_prior_, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(other.means_), memory.means_, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(other.lower_bounds_, memory.lower_bounds_, rtol=1e-10)
    # the priors taken from the data read each missing entry at its feature's observed mean
    filled = np.where(np.isnan(X), np.nanmean(X, 0), X)
    np.testing.assert_allclose(memory.mean_prior_, np.nanmean(X, 0), rtol=1e-12)
    np.testing.assert_allclose(memory.covariance_prior_, np.cov(filled.T), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", ["tied", "spherical"])
def test_missing_values_integer_weights_equal_repeated_rows(covariance_type):
    X = _holes(_blobs(60, seed=15), 0.3, seed=16)
    w = np.random.default_rng(17).integers(1, 4, len(X))
    resp = _resp(len(X), 3, seed=18)
    kwargs = dict(n_components=3, covariance_type=covariance_type, nan_policy="marginalize", tol=0, max_iter=10)
    weighted = _given_start(resp, **kwargs).fit(X, sample_weight=w.astype(float))
    repeated = _given_start(np.repeat(resp, w, 0), **kwargs).fit(np.repeat(X, w, 0))
    for name in ("means_", "covariances_", "mean_precision_", "mean_prior_", "covariance_prior_"):
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-9, atol=1e-10, err_msg=name)
    np.testing.assert_allclose(weighted.lower_bounds_, repeated.lower_bounds_, rtol=1e-10)  # the x_m entropy is weighted
