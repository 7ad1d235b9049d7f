"""How well a filter finds known faults: ROC AUC and precision/recall/F1, with bootstrap CIs.

Pure functions over arrays: ``labels`` (1 = faulty), ``scores`` (higher = judged better),
``dropped`` (1 = the filter removed the sample). scikit-learn computes precision/recall/F1;
ROC AUC is the Mann-Whitney form (midranks from scipy: ties count one half, as in
scikit-learn's ``roc_auc_score``), ~10x faster per call, which is what the bootstrap pays
500 times per fault and score (4 faults x 2 scores: 14 s of the filter stage with
``roc_auc_score``). CIs come from medlab.stats.bootstrap_ci (percentile bootstrap, fixed seed).
``fault_report`` applies them to the faults the simulated teacher planted (each sample's
``truth``); with a real teacher there is no such truth and it says so instead.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import precision_recall_fscore_support

from medlab.records import Sample
from medlab.stats import bootstrap_ci

FAULTS = ("factual", "unsafe", "off_format", "stigma")  # what the simulated teacher plants


def auroc(labels, scores) -> float | None:
    """ROC AUC of ``-scores`` for detecting ``labels`` (None if only one class is present)."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, dtype=float)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    # AUC = P(a faulty sample scores lower than a clean one) + P(tie) / 2
    #     = (sum of the faulty samples' midranks of -score - n1 (n1 + 1) / 2) / (n1 n0)
    ranks = rankdata(-scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def detection(labels, dropped) -> dict[str, float]:
    """Precision, recall and F1 of the filter's drop decisions against the labels."""
    p, r, f, _ = precision_recall_fscore_support(np.asarray(labels), np.asarray(dropped), average="binary",
                                                 zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def error_rate(labels, keep) -> float | None:
    labels, keep = np.asarray(labels), np.asarray(keep, dtype=bool)
    return float(labels[keep].mean()) if keep.any() else None


def _judge_auroc(truth: list[Sample], fault: str, table, n_boot: int, seed: int):
    """ROC AUC (and CI) of a score table for ``fault`` against clean samples, and their count."""
    rows = [s for s in truth if s.id in table and s.truth["fault"] in (fault, "none")]
    labels = np.array([s.truth["fault"] == fault for s in rows], dtype=int)
    values = np.array([table[s.id] for s in rows])
    return auroc(labels, values), bootstrap_ci(auroc, labels, values, n_boot=n_boot, seed=seed), len(rows)


def knowledge_group(sample: Sample, covered: set[str]) -> str:
    """What the judge could know about a sample's fact: its subject was in the pre-training corpus or not."""
    subject = (sample.provenance.get("source") or {}).get("subject")
    if sample.domain == "general_medicine":
        return "general medicine (all in corpus)"
    if subject is None:
        return "no KB subject"
    return "anesthesia, subject in corpus" if subject in covered else "anesthesia, subject NOT in corpus"


def fault_report(samples: list[Sample], reasons: dict[str, str], scores: dict[str, float],
                 prose: dict[str, float], covered: set[str], seed: int, n_boot: int = 500) -> dict:
    """The filter measured against planted faults: per fault the judge's (and prose score's)
    ROC AUC and the whole filter's drop precision/recall and fault rate before -> after;
    the factual-error AUC by whether the judge's pre-training corpus held the subject (a
    fact it never read is invisible to it); any-fault rates. ``{"skipped": why}`` when no
    sample carries ground truth (a real teacher)."""
    truth = [s for s in samples if s.truth is not None and "fault" in s.truth]
    if not truth:
        return {"skipped": "no sample carries a planted fault (a real teacher): nothing to measure the filter "
                           "against; its decisions are still applied"}
    by_fault = {}
    for fault in FAULTS:
        value, ci, n = _judge_auroc(truth, fault, scores, n_boot, seed)
        labels = np.array([s.truth["fault"] == fault for s in truth], dtype=int)
        dropped = np.array([s.id in reasons for s in truth], dtype=int)
        prose_value, prose_ci, _ = _judge_auroc(truth, fault, prose, n_boot, seed) if prose else (None, None, 0)
        by_fault[fault] = {"judge_auroc": value, "judge_auroc_ci": ci, "n": n,
                           "prose_auroc": prose_value, "prose_auroc_ci": prose_ci, **detection(labels, dropped),
                           "rate_before": float(labels.mean()), "rate_after": error_rate(labels, 1 - dropped)}
    judged = [s for s in truth if s.id in scores]
    by_knowledge = {}
    for group in sorted({knowledge_group(s, covered) for s in judged}):
        rows = [s for s in judged if knowledge_group(s, covered) == group and s.truth["fault"] in ("factual", "none")]
        labels = np.array([s.truth["fault"] == "factual" for s in rows], dtype=int)
        if 0 < labels.sum() < len(labels):
            values = np.array([scores[s.id] for s in rows])
            by_knowledge[group] = {"auroc": auroc(labels, values), "n": len(rows), "factual": int(labels.sum()),
                                   "auroc_ci": bootstrap_ci(auroc, labels, values, n_boot=n_boot, seed=seed)}
    any_labels = np.array([s.truth["fault"] != "none" for s in truth], dtype=int)
    any_dropped = np.array([s.id in reasons for s in truth], dtype=int)
    factual = by_fault["factual"]
    return {"auroc": factual["judge_auroc"], "auroc_ci": factual["judge_auroc_ci"],
            "error_rate_before": factual["rate_before"], "error_rate_after": factual["rate_after"],
            "any_fault_rate_before": float(any_labels.mean()),
            "any_fault_rate_after": error_rate(any_labels, 1 - any_dropped),
            "by_fault": by_fault, "factual_auroc_by_knowledge": by_knowledge,
            "whole_filter_any_fault": detection(any_labels, any_dropped)}
