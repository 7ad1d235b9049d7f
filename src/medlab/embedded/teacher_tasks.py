"""The simulated teacher's exam-format writers (entity lists, lettered answers) and the Draft all writers fill.

The answers of these tasks follow from the request alone, so they are exact unless a
fault is drawn:

  corpus_ner  the sentence's entities (``meta["entities"]``, the knowledge base's
              annotation) as ``实体|类型`` lines in order of appearance; factual fault:
              one entity given another type of the list
  kg_mcq      the right option's text, then ``答案：<letter>``; factual fault: another
              option, with its letter

The other faults (unsafe, stigma, off-format) are added by the teacher's common
finishing step, as for every task.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any


@dataclass
class Draft:
    """What the teacher is about to say: free-text parts it may still alter for a fault."""

    parts: list[str]  # answer sentences (or dialogue turns' texts, see ``speakers``)
    speakers: list[str] | None = None  # for dialogues: "患者" / "医生" per part
    question: str | None = None  # for QA formats (None: medlab wrote the question, answer only)
    detail: dict[str, Any] | None = None


class ExamTaskWriters:
    """Mixed into ``SimulatedTeacher``: ``pick`` (a template) comes from there."""

    def pick(self, rng: random.Random, *path: str) -> str:  # pragma: no cover - SimulatedTeacher's
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
