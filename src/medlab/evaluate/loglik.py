"""Batched log-likelihoods of continuations under a causal LM (the MCQ scorer's engine).

``continuation_logprobs(model, tokenizer, [(context, continuation), ...])`` returns, per
pair, log P(continuation | context) summed over the continuation's tokens, the token
count and whether greedy decoding would have produced it — what lm-evaluation-harness
calls ``loglikelihood`` requests. Three things make it fast without changing a number:

* requests are sorted by length (longest first) and right-padded into batches, so a
  batch wastes little padding, and results are put back in input order;
* pairs that share a context and whose continuations are each a single token (option
  letters "A".."D") are answered from *one* forward pass of the context: the next-token
  distribution at its last position holds every letter's log-probability; when the same
  context also has longer continuations (letter and option-text scoring of one prompt,
  asked together through ``mcq.PairScores``), the letters are read from that context's
  shared row below and the context is run once, not twice;
* longer continuations of a shared context (option texts in cloze scoring) share the
  context in one row: ``context | option 1 | option 2 | ...`` with a 4-D attention mask
  in which every option's tokens see the context and their own earlier tokens only, and
  position ids that restart after the context for each option. Arithmetic for a 70-token
  prompt and four 6-token options: 4 rows x 76 = 304 token positions become one row of
  70 + 24 = 94 (3.2x fewer). Used where the model takes a custom 4-D mask (transformers'
  ``eager`` and ``sdpa`` attention); others get one row per pair;
* the tokenisation splits ``context + continuation`` where the context's characters
  end (encoding the two apart would change the tokens a BPE merges across the seam, and
  give a SentencePiece continuation a ``▁`` it never has in context); the BOS a
  tokenizer adds to plain text starts every context, as in the model's training;
* only the positions read go through the output layer (``TokenReader``): at Qwen's 151,936
  tokens the full logits of one batch are a gigabyte, the read ones a few megabytes.

Padding is on the right with an attention mask; a position's logits never see later
positions, so padding cannot change them: scores do not depend on the batch size or on
whether the context is shared (tests/test_evaluate.py checks all three against a direct
forward pass).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Scored:
    logprob: float  # sum of log-probabilities of the continuation's tokens (nats)
    n_tokens: int
    greedy: bool  # every continuation token is the argmax at its position


def leading_bos(tokenizer) -> int | None:
    """The BOS id this tokenizer puts before plain text (Llama, Mistral, Gemma: yes; Qwen,
    GPT-2-style: none). A base model was trained on text that starts with it, so it is
    scored that way too; a chat template that writes the BOS itself is not given a second."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    added = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return bos if added[:1] == [bos] and plain[:1] != [bos] else None


