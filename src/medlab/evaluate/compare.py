"""Models compared on the same items: the model x metric table and paired tests.

Every ``evaluate@<model>`` stage saves per-item outcomes (``data/evaluate/<model>/
outcomes.json``), keyed by task (``anesthesia_mcq/cloze``, ``anesthesia_qa``,
``kb_ner``, ...) and item id. A comparison of models a and b on a task uses only the
items both answered, and treats each item as the unit that is resampled:

* MCQ (0/1 per item): difference of accuracies with a paired-bootstrap 95% CI, and the
  exact McNemar test on the discordant items;
* QA: grounded correctness the same way (items with gold entities only), and ROUGE-L
  (characters) by paired bootstrap;
* NER: difference of micro-F1, bootstrapping sentences (each contributes its true
  positives, predicted and gold counts to both models' F1 at once);
* consultations: the diagnosis named (0/1 per case) like MCQ, and the share of findings
  elicited by paired bootstrap beside it.

Many comparisons are made at once, so p-values are also given Holm-adjusted over the
whole family (``holm``): a "significant" row then holds at 5% family-wise error.

Seeds: when both models of a pair were trained with several seeds (``finetune.seeds``,
``seeded_recipes``; evaluate writes each further seed's outcomes), the row is the mean
over seeds of the per-seed paired difference, with a CI and p from a hierarchical
bootstrap (seeds, then items: ``medlab.stats.hierarchical_bootstrap``), every seed's own
difference, and whether they all share its sign (``compare_seeds``). Rows of a model
trained once say ``n_seeds: 1``: their CI holds the test items' variance only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medlab.evaluate.ner import micro_f1_of_counts
from medlab.stats import hierarchical_bootstrap, mcnemar, paired_bootstrap


def task_kind(task: str, outcome=None) -> str:
    """mcq | qa | ner | consult, from an outcomes key (and one outcome: a dict is a graded
    answer, as QA and CMB-Clin tasks write them; one with ``elicited`` a consultation's measures)."""
    if isinstance(outcome, Mapping) and "elicited" in outcome:
        return "consult"
    if isinstance(outcome, Mapping) or task.endswith("_qa"):
        return "qa"
    if task.endswith("ner") or task.startswith("ner"):
        return "ner"
    return "mcq"


def _common(a: Mapping[str, object], b: Mapping[str, object]) -> list[str]:
    return [k for k in a if k in b]


def paired_f1(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> dict:
    """Micro-F1(a) - micro-F1(b) over the same sentences, with a paired-bootstrap CI and p."""
    rng = np.random.default_rng(seed)
    n = len(a)
    diffs = []
    for _ in range(n_boot):
        index = rng.integers(0, n, n)
        diffs.append(micro_f1_of_counts(a[index]) - micro_f1_of_counts(b[index]))
    diffs = np.array(diffs)
    p = min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())) if n_boot else None
    lo, hi = (np.quantile(diffs, [0.025, 0.975]) if n_boot else (np.nan, np.nan))
    return {"diff": micro_f1_of_counts(a) - micro_f1_of_counts(b), "ci": [float(lo), float(hi)], "p": p, "n": n}


def paired_binary(a: Sequence, b: Sequence, metric: str, n_boot: int, seed: int) -> dict:
    """0/1 outcomes of two models on the same items: paired bootstrap of the difference and
    the exact McNemar test, with both means."""
    x, y = np.array(a, dtype=float), np.array(b, dtype=float)
    out = paired_bootstrap(x, y, n_boot=n_boot, seed=seed)
    out["mcnemar"] = mcnemar(x, y)
    out["metric"] = metric
    out["mean_a"], out["mean_b"] = float(x.mean()), float(y.mean())
    return out


