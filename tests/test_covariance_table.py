"""The table of covariance types: every entry against scikit-learn, and no string dispatch left."""

import pathlib
import re

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SkGMM
from sklearn.mixture._gaussian_mixture import _compute_log_det_cholesky, _estimate_gaussian_parameters

import torchem
from torchem.functional import gaussian as G
from torchem.functional.covariance import COVARIANCE_TYPES, CovarianceType, lookup

K, D = 3, 4
ENTRIES = list(COVARIANCE_TYPES.values())
IDS = list(COVARIANCE_TYPES)


def _sklearn_n_cov_parameters(k, d, covariance_type):
    """The covariance part of ``sklearn.mixture.GaussianMixture._n_parameters``."""
    if covariance_type == "full":
        return k * d * (d + 1) / 2.0
    if covariance_type == "diag":
        return k * d
    if covariance_type == "tied":
        return d * (d + 1) / 2.0
    return k


@pytest.fixture(scope="module")
def sklearn_fits():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4.0, size=(K, D))
    X = np.concatenate([c + rng.normal(scale=s, size=(100, D)) for c, s in zip(centres, (0.5, 1.0, 1.5))])
    fits = {name: SkGMM(K, covariance_type=name, random_state=0).fit(X) for name in COVARIANCE_TYPES}
    return X, fits


# --------------------------------------------------------------------------------------------
# No branch on the type's name outside the table
# --------------------------------------------------------------------------------------------

_NAME = r"""["'](?:full|tied|diag|spherical)["']"""
_DISPATCH = re.compile(
    rf"""(?:==|!=)\s*{_NAME}"""  # ct == "full", ct != "tied"
    rf"""|{_NAME}\s*(?:==|!=)"""  # "full" == ct
    rf"""|\bin\s*[(\[{{]\s*{_NAME}"""  # ct in ("full", "tied")
)


def test_no_string_dispatch_on_covariance_type_in_the_package():
    root = pathlib.Path(torchem.__file__).parent
    table = root / "functional" / "covariance.py"
    hits = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if path != table
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _DISPATCH.search(line)
    ]
    assert not hits, "branch on the entry of COVARIANCE_TYPES instead:\n" + "\n".join(hits)


def test_the_grep_catches_what_it_should():
    for line in ('if covariance_type == "full":', "elif ct != 'tied':", 'if ct in ("full", "tied"):',
                 'if "spherical" == ct:', "x = ct in ['diag']"):
        assert _DISPATCH.search(line), line
    for line in ('GaussianMixture(2, covariance_type="full")', 'kind = {"full": 1}'):
        assert not _DISPATCH.search(line), line


# --------------------------------------------------------------------------------------------
# The table's declarations
# --------------------------------------------------------------------------------------------


def test_the_table_holds_scikit_learns_types():
    assert list(COVARIANCE_TYPES) == ["full", "tied", "diag", "spherical"]
    assert G.COVARIANCE_TYPES is COVARIANCE_TYPES
    for name, entry in COVARIANCE_TYPES.items():
        assert isinstance(entry, CovarianceType) and entry.name == name and lookup(name) is entry
    with pytest.raises(ValueError, match="unknown covariance_type 'banana'"):
        lookup("banana")


@pytest.mark.parametrize("ct", ENTRIES, ids=IDS)
def test_shapes_and_counts_match_sklearn(ct, sklearn_fits):
    X, fits = sklearn_fits
    sk = fits[ct.name]
    shape = ct.factor_shape(K, D)
    assert len(shape) == ct.event_ndim
    assert sk.precisions_cholesky_.shape == shape
    assert sk.covariances_.shape == shape
    assert sk.precisions_.shape == shape
    assert G.n_parameters(K, D, ct.name) == sk._n_parameters()
    for k, d in ((1, 1), (2, 3), (5, 7), (4, 16)):
        assert ct.n_covariance_parameters(k, d) == _sklearn_n_cov_parameters(k, d, ct.name)
    eye = ct.identity_factor((2,), K, D, "cpu", torch.float64)
    assert eye.shape == (2, *shape)
    torch.testing.assert_close(ct.dense_covariances(ct.covariances(eye), K, D),
                               torch.eye(D, dtype=torch.float64).expand(2, K, D, D))
    xc = torch.randn(2, 5, D, dtype=torch.float64)
    assert ct.features(xc).shape == (2, 5, ct.expansion_width(D))
    assert ct.features(xc, {}).shape == (2, 5, ct.expansion_width(D))
    assert ct.workspace_width(D) >= ct.expansion_width(D)


