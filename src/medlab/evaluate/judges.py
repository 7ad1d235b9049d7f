"""LLM judges of open answers: an absolute rubric and a pairwise comparison with position swap.

Prompts are ours and go through any ``hf`` / ``openai`` backend with the call cache (a
prompt's text is part of its call's key; a cached rubric result's key hashes this code).

* Absolute rubric: DISC-MedLLM's four dimensions (proactivity, accuracy, helpfulness,
  linguistic quality), 1-5 each, given the question, the *reference answer* (as
  CMB-Clin's official rubric does) and the model's answer -- or, for a consultation,
  the whole dialogue and the case's diagnosis and advice.
* Pairwise: the judge sees answers 1 and 2 and names the better one or a tie; every
  pair is asked twice with the order swapped (HuatuoGPT-II), and a model wins only if
  it wins both orders (win + tie counts as a win; contradictory verdicts are a tie).
  The share of first-position verdicts is reported: a judge that always says "1" is
  exposed, not averaged in.

Unparseable answers are retried, then counted (``medlab.llm.parsed``); never defaulted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from medlab.llm.base import Backend, Decoding
from medlab.llm.cache import CallCache, CallStats
from medlab.llm.parsed import ask_parsed, parse_named_scores, plain

DIMENSIONS = {
    "proactivity": ("主动性", "信息不足时是否主动询问症状、检查和病史；问题已足够明确时给满分"),
    "accuracy": ("准确性", "医学内容是否与参考答案一致、没有错误"),
    "helpfulness": ("有用性", "是否切实解决了提问者的问题"),
    "linguistic_quality": ("语言质量", "是否通顺、清楚、得体"),
}
SYSTEM = "你是一名资深临床医生，负责公正地评审医学问答的质量。"
_RETRY = "\n（上次的输出无法解析，请严格按要求的格式输出。）"


# the four dimensions as the rubric prompts list them, and the answer format they ask for
RUBRIC_DIMS = "\n".join(f"- {zh}（{en}）：{what}" for en, (zh, what) in DIMENSIONS.items())
RUBRIC_FORMAT = ('只输出一个JSON对象，例如：{"proactivity": 4, "accuracy": 3, "helpfulness": 4, '
                 '"linguistic_quality": 5}')


def rubric_prompt(question: str, reference: str, answer: str, attempt: int = 0) -> list[dict[str, str]]:
    user = (f"请对照参考答案，评审模型回答，按以下四个方面分别打1到5的整数分：\n{RUBRIC_DIMS}\n\n"
            f"问题：{question}\n参考答案：{reference}\n模型回答：{answer}\n\n" + RUBRIC_FORMAT + (_RETRY if attempt else ""))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_rubric(text: str) -> dict[str, float] | None:
    """The four 1-5 scores (JSON or "维度: n" lines, Chinese or English names), or None."""
    return parse_named_scores(text, {en: zh for en, (zh, _) in DIMENSIONS.items()}, 1, 5)


def judge_rubric(items: Sequence[tuple[str, str, str]], backend: Backend, cache: CallCache, decoding: Decoding,
                 max_attempts: int = 3, stats: CallStats | None = None, max_unparseable_fraction: float = 1.0) -> dict:
    """Score (question, reference, answer) triples; per-item scores (None = unparseable)."""
    asked = ask_parsed(lambda k, a: rubric_prompt(*items[k], attempt=a), parse_rubric, len(items), backend, cache,
                       decoding, "judge_rubric", max_attempts, stats, max_unparseable_fraction)
    return {"scores": asked.values, "unparseable": asked.unparseable, "attempts": asked.attempts}


def consult_rubric_prompt(dialogue: str, reference: str, attempt: int = 0) -> list[dict[str, str]]:
    """The rubric for a whole consultation: the same four dimensions, the doctor's side of
    the dialogue graded, with the case's diagnosis and advice as the reference."""
    user = (f"下面是一段医患问诊对话。请对照参考诊断与处理，评审医生一方的表现，按以下四个方面分别打1到5的整数分：\n"
            f"{RUBRIC_DIMS}\n\n对话：\n{dialogue}\n\n参考诊断与处理：{reference}\n\n" + RUBRIC_FORMAT
            + (_RETRY if attempt else ""))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def judge_consult_rubric(items: Sequence[tuple[str, str]], backend: Backend, cache: CallCache, decoding: Decoding,
                         max_attempts: int = 3, max_unparseable_fraction: float = 1.0) -> dict:
    """Score (dialogue, reference) pairs of consultations; per-item scores (None = unparseable)."""
    asked = ask_parsed(lambda k, a: consult_rubric_prompt(*items[k], attempt=a), parse_rubric, len(items), backend,
                       cache, decoding, "judge_consult_rubric", max_attempts, None, max_unparseable_fraction)
    return {"scores": asked.values, "unparseable": asked.unparseable, "attempts": asked.attempts}


def pairwise_prompt(question: str, first: str, second: str, attempt: int = 0) -> list[dict[str, str]]:
    user = (f"下面是同一个医学问题的两个回答。请判断哪个回答在医学准确性、有用性和表达上更好。\n\n"
            f"问题：{question}\n\n回答1：{first}\n\n回答2：{second}\n\n"
            "只输出一行：“更好：1”、“更好：2”或“更好：平局”。" + (_RETRY if attempt else ""))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> str | None:
    """"1", "2" or "tie" from a pairwise verdict, or None."""
    text = plain(text)
    m = re.search(r"更好\s*[:：]\s*(1|2|平局|tie)", text, re.I) or \
        re.search(r"(?:better|winner)\s*[:：]\s*(1|2|tie)", text, re.I)
    if not m:
        return None
    return "tie" if m.group(1).lower() in ("平局", "tie") else m.group(1)


def combine(verdict_ab: str | None, verdict_ba: str | None) -> str | None:
    """One outcome for model A vs B from both orders: "a", "b", "tie", or None (unparsed).
    In the swapped order "1" means B. Win+tie is a win; contradictory verdicts are a tie."""
    if verdict_ab is None or verdict_ba is None:
        return None
    a_points = (verdict_ab == "1") + (verdict_ba == "2")
    b_points = (verdict_ab == "2") + (verdict_ba == "1")
    if a_points > b_points:
        return "a"
    if b_points > a_points:
        return "b"
    return "tie"


def judge_pairwise(items: Sequence[tuple[str, str, str]], backend: Backend, cache: CallCache, decoding: Decoding,
                   max_attempts: int = 3, stats: CallStats | None = None, max_unparseable_fraction: float = 1.0) -> dict:
    """Compare (question, answer_a, answer_b) in both orders; outcomes, win rate, first-position share."""
    n = len(items)

    def build(k: int, attempt: int) -> list[dict[str, str]]:
        question, a, b = items[k % n]
        return pairwise_prompt(question, a, b, attempt) if k < n else pairwise_prompt(question, b, a, attempt)

    asked = ask_parsed(build, parse_verdict, 2 * n, backend, cache, decoding, "judge_pairwise",
                       max_attempts, stats, max_unparseable_fraction)
    outcomes = [combine(asked.values[k], asked.values[k + n]) for k in range(n)]
    verdicts = [v for v in asked.values if v in ("1", "2")]
    decided = [o for o in outcomes if o is not None]
    return {"outcomes": outcomes, "unparseable": sum(o is None for o in outcomes),
            "win_rate_a": sum(o == "a" for o in decided) / len(decided) if decided else None,
            "tie_rate": sum(o == "tie" for o in decided) / len(decided) if decided else None,
            "first_position_share": sum(v == "1" for v in verdicts) / len(verdicts) if verdicts else None}