def compare_task(task: str, a: Mapping, b: Mapping, n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired comparison of two models' outcomes on one task (a - b)."""
    ids = _common(a, b)
    if not ids:
        raise ValueError(f"{task}: the two models share no items")
    kind = task_kind(task, a[ids[0]])
    if kind == "mcq":  # outcome = [correct as written, correct under every rotation]
        return paired_binary([a[i][0] for i in ids], [b[i][0] for i in ids], "acc", n_boot, seed)
    if kind == "consult":  # diagnosis named (0/1, McNemar) where the case knows it; elicited share beside it
        graded = [i for i in ids if a[i]["diagnosis"] is not None and b[i]["diagnosis"] is not None]
        out = paired_binary([a[i]["diagnosis"] for i in graded], [b[i]["diagnosis"] for i in graded], "diagnosis",
                            n_boot, seed)
        both = [i for i in ids if a[i]["elicited"] is not None and b[i]["elicited"] is not None]
        out["elicited"] = paired_bootstrap([a[i]["elicited"] for i in both], [b[i]["elicited"] for i in both],
                                           n_boot=n_boot, seed=seed)
        return out
    if kind == "qa" and not any(a[i]["grounded"] is not None for i in ids):  # no gold entities (CMB-Clin)
        rx = np.array([a[i]["rouge_l_char"] for i in ids])
        ry = np.array([b[i]["rouge_l_char"] for i in ids])
        out = paired_bootstrap(rx, ry, n_boot=n_boot, seed=seed)
        out["metric"] = "rouge_l_char"
        out["mean_a"], out["mean_b"] = float(rx.mean()), float(ry.mean())
        return out
    if kind == "qa":
        graded = [i for i in ids if a[i]["grounded"] is not None and b[i]["grounded"] is not None]
        out = paired_binary([a[i]["grounded"] for i in graded], [b[i]["grounded"] for i in graded], "grounded_acc",
                            n_boot, seed)
        rx = np.array([a[i]["rouge_l_char"] for i in ids])
        ry = np.array([b[i]["rouge_l_char"] for i in ids])
        out["rouge_l_char"] = paired_bootstrap(rx, ry, n_boot=n_boot, seed=seed)
        return out
    x = np.array([a[i] for i in ids], dtype=float)
    y = np.array([b[i] for i in ids], dtype=float)
    out = paired_f1(x, y, n_boot, seed)
    out["metric"] = "micro_f1"
    out["mean_a"], out["mean_b"] = micro_f1_of_counts(x), micro_f1_of_counts(y)
    return out


def _f1_gap(a: np.ndarray, b: np.ndarray) -> float:
    return micro_f1_of_counts(a) - micro_f1_of_counts(b)


def _mean(d: np.ndarray) -> float:
    return float(d.mean())


def seed_units(task: str, a: Mapping, b: Mapping) -> tuple[str, tuple[np.ndarray, ...], object, float, float]:
    """One seed's paired comparison reduced to what the hierarchical bootstrap resamples:
    (metric, per-item arrays, statistic of them, mean of a, mean of b) on the items both
    have -- the same metric ``compare_task`` tests (accuracy, grounded accuracy, ROUGE-L
    without gold entities, micro-F1 from per-sentence counts, diagnosis named)."""
    ids = _common(a, b)
    if not ids:
        raise ValueError(f"{task}: the two models share no items")
    kind = task_kind(task, a[ids[0]])
    if kind == "ner":
        x = np.array([a[i] for i in ids], dtype=float)
        y = np.array([b[i] for i in ids], dtype=float)
        return "micro_f1", (x, y), _f1_gap, micro_f1_of_counts(x), micro_f1_of_counts(y)
    if kind == "mcq":
        metric, x, y = "acc", [a[i][0] for i in ids], [b[i][0] for i in ids]
    elif kind == "consult":
        graded = [i for i in ids if a[i]["diagnosis"] is not None and b[i]["diagnosis"] is not None]
        metric, x, y = "diagnosis", [a[i]["diagnosis"] for i in graded], [b[i]["diagnosis"] for i in graded]
    elif not any(a[i]["grounded"] is not None for i in ids):
        metric, x, y = "rouge_l_char", [a[i]["rouge_l_char"] for i in ids], [b[i]["rouge_l_char"] for i in ids]
    else:
        graded = [i for i in ids if a[i]["grounded"] is not None and b[i]["grounded"] is not None]
        metric, x, y = "grounded_acc", [a[i]["grounded"] for i in graded], [b[i]["grounded"] for i in graded]
    x, y = np.array(x, dtype=float), np.array(y, dtype=float)
    return metric, (x - y,), _mean, float(x.mean()), float(y.mean())


def compare_seeds(task: str, a: Mapping[int, Mapping], b: Mapping[int, Mapping], n_boot: int = 2000,
                  seed: int = 0) -> dict:
    """a - b on one task over the seeds both were trained with (``a``/``b``: seed ->
    outcomes of that task), each seed paired item by item: the mean of the per-seed
    differences, a hierarchical-bootstrap CI and p, the per-seed differences and whether
    every seed agrees in sign."""
    seeds = [s for s in a if s in b]
    units = {s: seed_units(task, a[s], b[s]) for s in seeds}
    metric = units[seeds[0]][0]
    out = hierarchical_bootstrap({s: u[1] for s, u in units.items()}, units[seeds[0]][2], n_boot, seed)
    out.update(metric=metric, n_seeds=len(seeds),
               mean_a=float(np.mean([u[3] for u in units.values()])),
               mean_b=float(np.mean([u[4] for u in units.values()])),
               per_seed_means={str(s): [u[3], u[4]] for s, u in units.items()})
    return out


def outcome_score(task: str, outcomes: Mapping) -> float | None:
    """A task's score from its per-item outcomes (the compare metric, as ``seed_units``
    computes it for one model): accuracy, grounded accuracy, ROUGE-L, micro-F1 or the
    share of cases with the diagnosis named."""
    if not outcomes:
        return None
    return seed_units(task, outcomes, outcomes)[3]


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None): sort ascending, multiply the
    k-th smallest by (m - k), keep the sequence monotone, cap at 1."""
    known = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(known)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(sorted(known)):
        running = max(running, min(1.0, (m - k) * p))
        adjusted[i] = running
    return adjusted


def decisive_p(result: dict) -> float | None:
    """The p-value a comparison is judged by: McNemar's where there is one (0/1
    outcomes of one model each), else the (paired or hierarchical) bootstrap's."""
    return result["mcnemar"]["p"] if "mcnemar" in result else result.get("p")


