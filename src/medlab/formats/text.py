"""Opening a user's data file, the one way every reader does: UTF-8 with or without a BOM
(another encoding only when the file's params say so), an empty file refused, and a
wrong encoding named with the file, the line and the command that converts it.

Lines are decoded one at a time from the bytes (``b"\\n"`` never occurs inside a UTF-8 or
GB18030 multi-byte character, so splitting on it first is safe), which keeps memory flat
on a 1 GB DISC-Med-SFT file and lets a decode error name its line.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medlab.formats import FormatError
from medlab.records import RecordError
from medlab.records import iter_json_array as iter_array_text

ENCODINGS = ("utf-8", "gb18030", "utf-16")  # what a file's `encoding:` key may say


def _guess(raw: bytes) -> str:
    """What undecodable bytes look like, for the error message."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "UTF-16"
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        return "an unknown encoding"
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
    return "GB18030/GBK" if cjk else "an unknown encoding"


def not_utf8(path: Path, line: int, raw: bytes) -> FormatError:
    guess = _guess(raw)
    source = "GB18030" if guess.startswith("GB") else "UTF-16" if guess == "UTF-16" else "<its encoding>"
    return FormatError(f"{path}:{line}: not UTF-8 (looks like {guess}?) -- convert it with "
                       f"`iconv -f {source} -t UTF-8 {path} > {path.stem}.utf8{path.suffix}`, "
                       f"or give this file `encoding: {source.lower() if source != '<its encoding>' else 'gb18030'}`")


def existing_file(path: Path | str) -> Path:
    """``path`` if it is a file with something in it; else FormatError naming it."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: file not found")
    if not path.is_file():
        raise FormatError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise FormatError(f"{path}: empty file")
    return path


def iter_lines(path: Path | str, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line with its ending) for every line of ``path``.

    UTF-8 (a leading BOM dropped) unless ``encoding`` says otherwise; a line that does not
    decode raises FormatError naming file and line and what the bytes look like. A file
    with no non-blank line is an error too (an empty file is never "0 records").
    """
    if encoding not in ENCODINGS:
        raise FormatError(f"{path}: encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
    path = existing_file(path)
    if encoding == "utf-16":  # no safe byte-level line split: decode the whole file
        yield from _numbered(path, path.read_text(encoding="utf-16").splitlines(keepends=True))
        return
    codec = "utf-8-sig" if encoding == "utf-8" else encoding
    blank = True
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if number == 1 and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and encoding == "utf-8":
                raise not_utf8(path, 1, raw)
            try:
                line = raw.decode(codec if number == 1 else encoding)
            except UnicodeDecodeError:
                if encoding != "utf-8":
                    raise FormatError(f"{path}:{number}: does not decode as {encoding}") from None
                raise not_utf8(path, number, raw) from None
            blank = blank and not line.strip()
            yield number, line
    if blank:
        raise FormatError(f"{path}: empty file (no non-blank line)")


def _numbered(path: Path, lines: list[str]) -> Iterator[tuple[int, str]]:
    if not any(line.strip() for line in lines):
        raise FormatError(f"{path}: empty file (no non-blank line)")
    yield from enumerate(lines, 1)


def read_text(path: Path | str, encoding: str = "utf-8") -> str:
    """The whole file as text (for JSON documents), checked as ``iter_lines`` checks it."""
    return "".join(line for _, line in iter_lines(path, encoding))


def iter_json_lines(path: Path | str, encoding: str = "utf-8") -> Iterator[tuple[str, dict]]:
    """("file:line", object) for each non-blank line of a JSONL file, streamed; a line that
    is not a JSON object raises FormatError naming file and line."""
    for number, line in iter_lines(path, encoding):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FormatError(f"{path}:{number}: not valid JSON: {exc.msg} (column {exc.colno})"
                              + (" -- is this a JSON array, not JSON Lines?" if number == 1 and
                                 line.lstrip().startswith("[") else "")) from None
        if not isinstance(record, dict):
            raise FormatError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        yield f"{path}:{number}", record


def iter_json_array(path: Path | str, encoding: str = "utf-8") -> Iterator[tuple[str, Any]]:
    """("file:line", element) for each element of a file holding one JSON array."""
    try:
        for number, element in iter_array_text(read_text(path, encoding), str(path)):
            yield f"{path}:{number}", element
    except RecordError as exc:
        raise FormatError(str(exc)) from None


def iter_csv(path: Path | str, required: list[str], encoding: str = "utf-8") -> Iterator[tuple[str, dict]]:
    """("file:line", row) for each row of a CSV file with a header, streamed.

    Header names are matched without regard to case or surrounding spaces and the row's
    keys are the names in ``required`` (CMMLU writes ``Question,A,...,Answer``, C-Eval
    ``question,...,answer``); an unnamed first column (a pandas index) is ignored. A
    missing column or a row with too many fields is an error naming file and line.
    """
    lines = iter_lines(path, encoding)
    reader = csv.reader(line for _, line in lines)
    header = next(reader, None)
    if header is None:
        raise FormatError(f"{path}: empty file")
    names = [h.strip().lower() for h in header]
    missing = [c for c in required if c.lower() not in names]
    if missing:
        raise FormatError(f"{path}:1: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
    wanted = {c.lower(): c for c in required}
    keys = [wanted.get(n, header[k].strip()) for k, n in enumerate(names)]
    line = reader.line_num + 1
    for row in reader:
        if not any(cell.strip() for cell in row):
            line = reader.line_num + 1
            continue
        if len(row) > len(keys):
            raise FormatError(f"{path}:{line}: {len(row)} fields, the header has {len(keys)} "
                              "(an unquoted comma in a field?)")
        yield f"{path}:{line}", dict(zip(keys, row + [""] * (len(keys) - len(row)), strict=True))
        line = reader.line_num + 1
