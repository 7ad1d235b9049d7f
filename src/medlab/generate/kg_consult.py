"""Consultations that ask before they answer: a family member reports one sign after
anaesthesia, the doctor asks about the complication's other signs by name, hears which are
present, then names the complication and its handling (for the consultation task).

No recipe's data holds this shape: DISC-MedLLM's and our ``kg_dialogue`` patients list
their symptoms at once and the doctor answers, so in a consultation every model answered
the opening complaint (or named nothing) and elicited 0-3% of the findings. HuatuoGPT-II
and DISC report multi-turn consultation as a target behaviour; here the dialogues are
built from the knowledge base's complications (19 in the embedded world) and their
clinical signs: a case holds 2-4 of the signs, the opening names one, the doctor asks
about up to three others of the same complication (the patient confirms the ones the case
holds and denies the rest), and the final turn names the complication with its drugs and
measures. Cases are drawn round-robin over complications with distinct (signs, opening)
so no two prompts are equal.
"""

from __future__ import annotations

from medlab.generate.common import make_request
from medlab.generate.prompts import load_prompts
from medlab.knowledge import KnowledgeBase
from medlab.llm.base import ChatRequest, Decoding
from medlab.seeding import rng as make_rng
from medlab.zh import join_list


def complications(kb: KnowledgeBase) -> list[str]:
    """Anaesthesia complications with at least two clinical signs (something to ask about)."""
    return [s for s in kb.subjects("anesthesia")
            if kb.entities[s].type == "疾病" and len(kb.objects(s, "临床表现")) >= 2]


def build_requests(kb: KnowledgeBase, n: int, decoding: Decoding, seed: int, max_asked: int = 3) -> list[ChatRequest]:
    prompt = load_prompts()["kg_consult"]
    rng = make_rng(seed, "generate", "kg_consult")
    subjects = complications(kb)
    requests: list[ChatRequest] = []
    seen: set[tuple] = set()
    attempts = 0
    while len(requests) < n and attempts < 50 * max(n, 1):
        attempts += 1
        subject = subjects[len(requests) % len(subjects)]
        signs = kb.objects(subject, "临床表现")
        present = rng.sample(signs, rng.randint(2, min(4, len(signs))))  # the case's signs, opening first
        others = [s for s in signs if s != present[0]]
        asked = rng.sample(others, min(max_asked, len(others)))
        key = (subject, tuple(present), tuple(asked))
        if key in seen:
            continue
        seen.add(key)
        drugs, measures = kb.objects(subject, "药物治疗"), kb.objects(subject, "处理措施")
        meta = {"task": "kg_consult", "format": "dialogue", "domain": "anesthesia", "kb_domain": "anesthesia",
                "subject": subject, "opening": present[0], "present": present, "asked": asked,
                "drugs": drugs, "measures": measures,
                "triple_ids": [t.id for t in kb.facts(subject) if t.predicate in ("临床表现", "药物治疗", "处理措施")],
                "source_id": f"{subject}|{'、'.join(present)}|{'、'.join(asked)}"}
        requests.append(make_request(prompt, {
            "opening": present[0], "asked": join_list(asked), "present": join_list(present),
            "subject": subject, "handling": join_list(measures + drugs) if measures + drugs else "对症处理"}, decoding, meta))
    return requests