def split_tokens(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation, as ``context + continuation`` tokenises."""
    return split_all(tokenizer, [(context, continuation)])[0]


def split_all(tokenizer, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """``split_tokens`` of many pairs, in one batched tokenizer call.

    The seam: ``context + continuation`` is tokenised whole (with character offsets) and
    cut before the first token that reaches past the context's last character. So the
    continuation is scored in the tokens the model would read it in: a byte-level merge
    or a SentencePiece ``▁`` word that spans the boundary (context ``"答案： "`` +
    ``"A"`` -> the one token ``▁A``) belongs to the continuation, and a letter after
    ``"答案："`` is ``A``, not the ``▁A`` that encoding it alone would give. The BOS the
    tokenizer adds to plain text starts every context (``leading_bos``), never twice."""
    bos = leading_bos(tokenizer)
    texts = [c + x for c, x in pairs]
    try:
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # a slow tokenizer has no offsets
        return [_with_bos(bos, *pair) for pair in _split_without_offsets(tokenizer, pairs)]
    out = []
    for (context, continuation), ids, offsets in zip(pairs, enc["input_ids"], enc["offset_mapping"], strict=True):
        cut = next((k for k, (_, end) in enumerate(offsets) if end > len(context)), len(ids))
        if cut == len(ids):
            raise ValueError(f"continuation {continuation!r} has no tokens after context {context[-30:]!r}")
        out.append(_with_bos(bos, list(ids[:cut]), list(ids[cut:])))
    return out


def _with_bos(bos: int | None, head: list[int], tail: list[int]) -> tuple[list[int], list[int]]:
    if bos is not None and head[:1] != [bos]:
        head = [bos, *head]
    return head, tail


def _split_without_offsets(tokenizer, pairs):
    contexts = list(dict.fromkeys(c for c, _ in pairs))
    heads = dict(zip(contexts, tokenizer(contexts, add_special_tokens=False)["input_ids"], strict=True))
    wholes = tokenizer([c + x for c, x in pairs], add_special_tokens=False)["input_ids"]
    out = []
    for (context, continuation), whole in zip(pairs, wholes, strict=True):
        head = heads[context]
        if whole[:len(head)] != head or len(whole) <= len(head):
            raise ValueError(f"{type(tokenizer).__name__} has no offsets and merges tokens across the seam of "
                             f"{context[-20:]!r} + {continuation!r}; use a fast tokenizer")
        out.append((list(head), list(whole[len(head):])))
    return out


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log-softmax at the targets (logit - logsumexp, float32) and whether each is the argmax;
    the (N, vocab) log-softmax itself is never written out."""
    logits = logits.float()
    picked = logits.gather(1, targets[:, None])[:, 0] - torch.logsumexp(logits, -1)
    return picked, logits.argmax(-1) == targets


def chunk_logits(device: torch.device) -> int:
    """How many fp32 logits one output-layer chunk may hold. On a CPU the head's output is
    written and read back by the log-softmax: 2**22 of them (16 MiB, 27 positions at
    151,936 tokens) stay in a 32 MiB L3 cache, and cloze scoring on the Qwen-vocabulary
    fixture runs ~1.7x faster than with 64 MiB chunks (benchmarks/scoring_memory.py).
    A GPU keeps 2**24 (64 MiB): fewer, larger kernels."""
    return 2 ** 24 if device.type == "cuda" else 2 ** 22


# model -> whether its head is a plain layer over the decoder's output, as TokenReader's
# first call found (the check is a full-vocabulary forward pass: 0.15 s a call, and the
# probe makes a dozen calls per model)
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class TokenReader:
    """Log-probabilities of given tokens at given positions, without the full logits.

    The vocabulary is the widest axis: a batch of 16 rows x 100 positions x 151,936 Qwen
    tokens is 0.97 GB of fp32 logits, of which an MCQ reads ~4 positions per row. So the
    decoder runs alone (hidden states, 16 x 100 x hidden), the rows' read positions are
    gathered, and only they go through the output layer -- each distinct position once,
    in chunks of ``chunk_logits(device) / vocab`` positions, on the model's device, in
    float32 for the log-softmax. The first call checks this against the model's own forward pass (a model
    with logit soft-capping or scaling in its head) and falls back to it if they differ."""

    def __init__(self, model):
        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
        decoder = getattr(base, "get_decoder", lambda: None)()
        head = getattr(base, "get_output_embeddings", lambda: None)()
        self.split = decoder is not None and head is not None and decoder is not base
        self.decoder, self.head, self.checked = decoder, head, False
        if model in _CHECKED:  # an earlier reader of this very model checked it
            self.split, self.checked = _CHECKED[model], True

    def __call__(self, kwargs: dict, reads: list[tuple[int, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """reads: (row, position, target token); returns (log-prob, is-argmax) per read, on the CPU."""
        rows, cols, targets = torch.tensor(reads, dtype=torch.long).reshape(-1, 3).unbind(1)
        return self.at(kwargs, rows, cols, targets)

    def at(self, kwargs: dict, rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same with the reads as three index tensors (no Python tuple per token)."""
        device = _device(self.model)
        kwargs = {k: v.to(device) for k, v in kwargs.items() if v is not None}
        rows, cols, targets = rows.to(device), cols.to(device), targets.to(device)
        with torch.inference_mode():
            if self.split and not self.checked:
                self._check(kwargs, rows[:8], cols[:8])
            if self.split:
                return self._read_split(kwargs, rows, cols, targets)
            lp, top = _target_logprobs(self.model(**kwargs).logits[rows, cols], targets)
            return lp.cpu(), top.cpu()

    def _read_split(self, kwargs: dict, rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor):
        """Decoder once; the head once per distinct read position (the four options of a
        cloze item are all read first at the context's last position), in chunks."""
        hidden = self.decoder(**kwargs).last_hidden_state
        width = hidden.shape[1]
        positions, which = torch.unique(rows * width + cols, return_inverse=True)
        hidden = hidden.reshape(-1, hidden.shape[-1])[positions]
        picked = torch.empty(len(targets), dtype=torch.float32, device=targets.device)
        best = torch.empty(len(targets), dtype=torch.bool, device=targets.device)
        step = max(1, chunk_logits(hidden.device) // self.head.weight.shape[0])
        for start in range(0, len(positions), step):
            logp = torch.log_softmax(self.head(hidden[start:start + step]).float(), -1)
            here = (which >= start) & (which < start + step)
            at, want = which[here] - start, targets[here]
            picked[here] = logp[at, want]
            best[here] = logp.argmax(-1)[at] == want
        return picked.cpu(), best.cpu()

    def _check(self, kwargs: dict, rows: torch.Tensor, cols: torch.Tensor) -> None:
        one = {k: v[:1] for k, v in kwargs.items()}
        keep = rows == 0
        full = self.model(**one).logits[0, cols[keep]].float()
        mine = self.head(self.decoder(**one).last_hidden_state[0, cols[keep]]).float()
        self.split = bool(torch.allclose(full, mine, rtol=1e-3, atol=1e-3))
        self.checked = True
        _CHECKED[self.model] = self.split


def _padded(rows: list[list[int]], pad_id: int) -> dict:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


@dataclass(frozen=True)
class _Tree:
    """One row holding a context and several continuations of it, side by side."""

    context: list[int]
    tails: list[list[int]]

    def ids(self) -> list[int]:
        return self.context + [t for tail in self.tails for t in tail]

    def branches(self) -> list[tuple[int, list[int]]]:
        """(first row index, tokens) of each continuation."""
        out, start = [], len(self.context)
        for tail in self.tails:
            out.append((start, tail))
            start += len(tail)
        return out

    def positions(self) -> list[int]:
        """Position ids: the context counts 0..L-1; each continuation counts on from L."""
        n = len(self.context)
        return list(range(n)) + [n + k for tail in self.tails for k in range(len(tail))]

    def allowed(self) -> torch.Tensor:
        """(len, len) boolean: may query row q attend to key column k?"""
        size, n = len(self.ids()), len(self.context)
        allow = torch.zeros((size, size), dtype=torch.bool)
        allow[:n, :n] = torch.ones((n, n), dtype=torch.bool).tril()
        for start, tail in self.branches():
            end = start + len(tail)
            allow[start:end, :n] = True  # every continuation token sees the whole context
            allow[start:end, start:end] = torch.ones((len(tail), len(tail)), dtype=torch.bool).tril()
        return allow


def _takes_4d_mask(model) -> bool:
    """transformers passes a ready 4-D mask through to eager and sdpa attention unchanged."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) in ("eager", "sdpa")


def _tree_inputs(model, rows: list[_Tree], pad_id: int) -> dict:
    """Right-padded context-sharing rows with their 4-D additive mask and position ids."""
    width = max(len(r.ids()) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    allow = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1)  # padding attends to itself: no NaN
    for b, row in enumerate(rows):
        n = len(row.ids())
        ids[b, :n] = torch.tensor(row.ids())
        positions[b, :n] = torch.tensor(row.positions())
        allow[b, :n, :n] = row.allowed()
    dtype = next(model.parameters()).dtype
    # additive mask, as eager attention adds it to the scores: 0 = attend, dtype's min = not
    mask = torch.zeros(allow.shape, dtype=dtype).masked_fill(~allow, torch.finfo(dtype).min)[:, None]
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


def _batches(order: list[int], batch_size: int):
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


def continuation_logprobs(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 16,
                          max_length: int | None = None, progress: Callable[[int, int], None] | None = None,
                          share_context: bool = True) -> list[Scored]:
    """Score every (context, continuation) pair; see the module docstring. ``batch_size``
    counts rows; ``share_context=False`` gives every multi-token continuation its own row.
    Contexts longer than the model's positions lose their start (the BOS is kept)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    limit = max_length or getattr(model.config, "max_position_embeddings", None)
    bos = leading_bos(tokenizer)
    split = split_all(tokenizer, pairs) if pairs else []
    results: list[Scored | None] = [None] * len(pairs)
    read = TokenReader(model)

    def store(indices: list[int], reads: list[tuple[int, int, int]], counts: list[int], lp, best) -> None:
        at = 0
        for i, n in zip(indices, counts, strict=True):
            results[i] = Scored(float(lp[at:at + n].sum()), n, bool(best[at:at + n].all()))
            at += n

    # which pairs go where: single-token continuations of a context (option letters) are read
    # from one forward pass of it (1.); longer ones (option texts) share it in one row (2.); a
    # context with both (letter and option-text scoring of the same prompt, asked together)
    # goes once, as a 2.-row whose letters are read at the context's last position
    singles: dict[tuple[int, ...], list[int]] = {}
    rest: list[int] = []
    for i, (head, tail) in enumerate(split):
        if len(tail) == 1 and head:
            singles.setdefault(tuple(head), []).append(i)
        else:
            rest.append(i)
    shared: dict[tuple[int, ...], list[int]] = {}
    fits: list[tuple[int, ...]] = []
    riders: dict[tuple[int, ...], list[int]] = {}
    if share_context and _takes_4d_mask(model):
        for i in rest:
            shared.setdefault(tuple(split[i][0]), []).append(i)
        fits = [c for c in shared if c and (limit is None or len(c) + max(len(split[i][1]) for i in shared[c])
                                            <= limit)]
        fitting = set(fits)
        rest = [i for c in shared if c not in fitting for i in shared[c]]  # too long or empty: rows below
        riders = {c: singles.pop(c) for c in fits if c in singles}
        fits.sort(key=lambda c: len(c) + sum(len(split[i][1]) for i in shared[c]), reverse=True)

    # 1. single-token continuations of a shared context: one forward pass per context
    contexts = sorted(singles, key=len, reverse=True)
    done = 0
    for chunk in _batches(list(range(len(contexts))), batch_size):
        rows = [_clip(list(contexts[j]), limit, bos=bos) for j in chunk]
        indices, reads = [], []
        for b, j in enumerate(chunk):
            for i in singles[contexts[j]]:  # the next-token distribution after the context
                indices.append(i)
                reads.append((b, len(rows[b]) - 1, split[i][1][0]))
        lp, best = read(_padded(rows, pad), reads)
        store(indices, reads, [1] * len(indices), lp, best)
        done += len(indices)
        if progress:
            progress(done, len(pairs))

    # 2. longer continuations of a shared context: one row per context, options side by side
    for chunk in _batches(fits, batch_size):
        rows = [_Tree(list(c), [split[i][1] for i in shared[c]]) for c in chunk]
        indices, reads, counts = [], [], []
        for b, context in enumerate(chunk):
            for i, (start, tail) in zip(shared[context], rows[b].branches(), strict=True):
                # the branch's first token is predicted by the context's last position
                before = [len(context) - 1] + list(range(start, start + len(tail) - 1))
                reads += [(b, pos, tok) for pos, tok in zip(before, tail, strict=True)]
                indices.append(i)
                counts.append(len(tail))
            for i in riders.get(context, ()):  # a letter: the context's next-token distribution
                reads.append((b, len(context) - 1, split[i][1][0]))
                indices.append(i)
                counts.append(1)
        lp, best = read(_tree_inputs(model, rows, pad), reads)
        store(indices, reads, counts, lp, best)
        done += len(indices)
        if progress:
            progress(done, len(pairs))

    # 3. everything else: context + continuation in one row, read the continuation's span
    rest.sort(key=lambda i: len(split[i][0]) + len(split[i][1]), reverse=True)
    for chunk in _batches(rest, batch_size):
        rows, reads, counts = [], [], []
        for b, i in enumerate(chunk):
            head, tail = split[i]
            row = _clip(head + tail, limit, keep_tail=len(tail), bos=bos)
            start = len(row) - len(tail)
            if start == 0:
                raise ValueError(f"request {i}: an empty context cannot be scored (no position predicts token 0)")
            rows.append(row)
            reads += [(b, start - 1 + k, tok) for k, tok in enumerate(tail)]  # position t predicts token t + 1
            counts.append(len(tail))
        lp, best = read(_padded(rows, pad), reads)
        store(chunk, reads, counts, lp, best)
        done += len(chunk)
        if progress:
            progress(done, len(pairs))
    return results  # type: ignore[return-value]


def _clip(row: list[int], limit: int | None, keep_tail: int = 1, bos: int | None = None) -> list[int]:
    """Keep the last ``limit`` tokens (the context's start goes first, as lm-eval does),
    and the BOS in front of them when the row started with one."""
    if limit is None or len(row) <= limit:
        return row
    keep_bos = bos is not None and row[:1] == [bos]
    room = limit - keep_bos
    if keep_tail >= room:
        raise ValueError(f"a continuation of {keep_tail} tokens does not fit the model's {limit} positions")
    return ([bos] if keep_bos else []) + row[-room:]
