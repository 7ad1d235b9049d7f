"""Ask an LLM until its answer parses: retries with a changed prompt, failures counted.

``ask_parsed(build, parse, n, backend, cache, decoding)`` sends ``build(k, attempt)``
for k in range(n), parses every answer with ``parse(text)`` (None = unparseable) and
asks the unparsed ones again with the next ``attempt`` number — the prompt builder is
expected to say so, which also makes the retry a different request, so the call cache
cannot replay the bad answer. After ``max_attempts`` an item stays None and is counted:
a judge that cannot be read gets no score, never a default. More unparseable items than
``max_unparseable_fraction`` stop the stage (a judge that mostly cannot be read is not
grading; keeping everything it failed to grade would be a silent filter-off).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medlab.llm.base import Backend, ChatRequest, Decoding, LLMError
from medlab.llm.cache import CallCache, CallStats, generate_cached


@dataclass
class Parsed:
    values: list[Any] = field(default_factory=list)  # parse() result per item; None = never parsed
    attempts: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # the last raw answer per item
    unparseable: int = 0


def ask_parsed(build: Callable[[int, int], list[dict[str, str]]], parse: Callable[[str], Any], n: int,
               backend: Backend, cache: CallCache, decoding: Decoding, task: str, max_attempts: int = 3,
               stats: CallStats | None = None, max_unparseable_fraction: float = 1.0) -> Parsed:
    result = Parsed(values=[None] * n, attempts=[0] * n, texts=[""] * n)
    todo = list(range(n))
    for attempt in range(max_attempts):
        if not todo:
            break
        requests = [ChatRequest.of(build(k, attempt), decoding, {"task": task, "attempt": attempt}) for k in todo]
        completions = generate_cached(backend, requests, cache, label=f"{task}:{attempt}", stats=stats)
        still = []
        for k, completion in zip(todo, completions, strict=True):
            result.attempts[k] = attempt + 1
            result.texts[k] = completion.text
            parsed = parse(completion.text)
            if parsed is None:
                still.append(k)
            else:
                result.values[k] = parsed
        todo = still
    result.unparseable = len(todo)
    if todo and len(todo) > max_unparseable_fraction * n:
        where = getattr(backend, "params_key", backend.name).rsplit(".", 1)[0]
        examples = " | ".join(dict.fromkeys(" ".join(result.texts[k].split())[:80] for k in todo[:5]))
        raise LLMError(f"{task}: {len(todo):,} of {n:,} answers could not be read after {max_attempts} attempts, "
                       f"more than {where}.max_unparseable_fraction = {max_unparseable_fraction:g}: the judge "
                       f"does not follow the format (answers: {examples}) -- every call is cached")
    return result


def plain(text: str) -> str:
    """A judge's answer with full-width forms folded (：８ -> :8) and markdown emphasis and
    code marks dropped (**连贯性**, ```json), so that parsers see the words and numbers."""
    return re.sub(r"[*`]", "", unicodedata.normalize("NFKC", text))


def parse_named_scores(text: str, names: dict[str, str], low: float, high: float) -> dict[str, float] | None:
    """Scores named in ``names`` (English -> Chinese name) from a judge's answer: a JSON
    object or "name: n" lines, either name, underscores matching spaces. None if any is
    missing or outside [low, high] — never a partial or default score."""
    text = plain(text)
    found: dict[str, float] = {}
    match = re.search(r"\{.*?\}", text, re.S)
    if match:
        try:
            raw = json.loads(match.group(0))
        except json.JSONDecodeError:
            raw = {}
        for en, zh in names.items():
            value = raw.get(en, raw.get(zh)) if isinstance(raw, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found[en] = float(value)
    for en, zh in names.items():
        if en not in found:
            m = re.search(rf"(?:{en.replace('_', '[ _]')}|{zh})\s*[\"']?\s*[:：=]\s*(\d+(?:\.\d+)?)", text, re.I)
            if m:
                found[en] = float(m.group(1))
    if set(found) != set(names) or not all(low <= v <= high for v in found.values()):
        return None
    return found
