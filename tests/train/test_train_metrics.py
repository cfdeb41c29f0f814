"""Validation metrics against their definitions."""

from __future__ import annotations

import numpy as np

from train.metrics import balanced_accuracy, roc_auc


def brute_force_auc(label: np.ndarray, score: np.ndarray) -> float:
    pos, neg = score[label == 1][:, None], score[label == 0][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def test_roc_auc_matches_the_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        label = rng.integers(0, 2, 300)
        score = rng.integers(0, 6, 300) + label * rng.random(300)
        assert abs(roc_auc(label, score) - brute_force_auc(label, score)) < 1e-12
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert roc_auc(np.array([0, 1]), np.array([1.0, 1.0])) == 0.5
    assert roc_auc(np.array([1, 1]), np.array([0.1, 0.2])) is None


def test_balanced_accuracy_is_the_mean_recall() -> None:
    label = np.array([0] * 90 + [1] * 10)
    assert balanced_accuracy(label, np.zeros(100, dtype=int)) == 0.5
    predicted = np.array([0] * 81 + [1] * 9 + [1] * 5 + [0] * 5)
    assert abs(balanced_accuracy(label, predicted) - (0.9 + 0.5) / 2) < 1e-12
