"""No silent wrong answers: data that never changes meaning, fits that are never half-lost,
hyper-parameters changed after a fit, and clear errors (issue 12)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from torchem import GaussianMixture, KMeans, NotFittedError


def _blobs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, (n // 2, 2)), rng.normal(6, 1, (n - n // 2, 2))])


# ------------------------------------------------------------------------------------------------
# Fits are transactional
# ------------------------------------------------------------------------------------------------

_INTERNALS = set(torch.nn.Module().__dict__) | {"_training"}


def _state(model):
    """Everything a model holds: its parameters, buffers and private attributes (deep copies)."""
    params = {k: None if v is None else (v.detach().clone(), v.requires_grad) for k, v in model._parameters.items()}
    attrs = {k: copy.deepcopy(v) for k, v in model.__dict__.items() if k not in _INTERNALS}
    return params, {k: v.clone() for k, v in model._buffers.items()}, attrs


def _equal(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    return type(a) is type(b) and a == b


class _Boom(Exception):
    pass


def _models():
    return [GaussianMixture(2, random_state=0, max_iter=20), KMeans(2, random_state=0, n_init=2, max_iter=20)]


# the stages of a fit where a failure is injected: (name, how to inject it)
def _fail_in(method_name, after_calls=0):
    def inject(monkeypatch, model, error):
        original = getattr(type(model), method_name)
        calls = []

        def failing(self, *args, **kwargs):
            calls.append(1)
            if len(calls) > after_calls:
                raise error
            return original(self, *args, **kwargs)

        monkeypatch.setattr(type(model), method_name, failing)
    return inject


_STAGES = {
    "initialisation": _fail_in("_starting_params"),
    "selection": _fail_in("_select"),
    "storing": _fail_in("_store"),
    "after_fit": _fail_in("_after_fit"),
}


@pytest.mark.parametrize("error", [_Boom("injected"), KeyboardInterrupt()], ids=["exception", "interrupt"])
@pytest.mark.parametrize("stage", [*_STAGES, "callback_iteration_2"])
@pytest.mark.parametrize("fitted", [True, False], ids=["refit", "first_fit"])
@pytest.mark.parametrize("which", [0, 1], ids=["gmm", "kmeans"])
def test_a_failed_fit_changes_nothing(monkeypatch, which, fitted, stage, error):
    X = _blobs()
    model = _models()[which]
    if fitted:
        model.fit(X)
        model.partial_fit(X[:50])  # a running stream state too
        expected = model.predict(X)
    before = _state(model)
    def failing_callback(it, lb, m):
        if it >= 2:
            raise error

    callback = None
    if stage in _STAGES:
        _STAGES[stage](monkeypatch, model, error)
    else:
        callback = failing_callback
    with pytest.raises(type(error)):
        model.fit(X + 3.0, callback=callback)
    monkeypatch.undo()
    assert _equal(_state(model), before)
    if fitted:
        np.testing.assert_array_equal(model.predict(X), expected)
    else:
        assert not hasattr(model, "n_features_in_")
        with pytest.raises(Exception, match="not fitted"):
            model.predict(X)


@pytest.mark.parametrize("error", [_Boom("injected"), KeyboardInterrupt()], ids=["exception", "interrupt"])
@pytest.mark.parametrize("which", [0, 1], ids=["gmm", "kmeans"])
def test_a_failed_partial_fit_changes_nothing(monkeypatch, which, error):
    X = _blobs()
    model = _models()[which]
    model.fit(X)
    model.partial_fit(X[:50])
    before = _state(model)
    # fail after the update rule ran (it changes the running state in place) but before storing
    _fail_in("_record")(monkeypatch, model, error)
    with pytest.raises(type(error)):
        model.partial_fit(X[50:120] + 1.0)
    monkeypatch.undo()
    assert _equal(_state(model), before)
    # the stream continues exactly as if the failed batch had never been given
    reference = _models()[which].fit(X)
    reference.partial_fit(X[:50])
    model.partial_fit(X[120:])
    reference.partial_fit(X[120:])
    assert _equal(_state(model)[0], _state(reference)[0])


# ------------------------------------------------------------------------------------------------
# Hyper-parameters changed after a fit
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, change", [
    (GaussianMixture(2, random_state=0), {"n_components": 3}),
    (GaussianMixture(2, random_state=0), {"covariance_type": "diag"}),
    (KMeans(2, random_state=0), {"n_clusters": 3}),
])
def test_changed_structure_is_refused_until_refit(model, change):
    X = _blobs()
    model.fit(X)
    model.set_params(**change)
    key = next(iter(change))
    with pytest.raises(ValueError, match=f"fitted with {key}=.*Call fit"):
        model.predict(X)
    with pytest.raises(ValueError, match=f"fitted with {key}="):
        model.score(X)
    # not fitted as it stands: NotFittedError (also an AttributeError), so hasattr is False
    fitted_attr = "cluster_centers_" if isinstance(model, KMeans) else "means_"
    with pytest.raises(NotFittedError, match=f"fitted with {key}="):
        getattr(model, fitted_attr)
    assert not hasattr(model, fitted_attr)
    model.fit(X)
    assert model.predict(X).shape == (len(X),)
    assert hasattr(model, fitted_attr)


def test_warm_start_with_a_changed_structure_starts_afresh():
    X = _blobs()
    model = GaussianMixture(2, warm_start=True, random_state=0).fit(X)
    model.set_params(n_components=3)
    with pytest.warns(UserWarning, match="n_components changed from 2 to 3.*starts afresh"):
        model.fit(X)
    assert model.weights_.shape == (3,)
    assert model.predict_proba(X).shape == (len(X), 3)


@pytest.mark.parametrize("model, change, k", [
    (KMeans(2, random_state=0), {"n_clusters": 3}, 3),
    (GaussianMixture(2, random_state=0), {"covariance_type": "spherical"}, 2),
])
def test_partial_fit_with_a_changed_structure_starts_afresh(model, change, k):
    X = _blobs()
    model.fit(X)
    model.set_params(**change)
    with pytest.warns(UserWarning, match="starts afresh"):
        model.partial_fit(X)
    assert model.n_iter_ == 1
    assert model.predict(X).max() <= k - 1


# ------------------------------------------------------------------------------------------------
# Data never changes meaning: feature names
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", [0, 1], ids=["gmm", "kmeans"])
def test_feature_names_follow_scikit_learns_rule(which):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(0, 1, 300), rng.normal(0, 100, 300), rng.normal(50, 1, 300)])
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    model = _models()[which].fit(df)
    np.testing.assert_array_equal(model.feature_names_in_, ["a", "b", "c"])
    expected = model.score(df)
    for method in ("predict", "score", "score_samples", "predict_proba", "transform"):
        if not hasattr(model, method):
            continue
        with pytest.raises(ValueError, match="Feature names must be in the same order as they were in fit"):
            getattr(model, method)(df[["c", "a", "b"]])
        with pytest.raises(ValueError, match="(?s)unseen at fit time:\n- z\n.*seen at fit time, yet now missing:\n- c"):
            getattr(model, method)(df.rename(columns={"c": "z"}))
    with pytest.warns(UserWarning, match="X does not have valid feature names, but .* was fitted with feature names"):
        assert model.score(X) == pytest.approx(expected)
    with pytest.raises(ValueError, match="same order"):
        model.partial_fit(df[["b", "a", "c"]])
    # a refit on a plain array forgets the names; a DataFrame then warns the other way
    model.fit(X)
    assert not hasattr(model, "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names, but .* was fitted without feature names"):
        model.predict(df)


# ------------------------------------------------------------------------------------------------
# Data never changes meaning: weights in a stream are read only from {"X": ..., "sample_weight": ...}
# ------------------------------------------------------------------------------------------------

def test_a_second_item_of_a_stream_batch_is_never_read_as_weights():
    from torch.utils.data import DataLoader, TensorDataset

    X = torch.from_numpy(_blobs(400))
    labels = torch.linspace(0.0, 50.0, len(X), dtype=torch.float64)  # float labels, not weights
    for model in _models():
        with pytest.raises(ValueError, match=r"(?s)labels .*are not used.*\{'X': X, 'sample_weight': w\}"):
            model.fit(DataLoader(TensorDataset(X, labels), batch_size=64))
        # weights come from the mapping key, and equal in-memory weights
        w = torch.rand(len(X), generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
        rows = [{"X": x, "sample_weight": wi, "y": yi} for x, wi, yi in zip(X, w, labels)]
        streamed = type(model)(**model.get_params()).fit(DataLoader(rows, batch_size=64))
        memory = type(model)(**model.get_params()).fit(X, sample_weight=w)
        np.testing.assert_allclose(streamed.score(X, sample_weight=w), memory.score(X, sample_weight=w), rtol=1e-9)
        assert streamed.score(DataLoader(rows, batch_size=64)) == pytest.approx(float(memory.score(X, sample_weight=w)),
                                                                               rel=1e-9)
        with pytest.raises(ValueError, match="must hold the key 'X'.*'sample_weights'"):
            model.fit(DataLoader([{"X": x, "sample_weights": wi} for x, wi in zip(X, w)], batch_size=64))
        # partial_fit takes one such batch
        one = type(model)(**model.get_params()).partial_fit({"X": X, "sample_weight": w})
        two = type(model)(**model.get_params()).partial_fit(X, sample_weight=w)
        assert _equal(_state(one)[0], _state(two)[0])


# ------------------------------------------------------------------------------------------------
# Clear errors instead of bare internal ones
# ------------------------------------------------------------------------------------------------

def test_bare_internal_errors_become_clear_ones():
    from torch.utils.data import DataLoader

    from torchem import BernoulliMixture, BinomialMixture, fit_by_gradient

    X = _blobs()
    with pytest.raises(TypeError, match="n_trials must be a positive integer.*got None"):
        BinomialMixture(2, n_trials=None).fit(np.ones((20, 3)))
    with pytest.raises(ValueError, match=r"random_state must be an integer in \[0, 2\*\*64 - 1\]"):
        GaussianMixture(2, random_state=2**64).fit(X)
    GaussianMixture(2, random_state=2**64 - 1, max_iter=2).fit(X)  # the largest seed works
    with pytest.raises(TypeError, match="fit_by_gradient trains a torchem mixture.*got KMeans"):
        fit_by_gradient(KMeans(2), X)
    extra = {k: v for k, v in GaussianMixture(2, random_state=0).fit(X).state_dict().items() if k.endswith("_extra_state")}
    fresh = GaussianMixture(2)
    with pytest.raises(ValueError, match="marks this GaussianMixture fitted but holds no value for its parameter"):
        fresh.load_state_dict(extra, strict=False)
    with pytest.raises(Exception, match="not fitted"):
        fresh.predict(X)
    for model, data in [(KMeans(2), X), (BernoulliMixture(2), (X > 3).astype(float))]:
        rows = [{"X": torch.from_numpy(x), "sample_weight": torch.tensor(0.0, dtype=torch.float64)} for x in data]
        with pytest.raises(ValueError, match="sample weights of the stream X sum to zero") as err:
            model.fit(DataLoader(rows, batch_size=50))
        assert "reg_covar" not in str(err.value)


def test_kmeans_never_refuses_large_data_with_enough_distinct_points():
    n = 150_000  # more than the initial sample
    X = np.zeros((n, 2))
    X[n // 2 :] = 1.0
    X[12345] = [5.0, 5.0]  # a rare third point, missing from the initial sample at this seed
    km = KMeans(3, random_state=3, n_init=1).fit(X)
    assert sorted(map(tuple, np.round(km.cluster_centers_, 9))) == [(0, 0), (1, 1), (5, 5)]
    X[12345] = [1.0, 1.0]  # two distinct points only: fitted with coinciding centres, as scikit-learn does
    with pytest.warns(Warning, match=r"distinct clusters \(2\) found smaller than n_clusters \(3\)"):
        km = KMeans(3, random_state=3, n_init=1).fit(X)
    assert km.inertia_ == 0.0


# ------------------------------------------------------------------------------------------------
# Extreme finite queries: finite posteriors, or a clear error
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_extreme_finite_queries_give_finite_rows_or_a_clear_error(covariance_type):
    """Posteriors and labels of queries far beyond the components (to 1e200 in float64, where
    the log-densities overflow; 1e30 in float32) are those of the same directions at 1e4, where
    nothing rounds: a tied covariance is decided by the linear term, which the rounded
    quadratic hid (predict gave the first component, predict_proba rows summed to 2 in
    float32). The log-likelihood itself overflows there: a clear error."""
    X = _blobs()
    directions = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -3.0], [-2.0, 1.0]])
    for dtype, bigs in [(np.float64, (1e10, 1e150, 1e200)), (np.float32, (1e10, 1e19, 1e30))]:
        g = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(X.astype(dtype))
        near = g.predict((directions * 1e4).astype(dtype))
        for big in bigs:
            q = np.concatenate([directions * big, [[0.0, 0.0]]]).astype(dtype)
            p = g.predict_proba(q)
            assert np.isfinite(p).all() and np.allclose(p.sum(1), 1.0, atol=1e-6)
            np.testing.assert_array_equal(p[:-1].argmax(1), near)
            np.testing.assert_array_equal(g.predict(q)[:-1], near)
    g64 = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(X)
    assert np.isfinite(g64.score_samples(np.array([[1e150, -1e150], [0.0, 0.0]]))).all()
    with pytest.raises(ValueError, match="overflows float64.*scale the data"):
        g64.score_samples(np.array([[1e200, 1e200]]))
    g32 = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(X.astype(np.float32))
    with pytest.raises(ValueError, match="overflows torch.float32"):
        g32.score_samples(np.array([[1e21, 1e21]], dtype=np.float32))


def test_extreme_finite_queries_of_kmeans_and_the_discrete_families():
    X = np.array([[0.0, 0.0], [0.0, 1.0], [6.0, 6.0], [6.0, 7.0]])
    for dtype, big in [(np.float64, 1e30), (np.float64, 1e200), (np.float32, 1e10), (np.float32, 1e30)]:
        km = KMeans(2, init=np.array([[6.0, 6.0], [0.0, 0.0]]), n_init=1).fit(X.astype(dtype))
        q = np.array([[big, big], [-big, -big], [0.0, 0.0]], dtype=dtype)
        # the nearest centre: was the first one wherever the squared distances rounded alike
        np.testing.assert_array_equal(km.predict(q), [0, 1, 1])
        d = km.transform(q)  # was inf at 1e200, where the distances themselves are finite
        np.testing.assert_allclose(d[:2], np.sqrt(2) * big, rtol=1e-6)
        if big > 1e154:  # its square overflows float64
            with pytest.raises(ValueError, match="squared distance to a centre overflows"):
                km.score(q)
        else:
            assert np.isclose(km.score(q), -4 * big**2, rtol=1e-6)
    from torchem import PoissonMixture

    rng = np.random.default_rng(0)
    for dtype, big in [(np.float64, 1e200), (np.float32, 1e30)]:
        pm = PoissonMixture(2, random_state=0).fit(rng.poisson([[3.0, 30.0]] * 50 + [[30.0, 3.0]] * 50).astype(dtype))
        q = np.array([[big, 0.0], [0.0, big], [3.0, 30.0]], dtype=dtype)
        p = pm.predict_proba(q)
        assert np.isfinite(p).all() and np.allclose(p.sum(1), 1.0) and np.isfinite(pm.score_samples(q)).all()
        assert (p[:2].argmax(1) == pm.rates_.argmax(0)).all()  # the component with the larger rate


# ------------------------------------------------------------------------------------------------
# Exact at any offset and separation: partial_fit and streams
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("offset", [1e7, 1e8])
@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_partial_fit_keeps_its_precision_when_a_component_moves_far_from_its_start(covariance_type, offset):
    """Stepwise statistics were taken about the stream's first parameters for ever: a component
    that started 1e5 from its cluster (two clusters 1e7 apart) lost eps * 1e10 at every step
    (covariances 4e-5 off). The running statistics now follow the parameters, and a step whose
    component moves that far takes the batch's moments again about the new means (the first
    step here was 3.7e-5 off, eps * 1e10 and more); compared with a NumPy stepwise EM whose
    moments are kept about each component's own mean. The running statistics are re-centred
    through moment points taken relative to the means (at 1e8, points formed in absolute
    coordinates rounded the later steps' covariances by 2e-8)."""
    from .reference_em import gaussian_stepwise

    rng = np.random.default_rng(0)
    batches = [np.concatenate([rng.normal(0, 1, (20, 2)), rng.normal(offset, 1, (20, 2))]) for _ in range(30)]
    start = np.array([[0.0, 0.0], [offset - 1e5, offset]])
    cov0 = np.stack([np.eye(2)] * 2) if covariance_type == "full" else np.ones(2)
    model = GaussianMixture(2, covariance_type=covariance_type, means_init=start, precisions_init=cov0, weights_init=[0.5, 0.5])
    for t, batch in enumerate(batches, 1):
        model.partial_fit(batch)
        if t in (1, len(batches)):
            weights, means, cov = gaussian_stepwise(batches[:t], [0.5, 0.5], start, cov0, covariance_type)
            np.testing.assert_allclose(model.means_, means, rtol=1e-15, atol=1e-8)
            np.testing.assert_allclose(model.weights_, weights, rtol=1e-12)
            assert np.abs(model.covariances_ - cov).max() < 1e-8 * np.abs(cov).max(), t


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_batch_em_from_a_far_start_is_exact_from_its_first_iteration(covariance_type):
    """Batch EM whose start lies 1e5 from its cluster (two clusters 1e7 apart): the precise pass
    took its moments about the old means, so the first M-step lost eps * 1e10 (1.1e-6 of a
    variance); a pass whose new means lie that far is now taken again about them. Every
    iteration count equals the NumPy EM with centred differences to 1e-8 of the covariances."""
    from .reference_em import gaussian_em

    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(1e7, 1, (200, 2))])
    start = np.array([[0.0, 0.0], [1e7 - 1e5, 1e7]])
    cov0 = {"full": np.stack([np.eye(2)] * 2), "tied": np.eye(2), "diag": np.ones((2, 2)), "spherical": np.ones(2)}[covariance_type]
    for n_iter in (1, 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # max_iter reached
            model = GaussianMixture(2, covariance_type=covariance_type, means_init=start, precisions_init=cov0,  # identities: their own inverses
                                    weights_init=[0.5, 0.5], max_iter=n_iter, tol=0.0).fit(X)
        weights, means, cov, _ = gaussian_em(X, [0.5, 0.5], start, cov0, covariance_type, n_iter=n_iter)
        np.testing.assert_allclose(model.means_, means, rtol=1e-15, atol=1e-8)
        np.testing.assert_allclose(model.weights_, weights, rtol=1e-12)
        assert np.abs(model.covariances_ - cov).max() < 1e-8 * np.abs(cov).max(), n_iter


def test_partial_fit_far_first_step_stays_exact_with_missing_entries_labels_and_problems():
    """The recentred step reads the batch as the first pass does: missing entries expected under
    the current parameters, labelled rows held to their component, B problems at once. NaN only
    in the near cluster's rows and labels only on the far one's, so the far component's moments
    are those of its cluster's rows, as the NumPy reference on complete rows gives them."""
    from .reference_em import gaussian_stepwise

    rng = np.random.default_rng(3)
    clean = [np.concatenate([rng.normal(0, 1, (20, 2)), rng.normal(c, 1, (20, 2))]) for c in (1e7, 3e7)]
    starts = np.stack([[[0.0, 0.0], [c - 1e5, c]] for c in (1e7, 3e7)])
    X = np.stack(clean)
    X[:, [0, 3, 7], 1] = np.nan
    labels = np.full((2, 40), -1)
    labels[:, 25:30] = 1
    model = GaussianMixture(2, means_init=starts, precisions_init=np.broadcast_to(np.eye(2), (2, 2, 2, 2)),
                            weights_init=np.full((2, 2), 0.5), nan_policy="marginalize")
    model.partial_fit(X, labels=labels)
    for b in range(2):
        complete = np.delete(clean[b], [0, 3, 7], axis=0)
        _, means, cov = gaussian_stepwise([complete], [0.5, 0.5], starts[b], np.stack([np.eye(2)] * 2), "full")
        np.testing.assert_allclose(model.means_[b, 1], means[1], rtol=1e-15, atol=1e-8)
        assert np.abs(model.covariances_[b, 1] - cov[1]).max() < 1e-8 * np.abs(cov[1]).max()


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_float64_responsibilities_of_components_far_from_their_common_centre_are_exact(covariance_type):
    """Two overlapping components at the origin share their cluster's rows, while a third sits
    1e6 away: the E-step's expansion about the means' common centre (3.3e5 from the shared
    cluster) rounded each log-density by eps * 1e11 = 2e-5 nats in float64, so the shared rows'
    responsibilities and the two components' covariances came out ~1e-5 off. Such a pass now
    takes its log-densities from the differences x - mu; one and three iterations equal the
    NumPy EM with centred differences to 1e-10."""
    from .reference_em import gaussian_em

    rng = np.random.default_rng(4)
    X = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(1e6, 1, (150, 2))])
    means0 = np.array([[-0.5, 0.2], [0.6, -0.1], [1e6, 1e6]])
    cov0 = {"full": np.stack([np.eye(2), 2 * np.eye(2), np.eye(2)]), "tied": 1.5 * np.eye(2),
            "diag": np.array([[1.0, 1.0], [2.0, 2.0], [1.0, 1.0]]), "spherical": np.array([1.0, 2.0, 1.0])}[covariance_type]
    prec0 = {"full": lambda c: np.linalg.inv(c), "tied": lambda c: np.linalg.inv(c)}.get(covariance_type, lambda c: 1 / c)(cov0)
    weights0 = np.array([0.3, 0.3, 0.4])
    for n_iter in (1, 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # max_iter reached
            model = GaussianMixture(3, covariance_type=covariance_type, weights_init=weights0, means_init=means0,
                                    precisions_init=prec0, max_iter=n_iter, tol=0.0).fit(X)
        weights, means, cov, _ = gaussian_em(X, weights0, means0, cov0, covariance_type, n_iter=n_iter)
        np.testing.assert_allclose(model.weights_, weights, rtol=1e-10)
        np.testing.assert_allclose(model.means_, means, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(model.covariances_, cov, rtol=1e-10, atol=1e-10)
        resp = model.predict_proba(X[:300])  # inference reads the same path
        lp = reference_log_prob(X[:300], model, covariance_type)
        expected = np.exp(lp - lp.max(1, keepdims=True))
        np.testing.assert_allclose(resp, expected / expected.sum(1, keepdims=True), rtol=1e-10, atol=1e-14)


def reference_log_prob(X, model, covariance_type):
    """log w_k + log N(x | mu_k, Sigma_k) of a fitted model, by the NumPy reference."""
    from .reference_em import gaussian_log_prob

    return gaussian_log_prob(X, model.means_, model.covariances_, covariance_type) + np.log(model.weights_)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_random_from_data_far_from_the_first_chunk_starts_where_scikit_learn_does(covariance_type):
    """``init_params="random_from_data"`` gives each component one chosen row; its initial
    statistics are taken about the first chunk's mean, and a row 1e5 from it (clusters 1e5
    apart) lost eps * 1e10 = 2e-6 of a variance whose true value is reg_covar = 1e-6: the fit
    was refused as "ill-defined empirical covariance" where scikit-learn fits. Such moments are
    now taken again about the chosen rows: the start is those rows with covariances
    reg_covar * I, as scikit-learn's."""
    rng = np.random.default_rng(2)
    X = np.concatenate([rng.normal(size=(150, 2)) + c for c in rng.normal(size=(3, 2)) * 1e5])
    start = GaussianMixture(3, covariance_type=covariance_type, init_params="random_from_data", random_state=2).initialize(X)
    rows = [np.flatnonzero((X == m).all(1)) for m in start.means_]
    assert all(len(r) == 1 for r in rows)  # every mean is one of the rows
    # one row per component: no scatter about its own mean, so reg_covar alone (tied: pooled alike)
    expected = 1e-6 * {"full": np.stack([np.eye(2)] * 3), "tied": np.eye(2), "diag": np.ones((3, 2)), "spherical": np.ones(3)}[covariance_type]
    np.testing.assert_allclose(start.covariances_, expected, rtol=1e-9, atol=1e-16)
    np.testing.assert_allclose(start.weights_, [1 / 3] * 3, rtol=1e-9)


def test_gradient_fits_and_forward_of_the_newer_estimators():
    """A BayesianGaussianMixture trained by fit_by_gradient kept weights_ (and sample) at the
    fit's point estimate while predict read the concentrations the gradient moved (weights_
    [0.0055, 0.498, 0.497]; the concentrations' [5e-5, 0.501, 0.499]) and drove the mean
    precisions from 31 to 578: now a clear TypeError. GaussianMixtureIC(x), a torch module's
    call, was a bare NotImplementedError ("missing the required forward function"): it is now
    the chosen model's forward."""
    from torchem import BayesianGaussianMixture, GaussianMixtureIC, fit_by_gradient

    X = _blobs(60)
    bgm = BayesianGaussianMixture(n_components=3, random_state=0).fit(X)
    before = copy.deepcopy(bgm.state_dict())
    with pytest.raises(TypeError, match="BayesianGaussianMixture holds a variational posterior.*fit it with fit"):
        fit_by_gradient(bgm, X, epochs=2)
    assert all(torch.equal(v, before[k]) for k, v in bgm.state_dict().items() if isinstance(v, torch.Tensor))
    ic = GaussianMixtureIC((1, 2), covariance_type=("full", "diag"), random_state=0).fit(X)
    x = torch.from_numpy(X)
    np.testing.assert_array_equal(ic(x).numpy(), ic.best_estimator_(x).numpy())
    np.testing.assert_allclose(ic(x).numpy(), ic.score_samples(X), rtol=1e-12)
    with pytest.raises(Exception, match="not fitted"):
        GaussianMixtureIC((1, 2))(x)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_a_singular_covariance_is_rescued_only_where_float64_resolves_it(covariance_type):
    """``reg_covar=0``: rows on a line at offset 1e8 have a singular covariance whose spread
    (0.1) float64 resolves there, so its jitter rescue stands (with the warning), as before;
    ten copies of one point have only the rounding of their mean, (eps |mu|)^2, and the fit is
    refused (full covariance), as scikit-learn refuses it."""
    rng = np.random.default_rng(0)
    t = rng.normal(0, 0.1, 200)
    line = np.stack([t, 2 * t], 1)
    X = np.concatenate([line, line + [5, -5]]) + 1e8
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        model = GaussianMixture(2, covariance_type=covariance_type, reg_covar=0.0, random_state=0).fit(X)
    np.testing.assert_allclose(np.sort(model.means_[:, 0]) - 1e8, [line[:, 0].mean(), line[:, 0].mean() + 5], atol=1e-6)
    if covariance_type == "full":  # (tied pools the copies with the other rows: not singular)
        copies = np.concatenate([rng.normal(size=(100, 2)), np.tile([[20.0, 20.0]], (10, 1))])
        with pytest.raises(ValueError, match="ill-defined empirical covariance"):
            GaussianMixture(2, covariance_type=covariance_type, reg_covar=0.0, random_state=0).fit(copies)


@pytest.mark.parametrize("make, key, value", [
    (lambda: GaussianMixture(3, random_state=0), "loc", float("nan")),
    (lambda: GaussianMixture(3, random_state=0), "precision_cholesky_unconstrained", float("inf")),
    (lambda: GaussianMixture(3, random_state=0), "logits", float("nan")),
    (lambda: KMeans(3, random_state=0), "centers", -float("inf")),
])
def test_a_state_dict_with_non_finite_parameters_is_refused_before_loading(make, key, value):
    """A NaN mean or an infinite centre would make a model that predicts silently wrong: the
    load is refused, naming the key, and the model keeps what it had; logits may be -inf (a
    component of weight 0)."""
    X = _blobs()
    saved = make().fit(X).state_dict()
    bad = dict(saved, **{key: saved[key].clone()})
    bad[key].view(-1)[0] = value
    model = make().fit(X + 1.0)
    before = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    with pytest.raises(ValueError, match=f"'{key}' holds 1 NaN or infinite"):
        model.load_state_dict(bad)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if torch.is_tensor(v))
    if key == "logits":  # -inf: a component switched off, which loads and predicts
        bad[key].view(-1)[0] = -float("inf")
        model.load_state_dict(bad)
        assert model.weights_[0] == 0.0 and 0 not in model.predict(X)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_a_feature_constant_within_components_with_no_regularisation_fails_as_sklearn(covariance_type):
    """reg_covar=0 and a constant feature: the likelihood has no maximum (a zero variance).
    scikit-learn raises; a jitter or the factor of a rounding error made a "converged" model
    with a variance of 1e-11 or 1e-304 and a meaningless lower bound. The spherical variance
    (the features' mean) stays positive: both libraries fit it."""
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(50, 3)), rng.normal(size=(50, 3)) + 5.0])
    X[:, 1] = 7.0
    kwargs = dict(covariance_type=covariance_type, reg_covar=0.0, random_state=0)
    if covariance_type == "spherical":
        ours = GaussianMixture(2, **kwargs).fit(X)
        theirs = SkGaussianMixture(2, **kwargs).fit(X)
        np.testing.assert_allclose(np.sort(ours.covariances_), np.sort(theirs.covariances_), rtol=1e-6)
        return
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        SkGaussianMixture(2, **kwargs).fit(X)
    with pytest.raises(ValueError, match="ill-defined empirical covariance.*increase reg_covar"):
        GaussianMixture(2, **kwargs).fit(X)
    # the default regularisation fits it, as scikit-learn's does, even where the constant lies
    # so far out (a millisecond timestamp) that reg_covar is below its mean's resolution
    for offset in (7.0, 2e12):
        X[:, 1] = offset
        ours = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(X)
        assert np.isfinite(ours.lower_bound_) and ours.converged_


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _same_model(a, b):
    assert _same(dict(a.state_dict()), dict(b.state_dict()))


