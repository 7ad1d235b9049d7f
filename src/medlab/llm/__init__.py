"""The LLM interface (base.py), a crash-proof call cache (cache.py) and the real backends.

    hf             any local transformers causal LM
    openai         any OpenAI-compatible endpoint (OpenAI, vLLM, ...)

The embedded world's simulated teacher (not an LLM) is ``medlab.embedded.teacher``;
``medlab.backends.make_backend`` picks one of the three from a params section.
"""

from __future__ import annotations

from medlab.llm.base import Backend, ChatRequest, Completion, Decoding, LLMError

__all__ = ["Backend", "ChatRequest", "Completion", "Decoding", "LLMError"]
