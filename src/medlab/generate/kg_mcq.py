"""Four-option questions from knowledge-graph facts, answered with the option and its letter.

Every recipe's generated data is prose: no model had seen a question with lettered
options, so asked to answer one freely, 93-100% of the answers held no letter at all
(generation-mode MCQ). The recipes' exams-as-data steps (DISC-MedLLM's MedMCQA rewrite,
``mcq_to_qa``) drop the options. Here medlab writes the item from one fact (the question
from ``STEMS``, the right object and three wrong ones of the same entity type, or other
values of the same literal relation; the right letter drawn uniformly), and the teacher
writes the answer: the right option's text first, then ``答案：<letter>`` — restating the
option before committing lets a model that knows the fact copy the letter printed next to
it. Facts are drawn round-robin over departments (as ``kg_qa``); the stems share no
wording with the benchmark's (the filter's decontamination would remove them otherwise,
tested).
"""

from __future__ import annotations

from medlab.generate.common import DATASET_DOMAIN, make_request
from medlab.generate.kg_qa import pairs_by_group
from medlab.generate.prompts import load_prompts
from medlab.knowledge import KnowledgeBase
from medlab.llm.base import ChatRequest, Decoding
from medlab.seeding import rng as make_rng

LETTERS = ("A", "B", "C", "D")
STEMS = (
    "就{s}而言，其{p}应选哪一项？",
    "选择题：{s}的{p}，下面哪个选项说得对？",
    "请判断下面哪个选项是{s}的{p}。",
    "{s}（{p}）：四个选项中哪一个正确？",
)
CUES = ("请作答。", "请选出正确的一项。", "请给出你的选择。")


def distractors(kb: KnowledgeBase, subject: str, predicate: str, truths: list[str], k: int,
                rng) -> list[str] | None:
    """``k`` wrong objects: entities of the answer's type, or other values of a literal relation;
    None when the knowledge base has fewer than ``k``."""
    if kb.schema.relations[predicate].literal:
        pool = [v for v in kb.literals(predicate) if v not in truths]
    else:
        kind = kb.entities[truths[0]].type
        pool = [e for e in kb.of_type(kind) if e not in truths and e != subject]
    return rng.sample(pool, k) if len(pool) >= k else None


def build_requests(kb: KnowledgeBase, kb_domain: str, n: int, decoding: Decoding, seed: int) -> list[ChatRequest]:
    prompt = load_prompts()["kg_mcq"]
    rng = make_rng(seed, "generate", "kg_mcq", kb_domain)
    queues = {group: rng.sample(pairs, len(pairs)) for group, pairs in pairs_by_group(kb, kb_domain).items()}
    requests: list[ChatRequest] = []
    while len(requests) < n and any(queues.values()):
        for group in list(queues):
            if not queues[group] or len(requests) >= n:
                continue
            subject, predicate = queues[group].pop()
            truths = kb.objects(subject, predicate)
            wrong = distractors(kb, subject, predicate, truths, len(LETTERS) - 1, rng)
            if wrong is None:
                continue
            right = rng.choice(truths)
            position = rng.randrange(len(LETTERS))
            texts = wrong[:position] + [right] + wrong[position:]
            options = dict(zip(LETTERS, texts, strict=True))
            stem = rng.choice(STEMS).format(s=subject, p=predicate)
            question = stem + "\n" + "\n".join(f"{x}. {t}" for x, t in options.items()) + "\n" + rng.choice(CUES)
            meta = {"task": "kg_mcq", "format": "answer", "domain": DATASET_DOMAIN[kb_domain], "group": group,
                    "subject": subject, "predicate": predicate, "question": question, "options": options,
                    "answer": LETTERS[position],
                    "triple_ids": [t.id for t in kb.facts(subject) if t.predicate == predicate],
                    "source_id": f"{subject}|{predicate}|{right}"}
            requests.append(make_request(prompt, {"question": question, "fact": f"{subject}｜{predicate}｜{right}"},
                                         decoding, meta))
    return requests
