"""Doctor-patient dialogue corpora -> ``Dialogue`` (turns of "patient" / "doctor").

Formats (name in params -> layout):

* ``meddialog_txt``: MedDialog-CN raw text. Blocks start with ``id=N``; a
  ``Description`` section holds ``病情描述：`` and the description on the next line;
  ``Dialogue`` is followed by ``病人:`` / ``医生:`` lines, each followed by one line of
  utterance; a blank line ends the block.
* ``meddialog_json``: MedDialog's processed JSON, a list of dialogues, each a list of
  ``"病人：..."`` / ``"医生：..."`` strings.
* ``cmedqa2``: a folder with ``question.csv`` (question_id,content) and ``answer.csv``
  (ans_id,question_id,content); each question with its first answer is one dialogue.
* ``disc_med_sft``: DISC-Med-SFT JSONL, ``{"_id", "source", "conversation":
  [{"role": "user"|"assistant", "content"}]}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from medlab.formats import FormatError, unique_ids
from medlab.formats.text import existing_file, iter_csv, iter_json_array, iter_json_lines, read_text

SPEAKERS = {"病人": "patient", "医生": "doctor", "user": "patient", "assistant": "doctor"}
FORMATS = ("meddialog_txt", "meddialog_json", "cmedqa2", "disc_med_sft")


@dataclass
class Dialogue:
    id: str
    turns: list[tuple[str, str]]  # (speaker, text), speaker "patient" | "doctor"
    where: str  # "file:line" of the record, for errors and provenance
    meta: dict = field(default_factory=dict)


def _check(dialogue: Dialogue) -> Dialogue:
    if not dialogue.turns:
        raise FormatError(f"{dialogue.where}: dialogue {dialogue.id} has no turns")
    if dialogue.turns[0][0] != "patient":
        raise FormatError(f"{dialogue.where}: dialogue {dialogue.id} does not start with the patient")
    if not any(s == "doctor" for s, _ in dialogue.turns):
        raise FormatError(f"{dialogue.where}: dialogue {dialogue.id} has no doctor turn")
    return dialogue


def _meddialog_txt(path: Path, encoding: str) -> Iterator[Dialogue]:
    lines = read_text(path, encoding).splitlines()
    starts = [k for k, line in enumerate(lines) if line.startswith("id=")]
    if not starts:
        raise FormatError(f"{path}: no dialogue found (expected blocks starting with 'id=')")
    for first, end in zip(starts, [*starts[1:], len(lines)], strict=True):
        ident = lines[first][3:].strip()
        if not ident:
            raise FormatError(f"{path}:{first + 1}: id= without a value")
        block = range(first + 1, end)
        description = next((lines[k + 1].strip() for k in block
                            if lines[k].startswith("病情描述") and k + 1 < end), "")
        dialogue_at = next((k for k in block if lines[k].strip() == "Dialogue"), None)
        if dialogue_at is None:
            raise FormatError(f"{path}:{first + 1}: dialogue {ident} has no 'Dialogue' section")
        turns: list[tuple[str, str]] = []
        k = dialogue_at + 1
        while k < end and lines[k].strip():  # a blank line ends the dialogue
            line = lines[k].strip()
            if line not in ("病人:", "医生:", "病人：", "医生："):
                raise FormatError(f"{path}:{k + 1}: expected '病人:' or '医生:', got {line[:20]!r}")
            if k + 1 >= end or not lines[k + 1].strip():
                raise FormatError(f"{path}:{k + 1}: {line} is not followed by an utterance")
            speaker, text = SPEAKERS[line[:2]], lines[k + 1].strip()
            if turns and turns[-1][0] == speaker:  # consecutive lines of one speaker: one turn
                turns[-1] = (speaker, turns[-1][1] + text)
            else:
                turns.append((speaker, text))
            k += 2
        yield _check(Dialogue(ident, turns, f"{path}:{first + 1}", {"description": description}))


def _meddialog_json(path: Path, encoding: str) -> Iterator[Dialogue]:
    for index, (where, item) in enumerate(iter_json_array(path, encoding)):
        if not isinstance(item, list) or not all(isinstance(u, str) for u in item):
            raise FormatError(f"{where}: expected a list of '病人：...'/'医生：...' strings")
        turns = []
        for utterance in item:
            head = utterance[:2]
            if head not in ("病人", "医生") or utterance[2:3] not in ("：", ":"):
                raise FormatError(f"{where}: utterance does not start with 病人： or 医生：: {utterance[:20]!r}")
            turns.append((SPEAKERS[head], utterance[3:].strip()))
        yield _check(Dialogue(str(index), turns, where))


def _cmedqa2(folder: Path, encoding: str) -> Iterator[Dialogue]:
    if not folder.is_dir():
        raise FormatError(f"{folder}: cmedqa2 is a folder holding question.csv and answer.csv")
    questions = list(iter_csv(folder / "question.csv", ["question_id", "content"], encoding))
    answers = iter_csv(folder / "answer.csv", ["ans_id", "question_id", "content"], encoding)
    first_answer: dict[str, str] = {}
    known = {row["question_id"] for _, row in questions}
    for where, row in answers:
        if row["question_id"] not in known:
            raise FormatError(f"{where}: question_id {row['question_id']!r} is not in question.csv")
        first_answer.setdefault(row["question_id"], row["content"])
    for where, row in questions:
        if row["question_id"] not in first_answer:
            continue  # a question nobody answered is not a dialogue
        yield _check(Dialogue(row["question_id"], [("patient", row["content"].strip()),
                                                   ("doctor", first_answer[row["question_id"]].strip())], where))


def _disc_med_sft(path: Path, encoding: str) -> Iterator[Dialogue]:
    for index, (where, record) in enumerate(iter_json_lines(path, encoding)):
        conversation = record.get("conversation")
        if not isinstance(conversation, list):
            raise FormatError(f"{where}: conversation: missing or not a list")
        turns = []
        for k, turn in enumerate(conversation):
            if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant") \
                    or not isinstance(turn.get("content"), str):
                raise FormatError(f"{where}: conversation[{k}]: expected {{role: user|assistant, content}}")
            turns.append((SPEAKERS[turn["role"]], turn["content"].strip()))
        yield _check(Dialogue(str(record.get("_id", index)), turns, where, {"source": record.get("source")}))


def iter_dialogues(path: Path | str, fmt: str, encoding: str = "utf-8") -> Iterator[Dialogue]:
    """The dialogues of a corpus in one of ``FORMATS``, checked, one at a time."""
    path = Path(path)
    if fmt not in FORMATS:
        raise FormatError(f"unknown dialogue format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if fmt != "cmedqa2":
        existing_file(path)
    elif not path.exists():
        raise FormatError(f"{path}: not found")
    return {"meddialog_txt": _meddialog_txt, "meddialog_json": _meddialog_json,
            "cmedqa2": _cmedqa2, "disc_med_sft": _disc_med_sft}[fmt](path, encoding)


def load_dialogues(path: Path | str, fmt: str, encoding: str = "utf-8", limit: int | None = None) -> list[Dialogue]:
    """Every dialogue of the corpus (the first ``limit``); an id twice is an error naming both records."""
    return unique_ids(islice(iter_dialogues(path, fmt, encoding), limit), lambda d: d.id, lambda d: d.where)
