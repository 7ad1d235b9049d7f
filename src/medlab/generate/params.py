"""``generate`` section of params.yaml: the teacher and the recipes' generation methods."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from medlab.formats.params import DialogueFile, InstructionFile, McqFile
from medlab.llm.params import DecodingParams, HFTeacherParams, OpenAITeacherParams
from medlab.section import Section, model_path_problem


class FaultRates(Section):
    factual: float = Field(ge=0.0, le=1.0)
    unsafe: float = Field(ge=0.0, le=1.0)
    off_format: float = Field(ge=0.0, le=1.0)
    stigma: float = Field(ge=0.0, le=1.0)


class SimulatedTeacherParams(Section):
    faults: FaultRates
    stigma_group: str


class TeacherParams(Section):
    backend: Literal["simulated", "hf", "openai"]
    simulated: SimulatedTeacherParams
    hf: HFTeacherParams
    openai: OpenAITeacherParams

    def problems(self, root: Path) -> list[tuple[tuple[str, ...], str]]:
        out: list[tuple[tuple[str, ...], str]] = []
        total = sum(self.simulated.faults.model_dump().values())
        if total > 1.0:
            out.append((("simulated", "faults"), f"rates sum to {total:.2f} > 1"))
        from medlab.patient_groups import load_groups

        if self.simulated.stigma_group not in load_groups():
            out.append((("simulated", "stigma_group"),
                        f"unknown group {self.simulated.stigma_group!r} (known: {', '.join(load_groups())})"))
        if self.backend == "hf":
            if self.hf.name_or_path is None:
                out.append((("hf", "name_or_path"), "required when backend is 'hf'"))
            elif problem := model_path_problem(self.hf.name_or_path, root, self.hf.revision):
                out.append((("hf", "name_or_path"), problem))
        return out


class KgQaParams(Section):
    general_medicine: int = Field(ge=0)
    anesthesia: int = Field(ge=0)
    context_facts: int = Field(ge=0)


class KgDialogueParams(Section):
    general_medicine: int = Field(ge=0)
    anesthesia: int = Field(ge=0)
    persona_rate: float = Field(ge=0.0, le=1.0)


class SelfInstructParams(Section):
    seed_file: str
    general_medicine: int = Field(ge=0)
    anesthesia: int = Field(ge=0)
    examples_per_prompt: int = Field(ge=1)
    tasks_per_request: int = Field(ge=1)
    novelty_threshold: float = Field(gt=0.0, le=1.0)
    max_requests: int = Field(ge=1)


class DialogueRewriteParams(Section):
    files: list[DialogueFile]


class McqToQaParams(Section):
    files: list[McqFile]


class CorpusToInstructionParams(Section):
    max_paragraph_chars: int = Field(ge=20)
    paragraphs_per_subject: int | None = Field(ge=1)


class PerDomainCount(Section):
    general_medicine: int = Field(ge=0)
    anesthesia: int = Field(ge=0)


class KgConsultParams(Section):
    anesthesia: int = Field(ge=0)


class GeneralMixParams(Section):
    files: list[InstructionFile]


class GenerateParams(Section):
    teacher: TeacherParams
    decoding: DecodingParams
    cache: Literal["use", "refresh", "off"]
    kg_qa: KgQaParams
    kg_dialogue: KgDialogueParams
    self_instruct: SelfInstructParams
    dialogue_rewrite: DialogueRewriteParams
    mcq_to_qa: McqToQaParams
    corpus_to_instruction: CorpusToInstructionParams
    corpus_ner: PerDomainCount
    kg_mcq: PerDomainCount
    kg_consult: KgConsultParams
    general_mix: GeneralMixParams

    @classmethod
    def methods(cls) -> list[str]:
        """The generation methods (each a section here, its name the records' ``method``)."""
        return [name for name in cls.model_fields if name not in ("teacher", "decoding", "cache")]

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = [(("teacher", *loc), m) for loc, m in self.teacher.problems(root)]
        if not (root / self.self_instruct.seed_file).is_file():
            out.append((("self_instruct", "seed_file"), f"file not found: {root / self.self_instruct.seed_file}"))
        for section in ("dialogue_rewrite", "mcq_to_qa", "general_mix"):
            for k, spec in enumerate(getattr(self, section).files):
                out += [((section, "files", k, *loc), why) for loc, why in spec.problems(root)]
        return out

