"""Returned rating files in, checked and unblinded.

Two file kinds are read, each naming its rows in errors:

* ``*.json`` saved by the rating page (``rate.html``): ``{"format": "medlab-ratings/1",
  "package", "rater", "ratings": [{"unit", "scores": {"A": {dim: 1-5}, "B": {...}},
  "preference": "A" | "tie" | "B", "comment"}]}``;
* ``*.csv`` with the rating sheet's columns (``unit``, ``A_<dim>``, ``B_<dim>``,
  ``preference``, ``comment``; a spreadsheet-filled ``rating_sheet.csv`` or Label Studio's
  CSV export of it). The rater is the ``rater`` column if there is one (one file holding
  several raters, as Label Studio exports), else the file name's stem. A sheet carries
  no package id unless it has a ``package`` column (then checked like the page's): its
  unit ids are checked against the rater's assignment, nothing more.

Problems stop the import with one line each naming file and row: an unknown rater or a
unit not assigned to them, a missing or out-of-range score, a bad preference, the same
rater rating a unit twice (across files too), and -- unless ``allow_incomplete`` -- units a
rater was given and did not rate. Nothing is half-imported.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medlab.human.package import LABELS, PREFERENCES

FORMAT = "medlab-ratings/1"


class RatingsError(ValueError):
    """Rating files that do not match the exported package; one line per problem."""


@dataclass(frozen=True)
class Rating:
    rater: str
    unit: str
    scores: dict[str, dict[str, int]]  # label -> dimension -> 1..5
    preference: str  # A | tie | B
    comment: str = ""
    where: str = field(default="", compare=False)  # "file:row" for error messages


def _score(value, where: str, name: str, problems: list[str]) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        problems.append(f"{where}: {name}: missing rating")
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        problems.append(f"{where}: {name}: {value!r} is not a rating 1-5")
        return None
    if number != int(number) or not 1 <= number <= 5:
        problems.append(f"{where}: {name}: {value!r} is not a rating 1-5")
        return None
    return int(number)


def _rating(rater: str, row: Mapping, scores_of, dims: Sequence[str], where: str, problems: list[str]) -> Rating | None:
    before = len(problems)
    unit = str(row.get("unit") or "").strip()
    if not unit:
        problems.append(f"{where}: no unit id")
        return None
    scores = {label: {d: _score(scores_of(label, d), where, f"{unit} {label}_{d}", problems) for d in dims}
              for label in LABELS}
    preference = row.get("preference")
    preference = preference.strip() if isinstance(preference, str) else preference
    if preference in (None, ""):
        problems.append(f"{where}: {unit} preference: missing (A, tie or B)")
    elif preference not in PREFERENCES:
        problems.append(f"{where}: {unit} preference: {preference!r} is not one of A, tie, B")
    if len(problems) > before:
        return None
    return Rating(rater=rater, unit=unit, scores=scores, preference=preference,
                  comment=str(row.get("comment") or ""), where=where)


def read_json_file(path: Path, dims: Sequence[str], package: str, problems: list[str]) -> list[Rating]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"{path}: not a JSON rating file saved by the rating page ({e})")
        return []
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("ratings"), list):
        problems.append(f"{path}: not a {FORMAT} file (saved by rate.html): needs format, package, rater, ratings")
        return []
    if doc.get("package") != package:
        problems.append(f"{path}: made for package {doc.get('package')!r}, the current export is {package!r} "
                        "(the answers or the blinding changed since): rate the current pages, or rerun the "
                        "export that made those")
        return []
    rater = str(doc.get("rater") or "")
    out = []
    for n, row in enumerate(doc["ratings"], 1):
        where = f"{path}: rating {n}"
        if not isinstance(row, dict):
            problems.append(f"{where}: not an object")
            continue
        scores = row.get("scores") if isinstance(row.get("scores"), dict) else {}
        r = _rating(rater, row, lambda label, d, s=scores: (s.get(label) or {}).get(d), dims, where, problems)
        if r is not None:
            out.append(r)
    return out


def read_csv_file(path: Path, dims: Sequence[str], package: str, problems: list[str]) -> list[Rating]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        problems.append(f"{path}: not UTF-8 text ({e}); save the sheet as CSV UTF-8")
        return []
    reader = csv.DictReader(text.splitlines())
    columns = set(reader.fieldnames or [])
    needed = {"unit", "preference"} | {f"{label}_{d}" for label in LABELS for d in dims}
    if missing := sorted(needed - columns):
        problems.append(f"{path}: no column {', '.join(missing)} (a rating sheet has unit, A_<dim>, B_<dim>, "
                        "preference)")
        return []
    out = []
    for n, row in enumerate(reader, 2):  # row 1 is the header
        where = f"{path}:{n}"
        if "package" in columns and row["package"] and row["package"] != package:
            problems.append(f"{where}: made for package {row['package']!r}, the current export is {package!r}")
            continue
        rater = (row.get("rater") or "").strip() if "rater" in columns else path.stem
        r = _rating(rater, row, lambda label, d, row=row: row.get(f"{label}_{d}"), dims, where, problems)
        if r is not None:
            out.append(r)
    return out


def rating_files(folder: Path) -> list[Path]:
    """The rating files of a folder (``*.json``, ``*.csv``; README and dot files ignored)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".json", ".csv") and not p.name.startswith("."))


