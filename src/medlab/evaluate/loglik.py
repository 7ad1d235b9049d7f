"""Batched log-likelihoods of continuations under a causal LM (the MCQ scorer's engine).

``continuation_logprobs(model, tokenizer, [(context, continuation), ...])`` returns, per
pair, log P(continuation | context) summed over the continuation's tokens, the token
count and whether greedy decoding would have produced it — what lm-evaluation-harness
calls ``loglikelihood`` requests. Three things make it fast without changing a number:

* requests are sorted by length (longest first) and right-padded into batches, so a
  batch wastes little padding, and results are put back in input order;
* pairs that share a context and whose continuations are each a single token (option
  letters "A".."D") are answered from *one* forward pass of the context: the next-token
  distribution at its last position holds every letter's log-probability;
* the tokenisation splits ``context + continuation`` at the context's token boundary
  (encoding the two apart would change the tokens a BPE merges across the seam).

Padding is on the right with an attention mask; a position's logits never see later
positions, so padding cannot change them: scores do not depend on the batch size
(tests/test_evaluate.py checks both against a direct forward pass).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Scored:
    logprob: float  # sum of log-probabilities of the continuation's tokens (nats)
    n_tokens: int
    greedy: bool  # every continuation token is the argmax at its position


def split_tokens(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation, cut where the context's tokens end."""
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    head = tokenizer(context, add_special_tokens=False)["input_ids"]
    if whole[:len(head)] == head and len(whole) > len(head):
        return head, whole[len(head):]
    # a merge crosses the seam: keep the context's own tokens, encode the rest alone
    tail = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if not tail:
        raise ValueError(f"continuation {continuation!r} has no tokens")
    return head, tail


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _forward_logprobs(model, rows: list[list[int]], pad_id: int) -> torch.Tensor:
    """log-softmax over the vocabulary at every position of right-padded ``rows``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    device = _device(model)
    with torch.inference_mode():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        return torch.log_softmax(logits.float(), dim=-1).cpu()


def _batches(order: list[int], batch_size: int):
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


def continuation_logprobs(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 16,
                          max_length: int | None = None, progress: Callable[[int, int], None] | None = None
                          ) -> list[Scored]:
    """Score every (context, continuation) pair; see the module docstring."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    limit = max_length or getattr(model.config, "max_position_embeddings", None)
    split = [split_tokens(tokenizer, c, x) for c, x in pairs]
    results: list[Scored | None] = [None] * len(pairs)

    # 1. single-token continuations of a shared context: one forward pass per context
    groups: dict[tuple[int, ...], list[int]] = {}
    rest: list[int] = []
    for i, (head, tail) in enumerate(split):
        if len(tail) == 1 and head:
            groups.setdefault(tuple(head), []).append(i)
        else:
            rest.append(i)
    contexts = sorted(groups, key=len, reverse=True)
    done = 0
    for chunk in _batches(list(range(len(contexts))), batch_size):
        rows = [_clip(list(contexts[j]), limit) for j in chunk]
        logp = _forward_logprobs(model, rows, pad)
        for b, j in enumerate(chunk):
            last = logp[b, len(rows[b]) - 1]
            best = int(last.argmax())
            for i in groups[contexts[j]]:
                token = split[i][1][0]
                results[i] = Scored(float(last[token]), 1, best == token)
        done += sum(len(groups[contexts[j]]) for j in chunk)
        if progress:
            progress(done, len(pairs))

    # 2. everything else: context + continuation in one row, read the continuation's span
    rest.sort(key=lambda i: len(split[i][0]) + len(split[i][1]), reverse=True)
    for chunk in _batches(rest, batch_size):
        rows, spans = [], []
        for i in chunk:
            head, tail = split[i]
            row = _clip(head + tail, limit, keep_tail=len(tail))
            rows.append(row)
            spans.append((len(row) - len(tail), len(tail)))
        logp = _forward_logprobs(model, rows, pad)
        for b, i in enumerate(chunk):
            start, n = spans[b]
            if start == 0:
                raise ValueError(f"request {i}: an empty context cannot be scored (no position predicts token 0)")
            target = torch.tensor(rows[b][start:start + n])
            at = logp[b, start - 1:start - 1 + n]  # position t predicts token t + 1
            picked = at.gather(1, target[:, None])[:, 0]
            results[i] = Scored(float(picked.sum()), n, bool((at.argmax(-1) == target).all()))
        done += len(chunk)
        if progress:
            progress(done, len(pairs))
    return results  # type: ignore[return-value]


def _clip(row: list[int], limit: int | None, keep_tail: int = 1) -> list[int]:
    """Keep the last ``limit`` tokens (the context's start goes first, as lm-eval does)."""
    if limit is None or len(row) <= limit:
        return row
    if keep_tail >= limit:
        raise ValueError(f"a continuation of {keep_tail} tokens does not fit the model's {limit} positions")
    return row[-limit:]