@pytest.mark.parametrize("ct", ENTRIES, ids=IDS)
def test_factor_conversions_match_sklearn(ct, sklearn_fits):
    X, fits = sklearn_fits
    sk = fits[ct.name]
    cov = torch.from_numpy(sk.covariances_)
    prec_chol, failed = ct.factor_from_covariances(cov)
    assert not failed.any()
    torch.testing.assert_close(prec_chol, torch.from_numpy(sk.precisions_cholesky_), rtol=1e-10, atol=1e-12)
    # round trips in float64
    torch.testing.assert_close(ct.covariances(prec_chol), cov, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ct.precisions(prec_chol), torch.from_numpy(sk.precisions_), rtol=1e-10, atol=1e-12)
    back, failed = ct.factor_from_precisions(ct.precisions(prec_chol))
    assert not failed.any()
    torch.testing.assert_close(back, prec_chol, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ct.from_unconstrained(ct.to_unconstrained(prec_chol)), prec_chol, rtol=1e-14, atol=0)
    want = _compute_log_det_cholesky(sk.precisions_cholesky_, ct.name, D)  # [K], the same for tied
    got = ct.component_log_det(prec_chol, D).expand(K)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("ct", ENTRIES, ids=IDS)
def test_covariances_from_statistics_match_sklearn(ct, sklearn_fits):
    X, fits = sklearn_fits
    resp = fits[ct.name].predict_proba(X)
    _, _, want = _estimate_gaussian_parameters(X, resp, 1e-6, ct.name)
    Xt, rt = torch.from_numpy(X), torch.from_numpy(resp)
    means = torch.from_numpy(fits[ct.name].means_)
    prec_chol, _ = ct.factor_from_covariances(torch.from_numpy(fits[ct.name].covariances_))
    stats = G.gaussian_stats(Xt, rt, means, prec_chol, ct.name)
    _, _, new_prec_chol, failed = G.gaussian_m_step(stats, means, ct.name, 1e-6)
    assert not failed.any()
    np.testing.assert_allclose(ct.covariances(new_prec_chol).numpy(), want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("ct", ENTRIES, ids=IDS)
def test_dense_covariances_roots_and_components_agree(ct, sklearn_fits):
    _, fits = sklearn_fits
    sk = fits[ct.name]
    cov = torch.from_numpy(sk.covariances_)
    dense = ct.dense_covariances(cov, K, D)  # [K, D, D]
    assert dense.shape == (K, D, D)
    root = ct.square_roots(cov, 0.01, K, D)
    torch.testing.assert_close(root @ root.mT, dense - 0.01 * torch.eye(D, dtype=torch.float64))
    loc = torch.from_numpy(sk.means_)
    prec_chol, _ = ct.factor_from_covariances(cov)
    comp = ct.component_distribution(loc, prec_chol)
    assert comp.batch_shape == (K,) and comp.event_shape == (D,)
    x = torch.randn(6, 1, D, dtype=torch.float64)
    want = torch.distributions.MultivariateNormal(loc, covariance_matrix=dense).log_prob(x)
    torch.testing.assert_close(comp.log_prob(x), want)
    # the components give the factor back (and the other kind of component is refused)
    if isinstance(comp, torch.distributions.MultivariateNormal):
        torch.testing.assert_close(ct.factor_from_scale_tril(comp.scale_tril), prec_chol)
        with pytest.raises(ValueError, match="Independent"):
            ct.factor_from_scale(torch.ones(K, D, dtype=torch.float64))
    else:
        torch.testing.assert_close(ct.factor_from_scale(comp.base_dist.scale), prec_chol)
        with pytest.raises(ValueError, match="MultivariateNormal"):
            ct.factor_from_scale_tril(torch.eye(D, dtype=torch.float64).expand(K, D, D))


@pytest.mark.parametrize("ct", ENTRIES, ids=IDS)
def test_drawn_noise_has_the_covariance(ct, sklearn_fits):
    _, fits = sklearn_fits
    cov = torch.from_numpy(fits[ct.name].covariances_)
    prec_chol, _ = ct.factor_from_covariances(cov)
    n = 200_000
    z = torch.randn(1, n, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    labels = torch.full((1, n), 1)
    noise = ct.draw_noise(z, prec_chol.unsqueeze(0), labels)[0]
    torch.testing.assert_close(noise.T @ noise / n, ct.dense_covariances(cov, K, D)[1], rtol=0.02, atol=0.02)
