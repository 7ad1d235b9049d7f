"""The knowledge base: typed entities and (subject, predicate, object) triples.

The bundled base lives in ``data/`` as three plain files a person can read and edit:

    entities.tsv     name <TAB> type              every entity, declared once
    general.tsv      subject <TAB> predicate <TAB> object    general medicine
    anesthesia.tsv   subject <TAB> predicate <TAB> object    anesthesiology

Written by us from standard textbook knowledge, for research on training methods:
it is not clinical advice. ``check_integrity`` lists every structural problem
(undeclared or unused entities, wrong types, contradictions); the test suite
requires it to be empty.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from medlab.knowledge.schema import LITERAL, Schema, load_schema
from medlab.records import Entity, Triple

DOMAINS = ("general", "anesthesia")
DEPARTMENT_RELATION = "所属科室"


class KnowledgeError(ValueError):
    """A malformed knowledge file; the message names the file and line."""


def triple_id(subject: str, predicate: str, obj: str) -> str:
    """Content-derived id: stable when files are reordered or merged."""
    digest = hashlib.sha1(f"{subject}\t{predicate}\t{obj}".encode()).hexdigest()
    return f"t-{digest[:12]}"


@dataclass
class RawTriple:
    subject: str
    predicate: str
    object: str
    domain: str
    where: str  # "file:line", for error messages and provenance


@dataclass
class KnowledgeBase:
    """Entities and triples with the lookups every later stage needs."""

    entities: dict[str, Entity]
    triples: list[Triple]
    schema: Schema = field(default_factory=load_schema)

    def __post_init__(self) -> None:
        self._objects: dict[tuple[str, str], list[str]] = defaultdict(list)
        for t in self.triples:
            self._objects[(t.subject, t.predicate)].append(t.object)

    # -- lookups ---------------------------------------------------------------
    def objects(self, subject: str, predicate: str) -> list[str]:
        return list(self._objects.get((subject, predicate), []))

    def subjects(self, domain: str | None = None) -> list[str]:
        """Entities that are the subject of at least one triple, in file order."""
        seen: dict[str, None] = {}
        for t in self.triples:
            if domain is None or t.domain == domain:
                seen.setdefault(t.subject, None)
        return list(seen)

    def facts(self, subject: str) -> list[Triple]:
        return [t for t in self.triples if t.subject == subject]

    def of_type(self, entity_type: str) -> list[str]:
        return sorted(n for n, e in self.entities.items() if e.type == entity_type)

    def literals(self, predicate: str) -> list[str]:
        return sorted({t.object for t in self.triples if t.predicate == predicate})

    def departments(self, domain: str | None = None) -> dict[str, list[str]]:
        """Department -> subjects (diseases) filed under it."""
        out: dict[str, list[str]] = defaultdict(list)
        for t in self.triples:
            if t.predicate == DEPARTMENT_RELATION and (domain is None or t.domain == domain):
                out[t.object].append(t.subject)
        return dict(out)

    def mentions(self, text: str, types: Iterable[str]) -> set[tuple[str, str]]:
        """(name, type) of every entity of ``types`` named in ``text``: the longest names first,
        non-overlapping (so "严重高血压" is not also "高血压"); names of one character are skipped.
        Exact for text rendered from these names (our corpus, answers, NER sentences)."""
        wanted = set(types)
        names = {n: e.type for n, e in self.entities.items() if e.type in wanted and len(n) >= 2}
        return longest_matches(text, names)


def longest_matches(text: str, names: dict[str, str]) -> set[tuple[str, str]]:
    """Longest-match ``names`` (name -> type) in ``text``, non-overlapping."""
    spans, taken = set(), [False] * len(text)
    for name in sorted(names, key=len, reverse=True):
        start = text.find(name)
        while start >= 0:
            end = start + len(name)
            if not any(taken[start:end]):
                taken[start:end] = [True] * len(name)
                spans.add((name, names[name]))
            start = text.find(name, start + 1)
    return spans


# ------------------------------------------------------------------------ parsing
def _rows(text: str, name: str, width: int) -> Iterable[tuple[int, list[str]]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = [c.strip() for c in line.split("\t")]
        if len(cols) != width or not all(cols):
            raise KnowledgeError(f"{name}:{number}: expected {width} non-empty tab-separated "
                                 f"fields, got {len(cols)}: {line!r}")
        yield number, cols


def parse_entities(text: str, name: str) -> dict[str, tuple[str, str]]:
    """name -> (type, "file:line"); a name declared twice with two types is an error."""
    out: dict[str, tuple[str, str]] = {}
    for number, (entity, kind) in _rows(text, name, 2):
        if entity in out and out[entity][0] != kind:
            raise KnowledgeError(f"{name}:{number}: {entity!r} declared as {kind} here and as "
                                 f"{out[entity][0]} at {out[entity][1]}")
        out.setdefault(entity, (kind, f"{name}:{number}"))
    return out


def parse_triples(text: str, name: str, domain: str) -> list[RawTriple]:
    return [RawTriple(s, p, o, domain, f"{name}:{number}")
            for number, (s, p, o) in _rows(text, name, 3)]


# ---------------------------------------------------------------------- integrity
def check_integrity(declared: dict[str, tuple[str, str]], raw: list[RawTriple],
                    schema: Schema) -> list[str]:
    """Every structural problem of a set of triples, as 'file:line: message' strings."""
    problems: list[str] = []
    used: set[str] = set()
    seen: dict[tuple[str, str, str], str] = {}
    functional: dict[tuple[str, str], list[RawTriple]] = defaultdict(list)
    pairs: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for t in raw:
        rel = schema.relations.get(t.predicate)
        if rel is None:
            problems.append(f"{t.where}: unknown predicate {t.predicate!r}")
            continue
        key = (t.subject, t.predicate, t.object)
        if key in seen:
            problems.append(f"{t.where}: duplicate of {seen[key]}")
        seen.setdefault(key, t.where)
        for role, name, allowed in (("subject", t.subject, rel.subject_types),
                                    ("object", t.object, rel.object_types)):
            if allowed == (LITERAL,):
                if name in declared:
                    problems.append(f"{t.where}: literal object {name!r} is also an entity name")
                continue
            used.add(name)
            if name not in declared:
                problems.append(f"{t.where}: {role} {name!r} is not declared in entities.tsv")
            elif declared[name][0] not in allowed:
                problems.append(f"{t.where}: {role} {name!r} is a {declared[name][0]}, but "
                                f"{t.predicate} takes {'/'.join(allowed)}")
        if rel.functional:
            functional[(t.subject, t.predicate)].append(t)
        pairs[(t.subject, t.object)][t.predicate] = t.where
    for (subject, predicate), group in functional.items():
        if len({t.object for t in group}) > 1:
            places = ", ".join(f"{t.object!r} ({t.where})" for t in group)
            problems.append(f"{group[-1].where}: {subject} {predicate} is functional but has "
                            f"several objects: {places}")
    for (subject, obj), predicates in pairs.items():
        for a, b in schema.exclusive:
            if a in predicates and b in predicates:
                problems.append(f"{predicates[b]}: {subject} has {obj!r} as both {a} "
                                f"({predicates[a]}) and {b}")
    for name, (kind, where) in declared.items():
        if kind not in schema.entity_types:
            problems.append(f"{where}: unknown entity type {kind!r} for {name!r}")
        if name not in used:
            problems.append(f"{where}: entity {name!r} is declared but used in no triple")
    return problems


# ------------------------------------------------------------------------ building
def build(declared: dict[str, tuple[str, str]], raw: list[RawTriple],
          schema: Schema | None = None, source: str = "embedded") -> KnowledgeBase:
    """Typed records from checked raw rows (raises KnowledgeError on any problem)."""
    schema = schema or load_schema()
    problems = check_integrity(declared, raw, schema)
    if problems:
        shown = "\n".join(problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise KnowledgeError(f"{len(problems)} problem(s) in the knowledge base:\n{shown}{more}")
    department: dict[str, str] = {t.subject: t.object for t in raw
                                  if t.predicate == DEPARTMENT_RELATION}
    # An entity belongs to the anesthesia domain if it is the subject of an anesthesia
    # triple; object-only entities take the domain of the first triple naming them.
    domain: dict[str, str] = {}
    for t in raw:
        if t.domain == "anesthesia":
            domain[t.subject] = "anesthesia"
    for t in raw:
        domain.setdefault(t.subject, t.domain)
        if not schema.relations[t.predicate].literal:
            domain.setdefault(t.object, t.domain)
    entities = {
        name: Entity(id=f"e-{hashlib.sha1(name.encode()).hexdigest()[:10]}", source=source,
                     name=name, type=kind, domain=domain[name], department=department.get(name))
        for name, (kind, _) in declared.items()
    }
    triples = []
    for t in raw:
        rel = schema.relations[t.predicate]
        triples.append(Triple(
            id=triple_id(t.subject, t.predicate, t.object), source=source,
            subject=t.subject, subject_type=declared[t.subject][0], predicate=t.predicate,
            object=t.object, object_type=LITERAL if rel.literal else declared[t.object][0],
            domain=t.domain, department=department.get(t.subject),
            provenance={"where": t.where},
        ))
    return KnowledgeBase(entities=entities, triples=triples, schema=schema)


def embedded_files() -> dict[str, str]:
    """The bundled files' text by name (entities.tsv, general.tsv, anesthesia.tsv)."""
    folder = resources.files("medlab.knowledge").joinpath("data")
    return {name: folder.joinpath(name).read_text("utf-8")
            for name in ("entities.tsv", "general.tsv", "anesthesia.tsv")}


