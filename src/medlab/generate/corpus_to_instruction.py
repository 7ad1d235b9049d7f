"""Corpus paragraphs rewritten as instructions (HuatuoGPT-II's data unification).

HuatuoGPT-II turned its pre-training corpus (web, books, literature) into question-
answer form with an LLM, so that domain knowledge and SFT data share one format and one
training stage. Long texts are first split into paragraphs of at most ``max_chars``
characters at sentence ends, so that every request fits the teacher's context.
"""

from __future__ import annotations

import re

from medlab.generate.common import make_request
from medlab.generate.prompts import load_prompts
from medlab.knowledge import KnowledgeBase
from medlab.llm.base import ChatRequest, Decoding
from medlab.records import CorpusDoc

CORPUS_DOMAIN = {"general": "general_medicine", "anesthesia": "anesthesia"}


def split_paragraphs(text: str, max_chars: int) -> list[str]:
    """Cut at blank lines, then pack sentences (ending in 。！？；) into chunks <= max_chars.
    A single sentence longer than max_chars is cut hard."""
    chunks: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        current = ""
        for sentence in re.findall(r"[^。！？；\n]+[。！？；]?", block):
            sentence = sentence.strip()
            while len(sentence) > max_chars:
                if current:
                    chunks.append(current)
                    current = ""
                chunks.append(sentence[:max_chars])
                sentence = sentence[max_chars:]
            if current and len(current) + len(sentence) > max_chars:
                chunks.append(current)
                current = ""
            current += sentence
        if current:
            chunks.append(current)
    return [c for c in chunks if c.strip()]


def build_requests(kb: KnowledgeBase, docs: list[CorpusDoc], max_chars: int, decoding: Decoding,
                   paragraphs_per_subject: int | None = None) -> list[ChatRequest]:
    prompt = load_prompts()["corpus_to_instruction"]
    requests = []
    by_id = {t.id: t for t in kb.triples}
    taken: dict[str, int] = {}
    for doc in docs:
        if doc.split != "train":
            continue  # held-out paragraphs stay held out
        if paragraphs_per_subject is not None and taken.get(doc.subject, 0) >= paragraphs_per_subject:
            continue
        taken[doc.subject] = taken.get(doc.subject, 0) + 1
        for k, chunk in enumerate(split_paragraphs(doc.text, max_chars)):
            # the facts this chunk states (all of them when the paragraph was not split)
            ids = [i for i in doc.triple_ids if by_id[i].object in chunk and by_id[i].subject in doc.text]
            if not ids:
                continue
            meta = {"task": "corpus_to_instruction", "format": "qa", "domain": CORPUS_DOMAIN[doc.domain],
                    "subject": doc.subject, "triple_ids": ids, "source_id": f"{doc.id}#{k}"}
            requests.append(make_request(prompt, {"paragraph": chunk}, decoding, meta))
    return requests
