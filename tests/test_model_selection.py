"""GaussianMixtureIC: every model of the batched grid is the GaussianMixture fit of its K and
covariance type from the same random_state (criteria against the single fits' bic()/aic(),
the chosen model against the single fit), on in-memory, memory-mapped and DataLoader data."""

import doctest
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from torchem import ConvergenceWarning, GaussianMixture, GaussianMixtureIC, NotFittedError
from torchem.data import TensorSource
from torchem.em import Family, run_em

TYPES = ("full", "tied", "diag", "spherical")


@pytest.fixture(scope="module")
def X():
    """Three clusters of different shapes in 3-D, float64 (BIC prefers K=3)."""
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(150, 3)) * [1.0, 0.5, 2.0], rng.normal(size=(150, 3)) + 5.0,
             rng.normal(size=(100, 3)) * 0.3 - 4.0]
    data = np.concatenate(parts)
    return data[rng.permutation(len(data))]


@pytest.fixture(scope="module")
def ic(X):
    return GaussianMixtureIC((1, 2, 3, 5), covariance_type=TYPES, n_init=2, random_state=0).fit(X)


def _single(k, t, **kw):
    return GaussianMixture(k, covariance_type=t, n_init=2, random_state=0, **kw)


@pytest.mark.parametrize("t, k", [("full", 3), ("tied", 2), ("diag", 5), ("spherical", 1), ("full", 5)])
def test_each_cell_is_the_single_fit_from_the_same_start(X, ic, t, k):
    single = _single(k, t).fit(X)
    row, col = TYPES.index(t), (1, 2, 3, 5).index(k)
    np.testing.assert_allclose(ic.bic_[row, col], single.bic(X), rtol=1e-10)
    np.testing.assert_allclose(ic.aic_[row, col], single.aic(X), rtol=1e-10)
    np.testing.assert_allclose(ic.lower_bound_[row, col], single.lower_bound_, rtol=1e-10)
    assert ic.n_iter_[row, col] == single.n_iter_
    assert ic.converged_[row, col] == single.converged_


def test_the_chosen_model_is_the_single_fit_and_answers_for_the_grid(X, ic):
    assert ic.criterion_.shape == (4, 4) and np.array_equal(ic.criterion_, ic.bic_)
    row, col = np.unravel_index(np.argmin(ic.bic_), ic.bic_.shape)
    assert (ic.covariance_type_, ic.n_components_) == (TYPES[row], (1, 2, 3, 5)[col]) and ic.best_index_ == (row, col)
    assert ic.n_components_ == 3  # three clusters
    best, single = ic.best_estimator_, _single(ic.n_components_, ic.covariance_type_).fit(X)
    assert isinstance(best, GaussianMixture) and best.n_components == 3
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(best, name), getattr(single, name), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(best.lower_bounds_, single.lower_bounds_, rtol=1e-10)
    np.testing.assert_array_equal(ic.predict(X), single.predict(X))
    np.testing.assert_allclose(ic.predict_proba(X), single.predict_proba(X), atol=1e-10)
    np.testing.assert_allclose(ic.score_samples(X), single.score_samples(X), rtol=1e-10)
    np.testing.assert_allclose(ic.score(X), single.score(X), rtol=1e-10)
    np.testing.assert_allclose(ic.bic(X), ic.bic_[row, col], rtol=1e-10)
    Xs, ys = ic.sample(50)
    assert Xs.shape == (50, 3) and ys.shape == (50,)
    best.partial_fit(X[:100])  # the chosen model is usable on its own
    assert np.all(np.isfinite(best.means_))


def test_aic_chooses_by_aic(X):
    ic = GaussianMixtureIC((1, 2, 3, 4), covariance_type=("diag", "full"), criterion="aic", random_state=0).fit(X)
    assert np.array_equal(ic.criterion_, ic.aic_)
    assert ic.criterion_[ic.best_index_] == ic.aic_.min()
    single = GaussianMixture(ic.n_components_, covariance_type=ic.covariance_type_, random_state=0).fit(X)
    np.testing.assert_allclose(ic.criterion_.min(), single.aic(X), rtol=1e-10)


