"""The judge's verdict: a cut-off per domain on the judge's scores, and the answers below it.

Scores are only comparable within a domain (an anesthesia answer about a drug the base
model half-knows scores lower than a general-medicine one it knows well), so each
domain gets its own cut-off. ``quantile`` mode keeps the best ``keep_quantile`` of each
domain's judged answers: the cut-off is the (1 - keep_quantile) quantile of its scores,
e.g. keep 0.8 -> drop the lowest 20%. ``threshold`` mode uses one fixed score for all.
The likelihood judge also gives a *prose* score (its weakest sentence outside the
fact), cut the same way with ``keep_quantile_prose``: it is what finds unsafe and
stigmatising sentences the fact score cannot see. An answer without a score is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from medlab.records import Sample


def judge_cutoffs(judged: Iterable[Sample], scores: Mapping[str, float], prose: Mapping[str, float], judge,
                  domains: Iterable[str]) -> tuple[dict[str, dict], dict[str, str]]:
    """(cut-offs per group ``{"score", "prose"}``, sample id -> ``judge`` | ``judge:prose``)
    for the ``judge`` params section (mode, keep_quantile, keep_quantile_prose, threshold,
    own_cutoff_methods). A group is a domain, or ``<domain>/<method>`` for a method of
    ``own_cutoff_methods``: answers whose scores are not comparable with a one-fact
    answer's (a consultation's last turn states several claims, so its worst claim sits
    lower) would fill the bottom quantile if cut with the rest; cut alone, they keep the
    same share and the other answers' cut-offs do not move. A group with no scored answer gets no cut-off; the prose
    cut-off is None in threshold mode or without prose scores."""
    judged = list(judged)
    own = set(getattr(judge, "own_cutoff_methods", ()) or ())
    groups: dict[str, list[Sample]] = {}
    for domain in domains:
        for s in judged:
            if s.domain == domain:
                method = s.provenance.get("method")
                groups.setdefault(f"{domain}/{method}" if method in own else domain, []).append(s)
    cutoffs: dict[str, dict] = {}
    reasons: dict[str, str] = {}
    for group, rows in groups.items():
        values = np.array([scores[s.id] for s in rows if s.id in scores])
        if not len(values):
            continue
        quantile = judge.mode == "quantile"
        cut = float(np.quantile(values, 1 - judge.keep_quantile)) if quantile else judge.threshold
        prose_values = np.array([prose[s.id] for s in rows if s.id in prose])
        prose_cut = float(np.quantile(prose_values, 1 - judge.keep_quantile_prose)) \
            if quantile and len(prose_values) else None
        cutoffs[group] = {"score": cut, "prose": prose_cut}
        for s in rows:
            if s.id in scores and scores[s.id] < cut:
                reasons[s.id] = "judge"
            elif prose_cut is not None and s.id in prose and prose[s.id] < prose_cut:
                reasons[s.id] = "judge:prose"
    return cutoffs, reasons


def reason_counts(reasons: Mapping[str, str]) -> dict[str, int]:
    """How many samples each reason dropped (``rule:<check>``, ``duplicate:<kind>``,
    ``contaminated``, ``judge``, ``judge:prose``), sorted by name."""
    def name(reason: str) -> str:
        parts = reason.split(":")
        return ":".join(parts[:2]) if reason.startswith(("rule", "duplicate")) else reason

    counts: dict[str, int] = {}
    for reason in reasons.values():
        counts[name(reason)] = counts.get(name(reason), 0) + 1
    return dict(sorted(counts.items()))
