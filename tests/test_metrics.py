import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from pagkd_lite.training.metrics import (
    bootstrap_metrics,
    compute_metrics,
    macro_specificity,
    mean_interval,
)


def fixed_inputs(k: int, n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k), n)
    p[np.arange(n), y] += 0.4
    return y, p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_metrics_equal_sklearn(k):
    y, p = fixed_inputs(k)
    m = compute_metrics(y, p)
    pred = p.argmax(1)
    auc = roc_auc_score(y, p[:, 1]) if k == 2 else roc_auc_score(y, p, multi_class="ovr")
    assert m["auc"] == pytest.approx(auc)
    assert m["accuracy"] == pytest.approx((pred == y).mean())
    assert m["precision"] == pytest.approx(precision_score(y, pred, average="macro"))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["specificity"] == pytest.approx(macro_specificity(y, pred, k))


def test_specificity_equals_the_confusion_matrix_by_sklearn():
    from sklearn.metrics import confusion_matrix

    y, p = fixed_inputs(4, n=60, seed=3)
    pred = p.argmax(1)
    cm = confusion_matrix(y, pred, labels=range(4))
    tn = cm.sum() - cm.sum(0) - cm.sum(1) + np.diag(cm)
    fp = cm.sum(0) - np.diag(cm)
    assert macro_specificity(y, pred, 4) == pytest.approx(np.mean(tn / (tn + fp)))


def test_missing_class_gives_nan_auc_and_sklearn_values_for_the_rest():
    y = np.array([0, 0, 1, 1, 0])  # class 2 of 3 missing
    p = np.array([[.8, .1, .1], [.2, .7, .1], [.1, .8, .1], [.1, .1, .8], [.6, .3, .1]])
    m = compute_metrics(y, p)
    pred = p.argmax(1)
    kw = {"labels": [0, 1, 2], "average": "macro", "zero_division": 0}
    assert np.isnan(m["auc"])
    assert m["precision"] == pytest.approx(precision_score(y, pred, **kw))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred, **kw))
    assert m["f1"] == pytest.approx(f1_score(y, pred, **kw))
    assert all(np.isnan(v) for v in compute_metrics(y[:0], p[:0]).values())


def test_specificity_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    # class 0: TN = 3 (rows 2,3,4 predicted not 0), FP = 1 (row 5) -> 3/4
    # class 1: negatives rows 0,1,4,5; FP = 1 (row 1) -> 3/4 ; class 2: FP = 0 -> 1
    assert macro_specificity(y, pred, 3) == pytest.approx((0.75 + 0.75 + 1.0) / 3)


def test_bootstrap_interval_contains_point_and_is_deterministic():
    y, p = fixed_inputs(3, n=200)
    a = bootstrap_metrics(y, p, n_boot=200, seed=1)
    b = bootstrap_metrics(y, p, n_boot=200, seed=1)
    for key in a:
        assert a[key].low <= a[key].value <= a[key].high
        assert a[key] == b[key]
    assert a["auc"].high - a["auc"].low < 0.2


def test_bootstrap_needs_every_class():
    y = np.array([0, 0, 1, 1])
    p = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="2 of 3 classes"):
        bootstrap_metrics(y, p)


def test_mean_interval_t():
    est = mean_interval([0.1, 0.2, 0.3])
    assert est.value == pytest.approx(0.2)
    assert est.low == pytest.approx(0.2 - 4.302652729911275 * 0.1 / np.sqrt(3))


def test_estimate_signed_shows_every_sign():
    from pagkd_lite.training.metrics import Estimate

    assert Estimate(0.031, -0.002, 0.064).signed() == "+0.031 [-0.002, +0.064]"