def compare_models(outcomes: Mapping[str, Mapping[str, Mapping]], pairs: Sequence[tuple[str, str]],
                   tasks: Sequence[str], n_boot: int = 2000, seed: int = 0,
                   replicates: Mapping[str, Mapping[int, Mapping[str, Mapping]]] | None = None) -> list[dict]:
    """Every pair on every task both models have; p-values Holm-adjusted over all rows.

    ``replicates``: model -> seed -> outcomes, the first seed's being ``outcomes[model]``
    (models trained once may be absent). A pair whose models share two or more seeds that
    all have the task is compared over those seeds (``compare_seeds``; ``item_level`` keeps
    the first seed's item-level test beside it); any other pair on its one model each."""
    replicates = replicates or {}
    rows = []
    for a, b in pairs:
        for task in tasks:
            if task in outcomes[a] and task in outcomes[b]:
                single = compare_task(task, outcomes[a][task], outcomes[b][task], n_boot, seed)
                ra, rb = replicates.get(a, {}), replicates.get(b, {})
                common = [s for s in ra if s in rb and task in ra[s] and task in rb[s]]
                if len(common) >= 2:
                    item_level = {k: single[k] for k in ("diff", "ci", "p", "n")} | {"p_test": decisive_p(single)}
                    rows.append({"a": a, "b": b, "task": task, **compare_seeds(
                        task, {s: ra[s][task] for s in common}, {s: rb[s][task] for s in common}, n_boot, seed),
                        "item_level": item_level})
                else:
                    rows.append({"a": a, "b": b, "task": task, **single, "n_seeds": 1})
    for row, adjusted in zip(rows, holm([decisive_p(r) for r in rows]), strict=True):
        row["p_test"] = decisive_p(row)
        row["p_holm"] = adjusted
    return rows


# ------------------------------------------------------------------------ the table
COLUMNS = {  # column name -> (path in the metrics file, CI path or None)
    # how the MCQ columns were scored: the headline log-likelihood scoring, or generation
    # for a hosted model (an endpoint answers in text only)
    "MCQ scoring": (("anesthesia_mcq", "scoring"), None),
    "anesthesia MCQ": (("anesthesia_mcq", "acc"), ("anesthesia_mcq", "acc_ci")),
    "anesthesia MCQ, options shown, rotation-consistent": (
        ("anesthesia_mcq", "scorings", "option_text", "acc_rotation"),
        ("anesthesia_mcq", "scorings", "option_text", "acc_rotation_ci")),
    "general MCQ": (("general_mcq", "acc"), ("general_mcq", "acc_ci")),
    "case MCQ": (("anesthesia_rc", "acc"), ("anesthesia_rc", "acc_ci")),
    "MCQ by generation": (("anesthesia_mcq", "scorings", "generation", "acc"),
                          ("anesthesia_mcq", "scorings", "generation", "acc_ci")),
    "MCQ by generation: no answer": (("anesthesia_mcq", "scorings", "generation", "no_answer_rate"), None),
    "QA grounded": (("anesthesia_qa", "grounded_acc"), ("anesthesia_qa", "grounded_acc_ci")),
    "QA ROUGE-L (char)": (("anesthesia_qa", "rouge_l_char"), None),
    "QA BLEU": (("anesthesia_qa", "bleu"), None),
    "NER F1": (("kb_ner", "f1"), ("kb_ner", "f1_ci")),
    "consult: findings elicited": (("anesthesia_consult", "elicited"), ("anesthesia_consult", "elicited_ci")),
    "consult: diagnosis named": (("anesthesia_consult", "diagnosis"), ("anesthesia_consult", "diagnosis_ci")),
}


