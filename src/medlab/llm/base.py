"""One interface for every LLM backend: chat messages + decoding parameters -> text, batched.

A ``ChatRequest`` is what is sent (messages, decoding) plus ``meta``: what the request
is about (task, source ids, facts). Real backends ignore ``meta``; the simulated
teacher answers from it. A ``Completion`` is the text plus token usage and, for the
simulator only, the ground truth of what it did (``truth``: fault injected or none).

Backends implement ``generate(requests) -> completions`` for a batch; caching,
concurrency and progress live outside them (``medlab.llm.cache``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Decoding:
    """Decoding parameters, recorded with every call (and part of its cache key)."""

    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 512

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens}


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[dict[str, str], ...]  # [{"role": "system"|"user"|"assistant", "content": ...}]
    decoding: Decoding = Decoding()
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @staticmethod
    def of(messages: list[dict[str, str]], decoding: Decoding | None = None,
           meta: dict[str, Any] | None = None) -> ChatRequest:
        return ChatRequest(tuple(dict(m) for m in messages), decoding or Decoding(), meta or {})


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    truth: dict[str, Any] | None = None  # simulator only: {"fault": ..., ...}; None = unknown
    cached: bool = False
    # why the call gave no usable answer (None = it did): "length" = cut at max_new_tokens,
    # "http 400: <message>" = the server refused this one request. A failed call's text is
    # never used (callers see ""), never cached as a success, and counted.
    failed: str | None = None
    finish_reason: str | None = None  # "stop" | "length" (hit max_new_tokens) | None (not reported)


# Opening phrases of a refusal (Chinese and English chat models): counted, not parsed.
REFUSAL = re.compile(r"^\W*(抱歉|对不起|很抱歉|非常抱歉|作为一个?(人工智能|AI|语言模型)|我无法|我不能|"
                     r"I'm sorry|I am sorry|I cannot|I can't|As an AI)", re.I)


def is_refusal(text: str) -> bool:
    """Whether an answer opens by declining (抱歉，我无法…; I'm sorry, but…)."""
    return bool(REFUSAL.match(text.strip()))


class Backend(Protocol):
    """What every backend provides."""

    name: str  # "simulated" | "hf" | "openai"
    model: str  # identifies everything that changes outputs (part of the cache key)
    batch_size: int  # requests handed to one generate() call

    def generate(self, requests: list[ChatRequest]) -> list[Completion]: ...


def cache_identity(backend: Backend) -> str:
    """What a cached answer is keyed by besides the request: the backend's ``model`` and,
    for an endpoint, its base URL (the same model name on another server is another model)."""
    url = getattr(backend, "base_url", None)
    return f"{backend.model}@{url}" if url else backend.model


def call_key(backend: str, model: str, request: ChatRequest) -> str:
    """Cache key: SHA-256 of backend, model, messages and decoding (never of ``meta``)."""
    blob = json.dumps({"backend": backend, "model": model, "messages": list(request.messages),
                       "decoding": request.decoding.as_dict()},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class LLMError(RuntimeError):
    """A backend failure the user must act on (bad key, unreachable endpoint, bad model)."""
