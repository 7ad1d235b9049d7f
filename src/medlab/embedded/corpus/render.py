"""Knowledge base -> textbook-style paragraphs (the base model's pre-training corpus).

Each paragraph is about one entity: a fact-free opening sentence, then every fact
about it in shuffled order, each through a randomly chosen paraphrase template.
A small model memorises surface forms: rendered with 4-5 templates per relation it
answers a question in a training template (0.98) but not in a new one (0.26, chance);
with 12+ varied templates it generalises (0.93-0.97). So templates.yaml holds 12+
sentence templates per relation, and the benchmark's question templates live
elsewhere (``medlab.embedded.benchmark``) and never appear here.

Multi-object relations (symptoms, drugs, ...) are rendered either as one sentence
listing all objects ("...包括发热、咳嗽和咳痰") or as one sentence per object.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ruamel.yaml import YAML

from medlab.knowledge import KnowledgeBase
from medlab.records import CorpusDoc, Triple
from medlab.zh import join_list


@dataclass(frozen=True)
class Templates:
    one: dict[str, list[str]]  # relation -> sentence templates about one object
    many: dict[str, list[str]]  # relation -> sentence templates about a list of objects
    opening: list[str]  # fact-free first sentences, slots {s} and {t}


@lru_cache(maxsize=1)
def load_templates() -> Templates:
    text = resources.files("medlab.embedded.corpus").joinpath("templates.yaml").read_text("utf-8")
    raw = YAML(typ="safe").load(text)
    one = {rel: list(spec["one"]) for rel, spec in raw["relations"].items()}
    many = {rel: list(spec.get("many") or []) for rel, spec in raw["relations"].items()}
    return Templates(one=one, many=many, opening=list(raw["paragraph"]["opening"]))


def render_paragraph(kb: KnowledgeBase, subject: str, rng: random.Random,
                     list_probability: float, templates: Templates | None = None,
                     ) -> tuple[str, list[str], list[str]]:
    """One paragraph about ``subject``: (text, ids of the facts in it, template ids used)."""
    templates = templates or load_templates()
    by_relation: dict[str, list[Triple]] = {}
    for t in kb.facts(subject):
        by_relation.setdefault(t.predicate, []).append(t)
    sentences: list[tuple[str, list[str], str]] = []
    for relation, facts in by_relation.items():
        en = kb.schema.relations[relation].en
        many = templates.many.get(relation) or []
        if len(facts) > 1 and many and rng.random() < list_probability:
            shuffled = rng.sample(facts, len(facts))
            k = rng.randrange(len(many))
            text = many[k].format(s=subject, o=join_list([t.object for t in shuffled]))
            sentences.append((text, [t.id for t in shuffled], f"{en}/many/{k}"))
        else:
            for t in facts:
                k = rng.randrange(len(templates.one[relation]))
                text = templates.one[relation][k].format(s=subject, o=t.object)
                sentences.append((text, [t.id], f"{en}/one/{k}"))
    rng.shuffle(sentences)
    k = rng.randrange(len(templates.opening))
    opening = templates.opening[k].format(s=subject, t=kb.entities[subject].type)
    text = opening + "".join(s for s, _, _ in sentences)
    ids = [i for _, fact_ids, _ in sentences for i in fact_ids]
    return text, ids, [f"opening/{k}", *(tid for _, _, tid in sentences)]


def covered_subjects(kb: KnowledgeBase, coverage: float, rng: random.Random) -> set[str]:
    """Anesthesia subjects whose facts enter the pre-training corpus.

    ``coverage < 1`` leaves the rest to be learned from instruction data only, the way
    a general base model knows general medicine but little anesthesiology.
    """
    subjects = kb.subjects("anesthesia")
    k = round(coverage * len(subjects))
    return set(rng.sample(subjects, k))


def render_corpus(kb: KnowledgeBase, paragraphs_per_entity: int, list_probability: float,
                  anesthesia_coverage: float, valid_fraction: float, seed: int,
                  ) -> tuple[list[CorpusDoc], list[str]]:
    """All paragraphs (train and valid split) and the covered anesthesia subjects."""
    from medlab.seeding import rng as make_rng

    covered = covered_subjects(kb, anesthesia_coverage, make_rng(seed, "corpus", "coverage"))
    templates = load_templates()
    docs: list[CorpusDoc] = []
    for domain in ("general", "anesthesia"):
        for subject in kb.subjects(domain):
            if domain == "anesthesia" and subject not in covered:
                continue
            entity = kb.entities[subject]
            stream = make_rng(seed, "corpus", "render", subject)
            splits = make_rng(seed, "corpus", "split", subject)
            for k in range(paragraphs_per_entity):
                text, ids, used = render_paragraph(kb, subject, stream, list_probability, templates)
                docs.append(CorpusDoc(
                    id=f"{entity.id}-p{k}", source="corpus", domain=domain,
                    department=entity.department, subject=subject, text=text,
                    split="valid" if splits.random() < valid_fraction else "train",
                    triple_ids=ids, provenance={"method": "template_render", "templates": used},
                ))
    return docs, sorted(covered)
