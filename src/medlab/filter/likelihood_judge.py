"""The likelihood judge: a causal LM (default: the pre-trained base model) scores a response.

Three scores, higher = better (params ``filter.judge.likelihood.score``):

* ``mean_logprob``: mean log-probability of the response tokens given the instruction.
* ``pmi``: that minus the response's unconditional mean log-probability (pointwise
  mutual information between instruction and response, per token): rewards responses
  that answer *this* instruction, penalises generic ones.
* ``fact_span`` (default): scores the claims instead of the prose. Measured on this
  pipeline's data, the two scores above barely separate factual errors from correct
  answers (ROC AUC 0.51 for ``mean_logprob``): a wrong entity is two tokens among
  eighty. Here each *claim span* — a knowledge-base entity or literal named in the
  response but not in the instruction — gets its summed log-probability in context plus
  ``contrast_weight`` times its gain over the same text with the instruction's entities
  replaced by "它" (how much the subject raises the claim: knowledge, not fluency); the
  sample's fact score (``score``) is its worst claim. A second, *prose* score — the worst
  mean log-probability of a response sentence — catches sentences the judge finds
  implausible (stigmatising remarks, dangerous advice), which name no entity to check.
  The filter cuts on each with its own keep-quantile. Measured on the default run (ROC
  AUC): fact score 0.82 for factual errors, 0.49 for stigma; prose score 0.53 for
  factual errors, 0.87 for stigma, 0.76 for unsafe advice — one number could not do both.

Text is scored as plain "instruction\\nresponse" (a base model never saw a chat template);
``format: chat`` uses the tokenizer's template for chat models.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from medlab.evaluate.loglik import TokenReader, leading_bos

PLACEHOLDER = "它"
SENTENCE = re.compile(r"[^。！？!?；;\n]+[。！？!?；;]?")


@dataclass
class JudgeScore:
    score: float | None  # the judge's score (higher = better); None = nothing to score
    fact: float | None = None  # worst claim span (fact_span: equals score)
    sentence: float | None = None  # prose score: worst sentence mean log-prob
    mean_logprob: float | None = None
    pmi: float | None = None
    claims: int = 0


class SpanFinder:
    """Finds known names (entities, literals) in text, longest first, without overlaps."""

    def __init__(self, names: Iterable[str], min_chars: int = 2):
        self.names = sorted({n for n in names if len(n) >= min_chars}, key=len, reverse=True)
        by_first: dict[str, list[str]] = {}
        for name in self.names:
            by_first.setdefault(name[0], []).append(name)
        self.by_first = by_first

    def find(self, text: str) -> list[tuple[int, int, str]]:
        out, i = [], 0
        while i < len(text):
            for name in self.by_first.get(text[i], ()):
                if text.startswith(name, i):
                    out.append((i, i + len(name), name))
                    i += len(name)
                    break
            else:
                i += 1
        return out


class LikelihoodJudge:
    def __init__(self, model, tokenizer, span_names: Iterable[str], score: str = "fact_span",
                 contrast_weight: float = 2.0, batch_size: int = 16, max_tokens: int = 320,
                 fmt: str = "plain"):
        if score not in ("fact_span", "pmi", "mean_logprob"):
            raise ValueError(f"unknown likelihood score {score!r}")
        self.model, self.tok = model.eval(), tokenizer
        self.reader = TokenReader(self.model)
        # what predicts a text's first token: the BOS the tokenizer adds to plain text
        # (Llama, Mistral), else its BOS or EOS (a document separator: Qwen, GPT-2 style)
        first = leading_bos(tokenizer)
        if first is None:
            first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.first = first
        self.spans = SpanFinder(span_names)
        self.score_kind, self.contrast_weight = score, contrast_weight
        self.batch_size, self.max_tokens, self.fmt = batch_size, max_tokens, fmt
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.tok.padding_side = "right"

    # ----------------------------------------------------------------- scoring
    def prompt_text(self, messages: list[dict[str, str]]) -> str:
        if self.fmt == "chat":
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n".join(m["content"] for m in messages if m["role"] != "system") + "\n"

    def token_logprobs(self, texts: list[str]) -> list[list[tuple[int, int, float]]]:
        """Per text: (char start, char end, log-prob) of every token, each predicted from the
        tokens before it. A first token predicts the text's first token: the BOS the
        tokenizer adds to plain text (Llama, Mistral), else its BOS or EOS (a document
        separator: Qwen and GPT-2-style models start documents after one). Log-probs are
        read on the model's device, only at the text's tokens (``TokenReader``), so a
        151k vocabulary costs no batch x length x vocab tensor."""
        enc = self.tok(texts, return_offsets_mapping=True, add_special_tokens=False, truncation=True,
                       max_length=self.max_tokens - 1)  # lists: transformers' tensor conversion is slow
        lengths = [len(t) for t in enc["input_ids"]]
        width = max(lengths, default=0)
        if width == 0:
            return [[] for _ in texts]
        ids = torch.tensor([t + [self.tok.pad_token_id] * (width - len(t)) for t in enc["input_ids"]])
        mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
        x = torch.cat([torch.full((ids.shape[0], 1), self.first), ids], 1)
        a = torch.cat([torch.ones(ids.shape[0], 1, dtype=torch.long), mask.long()], 1)
        rows, cols = mask.nonzero(as_tuple=True)  # row-major: each text's tokens in order
        lp, _ = self.reader.at({"input_ids": x, "attention_mask": a}, rows, cols, ids[rows, cols])
        values, out, at = lp.tolist(), [], 0  # position k of x predicts token k of ids
        for offsets, n in zip(enc["offset_mapping"], lengths, strict=True):
            out.append([(s, e, v) for (s, e), v in zip(offsets, values[at:at + n], strict=True)])
            at += n
        return out

    @staticmethod
    def _sum(tokens: list[tuple[int, int, float]], start: int, end: int) -> float | None:
        values = [v for s, e, v in tokens if s < end and e > start]
        return sum(values) if values else None

    def score_batch(self, chats: list[list[dict[str, str]]]) -> list[JudgeScore]:
        prompts, responses, texts, ablated, ablated_prompts, contexts = [], [], [], [], [], []
        for messages in chats:
            instruction, response = messages[:-1], messages[-1]["content"]
            prompt = self.prompt_text(instruction)
            context = {n for _, _, n in self.spans.find("".join(m["content"] for m in instruction))}

            def ablate(text: str, names=context) -> str:
                for name in sorted(names, key=lambda x: (-len(x), x)):  # not set order
                    text = text.replace(name, PLACEHOLDER)
                return text

            prompts.append(prompt)
            responses.append(response)
            texts.append(prompt + response)
            ablated_prompt = self.prompt_text([dict(m, content=ablate(m["content"])) for m in instruction])
            ablated_prompts.append(ablated_prompt)
            ablated.append((ablated_prompt, ablate(response)))
            contexts.append(context)
        main = self.token_logprobs(texts)
        need_ablation = self.score_kind == "fact_span"
        other = self.token_logprobs([p + r for p, r in ablated]) if need_ablation else None
        alone = self.token_logprobs(responses) if self.score_kind == "pmi" else None
        scores = []
        for k, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            start = len(prompt)
            tokens = [(s - start, e - start, v) for s, e, v in main[k] if e > start]
            if not tokens:
                scores.append(JudgeScore(None))
                continue
            mean = float(np.mean([v for _, _, v in tokens]))
            result = JudgeScore(None, mean_logprob=mean)
            if self.score_kind == "mean_logprob":
                result.score = mean
            elif self.score_kind == "pmi":
                result.pmi = mean - float(np.mean([v for _, _, v in alone[k]]))
                result.score = result.pmi
            else:
                self._fact_span(result, tokens, response, contexts[k], other[k], ablated[k])
            scores.append(result)
        return scores

    def _fact_span(self, result: JudgeScore, tokens, response: str, context: set[str], ablated_tokens,
                   ablated: tuple[str, str]) -> None:
        sentences = []
        for match in SENTENCE.finditer(response):
            values = [v for s, e, v in tokens if s < match.end() and e > match.start()]
            if len(values) >= 3:
                sentences.append(float(np.mean(values)))
        result.sentence = min(sentences) if sentences else None
        start = len(ablated[0])
        a_tokens = [(s - start, e - start, v) for s, e, v in ablated_tokens if e > start]
        a_spans: dict[str, float] = {}
        for s, e, name in self.spans.find(ablated[1]):
            if name not in context and (value := self._sum(a_tokens, s, e)) is not None:
                a_spans.setdefault(name, value)
        claims = []
        for s, e, name in self.spans.find(response):
            if name in context:
                continue
            value = self._sum(tokens, s, e)
            if value is None:
                continue  # truncated away
            gain = value - a_spans.get(name, value)
            claims.append(value + self.contrast_weight * gain)
        result.claims = len(claims)
        result.fact = min(claims) if claims else None
        result.score = result.fact

    def score(self, chats: list[list[dict[str, str]]], progress=None) -> list[JudgeScore]:
        out: list[JudgeScore] = []
        for i in range(0, len(chats), self.batch_size):
            out += self.score_batch(chats[i:i + self.batch_size])
            if progress is not None:
                progress.update(len(chats[i:i + self.batch_size]))
        return out
