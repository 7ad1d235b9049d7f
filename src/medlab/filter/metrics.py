"""How well a filter finds known faults: ROC AUC and precision/recall/F1, with bootstrap CIs.

Pure functions over arrays: ``labels`` (1 = faulty), ``scores`` (higher = judged better),
``dropped`` (1 = the filter removed the sample). scikit-learn computes the statistics;
the percentile bootstrap resamples samples with a fixed seed.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score


def auroc(labels, scores) -> float | None:
    """ROC AUC of ``-scores`` for detecting ``labels`` (None if only one class is present)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    if labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, -scores))


def bootstrap_ci(statistic, *arrays, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 ) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic(*arrays)`` (resampling rows together)."""
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        index = rng.integers(0, n, n)
        value = statistic(*(a[index] for a in arrays))
        if value is not None:
            values.append(value)
    if len(values) < n_boot // 2:
        return None
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))


def detection(labels, dropped) -> dict[str, float]:
    """Precision, recall and F1 of the filter's drop decisions against the labels."""
    p, r, f, _ = precision_recall_fscore_support(np.asarray(labels), np.asarray(dropped), average="binary",
                                                 zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def error_rate(labels, keep) -> float | None:
    labels, keep = np.asarray(labels), np.asarray(keep, dtype=bool)
    return float(labels[keep].mean()) if keep.any() else None
