"""Pre-flight: open a configured data file with its reader and check its first records, so a
wrong path, format or encoding stops the run in a second, naming file and line, before any
model loads (``python -m medlab.config`` and every stage's set-up validate params this way)."""

from __future__ import annotations

from pathlib import Path

from medlab.formats import FormatError

PEEK_RECORDS = 50  # records read per file: enough to meet a wrong layout, cheap on a 1 GB file


def _loader(kind: str):
    if kind == "mcq":
        from medlab.formats.mcq import load_mcq
        return load_mcq
    if kind == "dialogue":
        from medlab.formats.dialogues import load_dialogues
        return load_dialogues
    if kind == "instructions":
        from medlab.formats.instructions import load_instructions
        return load_instructions
    if kind == "cases":
        from medlab.formats.cases import load_cases
        return load_cases
    raise ValueError(f"unknown data kind {kind!r}")


def peek(path: Path | str, kind: str, fmt: str, encoding: str = "utf-8", n: int = PEEK_RECORDS) -> int:
    """How many of the first ``n`` records read cleanly (all of them, or FormatError); the
    loader's whole-file checks (ids twice, MedMCQA's answer base) run on those ``n``."""
    return len(_loader(kind)(path, fmt, encoding=encoding, limit=n))


def peek_problem(path: Path | str, kind: str, fmt: str, encoding: str = "utf-8") -> str | None:
    """Why the file cannot be read as ``fmt`` (the reader's own file:line message), or None."""
    try:
        peek(path, kind, fmt, encoding)
    except FormatError as exc:
        return str(exc)
    return None
