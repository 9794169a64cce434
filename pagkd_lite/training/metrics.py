"""Classification metrics with bootstrap 95% intervals (one NumPy path, checked against
scikit-learn by the tests).

The paper reports accuracy, macro precision / recall / specificity / F1 and AUC (binary,
or macro one-vs-rest), computed from predictions pooled over folds. Each metric here comes
with a percentile bootstrap interval over images (resampled with replacement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..method.mechanism_log import rank_auc

METRICS = ("auc", "accuracy", "precision", "sensitivity", "specificity", "f1")


def auc_score(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Binary AUC on the positive-class probability, or macro one-vs-rest AUC for K > 2;
    NaN when a class is missing from ``y_true`` (AUC is undefined then)."""
    y_true = np.asarray(y_true)
    k = probs.shape[1]
    if len(np.unique(y_true)) < k:
        return float("nan")
    if k == 2:
        return rank_auc(probs[:, 1], y_true == 1)
    return float(np.mean([rank_auc(probs[:, c], y_true == c) for c in range(k)]))


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int):
    """Per class, one against the rest: TP, FP, FN, TN (float arrays of length K)."""
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    return tp, fp, fn, len(y_true) - tp - fp - fn


def macro_specificity(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean over classes of TN / (TN + FP), one class against the rest (classes with no
    negative image are left out)."""
    _, fp, _, tn = _confusion(np.asarray(y_true), np.asarray(y_pred), num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        spec = np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), np.nan)
    return float(np.nanmean(spec))


def compute_metrics(y_true, probs) -> dict[str, float]:
    """All metrics from labels (N,) and class probabilities (N, K); argmax decides.

    Macro averages over the K classes, a class with no prediction (or no image) counting 0
    for precision (recall), as scikit-learn's ``zero_division=0``; the tests check every
    number against scikit-learn. AUC is NaN when a class is missing from ``y_true``; every
    metric is NaN for no images. The one metrics path: point values, the bootstrap, cv.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    n, k = probs.shape
    if n == 0:
        return {m: float("nan") for m in METRICS}
    y_pred = probs.argmax(axis=1)
    tp, fp, fn, _ = _confusion(y_true, y_pred, k)
    prec = np.divide(tp, tp + fp, out=np.zeros(k), where=tp + fp > 0)
    rec = np.divide(tp, tp + fn, out=np.zeros(k), where=tp + fn > 0)
    denom = prec + rec
    f1 = np.divide(2 * prec * rec, denom, out=np.zeros(k), where=denom > 0)
    return {
        "auc": auc_score(y_true, probs),
        "accuracy": float(tp.sum() / n),
        "precision": float(prec.mean()),
        "sensitivity": float(rec.mean()),
        "specificity": macro_specificity(y_true, y_pred, k),
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

    def signed(self) -> str:
        """A gain, with its signs: ``+0.031 [-0.002, +0.064]``."""
        return f"{self.value:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


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
        for m, v in compute_metrics(y_true[idx], probs[idx]).items():
            samples[m].append(v)
    return {
        m: Estimate(point[m], float(np.percentile(samples[m], 2.5)),
                    float(np.percentile(samples[m], 97.5)))
        for m in METRICS
    }


def mean_interval(values) -> Estimate:
    """Mean of per-seed values with a 95% t-interval: ``mean +- t_{0.975, n-1} s / sqrt(n)``
    (no bootstrap: with a handful of seeds a bootstrap interval is too narrow). One value:
    the mean and NaN bounds."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if len(v) < 2:
        return Estimate(m, float("nan"), float("nan"))
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return Estimate(m, m - half, m + half)