def load_raw_embedded() -> tuple[dict[str, tuple[str, str]], list[RawTriple]]:
    files = embedded_files()
    where = "medlab/knowledge/data/"  # errors name the file as it sits in the package
    declared = parse_entities(files["entities.tsv"], where + "entities.tsv")
    raw = [*parse_triples(files["general.tsv"], where + "general.tsv", "general"),
           *parse_triples(files["anesthesia.tsv"], where + "anesthesia.tsv", "anesthesia")]
    return declared, raw


def load_embedded() -> KnowledgeBase:
    """The bundled knowledge base (research use only; not clinical advice)."""
    declared, raw = load_raw_embedded()
    return build(declared, raw)


def data_dir() -> Path:
    return Path(str(resources.files("medlab.knowledge").joinpath("data")))


# ------------------------------------------------------------ stage records
def save_records(kb: KnowledgeBase, directory: Path) -> dict[str, int]:
    """Write entities.jsonl and triples.jsonl (the knowledge stage's outputs)."""
    from medlab.records import write_jsonl

    entities = sorted(kb.entities.values(), key=lambda e: (e.type, e.name))
    return {"entities": write_jsonl(directory / "entities.jsonl", entities),
            "triples": write_jsonl(directory / "triples.jsonl", kb.triples)}


def load_records(directory: Path) -> KnowledgeBase:
    """The knowledge base as the knowledge stage wrote it (what later stages read)."""
    from medlab.records import read_jsonl

    directory = Path(directory)
    entities = {e.name: e for e in read_jsonl(directory / "entities.jsonl", Entity)}
    return KnowledgeBase(entities=entities, triples=read_jsonl(directory / "triples.jsonl", Triple))
