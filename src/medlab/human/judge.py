"""The LLM judge as one more rater of the exported units: the rubric judge scores every
answer, the pairwise judge (both orders) states a preference, and the results come out as
rating rows like a human's (rater ``llm_judge``), so the same agreement statistics compare
it with the humans. Calls go through the call cache (the evaluate stage's prompts, so
answers it already graded cost nothing)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medlab.evaluate import judges
from medlab.human.package import LABELS, Unit
from medlab.human.summary import JUDGE
from medlab.llm.base import Backend, Decoding
from medlab.llm.cache import CallCache


def judge_units(units: Sequence[Unit], key: Mapping[str, dict], dimensions: Sequence[str], backend: Backend,
                calls: CallCache, decoding: Decoding, max_attempts: int,
                max_unparseable_fraction: float) -> tuple[list[dict], list[dict], dict]:
    """(score rows, preference rows, counts) of the judge over ``units``; an answer or a pair
    the judge left unreadable gets no row (counted in ``counts``), never a default."""
    answers = [(u, label) for u in units for label in LABELS]
    rubric = judges.judge_rubric([(u.question, u.reference, u.answers[label]) for u, label in answers], backend,
                                 calls, decoding, max_attempts, max_unparseable_fraction=max_unparseable_fraction)
    scores = []
    for (u, label), graded in zip(answers, rubric["scores"], strict=True):
        if graded is not None:
            k = key[u.id]
            scores += [{"rater": JUDGE, "unit": u.id, "item": k["item"], "model": k[label], "dimension": d,
                        "score": int(round(graded[d]))} for d in dimensions]
    pairwise = judges.judge_pairwise([(u.question, u.answers["A"], u.answers["B"]) for u in units], backend, calls,
                                     decoding, max_attempts, max_unparseable_fraction=max_unparseable_fraction)
    preferences = []
    for u, outcome in zip(units, pairwise["outcomes"], strict=True):  # outcome "a" = answer A won
        if outcome is not None:
            k = key[u.id]
            winner = "tie" if outcome == "tie" else k["A" if outcome == "a" else "B"]
            a, b = k["pair"]
            preferences.append({"rater": JUDGE, "unit": u.id, "item": k["item"], "a": a, "b": b,
                                "outcome": "tie" if winner == "tie" else ("a" if winner == a else "b")})
    counts = {"answers": len(answers), "answers_unparseable": rubric["unparseable"], "units": len(units),
              "units_unparseable": pairwise["unparseable"],
              "first_position_share": pairwise["first_position_share"]}
    return scores, preferences, counts
