"""Classification metrics with bootstrap 95% intervals (scikit-learn does the arithmetic).

The paper reports accuracy, macro precision / recall / specificity / F1 and AUC (binary,
or macro one-vs-rest), computed from predictions pooled over folds. Each metric here comes
with a percentile bootstrap interval over images (resampled with replacement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

METRICS = ("auc", "accuracy", "precision", "sensitivity", "specificity", "f1")


def macro_specificity(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean over classes of TN / (TN + FP), one class against the rest."""
    cm = confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    with np.errstate(invalid="ignore", divide="ignore"):
        spec = np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), np.nan)
    return float(np.nanmean(spec))


def auc_score(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Binary AUC on the positive-class probability, or macro one-vs-rest AUC for K > 2."""
    k = probs.shape[1]
    if k == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    return float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro",
                               labels=list(range(k))))


def compute_metrics(y_true, probs) -> dict[str, float]:
    """All metrics from labels (N,) and class probabilities (N, K); argmax decides."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    y_pred = probs.argmax(axis=1)
    labels = list(range(k))
    kw = {"labels": labels, "average": "macro", "zero_division": 0}
    return {
        "auc": auc_score(y_true, probs),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision_score(y_true, y_pred, **kw)),
        "sensitivity": float(recall_score(y_true, y_pred, **kw)),
        "specificity": macro_specificity(y_true, y_pred, k),
        "f1": float(f1_score(y_true, y_pred, **kw)),
    }


def _rank_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties (equals roc_auc_score)."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fast_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The same numbers as :func:`compute_metrics` from a confusion matrix and ranks.

    scikit-learn's input validation dominates the cost of a thousand bootstrap resamples;
    this is the lean path for the bootstrap, and tests check it equals scikit-learn.
    """
    n, k = probs.shape
    y_pred = probs.argmax(axis=1)
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(np.float64)
    pred_pos = cm.sum(axis=0)
    true_pos = cm.sum(axis=1)
    fp = pred_pos - tp
    tn = n - tp - fp - (true_pos - tp)
    prec = np.divide(tp, pred_pos, out=np.zeros(k), where=pred_pos > 0)
    rec = np.divide(tp, true_pos, out=np.zeros(k), where=true_pos > 0)
    denom = prec + rec
    f1 = np.divide(2 * prec * rec, denom, out=np.zeros(k), where=denom > 0)
    if k == 2:
        auc = _rank_auc(probs[:, 1], y_true == 1)
    else:
        auc = float(np.mean([_rank_auc(probs[:, c], y_true == c) for c in range(k)]))
    return {
        "auc": auc,
        "accuracy": float(tp.sum() / n),
        "precision": float(prec.mean()),
        "sensitivity": float(rec.mean()),
        "specificity": float(np.mean(tn / np.maximum(tn + fp, 1))),
        "f1": float(f1.mean()),
    }


@dataclass
class Estimate:
    """A point estimate with a 95% interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap_metrics(y_true, probs, n_boot: int = 1000, seed: int = 0) -> dict[str, Estimate]:
    """Each metric of :func:`compute_metrics` with a percentile bootstrap 95% interval.

    Resamples images with replacement; a resample missing a class (AUC undefined) is
    redrawn, so every interval uses exactly ``n_boot`` valid resamples.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    n, k = probs.shape
    if len(np.unique(y_true)) < k:
        raise ValueError(
            f"bootstrap_metrics: the labels cover {len(np.unique(y_true))} of {k} classes; "
            "AUC needs every class in the evaluation set"
        )
    point = compute_metrics(y_true, probs)
    rng = np.random.default_rng(seed)
    samples = {m: [] for m in METRICS}
    tries = 0
    while len(samples["auc"]) < n_boot:
        tries += 1
        if tries > 20 * n_boot:
            raise RuntimeError("bootstrap_metrics: too many resamples missing a class")
        idx = rng.integers(0, n, n)
        if len(np.unique(y_true[idx])) < k:
            continue
        for m, v in fast_metrics(y_true[idx], probs[idx]).items():
            samples[m].append(v)
    return {
        m: Estimate(point[m], float(np.percentile(samples[m], 2.5)),
                    float(np.percentile(samples[m], 97.5)))
        for m in METRICS
    }


def mean_interval(values, seed: int = 0, n_boot: int = 10000) -> Estimate:
    """Mean of per-seed values with a 95% interval (t-interval; bootstrap-free for few seeds)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if len(v) < 2:
        return Estimate(m, float("nan"), float("nan"))
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return Estimate(m, m - half, m + half)
