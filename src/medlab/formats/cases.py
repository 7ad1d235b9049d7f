"""Clinical cases with a chain of questions (CMB-Clin) -> ``ClinCase``.

Format (name in params -> layout, field names as in the CMB data card):

* ``cmb_clin``: a JSON list (or JSON Lines) of ``{id, title, description, QA_pairs:
  [{question, solution}]}`` -- a case description (history, examination, tests) and the
  questions a doctor is asked about it in order, each with its reference answer.

A case without a description or without questions, a question or solution that is not
text, or an id twice is an error naming file and line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from medlab.formats import FormatError, unique_ids
from medlab.formats.text import existing_file, iter_json_array, iter_json_lines

FORMATS = ("cmb_clin",)


@dataclass(frozen=True)
class ClinCase:
    id: str
    title: str
    description: str
    qa: tuple[tuple[str, str], ...]  # (question, reference answer), asked in this order
    where: str  # "file:line" of the record


def _records(path: Path, encoding: str) -> Iterator[tuple[str, object]]:
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return iter_json_array(path, encoding) if head.startswith(b"[") else iter_json_lines(path, encoding)


def _case(where: str, index: int, raw: object) -> ClinCase:
    if not isinstance(raw, dict):
        raise FormatError(f"{where}: expected an object with id, title, description, QA_pairs")
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        raise FormatError(f"{where}: description: missing or empty")
    pairs = raw.get("QA_pairs")
    if not isinstance(pairs, list) or not pairs:
        raise FormatError(f"{where}: QA_pairs: missing or empty (a case needs at least one question)")
    qa = []
    for k, pair in enumerate(pairs):
        question = pair.get("question") if isinstance(pair, dict) else None
        solution = pair.get("solution") if isinstance(pair, dict) else None
        if not isinstance(question, str) or not question.strip():
            raise FormatError(f"{where}: QA_pairs[{k}].question: missing or empty")
        if not isinstance(solution, str) or not solution.strip():
            raise FormatError(f"{where}: QA_pairs[{k}].solution: missing or empty")
        qa.append((question.strip(), solution.strip()))
    return ClinCase(str(raw.get("id", index)), str(raw.get("title") or "").strip(), description.strip(),
                    tuple(qa), where)


def iter_cases(path: Path | str, fmt: str = "cmb_clin", encoding: str = "utf-8") -> Iterator[ClinCase]:
    """Each case of a file in one of ``FORMATS``, checked, one at a time."""
    if fmt not in FORMATS:
        raise FormatError(f"unknown case format {fmt!r} (expected one of {', '.join(FORMATS)})")
    path = existing_file(path)
    for index, (where, raw) in enumerate(_records(path, encoding)):
        yield _case(where, index, raw)


def load_cases(path: Path | str, fmt: str = "cmb_clin", encoding: str = "utf-8",
               limit: int | None = None) -> list[ClinCase]:
    """Every case of the file (the first ``limit``); an id twice is an error naming both lines."""
    return unique_ids(islice(iter_cases(path, fmt, encoding), limit), lambda c: c.id, lambda c: c.where)
