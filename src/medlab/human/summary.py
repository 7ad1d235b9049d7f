"""What the ratings say about the models: mean score per model and dimension, and
win / tie / lose per pair, each with a 95% bootstrap CI that resamples *questions*
(all ratings of a question move together: several raters rating the same answer are
not independent evidence), plus the LLM judge's agreement with the humans."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medlab.human.agreement import agreement
from medlab.stats import bootstrap_ci, mean_ci

JUDGE = "llm_judge"  # the judge's rater id when it is counted as one more rater


def model_scores(score_rows: Sequence[dict], dimensions: Sequence[str], n_boot: int, seed: int) -> dict:
    """{model: {dimension: {mean, ci, n (questions), ratings}}}: each question's ratings of a
    model's answer averaged first, then the mean over questions and its CI."""
    out: dict[str, dict] = {}
    for model in sorted({r["model"] for r in score_rows}):
        out[model] = {}
        for d in dimensions:
            per_item: dict[str, list[int]] = {}
            for r in score_rows:
                if r["model"] == model and r["dimension"] == d:
                    per_item.setdefault(r["item"], []).append(r["score"])
            stats = mean_ci([np.mean(v) for v in per_item.values()], n_boot=n_boot, seed=seed)
            out[model][d] = {**stats, "ratings": sum(len(v) for v in per_item.values())}
    return out


def win_tie_lose(preference_rows: Sequence[dict], n_boot: int, seed: int) -> dict:
    """Per pair ``"a vs b"``: the shares of ratings where a wins, ties, loses, a's net
    win rate (win - lose), each with a CI resampling units (HuatuoGPT-II reports these
    shares, without CIs)."""
    out = {}
    for a, b in sorted({(r["a"], r["b"]) for r in preference_rows}):
        units: dict[str, list[int]] = {}
        for r in preference_rows:
            if (r["a"], r["b"]) == (a, b):
                units.setdefault(r["unit"], [0, 0, 0])[("a", "tie", "b").index(r["outcome"])] += 1
        counts = np.array(list(units.values()), dtype=float)  # units x (win, tie, lose)

        def share(c, k):
            return c[:, k].sum() / c.sum()

        result = {"n_units": len(counts), "ratings": int(counts.sum())}
        for name, statistic in (("win", lambda c: share(c, 0)), ("tie", lambda c: share(c, 1)),
                                ("lose", lambda c: share(c, 2)), ("net", lambda c: share(c, 0) - share(c, 2))):
            ci = bootstrap_ci(statistic, counts, n_boot=n_boot, seed=seed)
            result[name] = float(statistic(counts))
            result[f"{name}_ci"] = list(ci) if ci else None
        out[f"{a} vs {b}"] = result
    return out


def judge_agreement(score_rows: Sequence[dict], preference_rows: Sequence[dict], judge_scores: Sequence[dict],
                    judge_preferences: Sequence[dict], raters: Sequence[str], dimensions: Sequence[str]) -> dict:
    """The judge as one more rater: per dimension and for the preference, alpha of the
    humans alone and with the judge, and kappa of the judge against each human (their
    mean). A judge that agrees with the humans as well as they agree with each other
    leaves alpha where it was."""
    humans = agreement(score_rows, preference_rows, raters, dimensions)
    both = agreement([*score_rows, *judge_scores], [*preference_rows, *judge_preferences], [*raters, JUDGE],
                     dimensions)
    out = {}
    for k in humans:
        with_judge = {p: v for p, v in both[k]["kappa_pairs"].items() if p.endswith(f"~{JUDGE}")}
        known = [v["kappa"] for v in with_judge.values() if v["kappa"] is not None]
        out[k] = {"alpha_humans": humans[k]["alpha"], "alpha_with_judge": both[k]["alpha"],
                  "kappa_judge_human": with_judge, "kappa_judge_mean": float(np.mean(known)) if known else None,
                  "kappa_human_mean": humans[k]["kappa_mean"]}
    return out


def summarise(score_rows: Sequence[dict], preference_rows: Sequence[dict], raters: Sequence[str],
              dimensions: Sequence[str], n_boot: int, seed: int) -> dict:
    """Everything the unblind stage reports about the humans' ratings, in one dict."""
    return {"raters": list(raters), "ratings": len(preference_rows),
            "units": len({r["unit"] for r in preference_rows}),
            "scores": model_scores(score_rows, dimensions, n_boot, seed),
            "win_tie_lose": win_tie_lose(preference_rows, n_boot, seed),
            "agreement": agreement(score_rows, preference_rows, raters, dimensions)}


def _num(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(ci) -> str:
    return "" if not ci else f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def markdown(result: dict, dimensions: Sequence[str]) -> str:
    """The summary as three Markdown tables: scores, win/tie/lose, agreement."""
    lines = ["| model | " + " | ".join(dimensions) + " |", "|---|" + "---|" * len(dimensions)]
    for model, dims in result["scores"].items():
        lines.append(f"| {model} | " + " | ".join(f"{_num(dims[d]['mean'])}{_ci(dims[d]['ci'])}" for d in dimensions)
                     + " |")
    lines += ["", "| pair | a wins | tie | a loses | net (win − lose) | units | ratings |", "|---|---|---|---|---|---|---|"]
    for pair, w in result["win_tie_lose"].items():
        lines.append(f"| {pair} | {_num(w['win'])}{_ci(w['win_ci'])} | {_num(w['tie'])}{_ci(w['tie_ci'])} | "
                     f"{_num(w['lose'])}{_ci(w['lose_ci'])} | {_num(w['net'])}{_ci(w['net_ci'])} | {w['n_units']} | "
                     f"{w['ratings']} |")
    lines += ["", "| rated | Krippendorff's α | mean Cohen's κ | κ weights | units rated by ≥ 2 |", "|---|---|---|---|---|"]
    for what, a in result["agreement"].items():
        lines.append(f"| {what} | {_num(a['alpha'])} ({a['alpha_level']}) | {_num(a['kappa_mean'])} | "
                     f"{a['kappa_weights']} | {a['n_multi']} |")
    return "\n".join(lines) + "\n"
