"""The SIMULATED TEACHER: a stand-in for an LLM teacher, built from the knowledge base.

It is not a language model. It answers each generation request of the generate stage
from the request's ``meta`` (the task and its source: facts, paragraph, dialogue, MCQ)
in the output format the prompt asks for, writing with phrasing templates
(``teacher_templates.yaml``) that share no wording with the benchmark. It deliberately
injects faults at configured rates, and returns what it did as ground truth with every
completion, so that filters and bias probes can be *validated* against known labels:

  factual     a wrong object of the right type (or a wrong literal of the same relation)
  unsafe      a tenfold dose, a contraindicated drug declared safe, or dangerous advice
  off_format  meta chatter, adverts with URLs/phones, truncation, repetition loops,
              or missing format markers (unparseable)
  stigma      a dismissive or discriminatory statement about the configured patient group

At most one fault per sample. Draws are seeded per request, so the same request always
gets the same answer (and caching changes nothing).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from functools import lru_cache
from importlib import resources
from typing import Any

from ruamel.yaml import YAML

from medlab.cachekey import code_hash
from medlab.embedded.teacher_tasks import Draft, FloorTaskWriters
from medlab.knowledge import KnowledgeBase
from medlab.llm.base import ChatRequest, Completion
from medlab.patient_groups import load_groups
from medlab.zh import join_list

FAULTS = ("factual", "unsafe", "off_format", "stigma")
OFF_FORMAT_VARIANTS = ("ai_chatter", "advert", "truncated", "repetition", "missing_markers")


@lru_cache(maxsize=1)
def load_teacher_templates() -> dict[str, Any]:
    text = resources.files("medlab.embedded").joinpath("teacher_templates.yaml").read_text("utf-8")
    return YAML(typ="safe").load(text)


class SimulatedTeacher(FloorTaskWriters):
    """Backend ``simulated``: see the module docstring. Embedded mode only. The writers of
    ``corpus_ner``, ``kg_mcq`` and ``kg_consult`` are in ``teacher_tasks``."""

    name = "simulated"
    batch_size = 512

    def __init__(self, kb: KnowledgeBase, faults: dict[str, float], stigma_group: str, seed: int):
        unknown = set(faults) - set(FAULTS)
        if unknown or sum(faults.values()) > 1:
            raise ValueError(f"fault rates must be among {FAULTS} and sum to <= 1, got {faults}")
        self.kb, self.faults, self.seed = kb, dict(faults), seed
        self.groups = load_groups()
        if stigma_group not in self.groups:
            raise ValueError(f"unknown stigma group {stigma_group!r} (known: {', '.join(self.groups)})")
        self.stigma_group = stigma_group
        self.t = load_teacher_templates()
        kb_digest = hashlib.sha256("".join(sorted(t.id for t in kb.triples)).encode()).hexdigest()
        config = json.dumps([self.faults, stigma_group, seed, kb_digest,
                             json.dumps(self.t, sort_keys=True, ensure_ascii=False),
                             code_hash("medlab.embedded.teacher")], sort_keys=True)
        # Everything that changes the output is in the model id, hence in the cache key:
        # its settings, the knowledge base, the templates and its code (this module and all
        # it imports), so an edited teacher is never answered from an older call cache.
        self.model = "simulated-teacher-v1:" + hashlib.sha256(config.encode()).hexdigest()[:12]
        # entity names, longest first, for finding entities in free text (rewrite, MCQ)
        self._names = sorted((n for n, e in kb.entities.items() if len(n) >= 2), key=len, reverse=True)

    # ------------------------------------------------------------------ interface
    def generate(self, requests: list[ChatRequest]) -> list[Completion]:
        return [self._complete(r) for r in requests]

    def _complete(self, request: ChatRequest) -> Completion:
        digest = hashlib.sha256(json.dumps(request.messages, ensure_ascii=False).encode()).hexdigest()
        rng = random.Random(f"{self.seed}:{digest}")
        task = request.meta["task"]
        if task == "self_instruct":
            text, truth = self._self_instruct(request.meta, rng)
        else:
            fault = self.draw_fault(rng)
            writer = getattr(self, f"_{task}")
            draft = writer(request.meta, rng, fault)
            text, truth = self._finish(draft, request.meta, rng, fault)
        return Completion(text=text, truth=truth)

    def draw_fault(self, rng: random.Random) -> str:
        u, acc = rng.random(), 0.0
        for fault in FAULTS:
            acc += self.faults.get(fault, 0.0)
            if u < acc:
                return fault
        return "none"

    # ------------------------------------------------------------------ helpers
    def pick(self, rng: random.Random, *path: str) -> str:
        node: Any = self.t
        for key in path:
            node = node[key]
        return rng.choice(node)

    def wrong_object(self, subject: str, predicate: str, answer: str, rng: random.Random) -> str | None:
        """A false object for (subject, predicate): same entity type, or a literal of the relation."""
        truths = set(self.kb.objects(subject, predicate))
        if self.kb.schema.relations[predicate].literal:
            pool = [v for v in self.kb.literals(predicate) if v not in truths]
        else:
            kind = self.kb.entities[answer].type
            pool = [e for e in self.kb.of_type(kind) if e not in truths and e != subject]
        return rng.choice(pool) if pool else None

    def fact_sentence(self, subject: str, predicate: str, objects: list[str], rng: random.Random) -> str:
        return self.pick(rng, "qa", predicate, "answer").format(s=subject, o=join_list(objects))

    def false_fact(self, rng: random.Random) -> tuple[str, dict]:
        """A stand-alone false statement about a random subject (when nothing else can be altered)."""
        t = rng.choice(self.kb.triples)
        wrong = self.wrong_object(t.subject, t.predicate, t.object, rng)
        return (self.fact_sentence(t.subject, t.predicate, [wrong], rng),
                {"variant": "false_statement", "subject": t.subject, "predicate": t.predicate,
                 "replaced": t.object, "with": wrong})

    @staticmethod
    def persona_text(text: str, persona: str) -> str:
        """Templates read "我{persona}，…"; without a persona, "我，最近…" becomes "我最近…"."""
        return text if persona else text.replace("我，", "我", 1)

    def entities_in(self, text: str) -> list[str]:
        found, rest = [], text
        for name in self._names:
            if name in rest:
                found.append(name)
                rest = rest.replace(name, "\0")
        return found

    # ------------------------------------------------------------- fault finishing
    def _finish(self, draft: Draft, meta: dict, rng: random.Random, fault: str) -> tuple[str, dict]:
        detail = dict(draft.detail or {})
        parts = list(draft.parts)
        last = len(parts) - 1  # faults that add text go to the (last) answer / doctor turn
        if fault == "unsafe" and not detail.get("variant"):
            sentence, info = self.unsafe_sentence(meta, rng)
            parts[last] = parts[last] + sentence
            detail.update(info)
        elif fault == "stigma":
            group = self.groups[self.stigma_group]
            parts[last] = parts[last] + self.pick(rng, "faults", "stigma").format(g=group.label)
            detail.update({"variant": "statement", "group": self.stigma_group})
        elif fault == "factual" and not detail.get("variant"):
            sentence, info = self.false_fact(rng)
            parts[last] = parts[last] + sentence
            detail.update(info)
        markers = True
        if fault == "off_format":
            variant = rng.choice(OFF_FORMAT_VARIANTS)
            detail["variant"] = variant
            text = parts[last]
            if variant == "ai_chatter":
                parts[last] = self.pick(rng, "faults", "ai_chatter") + text
            elif variant == "advert":
                parts[last] = text + self.pick(rng, "faults", "advert")
            elif variant == "truncated":
                parts[last] = text[:max(4, int(len(text) * rng.uniform(0.2, 0.5)))]
            elif variant == "repetition":
                sentences = [s for s in re.split(r"(?<=。)", text) if s]
                parts[last] = text + sentences[0] * rng.randint(4, 7)
            else:
                markers = False
        return self.render(draft, parts, markers), {"fault": fault, **detail}

    def render(self, draft: Draft, parts: list[str], markers: bool) -> str:
        if draft.speakers is not None:
            prefix = (lambda s: f"{s}：") if markers else (lambda s: "")
            return "\n".join(prefix(s) + p for s, p in zip(draft.speakers, parts, strict=True))
        answer = "".join(parts)
        if draft.question is None:  # an exam-format task: medlab wrote the question, the teacher answers
            return f"回答：{answer}" if markers else answer
        if markers:
            return f"问题：{draft.question}\n回答：{answer}"
        return f"{draft.question}\n{answer}"

    def unsafe_sentence(self, meta: dict, rng: random.Random) -> tuple[str, dict]:
        """Dangerous content to add: a contraindicated use if one is known, else unsafe advice."""
        subject = meta.get("subject")
        if subject and self.kb.objects(subject, "禁忌症"):
            condition = rng.choice(self.kb.objects(subject, "禁忌症"))
            return (self.pick(rng, "faults", "contraindicated").format(c=condition, drug=subject),
                    {"variant": "contraindicated", "drug": subject, "condition": condition})
        return self.pick(rng, "faults", "unsafe_advice"), {"variant": "unsafe_advice"}

    @staticmethod
    def tenfold(dose: str) -> str:
        """'1.5～2.5 mg/kg' -> '15～25 mg/kg': every number times ten."""
        return re.sub(r"\d+(?:\.\d+)?", lambda m: f"{float(m.group()) * 10:g}", dose)

    def alter_objects(self, subject: str, predicate: str, objects: list[str], rng: random.Random,
                      fault: str) -> tuple[list[str], dict]:
        """Objects as the teacher states them: one replaced (factual) or a dose x10 (unsafe)."""
        if fault == "factual":
            k = rng.randrange(len(objects))
            wrong = self.wrong_object(subject, predicate, objects[k], rng)
            if wrong is not None:
                altered = list(objects)
                altered[k] = wrong
                return altered, {"variant": "wrong_object", "subject": subject, "predicate": predicate,
                                 "replaced": objects[k], "with": wrong}
        if fault == "unsafe" and predicate == "用法用量" and re.search(r"\d", objects[0]):
            return [self.tenfold(objects[0])], {"variant": "tenfold_dose", "subject": subject,
                                                "replaced": objects[0]}
        return list(objects), {}

    # ------------------------------------------------------------------ task writers
    def _kg_qa(self, meta: dict, rng: random.Random, fault: str) -> Draft:
        s, p = meta["subject"], meta["predicate"]
        objects, detail = self.alter_objects(s, p, meta["objects"], rng, fault)
        parts = [self.fact_sentence(s, p, objects, rng)]
        for extra in meta.get("context", [])[:1]:  # sometimes one more fact, for fuller answers
            if rng.random() < 0.5:
                parts.append(self.fact_sentence(s, extra["predicate"], extra["objects"], rng))
        return Draft(parts=parts, question=self.pick(rng, "qa", p, "question").format(s=s), detail=detail)

    def _corpus_to_instruction(self, meta: dict, rng: random.Random, fault: str) -> Draft:
        s = meta["subject"]
        facts = [t for t in self.kb.facts(s) if t.id in set(meta["triple_ids"])]
        by_relation: dict[str, list[str]] = {}
        for t in facts:
            by_relation.setdefault(t.predicate, []).append(t.object)
        relations = list(by_relation)
        target = rng.choice(relations) if fault in ("factual", "unsafe") else None
        detail: dict = {}
        parts = [self.pick(rng, "corpus_instruction", "answer_opening").format(s=s)]
        for p in relations:
            objects = by_relation[p]
            if p == target:
                objects, detail = self.alter_objects(s, p, objects, rng, fault)
            parts.append(self.fact_sentence(s, p, objects, rng))
        return Draft(parts=["".join(parts)],
                     question=self.pick(rng, "corpus_instruction", "question").format(s=s), detail=detail)

    def _kg_dialogue(self, meta: dict, rng: random.Random, fault: str) -> Draft:
        s, kind = meta["subject"], self.kb.entities[meta["subject"]].type
        persona = meta.get("persona", "")
        detail: dict = {}
        turns: list[tuple[str, str]]
        if kind == "疾病" and meta["kb_domain"] == "general":
            symptoms = rng.sample(self.kb.objects(s, "临床表现"), min(3, len(self.kb.objects(s, "临床表现"))))
            exams = self.kb.objects(s, "辅助检查")
            drugs = self.kb.objects(s, "药物治疗")
            if fault in ("factual", "unsafe"):
                drugs, detail = self.alter_objects(s, "药物治疗", drugs, rng, fault)
            diagnosis = self.pick(rng, "dialogue", "doctor_diagnosis").format(
                d=s, exams=join_list(exams), drugs=join_list(drugs))
            if self.kb.objects(s, "并发症") and rng.random() < 0.5:
                diagnosis += self.pick(rng, "dialogue", "doctor_complication").format(
                    d=s, c=join_list(self.kb.objects(s, "并发症")))
            k = rng.randrange(len(self.t["dialogue"]["doctor_ask"]))  # reply k answers question k
            turns = [("患者", self.persona_text(self.pick(rng, "dialogue", "patient_symptoms").format(
                         persona=persona, symptoms=join_list(symptoms)), persona)),
                     ("医生", self.t["dialogue"]["doctor_ask"][k]),
                     ("患者", self.t["dialogue"]["patient_reply"][k]),
                     ("医生", diagnosis + self.pick(rng, "dialogue", "doctor_closing"))]
        elif kind == "疾病":  # an anaesthetic complication after surgery
            signs = self.kb.objects(s, "临床表现")
            shown = rng.sample(signs, min(3, len(signs)))
            drugs = self.kb.objects(s, "药物治疗") or ["对症处理"]
            if fault in ("factual", "unsafe") and self.kb.objects(s, "药物治疗"):
                drugs, detail = self.alter_objects(s, "药物治疗", drugs, rng, fault)
            turns = [("患者", self.persona_text(self.pick(rng, "dialogue", "patient_postop").format(
                         persona=persona, symptoms=join_list(shown)), persona)),
                     ("医生", self.pick(rng, "dialogue", "doctor_postop").format(d=s, drugs=join_list(drugs))
                      + self.pick(rng, "dialogue", "doctor_closing"))]
        elif kind == "药物":
            effects = self.kb.objects(s, "不良反应")
            uses = self.kb.objects(s, "适应症")
            if fault == "factual":
                effects, detail = self.alter_objects(s, "不良反应", effects, rng, fault)
            turns = [("患者", self.persona_text(
                         self.pick(rng, "dialogue", "patient_drug").format(persona=persona, s=s), persona)),
                     ("医生", self.pick(rng, "dialogue", "doctor_drug").format(
                         s=s, o=join_list(effects), use=join_list(uses)))]
        elif kind == "食物":
            duration = self.kb.objects(s, "禁食时间")
            if fault == "factual":
                duration, detail = self.alter_objects(s, "禁食时间", duration, rng, fault)
            turns = [("患者", self.persona_text(
                         self.pick(rng, "dialogue", "patient_fasting").format(persona=persona, s=s), persona)),
                     ("医生", self.pick(rng, "dialogue", "doctor_fasting").format(s=s, o=duration[0]))]
        else:
            raise ValueError(f"no dialogue for a {kind} ({s})")
        return Draft(parts=[t for _, t in turns], speakers=[r for r, _ in turns], detail=detail)

    def _dialogue_rewrite(self, meta: dict, rng: random.Random, fault: str) -> Draft:
        turns = [list(t) for t in meta["turns"]]
        doctor = [k for k, (speaker, _) in enumerate(turns) if speaker == "doctor"]
        detail: dict = {}
        if fault == "factual":
            k = rng.choice(doctor)
            names = [n for n in self.entities_in(turns[k][1]) if self.kb.entities[n].type in
                     ("药物", "检查", "疾病", "症状")]
            if names:
                name = rng.choice(names)
                pool = [e for e in self.kb.of_type(self.kb.entities[name].type) if e != name]
                wrong = rng.choice(pool)
                turns[k][1] = turns[k][1].replace(name, wrong)
                detail = {"variant": "wrong_entity", "replaced": name, "with": wrong}
        if fault == "unsafe":
            k = rng.choice(doctor)
            if re.search(r"\d+(?:\.\d+)?\s*(mg|g|ml|μg|毫克|克)", turns[k][1]):
                turns[k][1] = re.sub(r"\d+(?:\.\d+)?(?=\s*(mg|g|ml|μg|毫克|克))",
                                     lambda m: f"{float(m.group()) * 10:g}", turns[k][1])
                detail = {"variant": "tenfold_dose"}
        first, last = doctor[0], doctor[-1]
        for k in doctor:
            text = turns[k][1]
            if k == first:
                empathy = [e for e in self.t["rewrite"]["empathy"]  # surgery talk only for anesthesia
                           if meta["domain"] == "anesthesia" or not ("手术" in e or "麻醉" in e)]
                text = self.pick(rng, "rewrite", "greeting") + rng.choice(empathy) + text
            if k == last:
                text = text + self.pick(rng, "rewrite", "closing")
            turns[k][1] = text
        roles = ["患者" if speaker == "patient" else "医生" for speaker, _ in turns]
        # faults that add text must land in the last doctor turn: make it the last part
        turns, roles = turns[:last + 1], roles[:last + 1]
        return Draft(parts=[t for _, t in turns], speakers=roles, detail=detail)

    def _mcq_to_qa(self, meta: dict, rng: random.Random, fault: str) -> Draft:
        options, answer = meta["options"], meta["answer"]
        detail: dict = {}
        stated = options[answer[0]]
        if fault == "factual":
            wrong = [k for k in options if k not in answer]
            letter = rng.choice(wrong)
            stated = options[letter]
            detail = {"variant": "wrong_option", "replaced": options[answer[0]], "with": stated}
        parts = [self.pick(rng, "mcq_answer", "verdict").format(a=stated)]
        for name in self.entities_in(meta["question"] + options[answer[0]]):
            facts = self.kb.facts(name)
            if facts:
                t = rng.choice(facts)
                parts.append(self.pick(rng, "mcq_answer", "reason_opening")
                             + self.fact_sentence(t.subject, t.predicate, [t.object], rng))
                break
        question = re.sub(r"[（(]\s*[)）]\s*$", "", meta["question"]).strip()
        return Draft(parts=["".join(parts)], question=question, detail=detail)

    def _self_instruct(self, meta: dict, rng: random.Random) -> tuple[str, dict]:
        """n new tasks about facts of the requested domain; one fault draw per task."""
        subjects = self.kb.subjects(meta["kb_domain"])
        blocks, truths = [], []
        for k in range(meta["n"]):
            s = rng.choice(subjects)
            facts = self.kb.facts(s)
            p = rng.choice(sorted({t.predicate for t in facts}))
            objects = self.kb.objects(s, p)
            fault = self.draw_fault(rng)
            instruction = self.pick(rng, "self_instruct", "instruction").format(s=s, r=p)
            objects, detail = self.alter_objects(s, p, objects, rng, fault)
            answer = Draft(parts=[self.fact_sentence(s, p, objects, rng)
                                  + self.pick(rng, "self_instruct", "answer_closing")],
                           question=instruction, detail=detail)
            text, truth = self._finish(answer, {"subject": s}, rng, fault)
            text = text.replace("问题：", "指令：", 1)
            blocks.append(f"任务{k + 1}\n{text}")
            truths.append({**truth, "instruction": instruction, "subject": s, "predicate": p,
                           "triple_ids": [t.id for t in facts if t.predicate == p]})
        return "\n\n".join(blocks), {"tasks": truths}
