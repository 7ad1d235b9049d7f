"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, SGLang, ...) via the official client.

* base URL and model name come from params; the API key only from the environment
  variable params name (never from params, logs or outputs);
* ``model`` (what provenance records) is the model name + declared revision + seed, and
  the cache key adds the base URL (``medlab.llm.base.cache_identity``): the same name on
  another server, or a new revision, is never served from the cache;
* one bounded pool: at most ``max_concurrency`` requests in flight, a new one sent the
  moment one finishes (no batch waits for its slowest call);
* retries: the ``openai`` client retries 408/409/429/5xx and connection errors with
  exponential backoff and jitter (0.5 s doubling to 8 s, times 0.75-1.0), honouring
  ``Retry-After``; ``max_retries`` bounds the attempts;
* ``seed`` is sent when params give one (OpenAI and vLLM accept it);
* token usage and ``finish_reason`` are read from each response;
* a request the server refuses (400, 413, 422, ...) is returned as a failed completion
  with the server's message: the stage goes on, and the cache loop counts it;
* failures of the endpoint itself (bad key, unknown model, unreachable after the
  retries) raise ``LLMError`` with one line naming the params key; completed calls stay cached;
* ``stream_prompt_logprobs``: the log-probability of every token of a prompt given as token
  ids, from the completions endpoint with ``echo`` (what vLLM and SGLang serve, and what
  lm-evaluation-harness's ``local-completions`` reads): one token is generated (some servers
  refuse ``max_tokens: 0``) and dropped; ``logprobs: 1`` adds each position's top token, so
  greediness can be read too. Hosted chat APIs (OpenAI's) return no prompt log-probabilities.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from medlab.llm.base import ChatRequest, Completion, LLMError


@dataclass
class PromptLogprobs:
    """The server's log-probabilities of a prompt's tokens (position 0 has none: nothing
    predicts it), whether each token was the top one at its position, or why none came."""

    logprobs: list[float | None]
    greedy: list[bool]
    failed: str | None = None


class OpenAIBackend:
    name = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str, max_concurrency: int = 8,
                 timeout_s: float = 60.0, max_retries: int = 5, revision: str = "", seed: int | None = None,
                 max_failed_fraction: float = 0.0, params_key: str = "generate.teacher.openai"):
        import openai

        self.params_key = params_key
        key = os.environ.get(api_key_env)
        if not key:
            raise LLMError(f"environment variable {api_key_env} is not set: it must hold the API key "
                           f"for {base_url} ({params_key}.api_key_env names it)")
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        # what identifies the answers (provenance; the cache key adds base_url)
        self.model = model + (f"#{revision}" if revision else "") + (f"~seed{seed}" if seed is not None else "")
        self.seed = seed
        self.max_failed_fraction = max_failed_fraction
        self.batch_size = max_concurrency * 4  # used only by callers that batch themselves
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout_s,
                                    max_retries=max_retries)
        self._errors = openai

    def _guarded(self, send, what: str):
        """``send()``, with the endpoint's failures turned into one-line LLMErrors; a request
        the server refuses (400, 413, 422, ...) returns ``("failed", message)``."""
        where = f"{self.base_url} ({self.params_key})"
        try:
            return send()
        except self._errors.AuthenticationError as exc:
            raise LLMError(f"{where} rejected the API key (HTTP 401): check the key in the "
                           f"environment variable named by {self.params_key}.api_key_env") from exc
        except self._errors.PermissionDeniedError as exc:
            raise LLMError(f"{where} refused access to model {self.model_name!r} (HTTP 403)") from exc
        except self._errors.NotFoundError as exc:
            raise LLMError(f"{where}: model {self.model_name!r} or the {what} endpoint was not found "
                           f"(HTTP 404): check {self.params_key}.model and .base_url") from exc
        except (self._errors.APIConnectionError, self._errors.APITimeoutError) as exc:
            raise LLMError(f"cannot reach {where} after {self.max_retries + 1} attempts "
                           f"({type(exc).__name__})") from exc
        except self._errors.APIStatusError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:  # outlasted the retries
                raise LLMError(f"{where} kept answering HTTP {exc.status_code} after "
                               f"{self.max_retries + 1} attempts") from exc
            # 400/413/422...: this request is refused (too long, bad content); the rest go on
            message = " ".join(str(getattr(exc, "message", exc)).split())[:200]
            return "failed", f"http {exc.status_code}: {message}"

    def _call(self, request: ChatRequest) -> Completion:
        d = request.decoding
        extra = {"seed": self.seed} if self.seed is not None else {}
        response = self._guarded(lambda: self.client.chat.completions.create(
            model=self.model_name, messages=list(request.messages), temperature=d.temperature,
            top_p=d.top_p, max_tokens=d.max_new_tokens, **extra), "chat")
        if isinstance(response, tuple):
            return Completion(text="", failed=response[1])
        choice = response.choices[0]
        usage = response.usage
        return Completion(text=choice.message.content or "",
                          prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                          completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                          finish_reason=choice.finish_reason)

    def _prompt_logprobs(self, token_ids: list[int]) -> PromptLogprobs:
        response = self._guarded(lambda: self.client.completions.create(
            model=self.model_name, prompt=list(token_ids), max_tokens=1, temperature=0.0, echo=True,
            logprobs=1), "completions")
        if isinstance(response, tuple):
            return PromptLogprobs([], [], failed=response[1])
        lp = response.choices[0].logprobs
        n = len(token_ids)  # the echoed prompt; what follows is the generated token
        if lp is None or lp.token_logprobs is None or len(lp.token_logprobs) < n:
            return PromptLogprobs([], [], failed=f"no prompt log-probabilities for {n} tokens in the answer: "
                                                 "the server must support echo with logprobs (vLLM, SGLang)")
        tops = lp.top_logprobs or [None] * n
        greedy = [top is None or not top or max(top, key=top.get) == token
                  for token, top in zip(lp.tokens[:n], tops[:n], strict=True)]
        return PromptLogprobs(list(lp.token_logprobs[:n]), greedy)

    def _pool(self, items: list, call):
        """Yield (index, call(item)) as calls finish: ``max_concurrency`` in flight, the next
        sent as soon as one returns (submitted lazily, not all at once)."""
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="openai")
        queue = iter(enumerate(items))
        pending: dict = {}

        def top_up() -> None:
            while len(pending) < self.max_concurrency:
                nxt = next(queue, None)
                if nxt is None:
                    return
                pending[pool.submit(call, nxt[1])] = nxt[0]

        try:
            top_up()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                # hand over every success before raising a failure, so it gets cached
                for future in sorted(done, key=lambda f: f.exception() is not None):
                    index = pending.pop(future)
                    if future.exception() is not None:
                        raise future.exception()
                    yield index, future.result()
                top_up()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def stream(self, requests: list[ChatRequest]) -> Iterator[tuple[int, Completion]]:
        """Yield (index, completion) as chat calls finish (the bounded pool above)."""
        yield from self._pool(requests, self._call)

    def stream_prompt_logprobs(self, prompts: list[list[int]]) -> Iterator[tuple[int, PromptLogprobs]]:
        """Yield (index, log-probabilities of that prompt's tokens) as calls finish."""
        yield from self._pool(prompts, self._prompt_logprobs)

    def generate(self, requests: list[ChatRequest]) -> list[Completion]:
        out: dict[int, Completion] = dict(self.stream(requests))
        return [out[i] for i in range(len(requests))]
