"""``benchmark`` section of params.yaml: the held-out MCQ, open QA and case vignettes."""

from __future__ import annotations

from pydantic import Field

from medlab.section import Section


class McqParams(Section):
    n_options: int = Field(ge=4, le=5)
    anesthesia_items: int = Field(ge=1)
    general_items: int = Field(ge=1)
    dev_items: int = Field(ge=0)


class QaParams(Section):
    anesthesia_items: int = Field(ge=1)


class VignetteParams(Section):
    n_cases: int = Field(ge=1)
    questions_per_case: int = Field(ge=1, le=3)


class BenchmarkParams(Section):
    mcq: McqParams
    qa: QaParams
    vignettes: VignetteParams

