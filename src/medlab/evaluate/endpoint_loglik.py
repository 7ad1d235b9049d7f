"""Log-likelihoods from an endpoint that returns prompt log-probabilities (vLLM, SGLang).

The local scorer (``medlab.evaluate.loglik``) needs the weights; a model served by vLLM
does not give them, but its completions endpoint echoes the log-probability of every
prompt token. ``endpoint_logprobs`` answers the same ``(context, continuation)`` requests
from it, so log-likelihood MCQ scorings (cloze, option_text, letter) run on a served model:

* each pair is tokenised with the served model's tokenizer exactly as the local scorer
  does it (``loglik.split_all``: the seam where the context's characters end, the BOS a
  plain text starts with) and sent as token *ids*, so the server scores the very tokens a
  local run scores -- no re-tokenisation on the server, no character offsets to align;
* log P(continuation | context) = the sum of the returned log-probabilities at the
  continuation's positions; *greedy* = each of them was the top token at its position;
* one request per pair (lm-evaluation-harness's ``local-completions`` does the same): a
  4-option item under 4 rotations is 16 requests for the letter scoring, each of them
  through the SQLite call cache (a rerun makes no request);
* a request the server refuses (a prompt over its context length) scores -inf for that
  option and is counted; more than the endpoint's ``max_failed_fraction`` stops the task.

Parity with the local scorer on the same weights is tested (tests/test_hosted.py: a fake
server that serves a local model's log-probabilities; toy model and a real family).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence

from medlab.evaluate.loglik import Scored, split_all
from medlab.llm.base import LLMError, cache_identity
from medlab.llm.cache import CallCache, CallStats, Progress


def prompt_key(backend, token_ids: Sequence[int]) -> str:
    """Cache key of one prompt-log-prob call: backend, model (with base URL) and the ids."""
    blob = json.dumps({"backend": backend.name, "model": cache_identity(backend), "kind": "prompt_logprobs",
                       "prompt_token_ids": list(token_ids)}, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def endpoint_logprobs(backend, tokenizer, pairs: Sequence[tuple[str, str]], cache: CallCache,
                      label: str = "loglik", stats: CallStats | None = None) -> list[Scored]:
    """``loglik.continuation_logprobs`` of every pair, read from ``backend`` (an
    ``OpenAIBackend`` of a server that echoes prompt log-probs); see the module docstring."""
    split = split_all(tokenizer, pairs) if pairs else []
    prompts = [head + tail for head, tail in split]
    keys = [prompt_key(backend, ids) for ids in prompts]
    found: dict[str, dict] = {}
    for key in dict.fromkeys(keys):
        hit = cache.get_result(key)
        if hit is not None:
            found[key] = hit
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    todo = [key for key in first if key not in found]
    progress = Progress(len(first), label)
    if found:
        progress.update(len(found), note=f"{len(found):,} from the cache")
    written = 0
    try:
        for index, answer in backend.stream_prompt_logprobs([prompts[first[k]] for k in todo]):
            key = todo[index]
            result = {"logprobs": answer.logprobs, "greedy": answer.greedy, "failed": answer.failed}
            cache.put_result(key, backend, {"prompt_token_ids": prompts[first[key]]}, result, answer.failed)
            found[key] = result
            written += 1
            progress.update()
    except LLMError as exc:
        raise LLMError(f"{exc} — {written:,} prompts scored in this run and {len(found) - written:,} earlier "
                       f"ones are cached; rerun to resume") from exc
    out, failed = [], []
    for (head, tail), key in zip(split, keys, strict=True):
        result = found[key]
        if result["failed"]:
            failed.append(result["failed"])
            out.append(Scored(-math.inf, len(tail), False))
            continue
        span = slice(len(head), len(head) + len(tail))
        out.append(Scored(float(sum(result["logprobs"][span])), len(tail), all(result["greedy"][span])))
    if stats is not None:
        stats.calls += len(keys)
        stats.prompt_tokens += sum(map(len, prompts))
        stats.failed_http += len(failed)
    limit = getattr(backend, "max_failed_fraction", 0.0)
    if failed and len(failed) > limit * len(keys):
        where = getattr(backend, "params_key", backend.name)
        raise LLMError(f"{label}: the server scored no log-probabilities for {len(failed):,} of {len(keys):,} "
                       f"prompts, more than {where}.max_failed_fraction = {limit:g}; it said: "
                       f"{'; '.join(dict.fromkeys(failed))[:300]} -- every scored prompt is cached")
    return out