def test_one_start_per_cell_is_the_single_fit_for_every_k(X):
    """n_init=1: restart 0 of every K takes its k-means++ seeds from one run per number of
    candidates (K = 1, 2 share one; 3 and 5 another; 8 its own): each cell is still its single fit."""
    ks = (1, 2, 3, 5, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ic = GaussianMixtureIC(ks, covariance_type=("diag", "full"), random_state=3).fit(X)
        for row, t in enumerate(("diag", "full")):
            for col, k in enumerate(ks):
                single = GaussianMixture(k, covariance_type=t, random_state=3).fit(X)
                np.testing.assert_allclose(ic.bic_[row, col], single.bic(X), rtol=1e-10)
                np.testing.assert_allclose(ic.lower_bound_[row, col], single.lower_bound_, rtol=1e-10)
                assert ic.n_iter_[row, col] == single.n_iter_


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_padded_components_change_nothing(X):
    """K=1 and K=2 padded with masked components to K=7: the same fits as alone (and as in a
    grid without the larger model), finite everywhere, float32 data far from the origin too."""
    small = GaussianMixtureIC((1, 2), covariance_type=TYPES, random_state=0).fit(X)
    padded = GaussianMixtureIC((1, 2, 7), covariance_type=TYPES, random_state=0, max_iter=20).fit(X)
    np.testing.assert_allclose(padded.bic_[:, :2], small.bic_, rtol=1e-10)
    np.testing.assert_array_equal(padded.n_iter_[:, :2], small.n_iter_)
    far = (X + 1e4).astype(np.float32)
    ic32 = GaussianMixtureIC((1, 2, 7), covariance_type=TYPES, random_state=0).fit(far)
    assert np.all(np.isfinite(ic32.bic_)) and np.all(np.isfinite(ic32.lower_bound_))
    assert ic32.best_estimator_.means_.dtype == np.float32
    single = GaussianMixture(2, covariance_type="diag", random_state=0).fit(far)
    np.testing.assert_allclose(ic32.bic_[2, 1], single.bic(far), rtol=1e-4)


def test_streamed_data_gives_the_same_grid(X, tmp_path):
    ref = GaussianMixtureIC((1, 3), covariance_type=("full", "spherical"), random_state=0).fit(X)
    path = tmp_path / "x.npy"
    np.save(path, X)
    mm = np.load(path, mmap_mode="r")
    loader = DataLoader(TensorDataset(torch.from_numpy(X)), batch_size=64)
    for data in (mm, loader):
        ic = GaussianMixtureIC((1, 3), covariance_type=("full", "spherical"), random_state=0, chunk_size=100).fit(data)
        np.testing.assert_allclose(ic.bic_, ref.bic_, rtol=1e-9)
        np.testing.assert_array_equal(ic.n_iter_, ref.n_iter_)
        np.testing.assert_array_equal(ic.predict(mm), ref.predict(X))


def test_sample_weight_counts_as_repeated_rows(X):
    w = np.random.default_rng(3).integers(1, 3, len(X)).astype(float)
    ic = GaussianMixtureIC((1, 2, 3), covariance_type=("tied", "diag"), random_state=0).fit(X, sample_weight=w)
    single = GaussianMixture(2, covariance_type="tied", random_state=0).fit(X, sample_weight=w)
    np.testing.assert_allclose(ic.bic_[0, 1], single.bic(X, sample_weight=w), rtol=1e-10)


def test_tensor_input_and_float64_module():
    rng = np.random.default_rng(1)
    Xt = torch.from_numpy(np.concatenate([rng.normal(size=(80, 2)), rng.normal(size=(80, 2)) + 5])).float()
    ic = GaussianMixtureIC((1, 2, 3), covariance_type="full", random_state=0).double().fit(Xt)
    assert ic.best_estimator_.means_.dtype == torch.float64 and ic.criterion_.shape == (1, 3)
    assert isinstance(ic.predict(Xt), torch.Tensor) and ic.n_components_ == 2


def test_a_failing_model_is_left_out_with_a_warning():
    """Ten copies of one point and reg_covar=0: every model with K >= 2 gives them a component
    of zero covariance (GaussianMixture raises); the grid reports those models with an
    infinite criterion and a warning, and chooses among the others."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(100, 2)), np.tile([[20.0, 20.0]], (10, 1))])
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        GaussianMixture(2, covariance_type="full", reg_covar=0.0, random_state=0).fit(X)
    with pytest.warns(RuntimeWarning, match="4 model.* failed and are left out .*full K=2"):
        ic = GaussianMixtureIC((1, 2, 3), covariance_type=("full", "diag"), reg_covar=0.0, random_state=0).fit(X)
    assert np.isinf(ic.criterion_[:, 1:]).all() and np.isfinite(ic.criterion_[:, 0]).all()
    assert ic.n_components_ == 1
    np.testing.assert_allclose(ic.criterion_[0, 0], GaussianMixture(1, reg_covar=0.0).fit(X).bic(X), rtol=1e-10)
    with pytest.raises(ValueError, match="Every model of the grid failed|ill-defined"):
        GaussianMixtureIC((2, 3), covariance_type="full", reg_covar=0.0, random_state=0).fit(X)


def test_convergence_warning_names_the_unfinished_models(X):
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        GaussianMixtureIC((2, 3), covariance_type="full", max_iter=1, random_state=0).fit(X)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_components": ()}, "n_components"), ({"n_components": (2, 2)}, "distinct"),
    ({"n_components": (0, 1)}, "n_components"), ({"n_components": "abc"}, "n_components"),
    ({"covariance_type": ("full", "cholesky")}, "covariance_type"), ({"covariance_type": 3}, "covariance_type"),
    ({"criterion": "hqic"}, "criterion"), ({"reg_covar": -1.0}, "reg_covar"), ({"init_params": "x"}, "init_params"),
    ({"n_init": 0}, "n_init"),
])
def test_bad_arguments_are_clear_errors(X, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixtureIC(**kwargs).fit(X)


def test_bad_data_and_unfitted_use_are_clear_errors(X):
    with pytest.raises(ValueError, match="one problem"):
        GaussianMixtureIC((1, 2)).fit(np.stack([X, X]))
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixtureIC((1, 5)).fit(X[:4])
    with pytest.raises(NotFittedError):
        GaussianMixtureIC().predict(X)
    with pytest.raises(NotFittedError):
        GaussianMixtureIC().criterion_  # noqa: B018


def test_the_docstring_opens_with_an_example_that_runs():
    doc = GaussianMixtureIC.__doc__.split("\n\n", 1)[1].lstrip()
    assert doc.startswith("Example:")
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder(recurse=False).find(GaussianMixtureIC, "GaussianMixtureIC"):
        runner.run(test)
    assert runner.tries >= 5 and runner.failures == 0


def test_a_failed_refit_keeps_the_previous_fit(X):
    ic = GaussianMixtureIC((1, 2), covariance_type="diag", random_state=0).fit(X)
    before = ic.criterion_.copy()
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        ic.fit(bad)
    np.testing.assert_array_equal(ic.criterion_, before)


@pytest.mark.cuda
def test_grid_on_cuda_equals_the_cpu_grid(X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = GaussianMixtureIC((1, 2, 3), covariance_type=TYPES, random_state=0).fit(X)
        gpu = GaussianMixtureIC((1, 2, 3), covariance_type=TYPES, random_state=0).to("cuda").fit(torch.from_numpy(X).cuda())
    assert gpu.best_estimator_.means_.device.type == "cuda"
    np.testing.assert_allclose(gpu.bic_, cpu.bic_, rtol=1e-6)
    assert (gpu.n_components_, gpu.covariance_type_) == (cpu.n_components_, cpu.covariance_type_)


@pytest.mark.parametrize("init_params", ["random", "k-means++", "random_from_data"])
def test_every_initialisation_gives_the_single_fits(X, init_params):
    """Every covariance type: the grid's tied scatter once counted every row, although a
    chosen-sample start (k-means++, random_from_data) gives most rows no responsibility (the
    start's tied covariance 4.0 off, the fit's weights 0.16 off)."""
    ic = GaussianMixtureIC((1, 3), covariance_type=TYPES, init_params=init_params, n_init=2,
                           random_state=1).fit(X)
    for row, t in enumerate(TYPES):
        for col, k in enumerate((1, 3)):
            single = GaussianMixture(k, covariance_type=t, init_params=init_params, n_init=2, random_state=1).fit(X)
            np.testing.assert_allclose(ic.bic_[row, col], single.bic(X), rtol=1e-10)


class _Halving(Family):
    """A toy family for the driver: parameter ``m [B, R, 1]`` halves at every M-step, and the
    M-step of restart 1 fails at its third update."""

    def __init__(self):
        self.calls = 0

    def prepare(self, params, precise=False):
        return {}

    def log_prob(self, X, prepared):
        return -X.square().sum(-1, keepdim=True).expand(X.shape[0], 2, X.shape[2], 1), None

    def stats(self, X, resp, prepared, aux, sample_weight):
        return {"n": resp.sum((-2, -1)).double()}

    def m_step(self, stats, params):
        self.calls += 1
        failed = torch.zeros(params["m"].shape[:2], dtype=torch.bool)
        failed[:, 1] = self.calls >= 3
        return {"m": params["m"] / 2, "log_weights": params["log_weights"]}, failed


def test_the_driver_freezes_a_failed_restart_and_runs_the_others():
    """run_em(freeze_failed=True), which the grid runs with: the failed restart keeps the
    parameters of its last good update and stops, marked failed; the others run on; without
    the option the failure is the fit's error."""
    source = TensorSource(torch.zeros(1, 10, 1, dtype=torch.float64), device=torch.device("cpu"), dtype=torch.float64,
                          chunk_size=10)
    params = {"m": torch.ones(1, 2, 1, dtype=torch.float64), "log_weights": torch.zeros(1, 2, 1, dtype=torch.float64)}
    result = run_em(_Halving(), source, params, tol=-1.0, max_iter=5, freeze_failed=True)
    np.testing.assert_array_equal(result.failed.numpy(), [[False, True]])
    np.testing.assert_array_equal(result.params["m"][0, :, 0].numpy(), [1 / 32, 1 / 4])  # 5 updates; 2, then frozen
    np.testing.assert_array_equal(result.n_iter.numpy(), [[5, 2]])
    assert not result.converged.any()
    with pytest.raises(ValueError, match="boom"):
        run_em(_Halving(), source, params, tol=-1.0, max_iter=5, failure_message="boom")


@pytest.mark.parametrize("covariance_type", TYPES)
def test_a_start_far_from_the_first_chunk_fits_as_the_single_model(covariance_type):
    """Clusters 1e6 apart, ``random_from_data``: the grid's initial moments about the first
    chunk's mean cancelled (a single chosen row 1e6 from it) and the grid refused to fit; its
    start is now taken again about the chosen rows, and three iterations equal the single
    model's (whose trajectory is float64's own here: both within 2e-6 of each other)."""
    rng = np.random.default_rng(4)
    data = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(1e6, 1, (150, 2))])
    kw = dict(init_params="random_from_data", random_state=2, max_iter=3, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter reached
        best = GaussianMixtureIC((3,), covariance_type=(covariance_type,), **kw).fit(data).best_estimator_
        single = GaussianMixture(3, covariance_type=covariance_type, **kw).fit(data)
    np.testing.assert_allclose(best.weights_, single.weights_, rtol=1e-9)
    np.testing.assert_allclose(best.means_, single.means_, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(best.covariances_, single.covariances_, rtol=1e-8, atol=1e-12)


def test_a_state_dict_is_refused_rather_than_mixed_into_another_fit():
    """A fitted GaussianMixtureIC loaded another's state_dict (the chosen model's parameters
    only): best_estimator_ became the other fit under this fit's criteria (bic(X) 2003.7 against
    bic_ 825.2 of the model it reported). Now a clear TypeError that leaves the estimator as it
    was and says how to save it; the chosen model's own state_dict loads into a GaussianMixture."""
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(size=(40, 3)), rng.normal(size=(40, 3)) + 5])
    a = GaussianMixtureIC((1, 2), covariance_type=("diag", "spherical"), random_state=0).fit(X)
    b = GaussianMixtureIC((1, 2), covariance_type=("diag", "spherical"), random_state=0).fit(3 * X + 7)
    means = a.best_estimator_.means_.copy()
    for target in (a, GaussianMixtureIC((1, 2), covariance_type=("diag", "spherical"))):
        with pytest.raises(TypeError, match=r"cannot load a state_dict.*ic.best_estimator_.state_dict\(\)"):
            target.load_state_dict(b.state_dict())
    np.testing.assert_array_equal(a.best_estimator_.means_, means)
    np.testing.assert_allclose(a.bic(X), a.bic_[a.best_index_], rtol=1e-10)
    single = GaussianMixture(b.n_components_, covariance_type=b.covariance_type_)
    single.load_state_dict(b.best_estimator_.state_dict())
    np.testing.assert_array_equal(single.predict_proba(X), b.predict_proba(X))
