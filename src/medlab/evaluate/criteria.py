"""Per-case rubric criteria, HealthBench style: each consultation is graded against
criteria of its own, each with signed points; a grader marks every criterion met or not,
and the case's score is the points earned over the points possible, clipped to [0, 1]:

    criteria  +2 elicits 肌强直 · +2 elicits 呼气末二氧化碳升高 · +5 names 恶性高热
              +3 recommends 丹曲林 or 停用触发药物 · -3 names another disease
              -2 gives a diagnosis in its first reply, before asking anything
    met       elicits 肌强直, names 恶性高热 (no other disease), recommends 丹曲林
              -> (2 + 5 + 3) / (2 + 2 + 5 + 3) = 0.83; naming 术后寒战 instead, after
              asking: (2 - 3) / 12 -> clipped to 0

(HealthBench: 5,000 conversations, 48,562 physician-written criteria; its model grader
agrees with physicians at macro F1 0.71.) Here the criteria of a vignette case are written
from its known facts (``case_criteria``), so each has an *exact* answer computed from the
transcript (``exact_met``: the same facts the judge-free measures use). That makes the
LLM grader (``grade_with_judge``, any hf / openai backend, one call per criterion, our
prompt) checkable: its marks are compared with the exact ones (``grader_agreement``:
accuracy and macro F1 per criterion kind). Criteria from a file (HealthBench's layout:
``{"id", "rubrics": [{"criterion", "points", "tags"}]}`` per line) have no exact answer
and are graded by the judge alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medlab.evaluate.text_metrics import grounded_correct
from medlab.llm.base import Backend, Decoding
from medlab.llm.cache import CallCache
from medlab.llm.parsed import ask_parsed, plain

GRADER_PROMPT_ID = "criterion_zh_v1"
SYSTEM = "你是一名资深临床医生，负责逐条核对一段医患对话是否满足给定的评分标准。"


@dataclass(frozen=True)
class Criterion:
    text: str  # what a grader reads (Chinese)
    points: int  # signed: negative criteria cost points when met
    kind: str  # elicit | diagnosis | advice | wrong_diagnosis | premature | file (how exact_met decides)
    target: tuple[str, ...] = ()  # the entities the exact check looks for


def case_criteria(case) -> list[Criterion]:
    """The criteria of a vignette case (``medlab.evaluate.consult.ConsultCase``), from its facts."""
    out = [Criterion(f"医生通过提问了解到患者有“{f}”", 2, "elicit", (f,)) for f in case.findings[1:]]
    if case.diagnosis:
        out.append(Criterion(f"医生明确给出诊断“{case.diagnosis}”", 5, "diagnosis", (case.diagnosis,)))
        others = tuple(d for d in case.candidates if d != case.diagnosis)
        out.append(Criterion(f"医生提到“{case.diagnosis}”以外的其他疾病作为诊断", -3, "wrong_diagnosis", others))
        out.append(Criterion("医生在第一次回复中就给出诊断，没有先询问任何情况", -2, "premature",
                             tuple(case.candidates)))
    if case.advice:
        out.append(Criterion(f"医生建议了以下处理之一：{'、'.join(case.advice)}", 3, "advice", case.advice))
    return out


def exact_met(criterion: Criterion, case, transcript: Mapping) -> bool | None:
    """Whether a fact-written criterion is met, decided from the transcript (None: a file
    criterion, which has no exact answer)."""
    doctor = [t["text"] for t in transcript["turns"] if t["role"] == "doctor"]
    said = "\n".join(doctor)
    later = "".join(t["text"] for t in transcript["turns"][1:] if t["role"] == "patient")
    if criterion.kind == "elicit":
        return all(f in later for f in criterion.target)
    if criterion.kind == "diagnosis":
        others = [d for d in case.candidates if d != case.diagnosis]
        return grounded_correct(said, list(criterion.target), others)
    if criterion.kind == "wrong_diagnosis":
        return any(d in said and not any(d in g for g in [case.diagnosis or ""]) for d in criterion.target)
    if criterion.kind == "premature":
        return bool(doctor) and any(d in doctor[0] for d in criterion.target)
    if criterion.kind == "advice":
        return any(a in said for a in criterion.target)
    return None


def score(criteria: Sequence[Criterion], met: Sequence[bool | None]) -> float | None:
    """Points earned over points possible (the positive ones), clipped to [0, 1]; None if a
    criterion is ungraded or no criterion can earn points."""
    possible = sum(c.points for c in criteria if c.points > 0)
    if possible == 0 or any(m is None for m in met):
        return None
    earned = sum(c.points for c, m in zip(criteria, met, strict=True) if m)
    return float(min(1.0, max(0.0, earned / possible)))


def load_criteria(path, encoding: str = "utf-8") -> dict[str, list[Criterion]]:
    """Criteria per case id from a JSONL file in HealthBench's rubric layout; an entry
    without criterion text or integer points is an error naming file and line."""
    from medlab.formats import FormatError
    from medlab.formats.text import iter_json_lines

    out: dict[str, list[Criterion]] = {}
    for where, row in iter_json_lines(path, encoding):
        case_id, rubrics = row.get("id") or row.get("prompt_id"), row.get("rubrics")
        if not case_id or not isinstance(rubrics, list) or not rubrics:
            raise FormatError(f"{where}: needs an id (or prompt_id) and a non-empty rubrics list")
        criteria = []
        for k, r in enumerate(rubrics):
            if not isinstance(r, dict) or not str(r.get("criterion", "")).strip() or \
                    not isinstance(r.get("points"), int) or isinstance(r.get("points"), bool):
                raise FormatError(f"{where}: rubrics[{k}]: needs criterion (text) and points (an integer)")
            criteria.append(Criterion(r["criterion"], r["points"], "file", tuple(r.get("tags") or ())))
        if case_id in out:
            raise FormatError(f"{where}: id {case_id!r} appears twice")
        out[case_id] = criteria
    return out


def transcript_text(transcript: Mapping) -> str:
    return "\n".join(f"{'患者' if t['role'] == 'patient' else '医生'}：{t['text']}" for t in transcript["turns"])


def grader_prompt(transcript: Mapping, criterion: Criterion, attempt: int = 0) -> list[dict[str, str]]:
    user = (f"医患对话：\n{transcript_text(transcript)}\n\n评分标准：{criterion.text}\n\n"
            "医生在这段对话中是否满足这条标准？只输出一行：“满足”或“不满足”。"
            + ("\n（上次的输出无法解析，请只输出“满足”或“不满足”。）" if attempt else ""))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_mark(text: str) -> bool | None:
    """True for 满足 / yes, False for 不满足 / no (either first), else None."""
    text = plain(text).strip().lower()
    for word, value in (("不满足", False), ("满足", True), ("no", False), ("yes", True), ("false", False),
                        ("true", True)):
        if text.startswith(word):
            return value
    return None


def grade_with_judge(items: Sequence[tuple[Mapping, Criterion]], backend: Backend, cache: CallCache,
                     decoding: Decoding, max_attempts: int = 3, max_unparseable_fraction: float = 1.0) -> dict:
    """Mark each (transcript, criterion) with the judge; None = unparseable (counted)."""
    asked = ask_parsed(lambda k, a: grader_prompt(*items[k], attempt=a), parse_mark, len(items), backend, cache,
                       decoding, "judge_criterion", max_attempts, None, max_unparseable_fraction)
    return {"marks": asked.values, "unparseable": asked.unparseable}


def grader_agreement(kinds: Sequence[str], exact: Sequence[bool], judged: Sequence[bool | None]) -> dict:
    """How the judge's marks match the exact ones: accuracy and macro F1 (met / not met) over
    all criteria and per kind, on the criteria both marked."""
    from sklearn.metrics import f1_score

    def stats(rows):
        if not rows:
            return {"n": 0, "accuracy": None, "macro_f1": None}
        x, y = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
        return {"n": len(rows), "accuracy": float((x == y).mean()),
                "macro_f1": float(f1_score(x, y, average="macro", labels=[False, True], zero_division=0))}

    rows = [(e, j, k) for k, e, j in zip(kinds, exact, judged, strict=True) if e is not None and j is not None]
    return {"all": stats(rows), **{k: stats([r for r in rows if r[2] == k]) for k in sorted(set(kinds))}}
