"""Entity-extraction samples from corpus sentences (ChiMed-GPT trained on NER data).

No recipe's generated data asks a model to list the entities of a sentence, so every
model scored 0 on the NER task. ChiMed-GPT's SFT mix held NER sets (CMeEE and others);
here a sentence of a *training* corpus paragraph that names at least one entity becomes
an extraction question (medlab's wording, one of ``QUESTIONS``, the type list and the
``实体|类型`` layout stated), and the teacher writes the answer. The held-out paragraphs
feed the NER evaluation (``medlab.evaluate.run.ner_sentences``) and are never used here.
The entities a sentence names, by longest match against the knowledge base
(``KnowledgeBase.mentions``), travel in ``meta`` for the simulated teacher and the tests.
"""

from __future__ import annotations

import re

from medlab.generate.common import make_request
from medlab.generate.prompts import load_prompts
from medlab.knowledge import KnowledgeBase
from medlab.llm.base import ChatRequest, Decoding
from medlab.records import CorpusDoc
from medlab.seeding import rng as make_rng

TYPES = ("疾病", "药物", "症状", "检查")  # the types the NER evaluation asks for
QUESTIONS = (
    "找出下面这句话里提到的医学实体并标出类别（{types}），每行写一个，格式“实体|类型”。\n{text}",
    "请标注句子中的医学实体。可用类别：{types}。输出时每行一个“实体|类型”。\n句子：{text}",
    "下面这句话提到了哪些{types}方面的医学名词？逐行列出，写成“名称|类别”。\n{text}",
    "阅读这句话，抽出其中的医学实体和它们的类别（{types}），一行一个，实体与类别用竖线隔开。\n{text}",
)
CORPUS_DOMAIN = {"general": "general_medicine", "anesthesia": "anesthesia"}


def sentences(doc: CorpusDoc) -> list[str]:
    """A paragraph's sentences (ending in 。), as the NER evaluation cuts held-out paragraphs."""
    return [s for s in re.split(r"(?<=。)", doc.text) if len(s) > 4]


def build_requests(kb: KnowledgeBase, docs: list[CorpusDoc], n: int, decoding: Decoding,
                   seed: int) -> list[ChatRequest]:
    """``n`` extraction requests from the training paragraphs of one corpus domain: distinct
    sentences naming an entity, drawn round-robin over subjects (no subject dominates)."""
    prompt = load_prompts()["corpus_ner"]
    rng = make_rng(seed, "generate", "corpus_ner", docs[0].domain if docs else "")
    by_subject: dict[str, list[tuple[CorpusDoc, int, str]]] = {}
    seen: set[str] = set()
    for doc in docs:
        if doc.split != "train":
            continue  # held-out paragraphs are the evaluation's sentences
        for k, sentence in enumerate(sentences(doc)):
            if sentence not in seen and kb.mentions(sentence, TYPES):
                seen.add(sentence)
                by_subject.setdefault(doc.subject, []).append((doc, k, sentence))
    queues = {s: rng.sample(rows, len(rows)) for s, rows in sorted(by_subject.items())}
    requests: list[ChatRequest] = []
    while len(requests) < n and any(queues.values()):
        for subject in list(queues):
            if not queues[subject] or len(requests) >= n:
                continue
            doc, k, sentence = queues[subject].pop()
            question = rng.choice(QUESTIONS).format(types="、".join(TYPES), text=sentence)
            # entities in order of appearance: the answer lists them as a reader meets them
            entities = sorted(kb.mentions(sentence, TYPES), key=lambda e: (sentence.find(e[0]), e[0]))
            meta = {"task": "corpus_ner", "format": "answer", "domain": CORPUS_DOMAIN[doc.domain],
                    "subject": subject, "question": question, "sentence": sentence, "types": list(TYPES),
                    "entities": [list(e) for e in entities],
                    "source_id": f"{doc.id}-s{k}"}
            requests.append(make_request(prompt, {"question": question}, decoding, meta))
    return requests
