"""Partly labelled data (fit(X, labels=...)): equal to independent NumPy semi-supervised EMs
from the same start; closed forms when every row is labelled; better clusters than the
unsupervised fit with 5% of the labels; the same fit however the labels travel (arrays,
memmaps, stream batches, weights, partial_fit); y stays ignored; clear errors."""

import warnings

import numpy as np
import pytest
import torch

from torchem import BernoulliMixture, BinomialMixture, CategoricalMixture, ConvergenceWarning, GaussianMixture, KMeans, PoissonMixture

REG = 1e-6


def _overlapping(seed=0, n=600, fraction=0.05):
    """Two long classes side by side (unsupervised EM splits them across), and ``fraction``
    of the rows labelled."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = np.stack([rng.normal(size=n) * 3.0, rng.normal(size=n) * 0.5 + 1.2 * y], 1)
    labels = np.full(n, -1)
    chosen = rng.choice(n, int(n * fraction), replace=False)
    labels[chosen] = y[chosen]
    return X, y, labels


def _three_blobs(seed=0, n=300, labelled=0.1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 2.0, 1.5]])[y] + rng.normal(size=(n, 3))
    labels = np.where(rng.random(n) < labelled, y, -1)
    return X, y, labels


def _log_gauss(X, means, covs):
    """``log N(x | mu_k, Sigma_k)``: ``[N, K]`` (covariances ``[K, D, D]``)."""
    out = []
    for m, c in zip(means, covs):
        diff = X - m
        sol = np.linalg.solve(c, diff.T).T
        _, logdet = np.linalg.slogdet(c)
        out.append(-0.5 * ((diff * sol).sum(1) + logdet + X.shape[1] * np.log(2 * np.pi)))
    return np.stack(out, 1)


def _e_step(log_joint, labels):
    """Semi-supervised E-step: a labelled row is one-hot at its class, with log-likelihood
    ``log w_y p_y(x)``; an unlabelled one takes the posterior and ``log sum_k w_k p_k(x)``."""
    m = log_joint.max(1, keepdims=True)
    norm = m[:, 0] + np.log(np.exp(log_joint - m).sum(1))
    resp = np.exp(log_joint - norm[:, None])
    known = labels >= 0
    resp[known] = np.eye(log_joint.shape[1])[labels[known]]
    norm[known] = log_joint[known, labels[known]]
    return resp, norm


def _numpy_gaussian_em(X, labels, weights, means, covs, n_iter, diag, hard=False):
    history = []
    for _ in range(n_iter):
        log_joint = _log_gauss(X, means, covs) + np.log(weights)
        if hard:  # classification EM: an unlabelled row wholly to its most probable component
            best = (log_joint == log_joint.max(1, keepdims=True)) | (labels[:, None] >= 0)
            log_joint = np.where(best, log_joint, -np.inf)
        resp, norm = _e_step(log_joint, labels)
        history.append(norm.mean())
        nk = resp.sum(0)
        weights = nk / len(X)
        means = resp.T @ X / nk[:, None]
        covs = []
        for k in range(len(nk)):
            diff = X - means[k]
            c = (resp[:, k, None] * diff).T @ diff / nk[k]
            covs.append(np.diag(np.diag(c)) if diag else c)
        covs = np.stack(covs) + REG * np.eye(X.shape[1])
    return weights, means, covs, history


@pytest.mark.parametrize("covariance_type, hard", [("full", False), ("diag", False), ("diag", True)])
def test_gaussian_equals_a_numpy_semi_supervised_em_from_the_same_start(covariance_type, hard):
    X, _, labels = _three_blobs()
    rng = np.random.default_rng(3)
    w0 = np.array([0.2, 0.3, 0.5])
    m0 = X[rng.choice(len(X), 3, replace=False)]
    c0 = np.stack([np.eye(3) * s for s in (0.8, 1.0, 1.3)])
    p0 = np.linalg.inv(c0) if covariance_type == "full" else 1.0 / np.diagonal(c0, axis1=1, axis2=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, covariance_type=covariance_type, tol=0.0, max_iter=20, weights_init=w0, means_init=m0,
                             precisions_init=p0, hard=hard).fit(X, labels=labels)
    w, m, c, history = _numpy_gaussian_em(X, labels, w0, m0, c0, 20, covariance_type == "diag", hard)
    np.testing.assert_allclose(gm.weights_, w, rtol=1e-8)
    np.testing.assert_allclose(gm.means_, m, rtol=1e-8, atol=1e-10)
    covs = gm.covariances_ if covariance_type == "full" else np.stack([np.diag(v) for v in gm.covariances_])
    np.testing.assert_allclose(covs, c, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(gm.lower_bounds_, history, rtol=1e-8)
    assert np.all(np.diff(history) > -1e-12)  # EM on the semi-supervised likelihood: monotone


def test_bernoulli_equals_a_numpy_semi_supervised_em_from_the_same_start():
    rng = np.random.default_rng(0)
    truth = np.array([[0.9, 0.8, 0.2, 0.1, 0.5, 0.3], [0.2, 0.3, 0.8, 0.9, 0.5, 0.6]])
    y = rng.integers(0, 2, 400)
    X = (rng.random((400, 6)) < truth[y]).astype(float)
    labels = np.where(rng.random(400) < 0.1, y, -1)
    w0, p0 = np.array([0.4, 0.6]), rng.uniform(0.3, 0.7, (2, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        bm = BernoulliMixture(2, tol=0.0, max_iter=15, weights_init=w0, probs_init=p0).fit(X, labels=labels)
    w, p, history = w0, p0, []
    for _ in range(15):
        resp, norm = _e_step(X @ np.log(p).T + (1 - X) @ np.log(1 - p).T + np.log(w), labels)
        history.append(norm.mean())
        nk = resp.sum(0)
        w, p = nk / len(X), resp.T @ X / nk[:, None]
    np.testing.assert_allclose(bm.weights_, w, rtol=1e-8)
    np.testing.assert_allclose(bm.probs_, p, rtol=1e-8)
    np.testing.assert_allclose(bm.lower_bounds_, history, rtol=1e-8)


def _fully_labelled_cases():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 240)
    counts = rng.poisson(np.array([1.0, 4.0, 9.0])[y, None] * np.ones(4))
    binary = (rng.random((240, 5)) < np.array([0.2, 0.5, 0.8])[y, None]).astype(float)
    codes = (rng.random((240, 3)) * (2 + y[:, None])).astype(int).astype(float)
    trials = rng.binomial(6, np.array([0.2, 0.5, 0.8])[y, None] * np.ones(2)).astype(float)
    return y, [
        (PoissonMixture(3), counts, lambda m: m.rates_, lambda Xk: Xk.mean(0)),
        (BernoulliMixture(3), binary, lambda m: m.probs_, lambda Xk: Xk.mean(0)),
        (BinomialMixture(3, n_trials=6), trials, lambda m: m.probs_, lambda Xk: Xk.mean(0) / 6),
        (CategoricalMixture(3, n_categories=4), codes, lambda m: m.probs_,
         lambda Xk: np.stack([np.bincount(Xk[:, j].astype(int), minlength=4) / len(Xk) for j in range(3)])),
        (GaussianMixture(3), counts, lambda m: m.covariances_, lambda Xk: np.cov(Xk.T, bias=True) + REG * np.eye(4)),
    ]


@pytest.mark.parametrize("case", range(5), ids=["poisson", "bernoulli", "binomial", "categorical", "gaussian"])
def test_every_family_fully_labelled_gives_the_class_statistics(case):
    """Every row labelled: the fit is the supervised maximum-likelihood estimate (class
    proportions and per-class statistics), reached at the first iteration, for [N, D] and for
    B = 2 problems at once."""
    y, cases = _fully_labelled_cases()
    model, X, fitted, expected = cases[case]
    model.fit(X, labels=y)
    np.testing.assert_allclose(model.weights_, np.bincount(y) / len(y), rtol=1e-9)
    for k in range(3):
        np.testing.assert_allclose(fitted(model)[k], expected(X[y == k]), rtol=1e-7, atol=1e-9)
    stacked = np.stack([X, X[::-1]])
    model.fit(stacked, labels=np.stack([y, y[::-1]]))
    for b in range(2):
        np.testing.assert_allclose(model.weights_[b], np.bincount(y) / len(y), rtol=1e-9)
        for k in range(3):
            np.testing.assert_allclose(fitted(model)[b, k], expected(X[y == k]), rtol=1e-7, atol=1e-9)


def test_five_percent_of_labels_give_a_better_adjusted_rand_index():
    from sklearn.metrics import adjusted_rand_score

    X, y, labels = _overlapping()
    free = GaussianMixture(2, random_state=0).fit(X)
    semi = GaussianMixture(2, random_state=0).fit(X, labels=labels)
    assert adjusted_rand_score(y, free.predict(X)) < 0.1
    assert adjusted_rand_score(y, semi.predict(X)) > 0.4
    # component k is class k (the initialisation starts from the labelled rows)
    assert np.mean(semi.predict(X) == y) > 0.8


def test_y_is_ignored_and_labels_are_a_keyword_of_their_own():
    X, y, labels = _three_blobs()
    plain = GaussianMixture(3, random_state=0).fit(X)
    with_y = GaussianMixture(3, random_state=0).fit(X, y)
    np.testing.assert_array_equal(plain.means_, with_y.means_)
    semi = GaussianMixture(3, random_state=0).fit(X, y, labels=labels)
    np.testing.assert_array_equal(semi.means_, GaussianMixture(3, random_state=0).fit(X, labels=labels).means_)
    assert not np.allclose(semi.means_, plain.means_)
    km = KMeans(3, random_state=0)
    np.testing.assert_array_equal(km.fit(X, y).cluster_centers_, KMeans(3, random_state=0).fit(X).cluster_centers_)


class _Batches:
    """A re-iterable of mapping batches, as a DataLoader over a dict Dataset yields."""

    def __init__(self, X, labels, weights=None, size=70):
        self.parts = [(s, min(len(X), s + size)) for s in range(0, len(X), size)]
        self.X, self.labels, self.weights = X, labels, weights

    def __iter__(self):
        for a, b in self.parts:
            batch = {"X": torch.from_numpy(self.X[a:b])}
            if (self.labels[a:b] >= 0).any():  # batches without a label may leave the key out
                batch["labels"] = torch.from_numpy(self.labels[a:b])
            if self.weights is not None and (self.weights[a:b] != 1).any():  # so may weights
                batch["sample_weight"] = torch.from_numpy(self.weights[a:b])
            yield batch


def _params(gm):
    return [np.asarray(gm.weights_), np.asarray(gm.means_), np.asarray(gm.covariances_), np.asarray(gm.lower_bound_)]


def test_streamed_and_weighted_fits_equal_the_in_memory_fit(tmp_path):
    X, _, labels = _three_blobs(n=240)
    labels[:70] = -1  # the first stream batch carries no labels
    weights = np.random.default_rng(2).integers(0, 3, len(X)).astype(float)
    weights[:70] = 1.0  # and no weights

    def model():
        return GaussianMixture(3, covariance_type="full", random_state=0, chunk_size=50, max_iter=30)

    ref = _params(model().fit(X, labels=labels, sample_weight=weights))
    streamed = _params(model().fit(_Batches(X, labels, weights)))
    path = tmp_path / "X.npy"
    np.save(path, X)
    mapped = _params(model().fit(np.load(path, mmap_mode="r"), labels=labels, sample_weight=weights))
    for a, b, c in zip(ref, streamed, mapped):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(c, a, rtol=1e-10, atol=1e-12)
    # an integer weight counts as the row (and its label) repeated
    rows = np.repeat(np.arange(len(X)), weights.astype(int))
    start = dict(weights_init=ref[0], means_init=ref[1], precisions_init=np.linalg.inv(ref[2]), tol=0.0, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = GaussianMixture(3, **start).fit(X, labels=labels, sample_weight=weights)
        repeated = GaussianMixture(3, **start).fit(X[rows], labels=labels[rows])
    for a, b in zip(_params(weighted), _params(repeated)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_partial_fit_with_labels_is_one_semi_supervised_em_step():
    X, _, labels = _three_blobs()
    start = dict(weights_init=[0.3, 0.3, 0.4], means_init=X[:3], precisions_init=np.stack([np.eye(3)] * 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one_step = GaussianMixture(3, tol=0.0, max_iter=1, **start).fit(X, labels=labels)
    online = GaussianMixture(3, **start).partial_fit(X, labels=labels)
    batch = GaussianMixture(3, **start).partial_fit({"X": X, "labels": labels})
    for a, b, c in zip(_params(one_step), _params(online), _params(batch)):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(c, a, rtol=1e-9, atol=1e-12)


def _seeded_kmeans(X, labels, centers, n_iter=100):
    """Seeded (constrained) Lloyd in NumPy: labelled points stay in their cluster."""
    known = labels >= 0
    for _ in range(n_iter):
        assign = ((X[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
        assign[known] = labels[known]
        new = np.stack([X[assign == k].mean(0) for k in range(len(centers))])
        if np.allclose(new, centers, rtol=0, atol=0):
            break
        centers = new
    return centers, assign


def test_kmeans_keeps_labelled_points_in_their_cluster():
    X, y, labels = _three_blobs(n=300, labelled=0.2)
    labels[np.flatnonzero(labels == 0)[:5]] = 2  # labels that disagree with the geometry stay
    init = X[[0, 1, 2]]
    km = KMeans(3, init=init, tol=0.0, max_iter=100).fit(X, labels=labels)
    centers, assign = _seeded_kmeans(X, labels, init)
    np.testing.assert_array_equal(km.labels_, assign)
    np.testing.assert_allclose(km.cluster_centers_, centers, rtol=1e-10, atol=1e-12)
    known = labels >= 0
    assert np.array_equal(km.labels_[known], labels[known])
    np.testing.assert_allclose(km.inertia_, ((X - centers[assign]) ** 2).sum(), rtol=1e-10)
    # B = 2 problems (the bounded pass's sparse path) and a stream (the driver's pass) alike
    labels2 = np.where(np.arange(len(X)) % 7 == 0, y, -1)
    stacked = KMeans(3, init=np.stack([init, X[[5, 6, 7]]]), tol=0.0, max_iter=100).fit(np.stack([X, X]),
                                                                                       labels=np.stack([labels, labels2]))
    for b, (lab, c0) in enumerate([(labels, init), (labels2, X[[5, 6, 7]])]):
        centers_b, assign_b = _seeded_kmeans(X, lab, c0)
        np.testing.assert_array_equal(stacked.labels_[b], assign_b)
        np.testing.assert_allclose(stacked.cluster_centers_[b], centers_b, rtol=1e-10, atol=1e-12)
    # mini-batch k-means: one batch moves each centre to the mean of its (seeded) assignment
    online = KMeans(3, init=init).partial_fit(X, labels=labels)
    first = ((X[:, None] - init[None]) ** 2).sum(-1).argmin(1)
    first[known] = labels[known]
    np.testing.assert_array_equal(online.labels_, first)
    np.testing.assert_allclose(online.cluster_centers_, [X[first == k].mean(0) for k in range(3)], rtol=1e-10)
    streamed = KMeans(3, init=init, tol=0.0, max_iter=100).fit(_Batches(X, labels))
    np.testing.assert_array_equal(streamed.labels_, assign)
    np.testing.assert_allclose(streamed.cluster_centers_, centers, rtol=1e-10, atol=1e-12)
    # k-means++ seeding: the labelled clusters start at their labelled rows' means, so cluster
    # k is class k and the labelled rows stay put
    seeded = KMeans(3, random_state=0).fit(X, labels=labels)
    assert np.array_equal(seeded.labels_[known], labels[known])
    assert np.mean(seeded.labels_ == y) > 0.7


def _seeded_kmeans_means(X, labels, k, n_iter):
    """NumPy seeded k-means from the labelled means, labelled rows kept in their cluster:
    the cluster means after ``n_iter`` Lloyd steps and one more assignment (what
    init_params="kmeans" hands to the first M-step)."""
    centres = np.stack([X[labels == j].mean(0) for j in range(k)])
    for _ in range(n_iter + 1):
        assign = ((X[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        assign = np.where(labels >= 0, labels, assign)
        centres = np.stack([X[assign == j].mean(0) if np.any(assign == j) else centres[j] for j in range(k)])
    return centres


def test_mixture_initialisation_is_seeded_by_the_labelled_rows():
    """``max_iter=0`` keeps the initialisation. init_params="kmeans" is seeded k-means: the
    clusters start at the labelled means and keep their labelled rows, and every row counts
    (a NumPy reference); with "k-means++" (components from single rows anyway) components with
    labelled rows start at their labelled rows' means, a component without any takes the
    usual initialisation, deterministically."""
    from torchem.mixture.base import _KMEANS_INIT_ITER

    X, _, labels = _three_blobs(labelled=0.2)
    init = GaussianMixture(3, max_iter=0, random_state=0).fit(X, labels=labels)
    np.testing.assert_allclose(init.means_, _seeded_kmeans_means(X, labels, 3, _KMEANS_INIT_ITER), rtol=1e-10)
    init = GaussianMixture(3, init_params="k-means++", max_iter=0, random_state=0).fit(X, labels=labels)
    for k in range(3):
        np.testing.assert_allclose(init.means_[k], X[labels == k].mean(0), rtol=1e-10)
    labels[labels == 2] = -1
    for init_params in ("kmeans", "k-means++"):
        partly = GaussianMixture(3, init_params=init_params, max_iter=0, random_state=0).fit(X, labels=labels)
        again = GaussianMixture(3, init_params=init_params, max_iter=0, random_state=0).fit(X, labels=labels)
        np.testing.assert_array_equal(partly.means_, again.means_)  # deterministic given random_state
        assert np.isfinite(partly.means_).all()
    for k in range(2):  # (k-means++'s)
        np.testing.assert_allclose(partly.means_[k], X[labels == k].mean(0), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_one_labelled_row_does_not_collapse_its_component(covariance_type):
    """A class with a single labelled row used to start from that row alone, a reg_covar
    spike of weight 1/N, and the fit ended with that component near weight 0 (adjusted Rand
    index 0.48 against 0.76 without the label). Seeded k-means starts it with the rows near
    its seed: labels cost nothing here and the component keeps its share."""
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(300, 2)) + m for m in ([0.0, 0.0], [3.0, 0.0], [0.0, 3.0])])
    y = np.repeat([0, 1, 2], 300)
    free = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    for per in (1, 2, 5):
        labels = np.full(len(X), -1)
        labels[:per] = 0
        semi = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X, labels=labels)
        assert semi.weights_.min() > 0.25
        assert adjusted_rand_score(y, semi.predict(X)) > adjusted_rand_score(y, free.predict(X)) - 0.05
        assert np.mean(semi.predict(X)[y == 0] == 0) > 0.8  # component 0 is class 0


def test_free_seeds_are_never_labelled_rows():
    """Seeded k-means++ draws the free clusters' seeds among the unlabelled rows: a labelled
    row far from its class (the likeliest draw) would be kept in its own class by the labelled
    E-step, leaving the drawn cluster empty and its component at weight 0."""
    rng = np.random.default_rng(0)
    X = np.concatenate([[[-10.0], [10.0]], rng.normal(size=(50, 1))])
    labels = np.full(len(X), -1)
    labels[:2] = 0
    for max_iter in (0, 100):
        model = GaussianMixture(2, n_init=5, max_iter=max_iter, random_state=0).fit(X, labels=labels)
        assert model.weights_.min() > 0.02


def test_stacked_problems_without_labels_start_as_the_unlabelled_fit():
    """With B problems, a problem without labelled rows (all -1, or beside a labelled one)
    starts from the very draws of the fit without labels, for mixtures and K-means."""
    X = np.random.default_rng(3).normal(size=(2, 300, 2))
    X[:, :100] += 3.0
    none = np.full((2, 300), -1)
    some = none.copy()
    some[0, :3] = 0
    plain = GaussianMixture(3, max_iter=0, random_state=0).fit(X).means_
    np.testing.assert_array_equal(GaussianMixture(3, max_iter=0, random_state=0).fit(X, labels=none).means_, plain)
    np.testing.assert_array_equal(GaussianMixture(3, max_iter=0, random_state=0).fit(X, labels=some).means_[1], plain[1])
    plain = KMeans(3, n_init=1, max_iter=1, random_state=0).fit(X).cluster_centers_
    np.testing.assert_array_equal(KMeans(3, n_init=1, max_iter=1, random_state=0).fit(X, labels=none).cluster_centers_, plain)
    np.testing.assert_array_equal(KMeans(3, n_init=1, max_iter=1, random_state=0).fit(X, labels=some).cluster_centers_[1], plain[1])


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.full(300, 3), r"labels names component 3, but the model has n_components=3"),
        (np.full(300, -2), r"labels holds -2, below -1"),
        (np.zeros(299, dtype=int), r"labels should have shape \(300,\)"),
        (np.full(300, 0.5), r"labels must hold whole numbers"),
        (np.array(["a"] * 300), r"labels must hold integers"),
        (np.zeros(300, dtype=bool), r"labels must hold integers"),
    ],
)
@pytest.mark.parametrize("model", [GaussianMixture(3), KMeans(3)], ids=["gmm", "kmeans"])
def test_bad_labels_are_clear_errors(labels, match, model):
    X, _, _ = _three_blobs()
    with pytest.raises(ValueError, match=match):
        model.fit(X, labels=labels)


def test_labels_of_every_integer_dtype_and_no_wrapped_or_masked_values():
    """uint16/uint32/uint64 labels were refused as "must hold integers"; a float label of
    1e30 was reported as -9223372036854775808 (the int64 cast wrapped it); a masked array's
    hidden values were read as labels. Now: the same fit as int64 labels, the value as given,
    and an error that says how to leave masked rows unlabelled."""
    X, _, labels = _three_blobs(n=90)
    kwargs = dict(max_iter=3, tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = GaussianMixture(3, **kwargs).fit(X, labels=labels)
        given = np.where(labels < 0, 0, labels)  # unsigned: every row labelled
        ref_all = GaussianMixture(3, **kwargs).fit(X, labels=given)
        for dtype in (np.uint16, np.uint32, np.uint64):
            fit = GaussianMixture(3, **kwargs).fit(X, labels=given.astype(dtype))
            np.testing.assert_array_equal(fit.means_, ref_all.means_)
        fit = GaussianMixture(3, **kwargs).fit(X, labels=torch.from_numpy(given.astype(np.uint32)))
        np.testing.assert_array_equal(fit.means_, ref_all.means_)
        masked = np.ma.masked_array(given, mask=labels < 0)
        np.testing.assert_array_equal(GaussianMixture(3, **kwargs).fit(X, labels=masked.filled(-1)).means_, ref.means_)
    with pytest.raises(ValueError, match=r"labels names component 1e\+30, but the model has n_components=3"):
        GaussianMixture(3).fit(X, labels=np.full(len(X), 1e30))
    with pytest.raises(ValueError, match=r"labels holds -1e\+30, below -1"):
        KMeans(3).fit(X, labels=np.full(len(X), -1e30))
    with pytest.raises(ValueError, match=r"labels names component 9.2\d*e\+18"):
        GaussianMixture(3).fit(X, labels=np.full(len(X), 2**63, dtype=np.uint64))
    with pytest.raises(ValueError, match=r"masked array with masked entries; pass labels.filled\(-1\)"):
        GaussianMixture(3).fit(X, labels=masked)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
def test_a_labelled_row_of_weight_zero_is_as_if_absent(init_params):
    """A component whose only labelled row has weight 0 counted as labelled, so it started
    from nothing (the data's mean, 2.6 from the start without that row) and the fit ended 2.6
    off; it now takes the usual initialisation, as when the row is left out."""
    from torchem import BayesianGaussianMixture

    X, _, _ = _three_blobs(n=90)
    labels = np.full(len(X), -1)
    labels[[0, 1]] = [0, 1]
    w = np.ones(len(X))
    w[0] = 0.0
    for make in (lambda **kw: GaussianMixture(3, **kw), lambda **kw: BayesianGaussianMixture(n_components=3, **kw)):
        for max_iter in (0, 20):
            kwargs = dict(init_params=init_params, random_state=0, max_iter=max_iter)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                weighted = make(**kwargs).fit(X, labels=labels, sample_weight=w)
                absent = make(**kwargs).fit(X[1:], labels=labels[1:], sample_weight=w[1:])
            np.testing.assert_allclose(weighted.means_, absent.means_, rtol=1e-10, atol=1e-12)


def test_bad_labels_in_streams_are_clear_errors():
    X, _, labels = _three_blobs()
    with pytest.raises(ValueError, match="labels cannot be combined with an iterable X"):
        GaussianMixture(3).fit(_Batches(X, labels), labels=labels)
    with pytest.raises(ValueError, match="the labels of a batch of X names component 5"):
        GaussianMixture(3).fit(_Batches(X, np.full(len(X), 5)))
    with pytest.raises(ValueError, match="sample_weight and labels cannot be combined with a mapping batch"):
        GaussianMixture(3).partial_fit({"X": X}, labels=labels)
    model = GaussianMixture(3, random_state=0).fit(X)
    with pytest.raises(ValueError, match="labels names component 7"):
        model.fit(X, labels=np.full(len(X), 7))
    assert model.converged_  # the failed fit left the fitted model as it was
