"""Chinese-correct metrics of generated answers: BLEU, ROUGE-L, distinct-n, grounded correctness.

Tokenisation decides the number on Chinese text (reference/tooling.md §0: one sentence
pair scores BLEU 0.0 under sacrebleu's default ``13a`` and 54.2 under ``zh``), so each
metric names its tokenisation and the report prints it:

* BLEU: sacrebleu corpus BLEU with ``tokenize="zh"`` (each CJK character a token,
  Latin words kept whole);
* ROUGE-L F1 on characters and on jieba words (rouge_score's own tokenizer keeps only
  [a-z0-9] and scores two identical Chinese sentences 0, so we pass ours);
* distinct-n: unique character n-grams / all character n-grams over a model's answers
  (low = repetitive, templated output);
* knowledge-grounded correctness (embedded world): an answer is correct when it names
  every gold entity and no other entity of the same type that the question's fact
  does not allow — "丙泊酚可引起低血压" is wrong for a question whose gold adverse
  effect is 注射痛 only if it also fails to name 注射痛 or names a *conflicting* one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import jieba
import sacrebleu

from medlab.generate.novelty import CharTokenizer

jieba.setLogLevel(60)  # its "Building prefix dict" chatter goes to stderr on first use


class JiebaTokenizer:
    """jieba's precise-mode words, spaces dropped."""

    def tokenize(self, text: str) -> list[str]:
        return [w for w in jieba.lcut(text) if w.strip()]


@functools.cache
def _rouge_scorer(unit: str):
    """ROUGE-L over characters or jieba words; made on first use: rouge_score imports nltk,
    which imports scikit-learn (0.8 s a process that scores no text, such as the probe's)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=CharTokenizer() if unit == "char" else JiebaTokenizer())


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100), sacrebleu, ``zh`` tokenisation, one reference per answer."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} answers but {len(references)} references")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize="zh").score)


def rouge_l(hypothesis: str, reference: str, unit: str = "char") -> float:
    """ROUGE-L F1 of one answer against its reference; ``unit``: char | word (jieba)."""
    if unit not in ("char", "word"):
        raise ValueError(f"unit must be char or word, got {unit!r}")
    return float(_rouge_scorer(unit).score(reference, hypothesis)["rougeL"].fmeasure)


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Unique character n-grams / all character n-grams (0 when there are none)."""
    grams = [t[i:i + n] for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def grounded_correct(answer: str, gold: Sequence[str], conflicting: Iterable[str]) -> bool:
    """Names every gold entity and none of ``conflicting`` (same-type entities the fact excludes)."""
    if not gold:
        raise ValueError("a grounded check needs at least one gold entity")
    if not all(g in answer for g in gold):
        return False
    # "高血压" inside the gold "严重高血压" is not a conflict
    return not any(c in answer and not any(c in g for g in gold) for c in conflicting)
