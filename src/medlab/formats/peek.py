"""Pre-flight: open a configured data file with its reader and check its first records, so a
wrong path, format or encoding stops the run in a second, naming file and line, before any
model loads (``python -m medlab.config`` and every stage's set-up validate params this way)."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from medlab.formats import FormatError

PEEK_RECORDS = 50  # records read per file: enough to meet a wrong layout, cheap on a 1 GB file


def _reader(kind: str):
    if kind == "mcq":
        from medlab.formats.mcq import iter_mcq
        return iter_mcq
    if kind == "dialogue":
        from medlab.formats.dialogues import iter_dialogues
        return iter_dialogues
    if kind == "instructions":
        from medlab.formats.instructions import iter_instructions
        return iter_instructions
    if kind == "cases":
        from medlab.formats.cases import iter_cases
        return iter_cases
    raise ValueError(f"unknown data kind {kind!r}")


def peek(path: Path | str, kind: str, fmt: str, encoding: str = "utf-8", n: int = PEEK_RECORDS) -> int:
    """How many of the first ``n`` records read cleanly (all of them, or FormatError)."""
    return sum(1 for _ in islice(_reader(kind)(path, fmt, encoding=encoding), n))


def peek_problem(path: Path | str, kind: str, fmt: str, encoding: str = "utf-8") -> str | None:
    """Why the file cannot be read as ``fmt`` (the reader's own file:line message), or None."""
    try:
        peek(path, kind, fmt, encoding)
    except FormatError as exc:
        return str(exc)
    return None
