"""A persistent, crash-proof cache of LLM calls (SQLite), and the loop that uses it.

Every completed call is committed on its own (one row, one transaction, WAL journal),
keyed by backend, model, messages and decoding parameters (``medlab.llm.base.call_key``;
an endpoint's model includes its revision and seed, and its base URL is added). A crash or Ctrl-C loses
at most the calls in flight; a rerun finds every completed one in the cache and makes no
request for it. The database lives in ``.cache/medlab/``, outside DVC's outputs, so
`dvc repro` does not delete it.

A call the server refused (HTTP 400, 413, 422: this request, not the endpoint) is written
with its message as a *failed* row: counted, shown, never read back as an answer, and
tried again on the next run. An answer cut at ``max_new_tokens`` (``finish_reason``
"length") is cached as what it is; ``generate_cached(truncated="reject")`` -- teacher and
judges -- turns it into a failure so it never enters training data, ``"keep"`` --
a model under evaluation -- scores it as given and counts it. The stage stops only when
failures exceed the backend's ``max_failed_fraction``.

Modes (params ``generate.cache``):
  use      read hits, write new calls (default)
  refresh  ignore existing entries, call again and overwrite them
  off      neither read nor write
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from medlab.llm.base import (
    Backend,
    ChatRequest,
    Completion,
    LLMError,
    cache_identity,
    call_key,
    is_refusal,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    truth TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL
)
"""
# columns added after the first release (older cache files get them on open)
ADDED_COLUMNS = {"finish_reason": "TEXT", "failed": "TEXT"}


class CallCache:
    def __init__(self, path: Path | None, mode: str = "use"):
        if mode not in ("use", "refresh", "off"):
            raise ValueError(f"cache mode must be use, refresh or off, not {mode!r}")
        self.mode = mode
        self.hits = self.writes = 0
        self.db = None
        if mode != "off":
            if path is None:
                raise ValueError("a cache path is needed unless mode is 'off'")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), timeout=60)
            self.db.execute("PRAGMA journal_mode=WAL")  # a killed writer never corrupts the file
            self.db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes
            self.db.execute(SCHEMA)
            have = {row[1] for row in self.db.execute("PRAGMA table_info(calls)")}
            for column, kind in ADDED_COLUMNS.items():
                if column not in have:
                    self.db.execute(f"ALTER TABLE calls ADD COLUMN {column} {kind}")
            self.db.commit()

    def get(self, key: str) -> Completion | None:
        if self.mode != "use":
            return None
        row = self.db.execute("SELECT text, truth, prompt_tokens, completion_tokens, finish_reason FROM calls "
                              "WHERE key = ? AND failed IS NULL", (key,)).fetchone()
        if row is None:
            return None
        self.hits += 1
        text, truth, prompt_tokens, completion_tokens, finish_reason = row
        return Completion(text, prompt_tokens, completion_tokens, json.loads(truth) if truth else None,
                          cached=True, finish_reason=finish_reason)

    def put(self, key: str, backend: Backend, request: ChatRequest, completion: Completion) -> None:
        if self.db is None:
            return
        self.db.execute(
            "INSERT OR REPLACE INTO calls (key, backend, model, request, text, truth, prompt_tokens, "
            "completion_tokens, finish_reason, failed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, backend.name, backend.model,
             json.dumps({"messages": list(request.messages), "decoding": request.decoding.as_dict()},
                        ensure_ascii=False),
             completion.text,
             json.dumps(completion.truth, ensure_ascii=False) if completion.truth is not None else None,
             completion.prompt_tokens, completion.completion_tokens, completion.finish_reason, completion.failed))
        self.db.commit()  # one transaction per call: what completed, stays completed
        self.writes += 1

    def get_result(self, key: str) -> dict | None:
        """A stored non-chat result (e.g. a prompt's log-probabilities), or None."""
        if self.mode != "use":
            return None
        row = self.db.execute("SELECT text FROM calls WHERE key = ? AND failed IS NULL", (key,)).fetchone()
        if row is None:
            return None
        self.hits += 1
        return json.loads(row[0])

    def put_result(self, key: str, backend: Backend, request: dict, result: dict, failed: str | None = None) -> None:
        """Store a non-chat call's result as JSON in the same table (``failed``: refused, retried next run)."""
        if self.db is None:
            return
        self.db.execute(
            "INSERT OR REPLACE INTO calls (key, backend, model, request, text, truth, prompt_tokens, "
            "completion_tokens, finish_reason, failed) VALUES (?, ?, ?, ?, ?, NULL, ?, 0, NULL, ?)",
            (key, backend.name, backend.model, json.dumps(request), json.dumps(result),
             len(request.get("prompt_token_ids", ())), failed))
        self.db.commit()
        self.writes += 1

    def __len__(self) -> int:
        """Completed calls held (failed ones not counted)."""
        return 0 if self.db is None else self.db.execute(
            "SELECT COUNT(*) FROM calls WHERE failed IS NULL").fetchone()[0]

    def failures(self) -> list[tuple[str, str]]:
        """(key, message) of the calls recorded as failed."""
        return [] if self.db is None else self.db.execute(
            "SELECT key, failed FROM calls WHERE failed IS NOT NULL ORDER BY key").fetchall()

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


