"""Knowledge base -> held-out benchmarks (MCQ, open QA, case-vignette reading comprehension).

Question wording comes from ``templates.yaml`` in this package, written apart from
the corpus templates and checked by a test to share no 6-character run with them:
a question is never a sentence the model saw in training, only the fact behind it.

* MCQ: one item per (subject, relation) pair; the correct option is one of the true
  objects, distractors are entities of the same type (or literals of the same
  relation) that are *not* true for that subject. Answer positions are balanced
  (each letter correct equally often), so a position-biased model scores chance.
* Open QA: a question and a reference answer listing every true object; ``gold``
  holds the entities a correct answer must name.
* Reading comprehension: synthetic surgical patients ("private hospital cases",
  with fake but realistic PHI and its gold spans) who develop an anaesthetic
  complication; questions ask the diagnosis, the first drug to give and the ASA class.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ruamel.yaml import YAML

from medlab.embedded.benchmark.patients import SLOT_PHI, make_patient
from medlab.knowledge import KnowledgeBase
from medlab.records import McqItem, QaItem
from medlab.seeding import rng as make_rng
from medlab.zh import join_list

LETTERS = "ABCDE"


@dataclass(frozen=True)
class BenchmarkTemplates:
    relations: dict[str, dict[str, list[str]]]  # relation -> {"mcq", "qa", "answer"}
    narratives: list[str]
    questions: dict[str, list[str]]  # diagnosis / treatment / asa -> stems


@lru_cache(maxsize=1)
def load_templates() -> BenchmarkTemplates:
    text = resources.files("medlab.embedded.benchmark").joinpath("templates.yaml").read_text("utf-8")
    raw = YAML(typ="safe").load(text)
    return BenchmarkTemplates(
        relations={rel: {k: list(v) for k, v in spec.items()}
                   for rel, spec in raw["relations"].items()},
        narratives=list(raw["vignette"]["narrative"]),
        questions={k: list(v) for k, v in raw["vignette"]["questions"].items()},
    )


# ---------------------------------------------------------------------- options
def _shared_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def distractors(kb: KnowledgeBase, subject: str, predicate: str, answer: str,
                n: int, rng: random.Random) -> list[str] | None:
    """``n`` wrong options for (subject, predicate), or None if too few exist.

    Entity objects: other entities of the answer's type that are not true objects.
    Literal objects (doses, definitions ...): other subjects' values for the same
    relation, preferring subjects from the same family (ASA vs Mallampati grades,
    found by shared name prefix) so that the wrong options are plausible.
    """
    truths = set(kb.objects(subject, predicate))
    if kb.schema.relations[predicate].literal:
        owners: dict[str, str] = {}
        for t in kb.triples:
            if t.predicate == predicate and t.object not in truths:
                owners.setdefault(t.object, t.subject)
        # Closest family first (longest shared name prefix), ties in random order.
        keys = {v: (-_shared_prefix(owners[v], subject), rng.random()) for v in sorted(owners)}
        chosen = sorted(keys, key=keys.get)[:n]
    else:
        kind = kb.entities[answer].type
        pool = [e for e in kb.of_type(kind) if e not in truths and e != subject]
        chosen = rng.sample(pool, min(n, len(pool)))
    return chosen if len(chosen) == n else None


def arrange(answer: str, wrong: list[str], position: int) -> tuple[dict[str, str], str]:
    """Options dict with the answer at ``position`` (0-based), and its letter."""
    texts = list(wrong)
    texts.insert(position, answer)
    return {LETTERS[i]: text for i, text in enumerate(texts)}, LETTERS[position]


def balanced_positions(count: int, n_options: int, rng: random.Random) -> list[int]:
    positions = [i % n_options for i in range(count)]
    rng.shuffle(positions)
    return positions


# -------------------------------------------------------------------------- MCQ
def mcq_pairs(kb: KnowledgeBase, domain: str) -> list[tuple[str, str]]:
    """(subject, predicate) pairs a question can be asked about, in file order.

    所属科室 is skipped for anesthesia (every complication is filed under 麻醉科).
    """
    pairs: dict[tuple[str, str], None] = {}
    for t in kb.triples:
        if t.domain != domain:
            continue
        if domain == "anesthesia" and t.predicate == "所属科室":
            continue
        pairs.setdefault((t.subject, t.predicate), None)
    return list(pairs)


def build_mcq(kb: KnowledgeBase, domain: str, count: int, n_options: int, dev_items: int,
              seed: int, source: str) -> list[McqItem]:
    rng = make_rng(seed, "benchmark", source)
    templates = load_templates()
    pairs = mcq_pairs(kb, domain)
    rng.shuffle(pairs)
    items: list[McqItem] = []
    positions = balanced_positions(min(count, len(pairs)), n_options, rng)
    for subject, predicate in pairs:
        if len(items) == len(positions):
            break
        answer = rng.choice(kb.objects(subject, predicate))
        wrong = distractors(kb, subject, predicate, answer, n_options - 1, rng)
        if wrong is None:
            continue
        k = rng.randrange(len(templates.relations[predicate]["mcq"]))
        options, letter = arrange(answer, wrong, positions[len(items)])
        triple = next(t for t in kb.facts(subject) if t.predicate == predicate and t.object == answer)
        items.append(McqItem(
            id=f"{source}-{len(items):04d}", source=source,
            question=templates.relations[predicate]["mcq"][k].format(s=subject),
            options=options, answer=letter,
            category=triple.department if domain == "general" else predicate,
            split="dev" if len(items) < dev_items else "test",
            meta={"subject": subject, "predicate": predicate, "answer_text": answer,
                  "triple_id": triple.id, "domain": domain},
            provenance={"method": "kb_template", "template": f"mcq/{predicate}/{k}"},
        ))
    return items


# ---------------------------------------------------------------------- open QA
def build_qa(kb: KnowledgeBase, domain: str, count: int, seed: int, source: str) -> list[QaItem]:
    rng = make_rng(seed, "benchmark", source)
    templates = load_templates()
    pairs = mcq_pairs(kb, domain)
    rng.shuffle(pairs)
    items = []
    for subject, predicate in pairs[:count]:
        objects = kb.objects(subject, predicate)
        spec = templates.relations[predicate]
        q, a = rng.randrange(len(spec["qa"])), rng.randrange(len(spec["answer"]))
        literal = kb.schema.relations[predicate].literal
        items.append(QaItem(
            id=f"{source}-{len(items):04d}", source=source,
            question=spec["qa"][q].format(s=subject),
            reference=spec["answer"][a].format(s=subject, o=join_list(objects)),
            category=predicate, gold=[] if literal else objects,
            meta={"subject": subject, "predicate": predicate, "literal": literal,
                  "objects": objects, "domain": domain},
            provenance={"method": "kb_template", "template": f"qa/{predicate}/{q}+{a}"},
        ))
    return items


# ------------------------------------------------------------- case vignettes
# Pre-operative status -> ASA class. Our own paraphrases of the ASA definitions, so
# the question tests knowledge of the classification, not string matching.
ASA_CASES = [
    ("ASA I级", "既往体健，否认慢性病史", "麻醉前访视未发现任何系统性疾病"),
    ("ASA I级", "平素身体健康，无吸烟饮酒史", "术前检查结果均在正常范围"),
    ("ASA II级", "高血压病史5年，口服药物后血压控制平稳", "患者有轻度系统性疾病，日常活动不受影响"),
    ("ASA II级", "2型糖尿病，饮食及口服药控制良好，无靶器官损害", "全身情况尚好，仅有轻度系统性疾病"),
    ("ASA III级", "慢性阻塞性肺疾病，平地行走百米即感气促", "系统性疾病较重，已明显限制日常活动"),
    ("ASA III级", "病态肥胖，体重指数42，合并睡眠呼吸暂停", "合并严重系统性疾病，活动能力受限"),
    ("ASA IV级", "两个月前发生急性心肌梗死，目前仍有静息时胸痛", "系统性疾病持续威胁生命"),
    ("ASA IV级", "重度心力衰竭，射血分数约20%，端坐呼吸", "全身状况极差，疾病随时危及生命"),
    ("ASA V级", "腹主动脉瘤破裂，入室时血压测不出", "病情危重，不手术预计难以存活"),
]
# (operation, sex it applies to or None, youngest, oldest age) — keeps cases plausible.
SURGERIES = [
    ("腹腔镜胆囊切除术", None, 25, 85), ("全髋关节置换术", None, 50, 85),
    ("甲状腺次全切除术", None, 20, 70), ("剖宫产术", "女", 20, 42),
    ("经尿道前列腺电切术", "男", 55, 85), ("腹腔镜阑尾切除术", None, 18, 70),
    ("乳腺癌改良根治术", "女", 30, 80), ("腰椎后路减压融合术", None, 35, 80),
    ("腹股沟疝修补术", None, 18, 85), ("胃癌根治术", None, 40, 85),
    ("膝关节置换术", None, 50, 85), ("肩关节镜手术", None, 18, 70),
]
GENERAL_ANESTHESIA = ["丙泊酚", "芬太尼", "罗库溴铵"]
NEURAXIAL = ["布比卡因"]


def _render_with_spans(template: str, values: dict[str, str]) -> tuple[str, list[dict]]:
    """Format ``template`` and record where each PHI slot's value landed."""
    out, spans, cursor = [], [], 0
    for literal, field, _, _ in string.Formatter().parse(template):
        out.append(literal)
        cursor += len(literal)
        if field is None:
            continue
        value = values[field]
        if field in SLOT_PHI:
            spans.append({"type": SLOT_PHI[field], "start": cursor,
                          "end": cursor + len(value), "text": value})
        out.append(value)
        cursor += len(value)
    return "".join(out), spans


