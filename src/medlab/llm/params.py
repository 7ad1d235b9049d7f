"""Params of an LLM backend used as teacher or judge (``hf`` local model, ``openai`` endpoint),
of its decoding, and of a rubric judge built on one; shared by the generate, filter and
evaluate sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medlab.section import Section


class HFTeacherParams(Section):
    name_or_path: str | None
    revision: str
    trust_remote_code: bool
    batch_size: int = Field(ge=1)
    max_failed_fraction: float = Field(ge=0.0, le=1.0)


class OpenAITeacherParams(Section):
    base_url: str
    model: str
    revision: str
    api_key_env: str
    max_concurrency: int = Field(ge=1)
    timeout_s: float = Field(gt=0.0)
    max_retries: int = Field(ge=0)
    seed: int | None = Field(ge=0)
    max_failed_fraction: float = Field(ge=0.0, le=1.0)


class DecodingParams(Section):
    temperature: float = Field(ge=0.0)
    top_p: float = Field(gt=0.0, le=1.0)
    max_new_tokens: int = Field(ge=1)


class RubricJudgeParams(Section):
    backend: Literal["hf", "openai"]
    hf: HFTeacherParams
    openai: OpenAITeacherParams
    decoding: DecodingParams
    max_attempts: int = Field(ge=1)
    max_unparseable_fraction: float = Field(ge=0.0, le=1.0)
