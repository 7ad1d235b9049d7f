"""Novelty filtering of generated instructions by character-level ROUGE-L.

Self-instruct and Alpaca drop a new instruction whose ROUGE-L against any existing one
is >= 0.7, using ``rouge_score``'s default tokenizer, which keeps only [a-z0-9]: two
identical Chinese sentences score 0, so every Chinese near-duplicate is kept
(reference/tooling.md §0). Here the same scorer gets a character tokenizer.

Scoring every candidate against the whole pool is O(pool x length^2); a cheap upper
bound skips most pairs: the LCS of two strings is at most the size of their
character-multiset intersection c, so F <= 2c / (m + n). Only pairs whose bound reaches
the threshold are scored exactly.
"""

from __future__ import annotations

import functools
from collections import Counter


class CharTokenizer:
    """Every non-space character is a token (what ROUGE on Chinese should use)."""

    def tokenize(self, text: str) -> list[str]:
        return [ch for ch in text if not ch.isspace()]


@functools.cache
def _scorer():
    """Made on first use: rouge_score imports nltk -> scikit-learn (0.8 s), which a process
    that only needs CharTokenizer (the evaluate and probe stages) never pays."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=CharTokenizer())


def rouge_l(a: str, b: str) -> float:
    """Character-level ROUGE-L F1 of two strings."""
    return _scorer().score(a, b)["rougeL"].fmeasure


class NoveltyFilter:
    """Keeps a text only if its ROUGE-L against every kept text is below ``threshold``."""

    def __init__(self, threshold: float = 0.7, initial: list[str] | None = None):
        self.threshold = threshold
        self.kept: list[str] = []
        self._bags: list[Counter] = []
        for text in initial or []:
            self.keep(text)

    def keep(self, text: str) -> None:
        """Keep ``text`` without checking it (the caller has)."""
        self.kept.append(text)
        self._bags.append(Counter(CharTokenizer().tokenize(text)))

    def most_similar(self, text: str) -> tuple[float, str | None]:
        bag = Counter(CharTokenizer().tokenize(text))
        n = sum(bag.values())
        best, best_text = 0.0, None
        for other, other_bag in zip(self.kept, self._bags, strict=True):
            m = sum(other_bag.values())
            bound = 2 * sum((bag & other_bag).values()) / max(m + n, 1)
            if bound < max(self.threshold, best) or bound == 0:
                continue
            score = rouge_l(text, other)
            if score > best:
                best, best_text = score, other
        return best, best_text

    def add(self, text: str) -> bool:
        """True (and kept) if novel enough, False if too close to something kept."""
        score, _ = self.most_similar(text)
        if score >= self.threshold:
            return False
        self.keep(text)
        return True
