"""Pre-flight: read a configured data file with its reader, every record, so a wrong path,
format or encoding -- or one bad record on line 400,000 -- stops the run naming file and
line before any model loads (``python -m medlab.config`` and every stage's set-up validate
params this way).

Two passes: the first ``PEEK_RECORDS`` records (a wrong layout or encoding is named in
milliseconds), then the whole file streamed through the same reader, keeping only ids (no
id twice) and what MedMCQA's answer-base check needs. A file that read cleanly is not read
again while nothing that decides the verdict changes: the verdict is cached under
``.cache/medlab/preflight/``, keyed by the file's path, size and modification time, kind,
format, encoding and the hash of the reader code (``medlab.cachekey``). A DISC-Med-SFT-sized
file (~470k records) is read once, with a progress line, then costs a stat call.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from medlab.formats import FormatError

PEEK_RECORDS = 50  # the first pass: enough to meet a wrong layout, instant on a 1 GB file
ANNOUNCE_BYTES = 20 * 2**20  # files above this get a line saying they are read once in full


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


def scan(path: Path | str, kind: str, fmt: str, encoding: str = "utf-8") -> int:
    """Every record of the file through its reader, streamed (ids kept, records not): the
    count, or the reader's FormatError naming file and line."""
    from medlab.formats import iter_unique

    if kind == "mcq":
        from medlab.formats.mcq import check_answer_base, checked_mcq

        count, used = 0, set()
        for item in checked_mcq(path, fmt, encoding=encoding):
            count += 1
            used.add(item.meta.get("cop"))
        check_answer_base(path, fmt, used, count)
        return count
    if kind == "dialogue":
        from medlab.formats.dialogues import iter_dialogues
        records = iter_unique(iter_dialogues(path, fmt, encoding), lambda d: d.id, lambda d: d.where)
    elif kind == "instructions":
        from medlab.formats.instructions import iter_instructions
        records = iter_unique(iter_instructions(path, fmt, encoding), lambda c: c[0], lambda c: c[1])
    elif kind == "cases":
        from medlab.formats.cases import iter_cases
        records = iter_unique(iter_cases(path, fmt, encoding), lambda c: c.id, lambda c: c.where)
    else:
        raise ValueError(f"unknown data kind {kind!r}")
    return sum(1 for _ in records)


def _verdict_path(path: Path, kind: str, fmt: str, encoding: str) -> Path | None:
    """Where a clean verdict on this file as it is now would be cached (None: not a file)."""
    from medlab.cachekey import code_hash
    from medlab.paths import cache_dir

    if not path.is_file():
        return None  # a folder format (cMedQA2): read in full each time (its files are small)
    stat = path.stat()
    key = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, kind, fmt, encoding,
                      code_hash("medlab.formats.peek")])
    try:
        return cache_dir("preflight", hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")
    except FileNotFoundError:  # outside a project: nowhere to keep it
        return None


def check_file(path: Path | str, kind: str, fmt: str, encoding: str = "utf-8") -> int:
    """Both passes (see the module docstring); the record count, or FormatError."""
    path = Path(path)
    peek(path, kind, fmt, encoding)
    verdict = _verdict_path(path, kind, fmt, encoding)
    if verdict is not None and verdict.is_file():
        return json.loads(verdict.read_text())["records"]
    big = path.is_file() and path.stat().st_size > ANNOUNCE_BYTES
    start = time.perf_counter()
    if big:
        print(f"pre-flight: reading every record of {path} ({path.stat().st_size / 2**20:,.0f} MiB) once; "
              f"the verdict is cached until the file changes", file=sys.stderr, flush=True)
    count = scan(path, kind, fmt, encoding)
    if big:
        print(f"pre-flight: {path}: {count:,} records read cleanly in {time.perf_counter() - start:.1f} s",
              file=sys.stderr, flush=True)
    if verdict is not None:
        from medlab.records import atomic_write_text

        verdict.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(verdict, json.dumps({"path": str(path), "records": count}))
    return count


def peek_problem(path: Path | str, kind: str, fmt: str, encoding: str = "utf-8") -> str | None:
    """Why the file cannot be read as ``fmt`` (the reader's own file:line message), or None."""
    try:
        check_file(path, kind, fmt, encoding)
    except FormatError as exc:
        return str(exc)
    return None