def _get(metrics: Mapping, path: Sequence[str]):
    for key in path:
        if not isinstance(metrics, Mapping) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def metric_table(metrics: Mapping[str, Mapping], columns: Mapping = COLUMNS) -> list[dict]:
    """One row per model: {"model", column: {"value", "ci"} or None}."""
    rows = []
    for model, m in metrics.items():
        row: dict = {"model": model}
        for name, (path, ci_path) in columns.items():
            value = _get(m, path)
            row[name] = None if value is None else {"value": value, "ci": _get(m, ci_path) if ci_path else None}
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[dict], digits: int = 3) -> str:
    """The table as Markdown: value [lo, hi]; columns no model has are dropped."""
    names = [c for c in rows[0] if c != "model" and any(r[c] is not None for r in rows)]

    def cell(v):
        if v is None:
            return "–"
        text = f"{v['value']:.{digits}f}" if isinstance(v["value"], float) else str(v["value"])
        if v["ci"]:
            text += f" [{v['ci'][0]:.{digits}f}, {v['ci'][1]:.{digits}f}]"
        return text

    lines = ["| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += ["| " + r["model"] + " | " + " | ".join(cell(r[c]) for c in names) + " |" for r in rows]
    return "\n".join(lines) + "\n"


CONSULT_MEASURES = ("elicited", "diagnosis", "advice", "criteria_score", "flagged")


def separation(estimates: Mapping[str, tuple[float | None, Sequence[float] | None]]) -> dict:
    """Whether one measure tells the models apart: the spread of their means and whether any
    two models' 95% CIs are disjoint (``separates``; None when CIs are missing). A measure
    whose every CI overlaps every other cannot rank these models, however it is averaged."""
    known = {m: (v, ci) for m, (v, ci) in estimates.items() if v is not None}
    if len(known) < 2:
        return {"models": len(known), "spread": None, "separates": None}
    means = [v for v, _ in known.values()]
    cis = [ci for _, ci in known.values()]
    disjoint = None if any(ci is None for ci in cis) else any(
        a[1] < b[0] or b[1] < a[0] for k, a in enumerate(cis) for b in cis[k + 1:])
    return {"models": len(known), "spread": float(max(means) - min(means)), "separates": disjoint}


def consult_separation(metrics: Mapping[str, Mapping], task: str) -> dict:
    """For a consultation task: each judge-free measure's and each judge rubric dimension's
    separation across models, and (with a judge) the Spearman correlation over models of
    each rubric dimension with each judge-free measure -- does the judge see what the
    transcript shows?"""
    from scipy.stats import spearmanr

    rows = {m: v[task] for m, v in metrics.items() if task in v}
    out: dict = {"measures": {}, "rubric": {}, "correlation": {}}
    for name in CONSULT_MEASURES:
        out["measures"][name] = separation({m: (r.get(name), r.get(f"{name}_ci")) for m, r in rows.items()})
    judged = {m: r["judge"]["rubric"] for m, r in rows.items() if (r.get("judge") or {}).get("rubric")}
    dims = sorted({d for r in judged.values() for d in r})
    for d in dims:
        out["rubric"][d] = separation({m: (r[d]["mean"], r[d]["ci"]) for m, r in judged.items() if d in r})
        for name in CONSULT_MEASURES:
            pairs = [(judged[m][d]["mean"], rows[m].get(name)) for m in judged
                     if d in judged[m] and rows[m].get(name) is not None]
            if len(pairs) >= 3 and len({p[0] for p in pairs}) > 1 and len({p[1] for p in pairs}) > 1:
                rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
                out["correlation"][f"{d}~{name}"] = float(rho)
    return out
