"""Params naming a local data file, its format and encoding (the readers in this package):
dialogue, MCQ, instruction and case files, as generate, filter and evaluate list them. Each
spec's ``problems`` opens the file with its reader and checks its first records."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from medlab.section import Section

# the MCQ readers of medlab.formats.mcq
McqFormat = Literal["medlab", "cmb_exam", "cmexam", "medqa", "medmcqa", "medmcqa_hf", "ceval", "cmmlu"]
# how a file is decoded: UTF-8 (with or without BOM) unless a file says otherwise
Encoding = Literal["utf-8", "gb18030", "utf-16"]


def data_file_problems(path: str, kind: str, fmt: str, encoding: str, root: Path) -> list[tuple[tuple, str]]:
    """(("path",), why) when the file is missing or its first records do not read as ``fmt``."""
    from medlab.formats.peek import peek_problem

    why = peek_problem(root / path, kind, fmt, encoding)
    return [(("path",), why)] if why else []


class DialogueFile(Section):
    path: str
    format: Literal["meddialog_txt", "meddialog_json", "cmedqa2", "disc_med_sft"]
    domain: Literal["general_medicine", "anesthesia"]
    encoding: Encoding = "utf-8"

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        return data_file_problems(self.path, "dialogue", self.format, self.encoding, root)


class McqFile(Section):
    path: str
    format: McqFormat
    domain: Literal["general_medicine", "anesthesia", "auto"]
    encoding: Encoding = "utf-8"

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        return data_file_problems(self.path, "mcq", self.format, self.encoding, root)


class InstructionFile(Section):
    path: str
    format: Literal["alpaca", "moss", "sharegpt", "huatuo_sft", "disc_med_sft"]
    encoding: Encoding = "utf-8"
    # which data set the chats join (and so which of the filter's outputs): general chats by
    # default; a medical SFT set such as DISC-Med-SFT is general_medicine
    domain: Literal["general", "general_medicine", "anesthesia"] = "general"

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        return data_file_problems(self.path, "instructions", self.format, self.encoding, root)
