"""Preference pairs for a DPO stage: chosen = a kept sample, rejected = a rejected one.

A sample the filter rejected (by a rule or the judge; not duplicates or contamination,
which say nothing about quality) is paired with a kept sample for the same instruction,
or else for the same fact (subject and relation of its source). The prompt is the
rejected sample's conversation up to its last answer. Pairs are built from the filter's
decisions only; the simulator's ground truth is recorded beside them, to measure how
often the "rejected" side really is the faulty one.
"""

from __future__ import annotations

import random

from medlab.records import PreferencePair, Sample


def fact_key(sample: Sample) -> tuple | None:
    source = sample.provenance.get("source") or {}
    if source.get("subject") and source.get("predicate"):
        return (source["subject"], source["predicate"])
    return None


def prompt_key(sample: Sample) -> str:
    return "\n".join(m["content"] for m in sample.messages[:-1])


def build_pairs(kept: list[Sample], rejected: list[tuple[Sample, str]], max_pairs: int, seed: int,
                ) -> list[PreferencePair]:
    by_prompt: dict[str, list[Sample]] = {}
    by_fact: dict[tuple, list[Sample]] = {}
    for sample in kept:
        by_prompt.setdefault(prompt_key(sample), []).append(sample)
        if (key := fact_key(sample)) is not None:
            by_fact.setdefault(key, []).append(sample)
    rng = random.Random(seed)
    pairs = []
    for sample, reason in rejected:
        if sample.messages[-1]["role"] != "assistant":
            continue
        same_prompt = by_prompt.get(prompt_key(sample))
        candidates, match = (same_prompt, "instruction") if same_prompt else (by_fact.get(fact_key(sample)), "fact")
        if not candidates:
            continue
        chosen = candidates[rng.randrange(len(candidates))]
        pairs.append(PreferencePair(
            id=f"pair-{len(pairs):05d}", source="filter", prompt=sample.messages[:-1],
            chosen=chosen.messages[-1]["content"], rejected=sample.messages[-1]["content"],
            provenance={"chosen_id": chosen.id, "rejected_id": sample.id, "match": match,
                        "rejected_because": reason, "domain": sample.domain},
            truth={"chosen_fault": (chosen.truth or {}).get("fault"),
                   "rejected_fault": (sample.truth or {}).get("fault")}))
        if len(pairs) >= max_pairs:
            break
    return pairs