@dataclass
class CallStats:
    """What a run of calls cost and how many gave no usable answer (kept apart from metrics:
    hits differ between runs)."""

    calls: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    failed_http: int = 0  # refused by the server (4xx other than 401/403/404/429)
    truncated: int = 0  # cut at max_new_tokens (rejected or kept, as the caller said)
    empty: int = 0  # an empty answer
    refusals: int = 0  # an answer that declines (抱歉，我无法…)

    FIELDS = ("calls", "cached", "prompt_tokens", "completion_tokens", "seconds", "failed_http",
              "truncated", "empty", "refusals")

    def add(self, other: CallStats) -> None:
        for name in self.FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Progress:
    """One line per ``every`` percent: readable under papermill --log-output and in a terminal."""

    def __init__(self, total: int, label: str, every: int = 10):
        self.total, self.label, self.every = total, label, every
        self.done = 0
        self.next_mark = every
        self.start = time.perf_counter()

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        percent = 100 * self.done / max(self.total, 1)
        if percent + 1e-9 < self.next_mark and self.done != self.total:
            return
        self.next_mark = (int(percent) // self.every + 1) * self.every
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        print(f"[{self.label}] {self.done:,}/{self.total:,} ({percent:.0f}%) · {rate:,.0f}/s"
              + (f" · {note}" if note else ""), flush=True)


def generate_cached(backend: Backend, requests: list[ChatRequest], cache: CallCache,
                    label: str = "llm", stats: CallStats | None = None,
                    truncated: str = "reject") -> list[Completion]:
    """Completions for ``requests`` in order: cached ones read, the rest generated and each
    written to the cache the moment it completes. Identical requests are called once.

    A failed call (``Completion.failed``) comes back with empty text; ``truncated="reject"``
    makes an answer cut at max_new_tokens one too, ``"keep"`` leaves it (and counts it).
    More failures than the backend's ``max_failed_fraction`` of the calls raise LLMError
    naming the params key and the first messages -- after every success is cached.
    On a backend failure the calls that completed are already cached; the LLMError says so.
    """
    if truncated not in ("reject", "keep"):
        raise ValueError(f"truncated must be 'reject' or 'keep', not {truncated!r}")
    start = time.perf_counter()
    stats = stats if stats is not None else CallStats()
    keys = [call_key(backend.name, cache_identity(backend), r) for r in requests]
    results: dict[str, Completion] = {}
    for key in dict.fromkeys(keys):
        hit = cache.get(key)
        if hit is not None:
            results[key] = hit
    first: dict[str, int] = {}  # key -> index of its first request, in request order
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    todo = [(key, requests[first[key]]) for key in first if key not in results]
    progress = Progress(len(first), label)
    if results:
        progress.update(len(results), note=f"{len(results):,} from the cache")
    written = 0
    # A backend that streams keeps its own bounded pool full across the whole list (no
    # batch waits for its slowest call); the others get batch_size requests at a time.
    step = len(todo) if getattr(backend, "stream", None) is not None else max(backend.batch_size, 1)
    try:
        for batch_start in range(0, len(todo), max(step, 1)):
            batch = todo[batch_start:batch_start + step]
            for index, completion in stream(backend, [r for _, r in batch]):
                key, request = batch[index]
                cache.put(key, backend, request, completion)
                results[key] = completion
                written += 1
                progress.update()
    except LLMError as exc:
        raise LLMError(f"{exc} — {written:,} calls completed in this run and "
                       f"{len(results) - written:,} earlier ones are cached; rerun to resume") from exc
    out = [_usable(results[k], truncated) for k in keys]
    stats.calls += len(keys)
    stats.cached += sum(c.cached for c in out)
    stats.prompt_tokens += sum(c.prompt_tokens for c in out)
    stats.completion_tokens += sum(c.completion_tokens for c in out)
    stats.failed_http += sum(1 for c in out if c.failed and c.failed != "length")
    stats.truncated += sum(1 for k in keys if results[k].finish_reason == "length")
    stats.empty += sum(1 for c in out if not c.failed and not c.text.strip())
    stats.refusals += sum(1 for c in out if not c.failed and is_refusal(c.text))
    stats.seconds += time.perf_counter() - start
    _check_failures(backend, out, label)
    return out


def _usable(completion: Completion, truncated: str) -> Completion:
    """The completion as callers see it: a failure has no text; a cut answer is a failure
    when ``truncated`` is "reject"."""
    if completion.failed:
        return replace(completion, text="")
    if truncated == "reject" and completion.finish_reason == "length":
        return replace(completion, text="", failed="length")
    return completion


def _check_failures(backend: Backend, completions: list[Completion], label: str) -> None:
    failed = [c.failed for c in completions if c.failed]
    limit = getattr(backend, "max_failed_fraction", 0.0)
    if failed and len(failed) > limit * len(completions):
        kinds = Counter("cut at max_new_tokens" if f == "length" else f.split(":")[0] for f in failed)
        examples = "; ".join(dict.fromkeys(f for f in failed if f != "length"))[:300]
        where = getattr(backend, "params_key", backend.name)
        raise LLMError(f"{label}: {len(failed):,} of {len(completions):,} calls gave no usable answer "
                       f"({', '.join(f'{n} {k}' for k, n in kinds.items())}), more than "
                       f"{where}.max_failed_fraction = {limit:g}"
                       + (f"; server said: {examples}" if examples else "")
                       + ("; raise max_new_tokens if answers are cut" if kinds.get("cut at max_new_tokens") else "")
                       + " -- every successful call is cached")


def stream(backend: Backend, requests: list[ChatRequest]) -> Iterator[tuple[int, Completion]]:
    """(index, completion) as each completes: the backend's own stream if it has one."""
    own = getattr(backend, "stream", None)
    if own is not None:
        yield from own(requests)
        return
    yield from enumerate(backend.generate(requests))
