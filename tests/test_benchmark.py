"""Benchmarks: held-out wording, correct answers, false distractors, balanced letters, valid PHI."""

from __future__ import annotations

import datetime as dt
import random
import re
import string
from collections import Counter

import pytest

from medlab import zh
from medlab.embedded.benchmark import patients
from medlab.embedded.benchmark.build import (
    build_mcq,
    build_qa,
    build_vignettes,
    distractors,
    load_templates,
)
from medlab.embedded.corpus.render import load_templates as corpus_templates


def strip_slots(template: str) -> str:
    return "".join(literal for literal, _, _, _ in string.Formatter().parse(template))


def ngrams(text: str, n: int) -> set[str]:
    return {text[i:i + n] for i in range(len(text) - n + 1)}


def test_benchmark_wording_never_appears_in_training_templates():
    corpus = load_templates()
    train = corpus_templates()
    train_grams = set()
    for group in (*train.one.values(), *train.many.values(), train.opening):
        for template in group:
            train_grams |= ngrams(strip_slots(template), 6)
    held_out = [t for spec in corpus.relations.values() for group in spec.values() for t in group]
    held_out += corpus.narratives + [q for qs in corpus.questions.values() for q in qs]
    leaks = {t: sorted(ngrams(strip_slots(t), 6) & train_grams)[:3] for t in held_out}
    leaks = {t: g for t, g in leaks.items() if g}
    assert not leaks, leaks


def test_every_relation_has_question_templates(kb):
    templates = load_templates()
    assert set(templates.relations) == set(kb.schema.relations)
    for relation, spec in templates.relations.items():
        assert len(spec["mcq"]) >= 3 and len(spec["qa"]) >= 2 and len(spec["answer"]) >= 2, relation


@pytest.mark.parametrize("domain", ["anesthesia", "general"])
def test_mcq_items_are_correct_and_balanced(kb, domain):
    items = build_mcq(kb, domain, 120, 4, 10, seed=5, source=f"{domain}_mcq")
    assert len(items) == 120
    assert Counter(i.answer for i in items) == {"A": 30, "B": 30, "C": 30, "D": 30}
    assert sum(i.split == "dev" for i in items) == 10
    for item in items:
        subject, predicate = item.meta["subject"], item.meta["predicate"]
        truths = set(kb.objects(subject, predicate))
        assert item.options[item.answer] == item.meta["answer_text"] in truths
        wrong = [text for letter, text in item.options.items() if letter != item.answer]
        assert not set(wrong) & truths, item
        assert len(set(item.options.values())) == 4
        assert subject in item.question
    pairs = [(i.meta["subject"], i.meta["predicate"]) for i in items]
    assert len(set(pairs)) == len(pairs)  # one item per (subject, relation)


def test_entity_distractors_share_the_answer_type(kb):
    rng = random.Random(0)
    for _ in range(50):
        t = rng.choice([t for t in kb.triples if t.object_type != "literal"])
        wrong = distractors(kb, t.subject, t.predicate, t.object, 3, rng)
        if wrong:
            assert {kb.entities[w].type for w in wrong} == {t.object_type}


def test_literal_distractors_prefer_the_same_family(kb):
    wrong = distractors(kb, "ASA II级", "定义", kb.objects("ASA II级", "定义")[0], 3, random.Random(1))
    owners = {t.object: t.subject for t in kb.triples if t.predicate == "定义"}
    assert all(owners[w].startswith("ASA") for w in wrong)


def test_five_option_items(kb):
    items = build_mcq(kb, "anesthesia", 50, 5, 0, seed=6, source="x")
    assert all(len(i.options) == 5 for i in items)
    assert set(Counter(i.answer for i in items).values()) == {10}


def test_open_qa_reference_names_every_gold_entity(kb):
    items = build_qa(kb, "anesthesia", 60, seed=7, source="anesthesia_qa")
    assert len(items) == 60
    for item in items:
        assert item.gold == ([] if item.meta["literal"] else item.meta["objects"])
        for entity in item.meta["objects"]:
            assert entity in item.reference


def test_vignettes_phi_spans_and_answers(kb):
    items = build_vignettes(kb, 30, 3, 4, seed=8)
    assert {i.category for i in items} == {"diagnosis", "treatment", "asa"}
    for item in items:
        assert item.private
        for span in item.phi:
            assert item.context[span["start"]:span["end"]] == span["text"]
        kinds = Counter(s["type"] for s in item.phi)
        assert kinds["NAME"] >= 1 and kinds["ID_NUMBER"] == 1 and kinds["PHONE"] == 1
        id_number = next(s["text"] for s in item.phi if s["type"] == "ID_NUMBER")
        assert zh.id_number_valid(id_number)
        answer = item.options[item.answer]
        assert answer == item.meta["answer_text"]
        if item.category == "diagnosis":
            assert answer == item.meta["complication"]
        if item.category == "treatment":
            assert answer in kb.objects(item.meta["complication"], "药物治疗")
        if item.category == "asa":
            assert answer == item.meta["asa"]


def test_case_demographics_are_consistent(kb):
    items = build_vignettes(kb, 40, 1, 4, seed=9)
    for item in items:
        text = item.context
        if "剖宫产术" in text:
            assert re.search(r"女", text)
        if "前列腺" in text:
            assert re.search(r"男", text)
        id_number = next(s["text"] for s in item.phi if s["type"] == "ID_NUMBER")
        birth = next(s["text"] for s in item.phi if s["type"] == "BIRTH_DATE")
        y, m, d = map(int, re.findall(r"\d+", birth))
        assert id_number[6:14] == f"{y:04d}{m:02d}{d:02d}"


def test_id_number_checksum():
    rng = random.Random(3)
    for _ in range(200):
        p = patients.make_patient(rng)
        assert zh.id_number_valid(p.id_number)
        assert int(p.id_number[16]) % 2 == (1 if p.sex == "男" else 0)
        assert p.birth_date == dt.date(int(p.id_number[6:10]), int(p.id_number[10:12]), int(p.id_number[12:14]))
    good = "11010519491231002X"  # the GB 11643 standard's worked example
    assert zh.id_number_valid(good)
    assert not zh.id_number_valid(good[:-1] + "1")  # wrong check digit
    assert not zh.id_number_valid("110105194913310021")  # month 13
    assert not zh.id_number_valid("1101051949123100")  # too short
