"""``blind`` and ``unblind`` sections of params.yaml, and their rules across sections
(the rated models and task exist in ``evaluate``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from medlab.section import Section

# what a rater scores, 1-5, per answer (the rubric judge's dimensions, medlab.evaluate.judges)
Dimension = Literal["accuracy", "helpfulness", "linguistic_quality", "proactivity"]


class BlindParams(Section):
    task: str = Field(min_length=1)
    pairs: list[list[str]] = Field(min_length=1)
    items: int = Field(ge=1)
    raters: list[str] = Field(min_length=1)
    overlap: int = Field(ge=0)
    dimensions: list[Dimension] = Field(min_length=1)
    show_reference: bool

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = []
        for k, pair in enumerate(self.pairs):
            if len(pair) != 2 or pair[0] == pair[1]:
                out.append((("pairs", k), f"{pair}: a pair is two different model names [a, b]"))
        for k, name in enumerate(self.raters):
            if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                out.append((("raters", k), f"{name!r}: rater ids are letters, digits, _ and - (they name files)"))
        if len(set(self.raters)) != len(self.raters):
            out.append((("raters",), "a rater id appears twice"))
        if len(set(self.dimensions)) != len(self.dimensions):
            out.append((("dimensions",), "a dimension appears twice"))
        if self.overlap > self.items:
            out.append((("overlap",), f"{self.overlap} shared items per pair, but only {self.items} items per pair"))
        return out


class UnblindParams(Section):
    ratings_dir: str = Field(min_length=1)
    allow_incomplete: bool
    n_boot: int = Field(ge=0)
    judge: bool

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        if not (root / self.ratings_dir).is_dir():
            return [(("ratings_dir",), f"{root / self.ratings_dir} is not a folder (create it; it may be empty)")]
        return []


def human_problems(params) -> list[tuple[tuple, str]]:
    """blind.* names models of evaluate.models and a QA task of evaluate.tasks."""
    out = []
    for k, pair in enumerate(params.blind.pairs):
        out += [(("blind", "pairs", k), f"{name!r} is not in evaluate.models")
                for name in pair if name not in params.evaluate.models]
    if params.blind.task not in params.evaluate.tasks:
        out.append((("blind", "task"), f"{params.blind.task!r} is not in evaluate.tasks {params.evaluate.tasks}"))
    if 0 < params.evaluate.qa.items < params.blind.items:
        out.append((("blind", "items"), f"{params.blind.items} questions per pair, but evaluate.qa.items answers only "
                                        f"{params.evaluate.qa.items}"))
    return out
