import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from pipeline.config.eval import LinearProbeConfig
from pipeline.evaluation.linear_probe import fit_linear_probe, fit_logreg, sample_weights


def _blobs(n: int, seed: int, shift: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    x = rng.normal(size=(n, 20)) * np.linspace(0.1, 10, 20)  # wildly different scales: standardising matters
    x[:, 0] += shift * y * 0.1
    x[:, 1] += shift * y
    return x, y


def test_refit_equals_sklearn_with_the_chosen_c() -> None:
    x, y = _blobs(300, 0)
    xt, _ = _blobs(100, 1)
    r = fit_linear_probe(x, y, xt, 2, LinearProbeConfig(), seed=0)
    assert r.selection == "holdout"
    assert r.c in LinearProbeConfig().c_grid
    sc = StandardScaler().fit(x)
    ref = LogisticRegression(C=r.c, max_iter=5000, tol=1e-10, class_weight="balanced").fit(sc.transform(x), y)
    np.testing.assert_allclose(r.proba, ref.predict_proba(sc.transform(xt)), atol=5e-3)  # float32 L-BFGS


@pytest.mark.parametrize(("class_weight", "c"), [(None, 0.01), (None, 1.0), ("balanced", 0.1), ("balanced", 10.0)])
def test_logreg_matches_sklearn_binary(class_weight: str | None, c: float) -> None:
    x, y = _blobs(200, 2)
    fit = fit_logreg(x, y, [c], class_weight, max_iter=1000)
    sc = StandardScaler().fit(x)
    ref = LogisticRegression(C=c, max_iter=5000, tol=1e-10, class_weight=class_weight).fit(sc.transform(x), y)
    np.testing.assert_allclose(fit.proba(x, 2)[0], ref.predict_proba(sc.transform(x)), atol=5e-3)


def test_logreg_matches_sklearn_multinomial_and_keeps_the_order_of_cs() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 240)
    x = rng.normal(size=(240, 6)) + np.eye(6)[y]
    fit = fit_logreg(x, y, [1.0, 0.01], "balanced", max_iter=1000)  # solved strong-to-weak, returned as given
    sc = StandardScaler().fit(x)
    for i, c in enumerate([1.0, 0.01]):
        ref = LogisticRegression(C=c, max_iter=5000, tol=1e-10, class_weight="balanced").fit(sc.transform(x), y)
        np.testing.assert_allclose(fit.proba(x, 3)[i], ref.predict_proba(sc.transform(x)), atol=5e-3)


def test_balanced_weights_are_sklearns() -> None:
    from sklearn.utils.class_weight import compute_sample_weight

    y = np.array([0, 0, 0, 1, 2, 2])
    np.testing.assert_allclose(sample_weights(y, "balanced"), compute_sample_weight("balanced", y))


def test_separable_data_is_learned() -> None:
    x, y = _blobs(300, 0, shift=8.0)
    xt, yt = _blobs(200, 1, shift=8.0)
    r = fit_linear_probe(x, y, xt, 2, seed=0)
    assert (r.pred == yt).mean() > 0.95


def test_validation_picks_the_grid_value_with_best_validation_score() -> None:
    # Pure noise features plus one weak signal: strong regularisation must not be worse on validation
    # than what the probe picked; we check the pick is the argmax of a recomputed validation curve.
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    x, y = _blobs(300, 3, shift=1.0)
    opts = LinearProbeConfig()
    r = fit_linear_probe(x, y, x[:5], 2, opts, seed=5)
    tr, va = train_test_split(np.arange(300), test_size=opts.val_fraction, stratify=y, random_state=5)
    sc = StandardScaler().fit(x[tr])
    scores = []
    for c in sorted(opts.c_grid):  # validation AUROC of sklearn's balanced probe for every C
        m = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(sc.transform(x[tr]), y[tr])
        scores.append(roc_auc_score(y[va], m.predict_proba(sc.transform(x[va]))[:, 1]))
    assert r.val_score == pytest.approx(max(scores), abs=2e-3)
    assert scores[sorted(opts.c_grid).index(r.c)] == pytest.approx(max(scores), abs=2e-3)


def test_tiny_subsets_fall_back_to_kfold_then_default() -> None:
    x, y = _blobs(300, 0, shift=8.0)
    idx = np.r_[np.flatnonzero(y == 0)[:6], np.flatnonzero(y == 1)[:3]]
    r = fit_linear_probe(x[idx], y[idx], x[:10], 2, seed=0)
    assert r.selection == "kfold3"
    idx1 = np.r_[np.flatnonzero(y == 0)[:4], np.flatnonzero(y == 1)[:1]]
    r1 = fit_linear_probe(x[idx1], y[idx1], x[:10], 2, seed=0)
    assert r1.selection == "default" and r1.c == sorted(LinearProbeConfig().c_grid)[2]


def test_single_class_raises() -> None:
    with pytest.raises(ValueError, match="two classes"):
        fit_linear_probe(np.zeros((4, 2)), np.zeros(4, dtype=int), np.zeros((1, 2)), 2)
