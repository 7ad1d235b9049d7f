"""Medical entity extraction by generation (ChiMed-GPT's NER task): items, prompt, parser, micro-F1.

An item is a sentence with its gold (entity, type) pairs. The model is asked to list
the entities one per line as ``实体|类型``; the parser also accepts ``实体（类型）`` and
``类型：实体1，实体2`` lines. Micro-F1 counts (entity, type) pairs over the whole set:
a right entity with the wrong type is both a false positive and a false negative.

Sources:

* ``kb_sentences``: our own small set — sentences no model trained on (reference answers
  of the QA benchmark, then held-out corpus paragraphs; ``medlab.evaluate.run.ner_sentences``)
  annotated by longest match against the knowledge base's entity names, which is exact
  here because the sentences were rendered from those names;
* ``cmeee``: CMeEE / CMeEE-V2 JSON (``[{text, entities: [{start_idx, end_idx, type, entity}]}]``);
* ``promptcblue``: PromptCBLUE JSONL NER items (``{input, target, task_type: "ner"}``,
  target lines ``上述句子中的疾病实体：甲，乙`` or ``...：无``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medlab.formats import FormatError
from medlab.formats.text import iter_json_array, iter_json_lines

TYPES = ("疾病", "药物", "症状", "检查")  # the KB types asked for in our set
CMEEE_TYPES = {"dis": "疾病", "sym": "症状", "dru": "药物", "equ": "医疗设备", "pro": "医疗程序",
               "bod": "身体", "ite": "检查", "mic": "微生物类", "dep": "科室"}
PROMPT = ("请从下面的句子中抽取医学实体，每行写一个，格式为“实体|类型”，类型只能是{types}之一；"
          "没有实体就回答“无”。\n句子：{text}")


@dataclass(frozen=True)
class NerItem:
    id: str
    text: str
    gold: frozenset[tuple[str, str]]
    types: tuple[str, ...] = TYPES
    meta: dict = field(default_factory=dict, compare=False, hash=False)


def prompt(item: NerItem) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPT.format(types="、".join(item.types), text=item.text)}]


_PIPE = re.compile(r"^\s*(?:\d+[.、)]\s*|[-*•]\s*)?(.+?)\s*[|｜]\s*(.+?)\s*$")
_PAREN = re.compile(r"^\s*(?:\d+[.、)]\s*|[-*•]\s*)?(.+?)\s*[（(]\s*(.+?)\s*[)）]\s*$")
_LIST = re.compile(r"^\s*(?:上述句子中的)?(.+?)(?:实体)?\s*[:：]\s*(.+?)\s*$")


def parse_entities(text: str, types: Sequence[str] = TYPES) -> set[tuple[str, str]]:
    """(entity, type) pairs in a generated answer; unknown types are dropped."""
    found = set()
    for line in text.replace("<|end|>", "").splitlines():
        line = line.strip().rstrip("。；;")
        if not line or line == "无":
            continue
        for pattern in (_PIPE, _PAREN):
            m = pattern.match(line)
            if m and m.group(2) in types:
                found.add((m.group(1).strip(), m.group(2)))
                break
        else:
            m = _LIST.match(line)
            if m and m.group(1) in types:
                for name in re.split(r"[，,、；;]", m.group(2)):
                    if name.strip() and name.strip() != "无":
                        found.add((name.strip(), m.group(1)))
    return found


def micro_f1(gold: Iterable[set], predicted: Iterable[set]) -> dict[str, float]:
    """Micro precision / recall / F1 over (entity, type) pairs, summed over items."""
    tp = fp = fn = 0
    for g, p in zip(gold, predicted, strict=True):
        tp += len(g & p)
        fp += len(p - g)
        fn += len(g - p)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def micro_f1_of_counts(counts) -> float:
    """Micro-F1 from per-item rows of (true positives, predicted, gold): 2 TP / (P + G).
    The form bootstraps resample (rows), shared by the NER task and the paired comparison."""
    import numpy as np

    tp, n_pred, n_gold = np.asarray(counts, dtype=float).reshape(-1, 3).sum(0)
    return float(2 * tp / (n_pred + n_gold)) if n_pred + n_gold else 0.0


def kb_sentences(kb, sentences: Iterable[tuple[str, str]], limit: int) -> list[NerItem]:
    """Our NER set: ``(id, sentence)`` pairs annotated against the KB (``KnowledgeBase.mentions``,
    the annotation the generate stage's ``corpus_ner`` data uses too); sentences with an entity."""
    items = []
    for sid, text in sentences:
        gold = kb.mentions(text, TYPES)
        if gold:
            items.append(NerItem(sid, text, frozenset(gold)))
        if len(items) >= limit:
            break
    return items


def load_cmeee(path: Path | str, encoding: str = "utf-8") -> list[NerItem]:
    path = Path(path)
    items = []
    for where, row in iter_json_array(path, encoding):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise FormatError(f"{where}: expected an object with a 'text' string")
        gold = set()
        for e in row.get("entities", []):
            kind = CMEEE_TYPES.get(e.get("type"))
            if kind is None:
                raise FormatError(f"{where}: unknown entity type {e.get('type')!r} (known: {sorted(CMEEE_TYPES)})")
            start, end, name = e.get("start_idx"), e.get("end_idx"), e.get("entity")
            if not isinstance(start, int) or not isinstance(end, int) or name not in (
                    row["text"][start:end + 1], row["text"][start:end]):
                raise FormatError(f"{where}: entity {name!r} does not match text[{start}:{end}]")
            gold.add((name, kind))
        items.append(NerItem(f"{path.stem}-{where.rsplit(':', 1)[1]}", row["text"], frozenset(gold), tuple(CMEEE_TYPES.values())))
    return items


def load_promptcblue(path: Path | str, encoding: str = "utf-8") -> list[NerItem]:
    items = []
    for where, row in iter_json_lines(path, encoding):
        if row.get("task_type") != "ner":
            continue
        if not isinstance(row.get("input"), str) or not isinstance(row.get("target"), str):
            raise FormatError(f"{where}: an ner item needs 'input' and 'target' strings")
        types = tuple(dict.fromkeys(m.group(1) for m in re.finditer(r"上述句子中的(.+?)实体", row["target"])))
        if not types:
            raise FormatError(f"{where}: target has no '上述句子中的<类型>实体：...' line")
        text = row["input"].split("\n")[-1] if "\n" in row["input"] else row["input"]
        items.append(NerItem(str(row.get("sample_id", where)), text,
                             frozenset(parse_entities(row["target"], types)), types))
    return items


def load_ner(path: Path | str, fmt: str, encoding: str = "utf-8") -> list[NerItem]:
    """Every item of a CMeEE or PromptCBLUE NER file; an id twice is an error naming both."""
    loaders = {"cmeee": load_cmeee, "promptcblue": load_promptcblue}
    if fmt not in loaders:
        raise FormatError(f"unknown NER format {fmt!r} (known: {sorted(loaders)})")
    items = loaders[fmt](path, encoding)
    if not items:
        raise FormatError(f"{path}: no {fmt} NER items")
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise FormatError(f"{path}: id {item.id!r} appears twice")
        seen.add(item.id)
    return items


def to_json(item: NerItem) -> str:
    return json.dumps({"id": item.id, "text": item.text, "gold": sorted(item.gold)}, ensure_ascii=False)