def test_a_refused_state_dict_leaves_the_model_exactly_as_it_was():
    """Found by fuzzing: a state dict of another structure raised only after the parameters were
    copied (the model kept the other model's K = 2 parameters under n_components = 3 and scored
    them); parameters of the wrong shape loaded silently and broadcast into wrong answers
    (one weight in a two-component model); a GaussianMixture's state in a
    BayesianGaussianMixture raised a bare KeyError and left a broken fitted model; a strict
    load with an unexpected key raised after loading the rest. Now each is a ValueError (or
    torch's own strict error) and the model is unchanged."""
    from torchem import BayesianGaussianMixture, CategoricalMixture

    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    fitted = GaussianMixture(3, random_state=0).fit(X)
    before, score = copy.deepcopy(fitted), fitted.score(X)
    short = GaussianMixture(2, random_state=0).fit(X).state_dict()
    short["logits"] = short["logits"][:1]
    kmeans = KMeans(2, random_state=0).fit(X).state_dict()
    kmeans["centers"] = kmeans["centers"][:, :2]
    unexpected = GaussianMixture(3, random_state=1).fit(X).state_dict()
    unexpected["bogus"] = torch.zeros(1)
    cases = [
        (fitted, GaussianMixture(2, random_state=0).fit(3 * X).state_dict(), ValueError, "n_components=2"),
        (fitted, GaussianMixture(3, covariance_type="diag", random_state=0).fit(X).state_dict(), ValueError, "covariance_type='diag'"),
        (fitted, unexpected, RuntimeError, "Unexpected key"),
        (GaussianMixture(2), short, ValueError, r"'logits' has shape \(1,\), but this GaussianMixture \(n_components=2, 3 features\) needs \(2,\)"),
        (KMeans(2), kmeans, ValueError, r"'centers' has shape \(2, 2\).*needs \(2, 3\)"),
        (BayesianGaussianMixture(n_components=2), GaussianMixture(2).fit(X).state_dict(), ValueError, "saved by a GaussianMixture; load it into a GaussianMixture"),
    ]
    for model, state, error, match in cases:
        kept = copy.deepcopy(model)
        with pytest.raises(error, match=match):
            model.load_state_dict(state)
        _same_model(model, kept)
        assert model.__dict__.get("_fitted") == kept.__dict__.get("_fitted")
    _same_model(fitted, before)
    assert fitted.score(X) == score
    # a state saved before the class was recorded: the missing entry is named, nothing changes
    old = GaussianMixture(2).fit(X).state_dict()
    old["_extra_state"] = {k: v for k, v in old["_extra_state"].items() if k != "estimator"}
    bgmm = BayesianGaussianMixture(n_components=2)
    with pytest.raises(ValueError, match="extra state has no entry 'priors'"):
        bgmm.load_state_dict(old)
    assert not bgmm.__dict__.get("_fitted") and all(p is None for p in bgmm._parameters.values())
    # a user's subclass takes its torchem class's state, as before the class was recorded
    class MyMixture(GaussianMixture):
        pass

    mine = MyMixture(3)
    mine.load_state_dict(fitted.state_dict())
    np.testing.assert_array_equal(mine.predict(X), fitted.predict(X))
    # what the shape check allows: every family's own state, stacked too
    codes = rng.integers(0, 4, (100, 3))
    for make, data in [(lambda: CategoricalMixture(2, random_state=0), codes),
                       (lambda: BayesianGaussianMixture(n_components=2, random_state=0), np.stack([X, X])),
                       (lambda: KMeans(2, random_state=0), np.stack([X, X]))]:
        source = make().fit(data)
        target = make()
        target.load_state_dict(source.state_dict())
        np.testing.assert_array_equal(target.predict(data), source.predict(data))


