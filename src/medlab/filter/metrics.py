"""How well a filter finds known faults: ROC AUC and precision/recall/F1, with bootstrap CIs.

Pure functions over arrays: ``labels`` (1 = faulty), ``scores`` (higher = judged better),
``dropped`` (1 = the filter removed the sample). scikit-learn computes the statistics;
CIs come from medlab.stats.bootstrap_ci (percentile bootstrap, fixed seed).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from medlab.stats import bootstrap_ci  # noqa: F401  (re-exported: the filter report's CIs)


def auroc(labels, scores) -> float | None:
    """ROC AUC of ``-scores`` for detecting ``labels`` (None if only one class is present)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    if labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, -scores))


def detection(labels, dropped) -> dict[str, float]:
    """Precision, recall and F1 of the filter's drop decisions against the labels."""
    p, r, f, _ = precision_recall_fscore_support(np.asarray(labels), np.asarray(dropped), average="binary",
                                                 zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def error_rate(labels, keep) -> float | None:
    labels, keep = np.asarray(labels), np.asarray(keep, dtype=bool)
    return float(labels[keep].mean()) if keep.any() else None
