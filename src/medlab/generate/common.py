"""From teacher completions to samples: parsing, provenance, ground truth, rejects."""

from __future__ import annotations

from typing import Any

from medlab.generate.parse import ParseError, parse_answer, parse_dialogue, parse_qa
from medlab.generate.prompts import Prompt
from medlab.llm.base import ChatRequest, Completion, Decoding
from medlab.records import Rejected, Sample

# Knowledge-base domains -> dataset domains.
DATASET_DOMAIN = {"general": "general_medicine", "anesthesia": "anesthesia"}


def make_request(prompt: Prompt, slots: dict[str, Any], decoding: Decoding, meta: dict[str, Any]) -> ChatRequest:
    """A request whose meta records the prompt's identity next to the task's source."""
    return ChatRequest.of(prompt.messages(**slots), decoding, {**meta, "prompt": prompt.provenance()})


def provenance(method: str, teacher: str, meta: dict[str, Any]) -> dict[str, Any]:
    source = {k: meta[k] for k in ("subject", "predicate", "triple_ids", "group", "file") if k in meta}
    return {"method": method, "teacher": teacher, **meta["prompt"], "source_id": meta["source_id"],
            "source": source}


def to_messages(fmt: str, text: str, question: str | None = None) -> list[dict[str, str]]:
    """The chat a completion becomes: ``qa`` and ``dialogue`` as the teacher wrote them; ``answer``:
    the question medlab wrote (``question``, an exam-format task) and the teacher's answer."""
    if fmt == "answer":
        return [{"role": "user", "content": question}, {"role": "assistant", "content": parse_answer(text)}]
    if fmt == "qa":
        question, answer = parse_qa(text)
        return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    if fmt == "dialogue":
        return parse_dialogue(text)
    raise ValueError(f"unknown output format {fmt!r}")


def collect(method: str, teacher: str, requests: list[ChatRequest], completions: list[Completion],
            ) -> tuple[list[Sample], list[Rejected]]:
    """Parse every completion; what does not parse becomes a Rejected with the reason."""
    samples, rejected = [], []
    for request, completion in zip(requests, completions, strict=True):
        meta = request.meta
        prov = provenance(method, teacher, meta)
        try:
            messages = to_messages(meta["format"], completion.text, meta.get("question"))
        except ParseError as exc:
            rejected.append(Rejected(id=f"{method}-rejected-{len(rejected):05d}", source=method, method=method,
                                     reason=f"unparseable: {exc}", output=completion.text,
                                     provenance=prov, truth=completion.truth))
            continue
        samples.append(Sample(id=f"{method}-{len(samples):05d}", source=method, domain=meta["domain"],
                              messages=messages, provenance=prov, truth=completion.truth))
    return samples, rejected


def teacher_name(backend) -> str:
    return f"{backend.name}:{backend.model}"
