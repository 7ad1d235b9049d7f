"""Readers for public data formats, each returning medlab's own types.

    text           opening a user's file: UTF-8 with or without BOM, encoding key, empty files
    dialogues      doctor-patient corpora (MedDialog, cMedQA2, DISC-Med-SFT)
    mcq            multiple-choice exams (CMB-Exam, CMExam, MedQA, MedMCQA, C-Eval, CMMLU)
    instructions   SFT / chat sets (alpaca, MOSS, ShareGPT, HuatuoGPT-II, DISC-Med-SFT)
    cases          clinical cases with question chains (CMB-Clin)
    peek           pre-flight: a configured file's every record through its reader (verdict cached)
    params         the params entries naming a file, its format and encoding

Every reader names the file and line of a bad record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

R = TypeVar("R")


class FormatError(ValueError):
    """A file that does not match its declared format; the message names file and line."""


def unique_ids(records: Iterable[R], ident: Callable[[R], str], where: Callable[[R], str]) -> list[R]:
    """``records`` as a list, checked that no id appears twice (an empty id is not checked):
    the one rule every loader applies, its error naming both places."""
    return list(iter_unique(records, ident, where))


def iter_unique(records: Iterable[R], ident: Callable[[R], str], where: Callable[[R], str]) -> Iterator[R]:
    """``unique_ids`` streamed: only the ids seen so far are kept, not the records."""
    seen: dict[str, str] = {}
    for record in records:
        key = ident(record)
        if key and key in seen:
            raise FormatError(f"{where(record)}: id {key!r} repeats the one at {seen[key]}")
        if key:
            seen[key] = where(record)
        yield record
