"""Evaluation tasks as small declarative YAML files: which data, read by which loader, asked how.

A task file is ``<name>.yaml`` (the name is the file's stem: what metrics, outcomes and
``compare.tasks`` call it); ``evaluate.tasks`` lists the names to run. The built-in ones
live in ``src/medlab/evaluate/tasks/``; a folder in ``evaluate.task_dirs`` adds yours
(and a file there of the same name replaces a built-in). Adding a benchmark -- CMB-Exam,
a hospital's private exam -- is one file::

    # external/tasks/cmb_exam.yaml
    description: CMB-Exam validation split, physician track
    kind: mcq                 # mcq | qa | ner | clin (CMB-Clin cases) | consult (with a patient)
    data: external/cmb/val.json
    format: cmb_exam          # a medlab.formats.mcq reader (mcq), medlab (qa), cmeee | promptcblue | kb_sentences (ner)
    encoding: utf-8           # optional: utf-8 (default, BOM or not) | gb18030 | utf-16
    domain: general_medicine  # anesthesia | general_medicine | auto (the items' own)
    prompt: mcq_zh            # prompt template id (PROMPTS)

How a kind is scored (scorings, rotations, shots, generation mode, text metrics,
micro-F1) is set once for all tasks in ``evaluate.mcq`` / ``evaluate.qa`` / ``evaluate.ner``.
A file with a typo stops the run before any model loads, one line per problem naming
file, line and key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field

from medlab.formats.params import Encoding, McqFormat, data_file_problems
from medlab.section import ConfigError, Section, read_yaml, validate

BUILTIN_DIR = Path(__file__).resolve().parent / "tasks"

# Prompt templates each kind implements (an id names a version: a changed prompt gets a new id).
PROMPTS = {
    "mcq": ("mcq_zh",),  # 以下是{domain}单项选择题 ... 答案：  (medlab.evaluate.mcq)
    "qa": ("qa_chat",),  # the question alone as the user's turn
    "ner": ("ner_zh",),  # the extraction instruction of medlab.evaluate.ner.PROMPT
    "clin": ("clin_chat",),  # the case description, then each question as the next user turn
    # the patient's opening, then the conversation (medlab.evaluate.consult; the patient's
    # own system prompt is versioned there: PATIENT_PROMPT_ID)
    "consult": ("consult_chat",),
}
FORMATS = {
    "mcq": get_args(McqFormat),
    "qa": ("medlab",),  # medlab.records.QaItem JSONL (the benchmark stage's)
    # kb_sentences: the QA file's reference answers and the held-out corpus paragraphs'
    # sentences, annotated against the knowledge base; cmeee / promptcblue: their files
    "ner": ("kb_sentences", "cmeee", "promptcblue"),
    "clin": ("cmb_clin",),  # medlab.formats.cases: a case and its chain of questions
    # vignettes: the benchmark's case vignettes (medlab McqItem JSONL with context, PHI spans
    # and the diagnosis in meta), facts from the knowledge base; cmb_clin: its case descriptions
    "consult": ("vignettes", "cmb_clin"),
}


class TaskSpec(Section):
    """One task file's keys."""

    description: str = Field(min_length=1)
    kind: Literal["mcq", "qa", "ner", "clin", "consult"]
    data: str  # path relative to the repository root
    format: str
    domain: Literal["anesthesia", "general_medicine", "auto"]
    prompt: str
    encoding: Encoding = "utf-8"  # of the data file: utf-8 (with or without BOM) | gb18030 | utf-16
    # consult tasks of format cmb_clin: per-case rubric criteria, HealthBench's JSONL layout
    # ({"id", "rubrics": [{"criterion", "points", "tags"}]}), graded by evaluate.judge
    criteria: str | None = None

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = []
        if self.format not in FORMATS[self.kind]:
            out.append((("format",), f"{self.format!r} is not a {self.kind} format "
                                     f"(known: {', '.join(FORMATS[self.kind])})"))
        if self.prompt not in PROMPTS[self.kind]:
            out.append((("prompt",), f"unknown {self.kind} prompt {self.prompt!r} "
                                     f"(known: {', '.join(PROMPTS[self.kind])})"))
        if self.criteria is not None:
            if self.kind != "consult" or self.format != "cmb_clin":
                out.append((("criteria",), "criteria files go with kind consult, format cmb_clin (vignette cases "
                                           "write their own from the facts)"))
            elif not (root / self.criteria).is_file():
                out.append((("criteria",), f"file not found: {root / self.criteria}"))
        produced = Path(self.data).parts[:1] == ("data",)  # written by a stage before evaluate
        if produced:
            return out
        if (self.kind in ("mcq", "clin") or self.format == "cmb_clin") and not out:  # read its first items
            out += [(("data",), why) for _, why in data_file_problems(
                self.data, "mcq" if self.kind == "mcq" else "cases", self.format, self.encoding, root)]
        elif not (root / self.data).exists():
            out.append((("data",), f"file not found: {root / self.data}"))
        return out


@dataclass(frozen=True)
class Task:
    name: str
    file: Path
    spec: TaskSpec


def load_task(path: Path, root: Path) -> Task:
    """Read and validate one task file (ConfigError naming file, line and key)."""
    path = Path(path)
    if not re.fullmatch(r"[a-z0-9_]+", path.stem):
        raise ConfigError(f"{path}: task names (file stems) are lower-case letters, digits and _")
    spec = validate(read_yaml(path), TaskSpec, str(path), root)
    return Task(path.stem, path, spec)


def available(task_dirs: list[str], root: Path) -> dict[str, Path]:
    """Task name -> file: the built-ins, then each of ``task_dirs`` in order (later wins)."""
    out = {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}
    for folder in task_dirs:
        out.update({p.stem: p for p in sorted((root / folder).glob("*.yaml"))})
    return out


def resolve(names: list[str], task_dirs: list[str], root: Path) -> list[Task]:
    """The named tasks, validated, in order; ConfigError listing every problem."""
    files = available(task_dirs, root)
    problems, tasks = [], []
    for name in names:
        if name not in files:
            problems.append(f"unknown task {name!r} (known: {', '.join(sorted(files))})")
            continue
        try:
            tasks.append(load_task(files[name], root))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return tasks