def test_a_model_fitted_under_inference_mode_refits_outside_it(monkeypatch):
    """Found by fuzzing: refitting a model fitted under torch.inference_mode failed on writing
    its inference tensors, and the rollback failed the same way, leaving a "fitted" model with
    no parameters."""
    X = np.random.default_rng(4).normal(size=(100, 2))
    for make in (lambda: GaussianMixture(2, random_state=0), lambda: KMeans(2, random_state=0)):
        with torch.inference_mode():
            model = make().fit(X)
        model.fit(X + 1)
        np.testing.assert_allclose(model.score(X + 1), make().fit(X + 1).score(X + 1), rtol=1e-12)
        with torch.inference_mode():
            model = make().fit(X)
        with pytest.raises(ValueError):
            model.fit(np.full((100, 2), np.nan))
        assert model.predict(X).shape == (100,)  # rolled back, parameters and all
    # loading into it and training it by gradient, with the full covariance's pair layout
    # first made under inference mode (a module cache: it once kept inference tensors that
    # autograd then refused)
    import torchem.functional.covariance as covariance
    from torchem import fit_by_gradient

    monkeypatch.setattr(covariance, "_PAIR_CACHE", {})
    with torch.inference_mode():
        model = GaussianMixture(2, random_state=1).fit(X)
    model.load_state_dict(GaussianMixture(2, random_state=0).fit(X).state_dict())
    history = fit_by_gradient(model, X, epochs=2)
    assert len(history) == 2 and np.isfinite(history).all()
