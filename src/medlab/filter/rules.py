"""Rule filters: cheap checks with a named reason for every rejection (ChiMed-GPT's cleaning).

Each rule looks at the assistant turns of a sample and returns a reason or None. Rules
run in a fixed order and the first that fires names the rejection, so counts per reason
add up to the number rejected.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

URL = re.compile(r"(https?://|www\.)\S+|\b[\w-]+\.(com|cn|net|org)\b", re.I)
# Chinese mobile (1[3-9] + 9 digits, optionally split) and hotline numbers (400/800-xxx-xxxx).
PHONE = re.compile(r"(?<!\d)(1[3-9]\d[-\s]?\d{4}[-\s]?\d{4}|[48]00[-\s]?\d{3}[-\s]?\d{4})(?!\d)")
ADVERT = re.compile(r"(加微信|微信号|扫码|二维码|优惠|折扣|限时|咨询热线|客服电话|点击链接|官方网站|特效药|包治|根治.{0,4}保证)")
REFUSAL = re.compile(r"(作为(一个|一名)?(人工智能|AI|语言模型)|我(只)?是(一个)?(人工智能|AI|语言模型)|"
                     r"我(无法|不能)(提供|回答|给出)(医疗|医学)?(建议|诊断|回答)|抱歉，我(无法|不能))", re.I)
SENTENCE = re.compile(r"[^。！？!?；;\n]+[。！？!?；;]?")


@dataclass(frozen=True)
class RuleParams:
    min_chars: int = 4
    max_chars: int = 2000
    max_repeat_share: float = 0.5
    min_sentences_for_repeat: int = 3


def answer_text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages if m["role"] == "assistant")


def repeat_share(text: str) -> float:
    """Share of sentences that are copies of another sentence of the same text."""
    sentences = [s.strip() for s in SENTENCE.findall(text) if s.strip()]
    if not sentences:
        return 0.0
    counts = Counter(sentences)
    return sum(n for n in counts.values() if n > 1) / len(sentences)


def check(messages: list[dict[str, str]], p: RuleParams) -> str | None:
    """The first rule a sample breaks (its reason), or None if it passes them all."""
    text = answer_text(messages)
    if not text.strip():
        return "empty"
    if len(text) < p.min_chars:
        return "too_short"
    if len(text) > p.max_chars:
        return "too_long"
    if len(SENTENCE.findall(text)) >= p.min_sentences_for_repeat and repeat_share(text) > p.max_repeat_share:
        return "repetitive"
    if URL.search(text):
        return "url"
    if PHONE.search(text):
        return "phone_number"
    if ADVERT.search(text):
        return "advert"
    if REFUSAL.search(text):
        return "refusal"
    return None
