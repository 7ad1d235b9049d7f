"""Corpus rendering: template variety, determinism, coverage and splits."""

from __future__ import annotations

import random
import string

import pytest

from medlab.embedded.corpus.render import (
    covered_subjects,
    join_list,
    load_templates,
    render_corpus,
    render_paragraph,
)


def slots(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}


def test_every_relation_has_many_varied_templates(kb):
    templates = load_templates()
    for relation, spec in kb.schema.relations.items():
        one = templates.one[relation]
        assert len(one) >= 12, relation  # 4-5 templates per relation do not transfer (DESIGN.md)
        assert len(set(one)) == len(one), relation
        assert all(slots(t) == {"s", "o"} and t.endswith("。") for t in one), relation
        if not spec.functional and not spec.literal:
            assert len(templates.many[relation]) >= 8, relation
    assert all(slots(t) == {"s", "t"} for t in templates.opening)


def test_join_list():
    assert join_list(["发热"]) == "发热"
    assert join_list(["发热", "咳嗽", "咳痰"]) == "发热、咳嗽和咳痰"


def test_paragraph_states_every_fact(kb):
    text, ids, used = render_paragraph(kb, "丙泊酚", random.Random(0), list_probability=0.5)
    facts = kb.facts("丙泊酚")
    assert sorted(ids) == sorted(t.id for t in facts)
    for t in facts:
        assert t.object in text
    assert used[0].startswith("opening/")


def test_rendering_is_deterministic_and_seed_dependent(kb):
    a, _ = render_corpus(kb, 2, 0.4, 0.5, 0.1, seed=1)
    b, _ = render_corpus(kb, 2, 0.4, 0.5, 0.1, seed=1)
    c, _ = render_corpus(kb, 2, 0.4, 0.5, 0.1, seed=2)
    assert [d.model_dump() for d in a] == [d.model_dump() for d in b]
    assert [d.text for d in a] != [d.text for d in c]


@pytest.mark.parametrize("coverage", [0.0, 0.5, 1.0])
def test_anesthesia_coverage(kb, coverage):
    docs, covered = render_corpus(kb, 1, 0.4, coverage, 0.1, seed=3)
    anesthesia = kb.subjects("anesthesia")
    assert len(covered) == round(coverage * len(anesthesia))
    assert {d.subject for d in docs if d.domain == "anesthesia"} == set(covered)
    assert {d.subject for d in docs if d.domain == "general"} == set(kb.subjects("general"))


def test_covered_subjects_depend_on_seed_only(kb):
    a = covered_subjects(kb, 0.5, random.Random("x"))
    assert a == covered_subjects(kb, 0.5, random.Random("x"))


def test_valid_split_fraction(kb):
    docs, _ = render_corpus(kb, 8, 0.4, 1.0, 0.05, seed=4)
    share = sum(d.split == "valid" for d in docs) / len(docs)
    assert 0.03 < share < 0.07
    assert {d.split for d in docs} == {"train", "valid"}
    assert len({d.id for d in docs}) == len(docs)
