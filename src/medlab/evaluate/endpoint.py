"""A hosted model as an evaluation subject: an endpoint file named in ``evaluate.models``.

``evaluate.models`` maps a name to a local model directory or to a small YAML file that
describes an OpenAI-compatible endpoint (GPT-4-class APIs, a vLLM server)::

    # configs/endpoints/gpt4o_mini.yaml
    kind: openai
    base_url: https://api.openai.com/v1
    model: gpt-4o-mini
    revision: "2024-07-18"      # what you declare; part of every call's cache key
    api_key_env: OPENAI_API_KEY # the NAME of the variable; never the key
    max_concurrency: 8
    timeout_s: 60.0
    max_retries: 5
    seed: 1234                  # sent with every request (null: not sent)
    max_failed_fraction: 0.02   # refused requests before the stage stops
    max_new_tokens: 1024        # answers are not cut short: a chain of thought may come first
    price_prompt_per_m: 0.15    # USD per 1M prompt tokens, for the cost estimate
    price_completion_per_m: 0.60
    logprobs: false             # true: the server echoes prompt log-probabilities (vLLM, SGLang)
    tokenizer: ""               # with logprobs: local folder of the served model's tokenizer files

The file is the stage's DVC dependency (edit it, the stage reruns) and is validated like
params, with ``file:line: key`` errors; the key variable must be set at validation. Such a
subject has no weights here: it answers in generation mode (MCQ by answer extraction, open
QA, NER, consultations, the probe's Likert items), every call through the SQLite call cache.
With ``logprobs: true`` (a vLLM or SGLang server of an open model) its MCQ sets are also
scored by log-likelihood like a local model's (``medlab.evaluate.endpoint_loglik``): the
prompts are tokenised here with the served model's tokenizer (``tokenizer``: the folder
with its tokenizer.json / chat template, which whoever serves the model has) and sent as
token ids. Hosted chat APIs (OpenAI's) return no prompt log-probabilities: leave it false.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from medlab.section import ConfigError, Section, read_yaml, validate


class EndpointSpec(Section):
    """One endpoint file's keys."""

    kind: Literal["openai"]
    base_url: str = Field(pattern=r"^https?://")
    model: str = Field(min_length=1)
    revision: str = ""
    api_key_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    max_concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=60.0, gt=0.0)
    max_retries: int = Field(default=5, ge=0)
    seed: int | None = Field(default=None, ge=0)
    max_failed_fraction: float = Field(default=0.02, ge=0.0, le=1.0)
    max_new_tokens: int = Field(default=1024, ge=16)
    price_prompt_per_m: float = Field(default=0.0, ge=0.0)
    price_completion_per_m: float = Field(default=0.0, ge=0.0)
    logprobs: bool = False
    tokenizer: str = ""

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = []
        if not os.environ.get(self.api_key_env):
            out.append((("api_key_env",), f"environment variable {self.api_key_env} is not set: export the API key "
                                          f"for {self.base_url} in it before running"))
        if self.logprobs and not self.tokenizer:
            out.append((("tokenizer",), "logprobs: true needs the served model's tokenizer folder (prompts are "
                                        "tokenised here and sent as token ids)"))
        elif self.tokenizer and not (self.tokenizer_path(root) / "tokenizer_config.json").is_file():
            out.append((("tokenizer",), f"{self.tokenizer_path(root)} has no tokenizer_config.json: name the folder "
                                        "holding the served model's tokenizer files"))
        return out

    def tokenizer_path(self, root: Path) -> Path:
        path = Path(self.tokenizer)
        return path if path.is_absolute() else root / path


def is_endpoint(value: str) -> bool:
    """Whether an ``evaluate.models`` value names an endpoint file (not a model directory)."""
    return value.endswith((".yaml", ".yml"))


def load_endpoint(path: Path | str, root: Path) -> EndpointSpec:
    """Read and validate an endpoint file (ConfigError naming file, line and key)."""
    path = Path(path) if Path(path).is_absolute() else root / path
    return validate(read_yaml(path), EndpointSpec, str(path), root)


def endpoint_problem(value: str, root: Path) -> str | None:
    """Why an endpoint file cannot be used (its own file:line lines joined), or None."""
    try:
        load_endpoint(value, root)
    except ConfigError as exc:
        return " / ".join(str(exc).splitlines())
    return None


def make_subject_backend(spec: EndpointSpec, name: str):
    """The OpenAI-compatible backend of an endpoint subject (errors name its params key)."""
    from medlab.llm.openai_compat import OpenAIBackend

    return OpenAIBackend(spec.base_url, spec.model, spec.api_key_env, spec.max_concurrency, spec.timeout_s,
                         spec.max_retries, revision=spec.revision, seed=spec.seed,
                         max_failed_fraction=spec.max_failed_fraction, params_key=f"evaluate.models.{name}")


def estimated_cost(spec: EndpointSpec, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for the given token counts at the file's prices (0 when no price is given)."""
    return (prompt_tokens * spec.price_prompt_per_m + completion_tokens * spec.price_completion_per_m) / 1e6