def load_ratings(paths: Iterable[Path], manifest: Mapping, allow_incomplete: bool = False) -> list[Rating]:
    """Every rating of ``paths``, checked against the export's manifest; RatingsError lists
    every problem (file and row) and nothing is returned then."""
    dims, package, assigned = manifest["dimensions"], manifest["package"], manifest["raters"]
    problems: list[str] = []
    ratings: list[Rating] = []
    for path in paths:
        reader = read_json_file if path.suffix.lower() == ".json" else read_csv_file
        ratings += reader(Path(path), dims, package, problems)
    seen: dict[tuple[str, str], Rating] = {}
    for r in ratings:
        if r.rater not in assigned:
            problems.append(f"{r.where}: rater {r.rater!r} is not one of blind.raters ({', '.join(assigned)})")
        elif r.unit not in assigned[r.rater]:
            problems.append(f"{r.where}: unit {r.unit!r} was not given to rater {r.rater!r} (unknown item)")
        elif (r.rater, r.unit) in seen:
            problems.append(f"{r.where}: rater {r.rater!r} rated {r.unit} again (first at {seen[r.rater, r.unit].where})")
        else:
            seen[r.rater, r.unit] = r
    if not allow_incomplete and not problems:
        for rater in sorted({r.rater for r in ratings}):
            left = [u for u in assigned[rater] if (rater, u) not in seen]
            if left:
                problems.append(f"rater {rater!r}: {len(left)} of {len(assigned[rater])} assigned units not rated "
                                f"({', '.join(left[:5])}{', ...' if len(left) > 5 else ''}); finish them or set "
                                "unblind.allow_incomplete: true")
    if problems:
        raise RatingsError("\n".join(problems))
    return list(seen.values())


def unblind(ratings: Sequence[Rating], key: Mapping[str, dict]) -> tuple[list[dict], list[dict]]:
    """Ratings with the models put back: score rows ``{rater, unit, item, model, dimension,
    score}`` and preference rows ``{rater, unit, item, a, b, outcome}`` where outcome is
    ``a`` / ``b`` / ``tie`` for the pair as configured (a = its first model)."""
    scores, preferences = [], []
    for r in ratings:
        k = key[r.unit]
        for label in LABELS:
            scores += [{"rater": r.rater, "unit": r.unit, "item": k["item"], "model": k[label], "dimension": d,
                        "score": s} for d, s in r.scores[label].items()]
        a, b = k["pair"]
        outcome = "tie" if r.preference == "tie" else ("a" if k[r.preference] == a else "b")
        preferences.append({"rater": r.rater, "unit": r.unit, "item": k["item"], "a": a, "b": b, "outcome": outcome})
    return scores, preferences
