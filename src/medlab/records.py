"""JSONL records: one schema per kind, validated on read with file:line:field errors.

Every record has an ``id`` and a ``source``; records made by the pipeline carry
``provenance`` (method, template, ...) and, in the embedded world, ground truth.
Files are written whole and atomically (temp file + rename), UTF-8, one JSON object
per line with ``ensure_ascii=False`` so Chinese stays readable, keys in schema order
so two runs give byte-identical files.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class RecordError(ValueError):
    """A record that does not fit its schema; the message names file, line and field."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    source: str = Field(min_length=1)


R = TypeVar("R", bound=Record)


# ---------------------------------------------------------------- knowledge base
class Entity(Record):
    name: str
    type: str
    domain: Literal["general", "anesthesia"]
    department: str | None = None


class Triple(Record):
    subject: str
    subject_type: str
    predicate: str
    object: str
    object_type: str  # "literal" for free-text objects (doses, mechanisms, definitions)
    domain: Literal["general", "anesthesia"]
    department: str | None = None
    provenance: dict[str, Any] = {}


# ------------------------------------------------------------------------- corpus
class CorpusDoc(Record):
    """One textbook-style paragraph about one entity."""

    domain: Literal["general", "anesthesia"]
    department: str | None = None
    subject: str
    text: str
    split: Literal["train", "valid"]
    triple_ids: list[str]
    provenance: dict[str, Any] = {}


# ---------------------------------------------------------------------- benchmark
class McqItem(Record):
    """A multiple-choice item in the one schema every MCQ loader produces."""

    question: str
    options: dict[str, str]
    answer: str  # one letter, or several ("AB") for multi-answer exams
    category: str | None = None  # department / subject, for per-category breakdowns
    split: Literal["dev", "test", "valid", "train"] = "test"
    context: str | None = None  # reading comprehension: the passage the question is about
    private: bool = False  # contains (synthetic) patient data: de-identify before use
    phi: list[dict[str, Any]] = []  # gold PHI spans in `context`: {type, start, end, text}
    meta: dict[str, Any] = {}
    provenance: dict[str, Any] = {}


class QaItem(Record):
    """An open question with a reference answer (and gold entities in the embedded world)."""

    question: str
    reference: str
    category: str | None = None
    split: Literal["dev", "test", "valid", "train"] = "test"
    gold: list[str] = []  # entities a correct answer must contain (knowledge-grounded check)
    meta: dict[str, Any] = {}
    provenance: dict[str, Any] = {}


# ---------------------------------------------------------------- generated data
class Sample(Record):
    """One instruction-tuning sample: a chat (single- or multi-turn) with provenance.

    ``truth`` is the simulated teacher's ground truth (``fault``: none, factual, unsafe,
    off_format or stigma, with details, the facts used and the patient group); it is
    None for data whose truth nobody knows (a real teacher, a loaded file).
    """

    domain: Literal["anesthesia", "general_medicine", "general"]
    messages: list[dict[str, str]]
    provenance: dict[str, Any]
    truth: dict[str, Any] | None = None


class PreferencePair(Record):
    """A DPO pair: the same prompt, a preferred and a dispreferred answer."""

    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    provenance: dict[str, Any] = {}
    truth: dict[str, Any] | None = None


class Rejected(Record):
    """A teacher output that produced no sample (unparseable, near-duplicate ...), and why."""

    method: str
    reason: str
    output: str
    provenance: dict[str, Any] = {}
    truth: dict[str, Any] | None = None


# ------------------------------------------------------------------------ reading
def _field_path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "<record>"


def validate_record(schema: type[R], raw: dict, where: str) -> R:
    """``raw`` as a ``schema`` record; RecordError naming ``where`` ("file:line") and the field."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RecordError(f"{where}: {_field_path(first['loc'])}: {first['msg']}") from None


def iter_jsonl(path: Path | str, schema: type[R], on_error: str = "raise",
               errors: list[str] | None = None) -> Iterator[R]:
    """Yield validated records; a bad line raises RecordError naming file:line:field.

    ``on_error="skip"`` skips bad lines instead and appends their messages to
    ``errors`` (so the caller can count and report them; never a silent skip).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: file not found")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                try:
                    raw = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RecordError(f"{path}:{number}: not valid JSON: {exc.msg} "
                                      f"(column {exc.colno})") from None
                if not isinstance(raw, dict):
                    raise RecordError(f"{path}:{number}: expected a JSON object, "
                                      f"got {type(raw).__name__}")
                yield validate_record(schema, raw, f"{path}:{number}")
            except RecordError as exc:
                if on_error == "raise":
                    raise
                if errors is not None:
                    errors.append(str(exc))


def read_jsonl(path: Path | str, schema: type[R], **kwargs: Any) -> list[R]:
    return list(iter_jsonl(path, schema, **kwargs))


# ----------------------------------------------------------------- JSON arrays
def _line_at(starts: list[int], offset: int) -> int:
    """1-based line of a character offset, given the offsets where lines start."""
    return bisect.bisect_right(starts, offset)


def iter_json_array(text: str, name: str) -> Iterator[tuple[int, Any]]:
    """(line, element) for each element of a top-level JSON array, with real line numbers."""
    decoder = json.JSONDecoder()
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    i = len(text) - len(text.lstrip())
    if not text[i:i + 1] == "[":
        raise RecordError(f"{name}:{_line_at(starts, i)}: expected a JSON array")
    i += 1
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text):
            raise RecordError(f"{name}:{_line_at(starts, i - 1)}: unterminated JSON array")
        if text[i] == "]":
            return
        try:
            element, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{name}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        yield _line_at(starts, i), element
        i = end


# ------------------------------------------------------------------------ writing
def atomic_write_text(path: Path | str, text: str) -> None:
    """Write the whole file or nothing: a crash mid-write leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: Path | str, records: Iterable[BaseModel | dict]) -> int:
    """Write records as JSONL (atomically); return how many were written."""
    lines = []
    for record in records:
        data = record.model_dump(mode="json") if isinstance(record, BaseModel) else record
        lines.append(json.dumps(data, ensure_ascii=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def write_json(path: Path | str, data: Any) -> None:
    """Pretty, stable JSON (metrics, manifests): sorted keys, Chinese kept readable."""
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
