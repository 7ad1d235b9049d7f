"""Blinded rating packages: which answers each rater sees, in what order, under which
labels -- and the key that undoes the blinding, kept apart from the packages.

A *unit* is one question with the answers of two models, shown as 回答A and 回答B; which
model is A is a coin flip per unit, and each rater gets the units in an order of their
own, so neither position nor order tells a rater which model wrote what. Per pair of
models, ``overlap`` units go to every rater (inter-rater agreement is measured on
them) and the other ``items - overlap`` are dealt out one rater each, round-robin:

    items=20, overlap=10, 3 raters -> per pair each rater gets 10 shared + 3 or 4 own.

Everything is a function of the answers, the params and the seed: rerunning the stage
writes the same packages. The *package id* hashes what the raters see and the key; a
returned rating file carries it, so ratings made for other answers are refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# Chinese labels and the one-line instruction raters see (the rubric judge's wording,
# medlab.evaluate.judges.DIMENSIONS, so humans and judge grade the same thing)
from medlab.evaluate.judges import DIMENSIONS
from medlab.records import atomic_write_text

LABELS = ("A", "B")
PREFERENCES = ("A", "tie", "B")  # 回答A更好 / 差不多 / 回答B更好


@dataclass(frozen=True)
class Unit:
    id: str  # "u0007": what raters and rating files call it
    item: str  # the benchmark item's id
    question: str
    reference: str
    answers: dict[str, str]  # label -> answer text


def load_answers(path: Path) -> dict[str, dict]:
    """One model's answers file (``data/evaluate/<model>/<task>_answers.jsonl``) by item id;
    rows need question, reference and answer (what a QA task writes)."""
    from medlab.formats.text import iter_json_lines

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no answers (run its evaluate stage first)")
    out = {}
    for line, row in iter_json_lines(path):
        missing = [k for k in ("id", "question", "reference", "answer") if k not in row]
        if missing:
            raise ValueError(f"{line}: no {', '.join(missing)}: blind.task must be a QA task "
                             "(its answers have question, reference and answer)")
        out[row["id"]] = row
    return out


def build_units(answers: Mapping[str, Mapping[str, dict]], pairs: Sequence[Sequence[str]], items: int,
                seed: int) -> tuple[list[Unit], dict[str, dict]]:
    """Units for every pair (``items`` questions each, drawn from those both models answered)
    and the key: unit id -> {"A": model, "B": model, "item", "pair": [a, b]}."""
    rng = np.random.default_rng(seed)
    units, key = [], {}
    for a, b in pairs:
        common = sorted(set(answers[a]) & set(answers[b]))
        if len(common) < items:
            raise ValueError(f"blind.items is {items}, but {a} and {b} answered only {len(common)} "
                             "questions in common")
        chosen = sorted(rng.choice(len(common), size=items, replace=False).tolist())
        for index in chosen:
            item = common[index]
            order = (a, b) if rng.random() < 0.5 else (b, a)
            unit = Unit(id=f"u{len(units):04d}", item=item, question=answers[a][item]["question"],
                        reference=answers[a][item]["reference"],
                        answers={label: answers[m][item]["answer"] for label, m in zip(LABELS, order, strict=True)})
            units.append(unit)
            key[unit.id] = {"A": order[0], "B": order[1], "item": item, "pair": [a, b]}
    return units, key


def assign(key: Mapping[str, dict], raters: Sequence[str], overlap: int, seed: int) -> dict[str, list[str]]:
    """Rater -> the unit ids they rate, in an order of their own. Per pair, the first
    ``overlap`` units go to everyone, the rest one rater each (round-robin across pairs)."""
    rng = np.random.default_rng(seed + 1)
    by_pair: dict[tuple, list[str]] = {}
    for unit_id, k in key.items():
        by_pair.setdefault(tuple(k["pair"]), []).append(unit_id)
    out: dict[str, list[str]] = {r: [] for r in raters}
    dealt = 0  # the round-robin goes on across pairs, so workloads differ by one unit at most
    for unit_ids in by_pair.values():
        for r in raters:
            out[r] += unit_ids[:overlap]
        for unit_id in unit_ids[overlap:]:
            out[raters[dealt % len(raters)]].append(unit_id)
            dealt += 1
    return {r: [ids[i] for i in rng.permutation(len(ids))] for r, ids in out.items()}


def package_id(units: Sequence[Unit], key: Mapping, dimensions: Sequence[str]) -> str:
    """12 hex digits over what raters see, how it is unblinded and what they score."""
    text = json.dumps([[asdict(u) for u in units], key, list(dimensions)], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def manifest(units: Sequence[Unit], key: Mapping, assignment: Mapping[str, list[str]],
             dimensions: Sequence[str], show_reference: bool) -> dict:
    """What the unblind stage checks returned files against (no model names: those are in the key)."""
    return {"package": package_id(units, key, dimensions), "dimensions": list(dimensions),
            "scale": [1, 5], "preferences": list(PREFERENCES), "show_reference": show_reference,
            "raters": {r: list(ids) for r, ids in assignment.items()}}


def _page_units(units: Sequence[Unit], ids: Sequence[str], show_reference: bool) -> list[dict]:
    by_id = {u.id: u for u in units}
    return [{"id": i, "question": by_id[i].question, "reference": by_id[i].reference if show_reference else None,
             "answers": by_id[i].answers} for i in ids]


def rating_page(units: Sequence[Unit], rater: str, man: dict, title: str) -> str:
    """The self-contained HTML page of one rater (works offline from file://, saves a JSON file)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("medlab.human", "templates"), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html", "j2"]))
    dims = [{"name": d, "label": DIMENSIONS[d][0], "hint": DIMENSIONS[d][1]} for d in man["dimensions"]]
    return env.get_template("rate.html.j2").render(
        title=title, rater=rater, package=man["package"], dimensions=dims,
        units=_page_units(units, man["raters"][rater], man["show_reference"]))


def csv_columns(dimensions: Sequence[str]) -> list[str]:
    """Columns of a rating sheet: the task's data, then one per score, the preference, a comment."""
    return (["unit", "question", "reference", "answer_A", "answer_B"]
            + [f"{label}_{d}" for label in LABELS for d in dimensions] + ["preference", "comment"])


def rating_sheet(units: Sequence[Unit], rater: str, man: dict) -> str:
    """One rater's units as CSV with empty rating columns: fill in a spreadsheet, or import
    into Label Studio (each column becomes ``$column`` of the labeling config)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_columns(man["dimensions"]), lineterminator="\n")
    writer.writeheader()
    for u in _page_units(units, man["raters"][rater], man["show_reference"]):
        writer.writerow({"unit": u["id"], "question": u["question"], "reference": u["reference"] or "",
                         "answer_A": u["answers"]["A"], "answer_B": u["answers"]["B"]})
    return buffer.getvalue()


def label_studio_config(dimensions: Sequence[str], show_reference: bool) -> str:
    """Label Studio labeling config for the sheets: a Rating per answer and dimension named
    ``A_<dim>`` / ``B_<dim>``, Choices ``preference`` (A / tie / B), a TextArea ``comment`` --
    the names the importer reads back from Label Studio's CSV export."""
    rows = ['<View>', '  <Header value="问题"/>', '  <Text name="question" value="$question"/>']
    if show_reference:
        rows += ['  <Header value="参考答案"/>', '  <Text name="reference" value="$reference"/>']
    for label in LABELS:
        rows += [f'  <Header value="回答{label}"/>', f'  <Text name="answer_{label}" value="$answer_{label}"/>']
        rows += [f'  <Header value="{DIMENSIONS[d][0]}（回答{label}）"/>\n'
                 f'  <Rating name="{label}_{d}" toName="answer_{label}" maxRating="5" required="true"/>'
                 for d in dimensions]
    rows += ['  <Header value="哪个回答更好？"/>',
             '  <Choices name="preference" toName="question" choice="single" required="true">',
             '    <Choice value="A"/>', '    <Choice value="tie"/>', '    <Choice value="B"/>', '  </Choices>',
             '  <TextArea name="comment" toName="question"/>', '</View>']
    return "\n".join(rows) + "\n"


def write_packages(out_dir: Path, units: Sequence[Unit], man: dict, title: str) -> list[Path]:
    """Per rater ``<out_dir>/<rater>/rate.html`` and ``rating_sheet.csv``; one
    ``label_studio.xml`` and the ``manifest.json`` beside them. The key is not written here."""
    written = []
    for rater in man["raters"]:
        for name, text in (("rate.html", rating_page(units, rater, man, title)),
                           ("rating_sheet.csv", rating_sheet(units, rater, man))):
            atomic_write_text(out_dir / rater / name, text)
            written.append(out_dir / rater / name)
    atomic_write_text(out_dir / "label_studio.xml", label_studio_config(man["dimensions"], man["show_reference"]))
    atomic_write_text(out_dir / "manifest.json", json.dumps(man, ensure_ascii=False, indent=1) + "\n")
    return [*written, out_dir / "label_studio.xml", out_dir / "manifest.json"]
