"""Exact and near-duplicate removal by character n-gram MinHash LSH (datasketch).

Whitespace n-grams (what most dedup tools use) see unsegmented Chinese as one token per
sentence; here a text's shingles are its character n-grams (3 by default: one changed
character in a 50-character text keeps Jaccard ~0.86, two ~0.76, while distinct
benchmark-style questions stay below 0.5). Exact duplicates (same normalised text) go
first, by hash; near-duplicates are found with MinHash LSH (candidates) and confirmed with
the exact Jaccard. Of each group the first sample (in input order) is kept, so the result
does not depend on anything but the order of the input.

Memory is what limits a million records, so nothing per record is kept but its band keys:
MinHash signatures are computed ``chunk`` records at a time (datasketch's bulk hashing) and
folded into one 64-bit key per LSH band (25 bands x 8 bytes = 200 bytes a record, 200 MB at
1M); shingle sets are recomputed for candidate pairs only (keeping every survivor's set
would take ~9 KB a record, ~9 GB at 1M), and the bands are grouped by sorting (numpy), not
in per-band dicts of sets (datasketch's in-memory ``MinHashLSH`` index: a few KB a record).
Which records are candidates is exactly what ``MinHashLSH`` would return -- records whose
signature agrees on every row of some band; a 64-bit fold collision can only add a
candidate, which the exact check then rejects -- and the band layout is the one
``MinHashLSH`` chooses for the threshold (``benchmarks/dedup_scaling.py`` measures time and
peak memory up to 1M records).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from datasketch import MinHash, MinHashLSH

PUNCT = re.compile(r"[\s，。！？；：、“”‘’（）《》,.!?;:'\"()\[\]<>-]+")
FOLD = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: mixes a band's rows into one key


def normalize(text: str) -> str:
    return PUNCT.sub("", text).lower()


def shingles(text: str, n: int) -> set[bytes]:
    text = normalize(text)
    if len(text) <= n:
        return {text.encode()}
    return {text[i:i + n].encode() for i in range(len(text) - n + 1)}


def band_keys(sets: Sequence[set[bytes]], ranges: Sequence[tuple[int, int]], num_perm: int) -> np.ndarray:
    """(len(sets), bands) uint64: each band's MinHash rows folded into one key."""
    values = np.stack([m.hashvalues for m in MinHash.bulk(sets, num_perm=num_perm, seed=1)]).astype(np.uint64)
    keys = np.empty((len(sets), len(ranges)), dtype=np.uint64)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as a hash should
        for b, (lo, hi) in enumerate(ranges):
            acc = np.zeros(len(sets), dtype=np.uint64)
            for k in range(lo, hi):
                acc = (acc ^ values[:, k]) * FOLD
            keys[:, b] = acc
    return keys


def duplicates(texts: Sequence[str], n: int = 3, num_perm: int = 128, threshold: float = 0.7,
               chunk: int = 20_000) -> dict[int, tuple[int, str]]:
    """index -> (index of the sample it duplicates, "exact" | "near") for every dropped text.

    LSH is probabilistic near its threshold (a pair at exactly the threshold is found about
    half the time), so candidates are retrieved at a lower similarity (threshold - 0.2) and
    then checked with the exact character n-gram Jaccard: every pair at or above
    ``threshold`` is found, none below it is merged. A text is compared with the earlier
    texts that were kept (not with dropped ones), the first match in input order wins.
    """
    dropped: dict[int, tuple[int, str]] = {}
    first: dict[bytes, int] = {}
    for i, text in enumerate(texts):
        key = hashlib.sha1(normalize(text).encode()).digest()
        if key in first:
            dropped[i] = (first[key], "exact")
        else:
            first[key] = i
    del first
    survivors = np.array([i for i in range(len(texts)) if i not in dropped], dtype=np.int64)
    if len(survivors) < 2:
        return dropped
    ranges = MinHashLSH(threshold=max(0.2, threshold - 0.2), num_perm=num_perm).hashranges  # datasketch's (b, r)
    keys = np.empty((len(survivors), len(ranges)), dtype=np.uint64)
    for start in range(0, len(survivors), chunk):
        block = survivors[start:start + chunk]
        keys[start:start + len(block)] = band_keys([shingles(texts[i], n) for i in block], ranges, num_perm)

    # per band: positions sorted by key (stable: input order within a key); a run of equal
    # keys is a bucket, and a position's candidates are the bucket members before it
    count, bands = keys.shape
    orders = np.empty((bands, count), dtype=np.int32)  # per band: positions in bucket order
    starts_of = np.empty((count, bands), dtype=np.int32)  # per position: where its bucket starts in orders[b]
    ranks = np.empty((count, bands), dtype=np.int32)  # per position: members of its bucket before it
    slots = np.arange(count, dtype=np.int32)
    for b in range(bands):
        order = np.argsort(keys[:, b], kind="stable")
        ordered = keys[order, b]
        new = np.r_[True, ordered[1:] != ordered[:-1]]
        starts = np.maximum.accumulate(np.where(new, slots, 0))  # bucket start, per sorted slot
        orders[b] = order
        starts_of[order, b] = starts
        ranks[order, b] = slots - starts
    del keys

    @lru_cache(maxsize=16_384)  # originals with many copies are read again; 16k sets of ~9 KB: ~150 MB
    def shingles_of(position: int) -> frozenset[bytes]:
        return frozenset(shingles(texts[int(survivors[position])], n))

    near_dropped = np.zeros(len(survivors), dtype=bool)
    for p in np.flatnonzero(ranks.max(axis=1) > 0):  # positions with at least one earlier bucket mate
        candidates = set()
        for b in np.flatnonzero(ranks[p] > 0):
            s = starts_of[p, b]
            candidates.update(orders[b][s:s + ranks[p, b]].tolist())
        mine = shingles_of(int(p))
        for q in sorted(candidates):
            if near_dropped[q]:
                continue
            theirs = shingles_of(q)
            if len(mine & theirs) / max(len(mine | theirs), 1) >= threshold:
                near_dropped[p] = True
                dropped[int(survivors[p])] = (int(survivors[q]), "near")
                break
    return dropped


def jaccard(a: str, b: str, n: int = 3) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / max(len(sa | sb), 1)


