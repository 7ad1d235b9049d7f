"""Params naming a local data file and its format (the readers in this package): dialogue,
MCQ and instruction files, as generate, filter and evaluate list them."""

from __future__ import annotations

from typing import Literal

from medlab.section import Section

# the MCQ readers of medlab.formats.mcq
McqFormat = Literal["medlab", "cmb_exam", "cmexam", "medqa", "medmcqa", "medmcqa_hf", "ceval"]


class DialogueFile(Section):
    path: str
    format: Literal["meddialog_txt", "meddialog_json", "cmedqa2", "disc_med_sft"]
    domain: Literal["general_medicine", "anesthesia"]


class McqFile(Section):
    path: str
    format: McqFormat
    domain: Literal["general_medicine", "anesthesia", "auto"]


class InstructionFile(Section):
    path: str
    format: Literal["alpaca", "moss", "sharegpt"]

