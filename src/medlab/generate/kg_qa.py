"""Knowledge-graph QA pairs, triples sampled by department (DISC-MedLLM's KG step).

DISC sampled CMeKG triples department by department so that no specialty dominates.
Here every (subject, relation) pair is grouped by its department (general medicine) or
by its subject's type (anesthesiology: drugs, complications, grades, assessments,
foods), and requests are drawn round-robin across the groups. A pair is asked again
by different askers (patient, family, student, ...) so repeated facts get differently
framed prompts, never an identical prompt (whose cached answer would be a duplicate).
"""

from __future__ import annotations

from medlab.generate.common import DATASET_DOMAIN, make_request
from medlab.generate.prompts import load_prompts
from medlab.knowledge import KnowledgeBase
from medlab.llm.base import ChatRequest, Decoding
from medlab.seeding import rng as make_rng
from medlab.zh import join_list

ASKERS = ("患者本人", "患者家属", "医学生", "基层医生", "护士")


def group_of(kb: KnowledgeBase, subject: str, kb_domain: str) -> str:
    entity = kb.entities[subject]
    if kb_domain == "general":
        return entity.department or "未分科"
    return entity.type


def pairs_by_group(kb: KnowledgeBase, kb_domain: str) -> dict[str, list[tuple[str, str]]]:
    groups: dict[str, list[tuple[str, str]]] = {}
    seen = set()
    for t in kb.triples:
        if t.domain != kb_domain or (t.subject, t.predicate) in seen:
            continue
        if kb_domain == "anesthesia" and t.predicate == "所属科室":
            continue  # every complication is filed under 麻醉科: nothing to ask
        seen.add((t.subject, t.predicate))
        groups.setdefault(group_of(kb, t.subject, kb_domain), []).append((t.subject, t.predicate))
    return dict(sorted(groups.items()))


def facts_text(kb: KnowledgeBase, subject: str, predicates: list[str]) -> str:
    return "\n".join(f"- {subject}｜{p}｜{join_list(kb.objects(subject, p))}" for p in predicates)


def build_requests(kb: KnowledgeBase, kb_domain: str, n: int, context_facts: int,
                   decoding: Decoding, seed: int) -> list[ChatRequest]:
    prompt = load_prompts()["kg_qa"]
    rng = make_rng(seed, "generate", "kg_qa", kb_domain)
    queues: dict[str, list] = {}
    for group, pairs in pairs_by_group(kb, kb_domain).items():
        # every pair once (in random order, by a random asker) before any pair twice
        askers = {pair: rng.sample(ASKERS, len(ASKERS)) for pair in pairs}
        queue = []
        for round_ in range(len(ASKERS)):
            order = rng.sample(pairs, len(pairs))
            queue += [(pair, askers[pair][round_]) for pair in order]
        queues[group] = queue
    requests: list[ChatRequest] = []
    while len(requests) < n and any(queues.values()):
        for group in list(queues):
            if not queues[group] or len(requests) >= n:
                continue
            (subject, predicate), asker = queues[group].pop(0)
            others = [p for p in dict.fromkeys(t.predicate for t in kb.facts(subject)) if p != predicate]
            context = rng.sample(others, min(context_facts, len(others)))
            meta = {
                "task": "kg_qa", "format": "qa", "domain": DATASET_DOMAIN[kb_domain], "group": group,
                "subject": subject, "predicate": predicate, "objects": kb.objects(subject, predicate),
                "context": [{"predicate": p, "objects": kb.objects(subject, p)} for p in context],
                "triple_ids": [t.id for t in kb.facts(subject) if t.predicate in (predicate, *context)],
                "source_id": f"{subject}|{predicate}|{asker}",
            }
            requests.append(make_request(prompt, {"subject": subject, "facts": facts_text(
                kb, subject, [predicate, *context]) + f"\n提问者：{asker}"}, decoding, meta))
    return requests
