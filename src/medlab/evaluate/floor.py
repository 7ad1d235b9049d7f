"""Tasks at the floor: which tasks no model lifts above chance (MCQ) or above 0, and the measured reason.

A task at the floor separates no model from guessing; the compare stage keeps it out of
the headline and the report lists it with its reason, computed from the metrics files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def _span(values: Sequence[float], fmt: str) -> str:
    return format(min(values), fmt) if min(values) == max(values) else f"{min(values):{fmt}}–{max(values):{fmt}}"


def generation_floor_reason(generation: Mapping[str, Mapping], metrics: Mapping[str, Mapping]) -> str:
    """Why generation-mode MCQ is at chance: no letter in the answers, or -- for the models
    whose answers do hold one (no answer under half the time) -- letters at chance, with the
    same models' letter scoring (log-likelihood of each letter) and cloze scoring (the
    option texts alone) beside it: knowing the answer is not the same as naming its letter."""
    answering = {m: g for m, g in generation.items() if g["no_answer_rate"] < 0.5}
    if not answering:
        return f"{_span([g['no_answer_rate'] for g in generation.values()], '.0%')} of the answers hold no parseable letter"
    chance = next(iter(generation.values()))["chance"]
    def scoring(name: str) -> list[float]:
        return [metrics[m]["anesthesia_mcq"]["scorings"][name]["acc"] for m in answering
                if name in metrics[m]["anesthesia_mcq"].get("scorings", {})]

    letters, cloze = scoring("letter"), scoring("cloze")
    n = len(answering)
    return (f"the {n} model{'s' if n > 1 else ''} whose answers hold a letter (no answer "
            f"{_span([g['no_answer_rate'] for g in answering.values()], '.0%')}) pick{'' if n > 1 else 's'} the right one "
            f"{_span([g['acc'] for g in answering.values()], '.2f')} of the time, every CI includes chance "
            f"{chance:.2f}" + (f"; their letter scoring (log-likelihood of each letter after the options) gives "
                                f"{_span(letters, '.2f')}" if letters else "")
            + (f", their cloze scoring (each option's text, no letters) {_span(cloze, '.2f')}: they know answers "
               "they cannot point to by letter" if cloze and letters and min(cloze) > max(letters) else ""))


def floor_check(metrics: Mapping[str, Mapping]) -> dict:
    """Which tasks no model lifts off the floor, and the measured reason. A task is *above
    the floor* when at least one model's 95% CI lies wholly above it (MCQ: chance; QA
    grounded, NER F1, consultation measures: 0); a task at the floor separates no model
    from guessing and belongs out of any headline."""
    out: dict = {}

    def rows(task):
        return {m: v[task] for m, v in metrics.items() if task in v}

    for column, task in (("anesthesia MCQ", "anesthesia_mcq"), ("general MCQ", "general_mcq"),
                         ("case MCQ", "anesthesia_rc")):
        r = rows(task)
        if r:
            chance = next(iter(r.values()))["chance"]
            above = sorted(m for m, v in r.items() if v.get("acc_ci") and v["acc_ci"][0] > chance)
            out[column] = {"floor": chance, "above": above, "reason": None if above else
                           f"every model's 95% CI includes chance {chance:.2f} (accuracy "
                           f"{_span([v['acc'] for v in r.values()], '.3f')})"}
    generation = {m: v["scorings"]["generation"] for m, v in rows("anesthesia_mcq").items()
                  if "generation" in v.get("scorings", {})}
    if generation:
        chance = next(iter(generation.values()))["chance"]
        above = sorted(m for m, g in generation.items() if g.get("acc_ci") and g["acc_ci"][0] > chance)
        out["MCQ by generation"] = {"floor": chance, "above": above,
                                    "reason": None if above else generation_floor_reason(generation, metrics)}
    ner = rows("kb_ner")
    if ner:
        above = sorted(m for m, v in ner.items() if v.get("f1_ci") and v["f1_ci"][0] > 0)
        predicted = sum(v["tp"] + v["fp"] for v in ner.values())
        out["NER F1"] = {"floor": 0.0, "above": above, "reason": None if above else
                         (f"no model's answers parse into entities ({predicted} predicted in all)" if predicted == 0
                          else f"F1 {_span([v['f1'] for v in ner.values()], '.3f')}, every CI includes 0")}
    qa = rows("anesthesia_qa")
    if qa:
        above = sorted(m for m, v in qa.items() if v.get("grounded_acc_ci") and v["grounded_acc_ci"][0] > 0)
        out["QA grounded"] = {"floor": 0.0, "above": above, "reason": None if above else
                              "no model's grounded accuracy has a CI above 0"}
    consult = rows("anesthesia_consult")
    for measure in ("elicited", "diagnosis", "criteria_score"):
        known = {m: v for m, v in consult.items() if v.get(measure) is not None}
        if not known:
            continue
        above = sorted(m for m, v in known.items() if v.get(f"{measure}_ci") and v[f"{measure}_ci"][0] > 0)
        reason = None
        if not above:
            reason = (f"{measure} {_span([v[measure] for v in known.values()], '.2f')} for every model; the doctors "
                      f"gave {_span([v['turns'] for v in known.values()], '.1f')} replies on average and the patient "
                      f"closed {_span([v['ended'] for v in known.values()], '.0%')} of the consultations at a "
                      "diagnosis")
        out[f"consult: {measure}"] = {"floor": 0.0, "above": above, "reason": reason}
    return out
