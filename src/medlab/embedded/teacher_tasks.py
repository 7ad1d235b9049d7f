"""The simulated teacher's writers for the tasks no recipe's data held (entity lists, lettered answers, consultations that ask first), and the Draft all writers fill.

Their texts follow from the request alone, so they are exact unless a fault is drawn:

  corpus_ner  the sentence's entities (``meta["entities"]``, the knowledge base's
              annotation) as ``实体|类型`` lines in order of appearance; factual fault:
              one entity given another type of the list
  kg_mcq      the right option's text, then ``答案：<letter>``; factual fault: another
              option, with its letter
  kg_consult  opening sign -> the doctor asks about the complication's other signs by
              name -> the family confirms those the case holds, denies the rest -> the
              doctor names the complication, its measures and drugs; factual fault: a
              drug that does not treat it

The other faults (unsafe, stigma, off-format) are added by the teacher's common
finishing step, as for every task.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from medlab.zh import join_list


@dataclass
class Draft:
    """What the teacher is about to say: free-text parts it may still alter for a fault."""

    parts: list[str]  # answer sentences (or dialogue turns' texts, see ``speakers``)
    speakers: list[str] | None = None  # for dialogues: "患者" / "医生" per part
    question: str | None = None  # for QA formats (None: medlab wrote the question, answer only)
    detail: dict[str, Any] | None = None


class FloorTaskWriters:
    """Mixed into ``SimulatedTeacher``: ``pick`` (a template) and ``alter_objects`` come from there."""

    def pick(self, rng: random.Random, *path: str) -> str:  # pragma: no cover - SimulatedTeacher's
        raise NotImplementedError

    def alter_objects(self, subject: str, predicate: str, objects: list[str], rng: random.Random,
                      fault: str) -> tuple[list[str], dict]:  # pragma: no cover - SimulatedTeacher's
        raise NotImplementedError

    def _corpus_ner(self, meta: dict, rng: random.Random, fault: str) -> Draft:
        entities = [tuple(e) for e in meta["entities"]]
        detail: dict = {}
        if fault == "factual":
            k = rng.randrange(len(entities))
            name, kind = entities[k]
            wrong = rng.choice([t for t in meta["types"] if t != kind])
            entities[k] = (name, wrong)
            detail = {"variant": "wrong_type", "entity": name, "replaced": kind, "with": wrong}
        return Draft(parts=["\n".join(f"{name}|{kind}" for name, kind in entities)], detail=detail)

    def _kg_mcq(self, meta: dict, rng: random.Random, fault: str) -> Draft:
        options, letter = meta["options"], meta["answer"]
        detail: dict = {}
        if fault == "factual":
            wrong = rng.choice([x for x in options if x != letter])
            detail = {"variant": "wrong_option", "replaced": letter, "with": wrong}
            letter = wrong
        return Draft(parts=[self.pick(rng, "mcq_letter", "answer").format(o=options[letter], x=letter)],
                     detail=detail)

    def _kg_consult(self, meta: dict, rng: random.Random, fault: str) -> Draft:
        subject, present, asked = meta["subject"], meta["present"], meta["asked"]
        drugs, detail = list(meta["drugs"]), {}
        if fault == "factual" and drugs:
            drugs, detail = self.alter_objects(subject, "药物治疗", drugs, rng, fault)
        yes = [s for s in asked if s in present]
        no = [s for s in asked if s not in present]
        if yes and no:
            reply = self.pick(rng, "consult", "family_some").format(yes=join_list(yes), no=join_list(no))
        elif yes:
            reply = self.pick(rng, "consult", "family_all").format(yes=join_list(yes))
        else:
            reply = self.pick(rng, "consult", "family_none")
        measure = rng.choice(meta["measures"]) if meta["measures"] else "对症处理"
        conclusion = self.pick(rng, "consult", "doctor_conclude").format(
            signs=join_list([meta["opening"], *yes]), d=subject, measure=measure)
        if drugs:
            conclusion += self.pick(rng, "consult", "doctor_drugs").format(drugs=join_list(drugs))
        turns = [("患者", self.pick(rng, "consult", "family_open").format(sign=meta["opening"])),
                 ("医生", self.pick(rng, "consult", "doctor_ask").format(first=meta["opening"], asked=join_list(asked))),
                 ("患者", reply),
                 ("医生", conclusion + self.pick(rng, "consult", "doctor_close"))]
        return Draft(parts=[t for _, t in turns], speakers=[r for r, _ in turns], detail=detail)
