"""``filter`` section of params.yaml (rules, judge, dedup, decontamination, de-identification,
DPO pairs) and the cross-stage rule that the judge is not the teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from medlab.formats.params import Encoding, McqFormat, data_file_problems
from medlab.llm.params import RubricJudgeParams
from medlab.section import Section, model_path_problem


class RuleFilterParams(Section):
    min_chars: int = Field(ge=0)
    max_chars: int = Field(ge=1)
    max_repeat_share: float = Field(gt=0.0, le=1.0)


class LikelihoodJudgeParams(Section):
    model: str
    score: Literal["fact_span", "pmi", "mean_logprob"]
    contrast_weight: float = Field(ge=0.0)
    format: Literal["plain", "chat"]
    batch_size: int = Field(ge=1)
    max_tokens: int = Field(ge=16)


class JudgeParams(Section):
    kind: Literal["likelihood", "rubric", "none"]
    allow_self_judge: bool
    likelihood: LikelihoodJudgeParams
    rubric: RubricJudgeParams
    mode: Literal["quantile", "threshold"]
    keep_quantile: float = Field(gt=0.0, le=1.0)
    keep_quantile_prose: float = Field(gt=0.0, le=1.0)
    threshold: float
    own_cutoff_methods: list[str] = []


class DedupParams(Section):
    enabled: bool = True
    ngram: int = Field(ge=1)
    num_perm: int = Field(ge=16)
    threshold: float = Field(gt=0.0, le=1.0)


class ExternalBenchmark(Section):
    path: str
    format: McqFormat
    encoding: Encoding = "utf-8"

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        return data_file_problems(self.path, "mcq", self.format, self.encoding, root)


class DecontaminateParams(Section):
    n_question: int = Field(ge=4)
    n_context: int = Field(ge=4)
    external: list[ExternalBenchmark]


class DeidParams(Section):
    development_file: str
    heldout_file: str


class PairsParams(Section):
    max_pairs: int = Field(ge=0)


class FilterParams(Section):
    rules: RuleFilterParams
    judge: JudgeParams
    dedup: DedupParams
    decontaminate: DecontaminateParams
    deid: DeidParams
    pairs: PairsParams

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = []
        model = self.judge.likelihood.model
        produced = Path(model).parts[:1] in (("models",), ("data",))  # made by the pipeline
        if self.judge.kind == "likelihood" and not produced:
            if problem := model_path_problem(model, root):
                out.append((("judge", "likelihood", "model"), problem))
        for k, spec in enumerate(self.decontaminate.external):
            out += [(("decontaminate", "external", k, *loc), why) for loc, why in spec.problems(root)]
        for key in ("development_file", "heldout_file"):
            if not (root / getattr(self.deid, key)).is_file():
                out.append((("deid", key), f"file not found: {root / getattr(self.deid, key)}"))
        return out


def self_judging(params) -> str | None:
    """Why the filter's judge is the generate stage's teacher, or None if it is not."""
    teacher, judge = params.generate.teacher, params.filter.judge
    if judge.kind == "rubric" and judge.rubric.backend == teacher.backend:
        same = (judge.rubric.openai.model == teacher.openai.model and
                judge.rubric.openai.base_url == teacher.openai.base_url) if teacher.backend == "openai" \
            else judge.rubric.hf.name_or_path == teacher.hf.name_or_path
        if same:
            return f"the rubric judge is the teacher ({teacher.backend})"
    if judge.kind == "likelihood" and teacher.backend == "hf" and teacher.hf.name_or_path == judge.likelihood.model:
        return f"the likelihood judge is the teacher ({judge.likelihood.model})"
    return None

