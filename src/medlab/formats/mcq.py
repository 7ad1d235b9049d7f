"""Multiple-choice exams in public formats -> medlab's one ``McqItem`` schema.

Formats (name in params -> layout, field names as in each data card):

* ``medlab``: our own McqItem JSONL (the benchmark stage's output).
* ``cmb_exam``: CMB-Exam, a JSON list of ``{exam_type, exam_class, exam_subject,
  question, answer, question_type, option: {A: ..}}``; multi-answer items ("ABD").
* ``cmexam``: CMExam CSV, columns ``Question, Options, Answer, Explanation, ...``;
  ``Options`` holds one "A text" line per option.
* ``medqa``: MedQA (jind11) JSONL, ``{question, options: {A: ..}, answer, answer_idx}``.
* ``medmcqa``: MedMCQA's original JSONL, ``{question, opa..opd, cop: 1-4, exp,
  subject_name, topic_name}``; ``medmcqa_hf``: the same with ``cop`` 0-3. Which base a
  file uses is checked over the whole file, not only line by line.
* ``ceval``: C-Eval CSV, ``id,question,A,B,C,D,answer[,explanation]``;
  ``cmmlu``: CMMLU CSV, ``,Question,A,B,C,D,Answer`` (an unnamed pandas index column,
  capitalised names). Both readers match column names without regard to case.

Answers are read the way exam files write them: ``A``, ``a``, full-width ``Ａ``,
``A．``, ``A、C`` or ``A,C`` (multi-answer). A missing answer, an answer that is not
among the item's options, or a repeated id is an error naming file and line (both lines
for a repeat), never a default. Files are read through ``medlab.formats.text`` (UTF-8 with
or without BOM, ``encoding`` otherwise; empty files refused) and streamed: ``iter_mcq``
yields items one by one (pre-flight reads the first few), ``load_mcq`` reads them all and
adds the whole-file checks.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from medlab.formats import FormatError, iter_unique
from medlab.formats.text import existing_file, iter_csv, iter_json_array, iter_json_lines
from medlab.records import McqItem, RecordError, validate_record

FORMATS = ("medlab", "cmb_exam", "cmexam", "medqa", "medmcqa", "medmcqa_hf", "ceval", "cmmlu")
LETTERS = "ABCDEFG"
# a file whose answers spread over four options shows each of them within 16 items but
# with probability 0.75**16 = 1%: below that size the MedMCQA base check says nothing
BASE_CHECK_MIN_ITEMS = 16


def normalise_answer(answer: Any) -> str:
    """"Ａ", "a", "A．", "A、C", "A,C" -> "A" / "AC"; "" when nothing letter-like is there;
    anything else left over (a word, a number) is kept so that the caller rejects it."""
    text = unicodedata.normalize("NFKC", str(answer if answer is not None else "")).strip().upper()
    return re.sub(r"[\s,;.:/、，；。：]+", "", text)


def _item(source: str, index: int, where: str, question: Any, options: dict, answer: Any,
          category: Any = None, meta: dict | None = None) -> McqItem:
    if not isinstance(question, str) or not question.strip():
        raise FormatError(f"{where}: question: missing or empty")
    options = {str(k).strip().upper(): str(v).strip() for k, v in options.items() if str(v).strip()}
    if len(options) < 2:
        raise FormatError(f"{where}: options: fewer than two options")
    letters = normalise_answer(answer)
    if not letters or any(a not in options for a in letters) or len(set(letters)) != len(letters):
        raise FormatError(f"{where}: answer: {answer!r} is not one of the options {sorted(options)}")
    return McqItem(id=f"{source}-{index:05d}", source=source, question=question.strip(),
                   options=options, answer="".join(sorted(letters)),
                   category=str(category) if category else None, meta={"where": where, **(meta or {})})


def _medlab(path: Path, source: str, encoding: str) -> Iterator[McqItem]:
    for where, raw in iter_json_lines(path, encoding):
        try:
            item = validate_record(McqItem, raw, where)
        except RecordError as exc:
            raise FormatError(str(exc)) from None
        letters = normalise_answer(item.answer)
        if not letters or any(a not in item.options for a in letters):
            raise FormatError(f"{where}: answer: {item.answer!r} is not one of the options {sorted(item.options)}")
        yield item.model_copy(update={"meta": {**item.meta, "where": where}})


def _cmb_exam(path: Path, source: str, encoding: str) -> Iterator[McqItem]:
    for index, (where, raw) in enumerate(iter_json_array(path, encoding)):
        if not isinstance(raw, dict) or not isinstance(raw.get("option"), dict):
            raise FormatError(f"{where}: option: missing or not an object")
        yield _item(source, index, where, raw.get("question"), raw["option"], raw.get("answer"),
                    raw.get("exam_subject"), {"question_type": raw.get("question_type"),
                                              "exam_type": raw.get("exam_type"), "native_id": raw.get("id")})


def _cmexam(path: Path, source: str, encoding: str) -> Iterator[McqItem]:
    for index, (where, row) in enumerate(iter_csv(path, ["Question", "Options", "Answer"], encoding)):
        options = {}
        for line in row["Options"].splitlines():
            if not line.strip():
                continue
            match = re.match(r"\s*([A-GＡ-Ｇ])[\s.、:：．]+(.*)", line)
            if not match:
                raise FormatError(f"{where}: Options: cannot read option line {line!r}")
            options[unicodedata.normalize("NFKC", match.group(1))] = match.group(2)
        yield _item(source, index, where, row["Question"], options, row["Answer"],
                    row.get("Clinical Department"), {"explanation": row.get("Explanation")})


def _medqa(path: Path, source: str, encoding: str) -> Iterator[McqItem]:
    for index, (where, raw) in enumerate(iter_json_lines(path, encoding)):
        options = raw.get("options")
        if not isinstance(options, dict):
            raise FormatError(f"{where}: options: missing or not an object")
        answer = raw.get("answer_idx")
        if answer is None and raw.get("answer") in options.values():
            answer = next(k for k, v in options.items() if v == raw["answer"])
        if answer is not None and "answer" in raw and options.get(answer) != raw["answer"]:
            raise FormatError(f"{where}: answer_idx {answer!r} does not point at answer {raw['answer']!r}")
        yield _item(source, index, where, raw.get("question"), options, answer, raw.get("meta_info"))


def _medmcqa(path: Path, source: str, encoding: str, base: int) -> Iterator[McqItem]:
    other = "medmcqa_hf (0-3)" if base == 1 else "medmcqa (1-4)"
    for index, (where, raw) in enumerate(iter_json_lines(path, encoding)):
        options = {letter: raw.get(f"op{letter.lower()}", "") for letter in "ABCD"}
        cop = raw.get("cop")
        if not isinstance(cop, int) or isinstance(cop, bool) or not base <= cop <= base + 3:
            raise FormatError(f"{where}: cop: {cop!r} is not an option index {base}-{base + 3} "
                              f"(this format is {'1-4' if base else '0-3'}; is the file {other}?)")
        yield _item(source, index, where, raw.get("question"), options, "ABCD"[cop - base],
                    raw.get("subject_name"), {"explanation": raw.get("exp"), "topic": raw.get("topic_name"),
                                              "cop": cop, "native_id": raw.get("id")})


def _ceval(path: Path, source: str, encoding: str) -> Iterator[McqItem]:
    for index, (where, row) in enumerate(iter_csv(path, ["question", "A", "B", "C", "D", "answer"], encoding)):
        yield _item(source, index, where, row["question"], {k: row[k] for k in "ABCD"}, row["answer"], None,
                    {"explanation": row.get("explanation"), "native_id": row.get("id")})


READERS = {"medlab": _medlab, "cmb_exam": _cmb_exam, "cmexam": _cmexam, "medqa": _medqa, "ceval": _ceval,
           "cmmlu": _ceval, "medmcqa": lambda p, s, e: _medmcqa(p, s, e, 1),
           "medmcqa_hf": lambda p, s, e: _medmcqa(p, s, e, 0)}


def iter_mcq(path: Path | str, fmt: str, source: str | None = None, encoding: str = "utf-8") -> Iterator[McqItem]:
    """Items of a multiple-choice file in one of ``FORMATS``, one at a time, each checked."""
    if fmt not in FORMATS:
        raise FormatError(f"unknown MCQ format {fmt!r} (expected one of {', '.join(FORMATS)})")
    path = existing_file(path)
    return READERS[fmt](path, source or path.stem, encoding)


def load_mcq(path: Path | str, fmt: str, source: str | None = None, encoding: str = "utf-8",
             limit: int | None = None) -> list[McqItem]:
    """Every item of a multiple-choice file (the first ``limit``: pre-flight), with the
    checks that need the whole file: no id twice (the file's own ids where it has them),
    MedMCQA's answer base."""
    items = list(checked_mcq(path, fmt, source, encoding, limit))
    if limit is None:  # the base is a property of the whole file (pre-flight scans it all)
        check_answer_base(path, fmt, {item.meta.get("cop") for item in items}, len(items))
    return items


def checked_mcq(path: Path | str, fmt: str, source: str | None = None, encoding: str = "utf-8",
                limit: int | None = None) -> Iterator[McqItem]:
    """``iter_mcq`` with no id twice, streamed (``load_mcq`` and the whole-file pre-flight)."""
    return iter_unique(islice(iter_mcq(path, fmt, source, encoding), limit),
                       lambda i: i.id if fmt == "medlab" else str(i.meta.get("native_id") or ""),
                       lambda i: i.meta["where"])


def check_answer_base(path: Path | str, fmt: str, used: set, count: int) -> None:
    """MedMCQA's ``cop`` is 1-4 (``medmcqa``) or 0-3 (``medmcqa_hf``): a file read with the
    wrong base never uses the value the other base lacks (``used``: every cop of the file)."""
    if fmt not in ("medmcqa", "medmcqa_hf") or count < BASE_CHECK_MIN_ITEMS:
        return
    base = 1 if fmt == "medmcqa" else 0
    # a 0-based file read as 1-4 never shows a 4; a 1-based one read as 0-3 never a 0
    missing = base + 3 if fmt == "medmcqa" else base
    if missing not in used:
        raise FormatError(f"{path}: cop never takes the value {missing} in {count} items "
                          f"(values used: {sorted(u for u in used if u is not None)}): the file looks "
                          f"{'0-based' if fmt == 'medmcqa' else '1-based'}, and read as {fmt} every answer "
                          f"would shift by one option -- use format "
                          f"{'medmcqa_hf' if fmt == 'medmcqa' else 'medmcqa'}")
