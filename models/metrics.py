"""Ranking and calibration metrics shared by training manifests and the evaluation report (pure)."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

MAX_FPR = 0.01  # "recall at 1% FPR"
CALIBRATION_BINS = 10  # equal-width probability bins for ECE and the reliability diagram
BOOTSTRAP_RESAMPLES = 500
BOOTSTRAP_SEED = 0


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    return float(roc_auc_score(labels, scores))


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision: the step-wise area under the precision-recall curve."""
    return float(average_precision_score(labels, scores))


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float = MAX_FPR) -> float:
    """The highest recall of any threshold t (flag when score >= t) whose false-positive rate is at
    most `max_fpr`. Tied scores move together, so a tie across the budget is not split."""
    false_positive_rate, true_positive_rate, _ = roc_curve(labels, scores)
    return float(true_positive_rate[false_positive_rate <= max_fpr].max())


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None,
                               bins: int = CALIBRATION_BINS) -> float:
    """Sum over `bins` equal-width probability bins of (bin weight share) x |mean score - positive
    rate| in the bin; a score of exactly 1 falls in the last bin. `weights` (1 per row by default)
    weigh both the bin shares and the means within a bin."""
    labels, scores = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=float)
    bin_of = np.minimum((scores * bins).astype(int), bins - 1)
    error = 0.0
    for b in np.unique(bin_of):
        inside = bin_of == b
        w = weights[inside]
        gap = np.average(scores[inside], weights=w) - np.average(labels[inside], weights=w)
        error += w.sum() / weights.sum() * abs(gap)
    return float(error)


def prior_weights(labels: np.ndarray, rate: float) -> np.ndarray:
    """Per-row weights that give 0/1 `labels` a positive share of `rate`: positives weigh rate / p and
    negatives (1 - rate) / (1 - p), where p is the labels' own positive share."""
    p = labels.mean()
    return np.where(labels == 1, rate / p, (1 - rate) / (1 - p))


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count half): equal to roc_auc_score, and fast
    enough to run hundreds of times per metric."""
    positive = labels == 1
    n_positive, n_negative = positive.sum(), (~positive).sum()
    rank_sum = rankdata(scores)[positive].sum()
    return float((rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def auc_interval(labels: np.ndarray, scores: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """A 95% percentile bootstrap interval of ROC-AUC (rows resampled with replacement, seeded): several
    test sets have fewer than 10 positives."""
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(resamples):
        sample = rng.integers(0, len(labels), len(labels))
        if 0 < labels[sample].sum() < len(sample):
            aucs.append(rank_auc(labels[sample], scores[sample]))
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)
