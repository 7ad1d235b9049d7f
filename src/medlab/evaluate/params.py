"""``evaluate`` and ``compare`` sections of params.yaml (the compare stage is
``medlab.evaluate.compare``) and their cross-stage rules (models named, recipes known)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from medlab.llm.params import (
    DecodingParams,
    HFTeacherParams,
    OpenAITeacherParams,
    RubricJudgeParams,
)
from medlab.section import ConfigError, Section, model_path_problem, read_yaml


class EvalMcqParams(Section):
    scorings: list[Literal["cloze", "option_text", "letter"]] = Field(min_length=1)
    headline: Literal["cloze", "option_text", "letter"]
    norm: bool
    shots: int = Field(ge=0, le=10)
    generation_items: int = Field(ge=0)
    generation_max_new_tokens: int = Field(ge=1)


class EvalQaParams(Section):
    items: int = Field(ge=0)
    max_new_tokens: int = Field(ge=1)


class EvalNerParams(Section):
    items: int = Field(ge=0)
    max_new_tokens: int = Field(ge=1)


class PatientParams(Section):
    """Who plays the patient: the embedded rule-based patient, a local model or an endpoint."""

    backend: Literal["simulated", "hf", "openai"]
    hf: HFTeacherParams
    openai: OpenAITeacherParams
    decoding: DecodingParams


class EvalConsultParams(Section):
    cases: int = Field(ge=0)
    max_turns: int = Field(ge=1, le=20)
    max_new_tokens: int = Field(ge=1)
    patient: PatientParams


class EvalJudgeParams(RubricJudgeParams):
    """The filter's rubric-judge settings, plus ``none`` (no judge: the embedded default)."""

    backend: Literal["none", "hf", "openai"]


class EvaluateParams(Section):
    models: dict[str, str] = Field(min_length=1)
    tasks: list[str] = Field(min_length=1)
    task_dirs: list[str]
    plain_models: list[str]
    batch_size: int = Field(ge=1)
    n_boot: int = Field(ge=0)
    mcq: EvalMcqParams
    qa: EvalQaParams
    ner: EvalNerParams
    consult: EvalConsultParams
    judge: EvalJudgeParams

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = []
        from medlab.evaluate.endpoint import endpoint_problem, is_endpoint

        for name, path in self.models.items():
            if not re.fullmatch(r"[a-z0-9_]+", name):
                out.append((("models", name), "model names are lower-case letters, digits and _"))
            if is_endpoint(path):
                if problem := endpoint_problem(path, root):
                    out.append((("models", name), problem))
            elif Path(path).parts[:1] != ("models",) and (problem := model_path_problem(path, root)):
                out.append((("models", name), problem))
        def scores_logprobs(path: str) -> bool:  # an endpoint file that says logprobs: true (valid or not)
            try:
                doc = read_yaml(Path(path) if Path(path).is_absolute() else root / path)
            except (ConfigError, OSError):
                return False  # reported above
            return isinstance(doc, dict) and doc.get("logprobs") is True

        for name in self.plain_models:
            if name not in self.models:
                out.append((("plain_models",), f"{name!r} is not in evaluate.models"))
            elif is_endpoint(self.models[name]) and not scores_logprobs(self.models[name]):
                out.append((("plain_models",), f"{name!r} is an endpoint without logprobs: it is prompted "
                                               "through its chat API"))
        hosted = [name for name, path in self.models.items() if is_endpoint(path) and not scores_logprobs(path)]
        if hosted and self.mcq.generation_items == 0:
            out.append((("mcq", "generation_items"), f"0, but {', '.join(hosted)} answer(s) in generation mode only: "
                                                     "their MCQ tasks would have no score"))
        if self.mcq.headline not in self.mcq.scorings:
            out.append((("mcq", "headline"), f"{self.mcq.headline!r} is not one of mcq.scorings {self.mcq.scorings}"))
        for k, folder in enumerate(self.task_dirs):
            if not (root / folder).is_dir():
                out.append((("task_dirs", k), f"not a folder: {root / folder}"))
        if len(set(self.tasks)) != len(self.tasks):
            out.append((("tasks",), f"a task is listed twice: {self.tasks}"))
        from medlab.evaluate.tasks import resolve

        try:
            resolve(self.tasks, [d for d in self.task_dirs if (root / d).is_dir()], root)
        except ConfigError as exc:
            out += [(("tasks",), line) for line in str(exc).splitlines()]
        patient = self.consult.patient
        if patient.backend == "hf":
            if patient.hf.name_or_path is None:
                out.append((("consult", "patient", "hf", "name_or_path"), "required when backend is 'hf'"))
            elif problem := model_path_problem(patient.hf.name_or_path, root):
                out.append((("consult", "patient", "hf", "name_or_path"), problem))
        if self.judge.backend == "hf":
            if self.judge.hf.name_or_path is None:
                out.append((("judge", "hf", "name_or_path"), "required when backend is 'hf'"))
            elif problem := model_path_problem(self.judge.hf.name_or_path, root):
                out.append((("judge", "hf", "name_or_path"), problem))
        return out


class CompareParams(Section):
    baseline: str
    stigma_model: str
    clean_model: str
    validity_readout: Literal["likert", "statement"]
    pairs: list[list[str]]
    tasks: list[str] = Field(min_length=1)
    n_boot: int = Field(ge=100)
    pairwise_judge: bool

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        return [(("pairs", k), f"a pair is two model names, got {pair}") for k, pair in enumerate(self.pairs)
                if len(pair) != 2 or pair[0] == pair[1]]


def compare_problems(params) -> list[tuple[tuple, str]]:
    """compare.* names every model it compares in evaluate.models."""
    known = params.evaluate.models
    out = []
    for key in ("baseline", "stigma_model", "clean_model"):
        if getattr(params.compare, key) not in known:
            out.append((("compare", key), f"{getattr(params.compare, key)!r} is not in evaluate.models"))
    if params.compare.validity_readout not in params.probe.readouts:
        out.append((("compare", "validity_readout"), f"{params.compare.validity_readout!r} is not one of "
                    f"probe.readouts {params.probe.readouts}"))
    if params.probe.target_group != params.generate.teacher.simulated.stigma_group:
        out.append((("probe", "target_group"), f"{params.probe.target_group!r} is not the group the teacher's "
                    f"planted stigma targets (generate.teacher.simulated.stigma_group: "
                    f"{params.generate.teacher.simulated.stigma_group!r}): the validity check would test nothing"))
    for k, pair in enumerate(params.compare.pairs):
        for name in pair:
            if name not in known:
                out.append((("compare", "pairs", k), f"{name!r} is not in evaluate.models"))
    return out


def unknown_recipe_models(params) -> list[tuple[str, str]]:
    """evaluate.models entries under models/finetune/ naming no recipe: (name, message)."""
    out = []
    for name, path in params.evaluate.models.items():
        parts = Path(path).parts
        if parts[:2] == ("models", "finetune") and (len(parts) != 3 or parts[2] not in params.finetune.recipes):
            out.append((name, f"{path}: no such recipe in finetune.recipes ({', '.join(params.finetune.recipes)})"))
        elif parts[:1] == ("models",) and parts[:2] not in (("models", "base"), ("models", "finetune")):
            out.append((name, f"{path}: the pipeline writes models/base and models/finetune/<recipe> only"))
    return out