def complications(kb: KnowledgeBase) -> list[str]:
    """Anesthesia diseases with at least two signs: the cases' possible diagnoses."""
    return [s for s in kb.subjects("anesthesia")
            if kb.entities[s].type == "疾病" and len(kb.objects(s, "临床表现")) >= 2]


def _anesthesia_drugs(kb: KnowledgeBase, complication: str) -> list[str]:
    triggers = [o for o in kb.objects(complication, "高危因素") if kb.entities[o].type == "药物"]
    neuraxial = any(word in complication for word in ("椎管内", "硬膜", "脊髓"))
    base = NEURAXIAL if neuraxial else GENERAL_ANESTHESIA
    return list(dict.fromkeys([*base, *triggers]))


def build_vignettes(kb: KnowledgeBase, n_cases: int, questions_per_case: int, n_options: int,
                    seed: int, source: str = "anesthesia_rc") -> list[McqItem]:
    rng = make_rng(seed, "benchmark", source)
    templates = load_templates()
    diseases = complications(kb)
    drugs = [d for d in kb.subjects("anesthesia") if kb.entities[d].type == "药物"]
    grades = [g for g in kb.subjects("anesthesia") if g.startswith("ASA ")]
    items: list[McqItem] = []
    for case in range(n_cases):
        disease = diseases[case % len(diseases)]
        signs = kb.objects(disease, "临床表现")
        shown = rng.sample(signs, min(len(signs), rng.randint(2, 4)))
        grade, history, hint = rng.choice(ASA_CASES)
        surgery, sex, youngest, oldest = rng.choice(SURGERIES)
        patient = make_patient(rng, min_age=youngest, max_age=oldest, sex=sex)
        values = {**patient.fields(), "surgery": surgery, "comorbidity": history,
                  "asa_hint": hint, "drugs": join_list(_anesthesia_drugs(kb, disease)),
                  "findings": join_list(shown)}
        narrative = rng.choice(templates.narratives)
        context, spans = _render_with_spans(narrative, values)
        # Diagnoses whose signs include everything shown would also be right: exclude them.
        other = [d for d in diseases if d != disease
                 and not set(shown) <= set(kb.objects(d, "临床表现"))]
        treatments = kb.objects(disease, "药物治疗")
        questions: list[tuple[str, str, list[str]]] = [("diagnosis", disease, other)]
        if treatments:
            answer = rng.choice(treatments)
            questions.append(("treatment", answer, [d for d in drugs if d not in treatments]))
        if grade in grades:
            questions.append(("asa", grade, [g for g in grades if g != grade]))
        for kind, answer, pool in questions[:questions_per_case]:
            if len(pool) < n_options - 1:
                continue
            wrong = rng.sample(sorted(pool), n_options - 1)
            options, letter = arrange(answer, wrong, rng.randrange(n_options))
            stem = rng.choice(templates.questions[kind])
            items.append(McqItem(
                id=f"{source}-{case:04d}-{kind}", source=source, question=stem,
                options=options, answer=letter, category=kind, split="test",
                context=context, private=True, phi=spans,
                meta={"case": f"{source}-{case:04d}", "question_type": kind,
                      "answer_text": answer, "complication": disease, "asa": grade},
                provenance={"method": "synthetic_case", "narrative": templates.narratives.index(narrative)},
            ))
    return items


def summary(items: Iterable[McqItem | QaItem]) -> dict:
    items = list(items)
    out: dict = {"n": len(items)}
    if items and isinstance(items[0], McqItem):
        out["n_test"] = sum(i.split == "test" for i in items)
        out["n_options"] = len(items[0].options)
        out["chance"] = 1.0 / len(items[0].options)
        letters: dict[str, int] = {}
        for i in items:
            letters[i.answer] = letters.get(i.answer, 0) + 1
        out["answer_letters"] = dict(sorted(letters.items()))
    return out
