"""The stateless kernels against independent references (scipy densities, NumPy closed forms)."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from torchem.functional import gaussian as G
from torchem.functional.estep import log_responsibilities, mixture_log_prob, responsibilities, responsibilities_base2_

from .conftest import random_spd
from .reference_em import dense_covariances

TYPES = ["full", "tied", "diag", "spherical"]


def _random_model(rng, k, d, covariance_type):
    means = rng.normal(scale=3.0, size=(k, d))
    if covariance_type == "full":
        cov = random_spd(rng, k, d)
    elif covariance_type == "tied":
        cov = random_spd(rng, 1, d)[0]
    elif covariance_type == "diag":
        cov = rng.uniform(0.3, 2.0, size=(k, d))
    else:
        cov = rng.uniform(0.3, 2.0, size=k)
    return means, cov


@pytest.mark.parametrize("covariance_type", TYPES)
def test_log_prob_matches_scipy(covariance_type):
    rng = np.random.default_rng(1)
    k, d = 4, 5
    means, cov = _random_model(rng, k, d, covariance_type)
    X = rng.normal(scale=3.0, size=(50, d))
    prec_chol, failed = G.precision_cholesky_from_covariances(torch.from_numpy(cov), covariance_type)
    assert not failed.any()
    got = G.gaussian_log_prob(torch.from_numpy(X), torch.from_numpy(means), prec_chol, covariance_type).numpy()
    dense = dense_covariances(cov, covariance_type, k, d)
    want = np.stack([multivariate_normal(means[j], dense[j]).logpdf(X) for j in range(k)], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_log_prob_float32_far_from_origin(covariance_type):
    """Centring keeps float32 densities accurate for data offset by 1e4."""
    rng = np.random.default_rng(2)
    k, d = 3, 4
    means, cov = _random_model(rng, k, d, covariance_type)
    means = means + 1e4
    X = means[rng.integers(0, k, 200)] + rng.normal(size=(200, d))
    prec_chol, _ = G.precision_cholesky_from_covariances(torch.from_numpy(cov), covariance_type)
    want = G.gaussian_log_prob(torch.from_numpy(X), torch.from_numpy(means), prec_chol, covariance_type)
    X32 = torch.from_numpy(X).float()
    got = G.gaussian_log_prob(X32, torch.from_numpy(means).float(), prec_chol.float(), covariance_type)
    assert got.dtype == torch.float32
    # Inputs rounded to float32 at 1e4 move by ~5e-4, which moves a log-density by ~1e-3.
    np.testing.assert_allclose(got.double().numpy(), want.numpy(), atol=2e-2, rtol=1e-4)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_log_prob_of_stacked_problems_matches_loop(covariance_type):
    rng = np.random.default_rng(3)
    b, k, d = 3, 4, 3
    models = [_random_model(rng, k, d, covariance_type) for _ in range(b)]
    means = torch.from_numpy(np.stack([m for m, _ in models]))
    cov = torch.from_numpy(np.stack([c for _, c in models]))
    prec_chol, _ = G.precision_cholesky_from_covariances(cov, covariance_type)
    X = torch.from_numpy(rng.normal(size=(b, 20, d)))
    batched = G.gaussian_log_prob(X, means, prec_chol, covariance_type)
    for i in range(b):
        single = G.gaussian_log_prob(X[i], means[i], prec_chol[i], covariance_type)
        torch.testing.assert_close(batched[i], single, rtol=1e-12, atol=1e-12)


def test_factor_round_trips():
    rng = np.random.default_rng(4)
    cov = torch.from_numpy(random_spd(rng, 3, 4))
    u, failed = G.precision_cholesky_from_covariances(cov, "full")
    assert not failed.any()
    assert torch.allclose(u, u.triu())
    precisions = torch.linalg.inv(cov)  # reference only
    torch.testing.assert_close(G.precisions_from_precision_cholesky(u, "full"), precisions)
    torch.testing.assert_close(G.covariances_from_precision_cholesky(u, "full"), cov)
    u2, _ = G.precision_cholesky_from_precisions(precisions, "full")
    torch.testing.assert_close(u2, u)
    raw = G.precision_cholesky_to_unconstrained(u, "full")
    torch.testing.assert_close(G.precision_cholesky_from_unconstrained(raw, "full"), u)
    log_det = G.log_det_precision_cholesky(u, "full", 4)
    torch.testing.assert_close(2 * log_det, torch.logdet(precisions))


def test_not_positive_definite_is_reported():
    cov = torch.tensor([[[1.0, 2.0], [2.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    _, failed = G.precision_cholesky_from_covariances(cov, "full")
    assert failed.tolist() == [True, False]
    _, failed = G.precision_cholesky_from_covariances(torch.tensor([[1.0, -1.0]]), "diag")
    assert failed.tolist() == [True]


def test_responsibilities_match_logsumexp():
    rng = np.random.default_rng(5)
    lp = rng.normal(scale=30.0, size=(2, 40, 6))
    lw = np.log(rng.dirichlet(np.ones(6), size=2))
    joint = lp + lw[:, None, :]
    want_norm = logsumexp(joint, axis=-1)
    norm, log_resp = log_responsibilities(torch.from_numpy(lp), torch.from_numpy(lw))
    np.testing.assert_allclose(norm.numpy(), want_norm, rtol=1e-12)
    np.testing.assert_allclose(log_resp.numpy(), joint - want_norm[..., None], rtol=1e-10, atol=1e-10)
    norm2, resp = responsibilities(torch.from_numpy(lp), torch.from_numpy(lw))
    np.testing.assert_allclose(norm2.numpy(), want_norm, rtol=1e-12)
    np.testing.assert_allclose(resp.numpy(), np.exp(joint - want_norm[..., None]), atol=1e-12)
    torch.testing.assert_close(mixture_log_prob(torch.from_numpy(lp), torch.from_numpy(lw)), norm)


def test_float32_responsibilities_in_place_match_logsumexp_in_either_layout():
    """The float32 E-step (exponentials as exp2 on the CPU), written over its input whether that
    is sample-major or the component-major view the Gaussian kernels return, agrees with a
    float64 log-sum-exp of the same (float32) numbers to float32 accuracy."""
    rng = np.random.default_rng(6)
    lp = torch.from_numpy(rng.normal(scale=30.0, size=(50, 7))).float()
    lp[3] = -torch.inf  # a sample impossible under every component
    lw = torch.from_numpy(np.log(rng.dirichlet(np.ones(7)))).float()
    joint = lp.double() + lw.double()
    want_norm = torch.logsumexp(joint, -1)
    want_resp = torch.nan_to_num((joint - want_norm[:, None]).exp())
    for given in (lp.clone(), lp.mT.contiguous().mT):
        norm, resp = responsibilities(given, lw, inplace=True)
        assert resp.data_ptr() == given.data_ptr()
        assert norm[3] == -torch.inf and bool((resp[3] == 0).all())
        keep = torch.arange(50) != 3
        np.testing.assert_allclose(norm[keep].numpy(), want_norm[keep].numpy(), rtol=1e-6)
        np.testing.assert_allclose(resp.numpy(), want_resp.numpy(), rtol=1e-5, atol=1e-6)


def test_base2_component_major_responsibilities_match_logsumexp():
    """The fused pass's E-step (base-2 joint log-probabilities, component-major, written over)
    agrees with a float64 log-sum-exp of the capped joint; an impossible sample gets zero
    responsibilities and -inf; entries above their cap count as the cap."""
    rng = np.random.default_rng(7)
    lp = torch.from_numpy(rng.normal(scale=30.0, size=(7, 50))).float()  # [K, n]
    lp[:, 3] = -torch.inf
    cap = torch.full((7, 1), 50.0)
    lp[2, 5] = 50.01  # rounding above a density's peak: capped
    joint = torch.minimum(lp.double(), cap.double()) / np.log(2.0)
    want_norm = torch.logsumexp(joint * np.log(2.0), 0)
    want_resp = torch.nan_to_num((joint * np.log(2.0) - want_norm).exp())
    given = (lp / np.log(2.0)).float()
    norm64 = torch.empty(50, dtype=torch.float64)
    norm, resp = responsibilities_base2_(given, (cap / np.log(2.0)).float(), norm64)
    assert resp.data_ptr() == given.data_ptr() and norm.data_ptr() == norm64.data_ptr()
    assert norm[3] == -torch.inf and bool((resp[:, 3] == 0).all()) and not bool(resp.isnan().any())
    keep = torch.arange(50) != 3
    np.testing.assert_allclose(norm[keep].numpy(), want_norm[keep].numpy(), rtol=1e-6)
    np.testing.assert_allclose(resp.numpy(), want_resp.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
@pytest.mark.parametrize("lead, d", [((1, 1), 6), ((2, 3), 5)])
def test_fused_e_step_statistics_match_float64_kernels(covariance_type, lead, d):
    """One fused float32 pass over a chunk (log-likelihoods and statistics, GEMMs in base 2 with
    the log weights folded in) equals the float64 log-densities, E-step and statistics of the
    separate kernels to float32 accuracy, for one problem and for stacked problems x restarts;
    the chunk after it, shorter, reuses the workspace; sample weights weight the statistics
    (not the log-likelihoods) as in the separate kernels."""
    rng = np.random.default_rng(8)
    k = 4
    b, r = lead
    means, cov = zip(*[_random_model(rng, k, d, covariance_type) for _ in range(b * r)])
    means = torch.from_numpy(np.stack(means)).reshape(b, r, k, d)
    cov = torch.from_numpy(np.stack(cov)).reshape(b, r, *np.shape(cov[0]))
    pc, _ = G.precision_cholesky_from_covariances(cov, covariance_type)
    lw = torch.from_numpy(np.log(rng.dirichlet(np.ones(k), size=(b, r))))
    prep = G.gaussian_prepare(means.float(), pc.float(), covariance_type)
    prep["workspace"] = {}
    for n, weighted in ((60, False), (37, False), (60, True)):
        X = torch.from_numpy(rng.normal(scale=3.0, size=(b, 1, n, d)))
        w = torch.from_numpy(rng.uniform(0.0, 3.0, size=(b, 1, n))) if weighted else None
        if weighted:
            w[..., :5] = 0.0  # rows of weight 0 count for nothing
        norm, stats = G.gaussian_e_step_stats(X.float(), prep, lw.float(), None if w is None else w.float())
        want_norm, resp = responsibilities(G.gaussian_log_prob(X, means, pc, covariance_type), lw)
        want = G.gaussian_stats(X, resp, means, pc, covariance_type, sample_weight=w)
        np.testing.assert_allclose(norm.numpy(), want_norm.numpy(), rtol=1e-5)
        assert set(stats) == set(want)
        for key in want:
            np.testing.assert_allclose(stats[key].numpy(), want[key].numpy(), rtol=1e-4, atol=1e-4 * float(want[key].abs().max()))


@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 16])
def test_quadratic_features_hold_each_pair_once(d):
    """The full covariance's features are the D (D + 1) / 2 distinct products x_i x_j (odd and
    even D alike): laid back into a matrix they give the outer product, in autograd and
    workspace builds alike."""
    from torchem.functional.covariance import COVARIANCE_TYPES, quadratic_features, symmetric_from_pairs

    x = torch.randn(3, d, dtype=torch.float64)
    quad = quadratic_features(x)
    assert quad.shape == (3, d * (d + 1) // 2)
    torch.testing.assert_close(symmetric_from_pairs(quad, d), x.unsqueeze(-1) * x.unsqueeze(-2))
    torch.testing.assert_close(COVARIANCE_TYPES["full"].features(x, {}), torch.cat([quad, x], -1))


def test_responsibilities_of_impossible_sample_are_zero_not_nan():
    lp = torch.tensor([[-torch.inf, -torch.inf], [0.0, -1.0]])
    lw = torch.log(torch.tensor([0.5, 0.5]))
    for fn in (log_responsibilities, responsibilities):
        norm, r = fn(lp, lw)
        assert norm[0] == -torch.inf and torch.isfinite(norm[1])
        assert not torch.isnan(r).any()


@pytest.mark.parametrize("covariance_type", TYPES)
def test_m_step_matches_weighted_moments(covariance_type):
    """Chunked statistics + M-step equal the weighted mean and covariance computed directly."""
    rng = np.random.default_rng(6)
    n, k, d = 300, 3, 4
    X = rng.normal(scale=2.0, size=(n, d)) + 50.0
    resp = rng.dirichlet(np.ones(k), size=n)
    means0 = torch.from_numpy(rng.normal(size=(k, d)) + 50.0)
    _, cov0 = _random_model(rng, k, d, covariance_type)
    pc0, _ = G.precision_cholesky_from_covariances(torch.from_numpy(cov0), covariance_type)
    Xt, rt = torch.from_numpy(X), torch.from_numpy(resp)
    stats = None
    for s in range(0, n, 70):  # statistics add over chunks
        part = G.gaussian_stats(Xt[s : s + 70], rt[s : s + 70], means0, pc0, covariance_type)
        stats = part if stats is None else {key: stats[key] + part[key] for key in part}
    reg = 1e-6
    log_w, means, pc, failed = G.gaussian_m_step(stats, means0, covariance_type, reg)
    assert not failed.any()
    nk = resp.sum(0) + 10 * np.finfo(float).eps
    want_means = resp.T @ X / nk[:, None]
    np.testing.assert_allclose(means.numpy(), want_means, rtol=1e-12)
    np.testing.assert_allclose(log_w.exp().numpy(), nk / n, rtol=1e-12)
    full = np.stack([(resp[:, j, None] * (X - want_means[j])).T @ (X - want_means[j]) / nk[j] for j in range(k)])
    want = {
        "full": full + reg * np.eye(d),
        "tied": (full * nk[:, None, None]).sum(0) / n + reg * np.eye(d),
        "diag": np.stack([np.diag(c) for c in full]) + reg,
        "spherical": np.stack([np.diag(c) for c in full]).mean(1) + reg,
    }[covariance_type]
    got = G.covariances_from_precision_cholesky(pc, covariance_type).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_float32_statistics_of_tight_far_components_are_recomputed():
    """Tight components far from the centre cancel in float32 second moments; the check asks
    for a float64 pass (and the fit is then as accurate as a float64 fit)."""
    rng = np.random.default_rng(7)
    k, d = 2, 3
    means = np.array([[-500.0] * d, [500.0] * d])
    X = np.concatenate([m + 0.01 * rng.normal(size=(200, d)) for m in means])
    resp = np.repeat(np.eye(k), 200, axis=0)
    args = (torch.from_numpy(means), torch.ones(k, d, dtype=torch.float64), "diag")
    stats32 = G.gaussian_stats(torch.from_numpy(X).float(), torch.from_numpy(resp).float(), args[0].float(), args[1].float(), "diag")
    assert G.stats_need_float64(stats32, "diag", torch.finfo(torch.float32).eps)
    stats64 = G.gaussian_stats(torch.from_numpy(X), torch.from_numpy(resp), *args)
    assert not G.stats_need_float64(stats64, "diag", torch.finfo(torch.float64).eps)


def test_expansion_switches_to_float64_when_float32_would_cancel():
    means = torch.tensor([[-1000.0, 0.0], [1000.0, 0.0]])
    prec_chol = torch.full((2, 2), 100.0)  # sigma = 0.01
    X = means + 0.01 * torch.randn(2, 2, generator=torch.Generator().manual_seed(0))
    lp32 = G.gaussian_log_prob(X, means, prec_chol, "diag")
    lp64 = G.gaussian_log_prob(X.double(), means.double(), prec_chol.double(), "diag")
    assert lp32.dtype == torch.float32
    torch.testing.assert_close(lp32.double(), lp64, rtol=1e-5, atol=1e-3)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_n_parameters_matches_sklearn():
    from sklearn.mixture import GaussianMixture

    X = np.random.default_rng(0).normal(size=(50, 4))
    for ct in TYPES:
        sk = GaussianMixture(3, covariance_type=ct, max_iter=5, random_state=0).fit(X)
        assert G.n_parameters(3, 4, ct) == sk._n_parameters()
