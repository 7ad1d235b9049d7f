"""``corpus`` section of params.yaml: how the knowledge base is rendered as text."""

from __future__ import annotations

from pydantic import Field

from medlab.section import Section


class CorpusParams(Section):
    paragraphs_per_entity: int = Field(ge=1)
    list_probability: float = Field(ge=0.0, le=1.0)
    anesthesia_coverage: float = Field(ge=0.0, le=1.0)
    valid_fraction: float = Field(gt=0.0, lt=0.5)

