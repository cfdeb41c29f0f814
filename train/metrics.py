"""Validation metrics for a binary classifier, without a scikit-learn dependency."""

from __future__ import annotations

import numpy as np


def roc_auc(label: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve: the probability that a random positive scores above a
    random negative (ties count half). None when one class is absent (undefined).

    Computed from ranks (Mann-Whitney U) with tied scores given their average rank.
    """
    label = np.asarray(label)
    score = np.asarray(score, dtype=np.float64)
    n_pos = int((label == 1).sum())
    n_neg = len(label) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    # Average ranks of tied scores (as scipy.stats.rankdata(method="average") does).
    order = np.argsort(score, kind="mergesort")
    inverse = np.empty(len(score), dtype=np.intp)
    inverse[order] = np.arange(len(score))
    sorted_scores = score[order]
    new_value = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
    dense = new_value.cumsum()[inverse]
    bounds = np.r_[np.flatnonzero(new_value), len(score)]
    ranks = 0.5 * (bounds[dense] + bounds[dense - 1] + 1)
    u = ranks[label == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def balanced_accuracy(label: np.ndarray, predicted: np.ndarray) -> float:
    """Mean of the per-class recalls (classes present in `label` only).

    With 10% positives, plain accuracy rewards predicting "negative" always (0.9); this
    gives that 0.5.
    """
    recalls = [float((predicted[label == c] == c).mean()) for c in (0, 1) if (label == c).any()]
    return float(np.mean(recalls))
