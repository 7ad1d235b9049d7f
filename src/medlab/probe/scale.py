"""Attitude scales as small declarative YAML files: items, Likert options, reverse keying,
subscales, role-play instruction, version and the construct they are modelled on.

A file (see ``src/medlab/probe/scales/`` for the bundled ones)::

    name: cami_like                 # [a-z0-9_]+, unique
    version: 1
    title: ...                      # what the report calls it
    construct: ...                  # the construct the items are modelled on
    citation: ...                   # where the construct comes from
    wording: medlab                 # medlab = our own items; anything else = whose they are
    role: 假设你是一名医生。...       # role-play instruction put before every item
    options: [完全不同意, ..., 完全同意]   # natural order; option k (1-based) scores k
    groups: all                     # optional: counterfactual templates ({g} in the text),
                                    #   asked once per group of patient_groups.yaml
    subscales: {name: description}
    items:
      - {id: au1, subscale: authoritarianism, reverse: false, text: ...}

Scores are oriented so that **higher = more stigmatising**: an item with
``reverse: true`` (agreeing expresses acceptance) has its score flipped to
``n_options + 1 - k``. Every problem is reported with the file and the item it is in,
before any model is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from medlab.patient_groups import load_groups

REQUIRED = ("name", "version", "title", "construct", "citation", "wording", "role", "options", "subscales", "items")
ITEM_KEYS = {"id", "subscale", "reverse", "text"}


class ScaleError(ValueError):
    """A scale file that cannot be used, with the file and key that are wrong."""


@dataclass(frozen=True)
class Item:
    id: str
    text: str
    subscale: str
    reverse: bool
    group: str | None = None  # counterfactual items: the patient group filled in
    template: str | None = None  # counterfactual items: the template's id (shared across groups)


@dataclass(frozen=True)
class Scale:
    name: str
    version: int
    title: str
    construct: str
    citation: str
    wording: str
    role: str
    options: tuple[str, ...]
    subscales: dict[str, str]
    items: tuple[Item, ...]
    groups: tuple[str, ...] = ()  # non-empty: a counterfactual scale
    path: str = ""

    @property
    def counterfactual(self) -> bool:
        return bool(self.groups)

    def score_of(self, item: Item, option_index: int) -> int:
        """Oriented score of choosing option ``option_index`` (0-based natural order)."""
        k = option_index + 1
        return len(self.options) + 1 - k if item.reverse else k

    @property
    def neutral(self) -> float:
        """The midpoint of the score range: what a model without an attitude averages."""
        return (len(self.options) + 1) / 2


def _fail(path: str, where: str, message: str):
    raise ScaleError(f"{path}: {where}: {message}")


def parse_scale(data: object, path: str) -> Scale:
    """A validated Scale from a loaded YAML document (``path`` names it in errors)."""
    if not isinstance(data, dict):
        _fail(path, "top level", "a scale file is a mapping (name, options, items, ...)")
    for key in REQUIRED:
        if key not in data:
            _fail(path, key, "missing key")
    unknown = set(data) - set(REQUIRED) - {"groups"}
    if unknown:
        _fail(path, sorted(unknown)[0], f"unknown key (known: {', '.join(REQUIRED)}, groups)")
    name = data["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]+", name):
        _fail(path, "name", f"lower-case letters, digits and _ only, got {name!r}")
    if not isinstance(data["version"], int):
        _fail(path, "version", f"an integer, got {data['version']!r}")
    options = data["options"]
    if not isinstance(options, list) or not 2 <= len(options) <= 7 or not all(isinstance(o, str) and o for o in options):
        _fail(path, "options", "a list of 2 to 7 non-empty option texts")
    if len(set(options)) != len(options):
        _fail(path, "options", "option texts must differ")
    subscales = data["subscales"]
    if not isinstance(subscales, dict) or not subscales:
        _fail(path, "subscales", "a mapping name -> description, at least one")
    groups: tuple[str, ...] = ()
    if "groups" in data:
        known = load_groups()
        spec = data["groups"]
        groups = tuple(known) if spec == "all" else tuple(spec) if isinstance(spec, list) else ()
        if not groups:
            _fail(path, "groups", "'all' or a list of patient-group keys")
        for g in groups:
            if g not in known:
                _fail(path, "groups", f"unknown patient group {g!r} (known: {', '.join(known)})")
    if not isinstance(data["items"], list) or not data["items"]:
        _fail(path, "items", "a non-empty list")
    items, seen = [], set()
    for k, raw in enumerate(data["items"]):
        where = f"items[{k}]"
        if not isinstance(raw, dict):
            _fail(path, where, "an item is a mapping {id, subscale, reverse, text}")
        if set(raw) != ITEM_KEYS:
            missing, extra = ITEM_KEYS - set(raw), set(raw) - ITEM_KEYS
            _fail(path, where, f"missing {sorted(missing)}" if missing else f"unknown key {sorted(extra)[0]!r}")
        where = f"items[{k}] ({raw['id']})"
        if raw["id"] in seen:
            _fail(path, where, "duplicate item id")
        seen.add(raw["id"])
        if raw["subscale"] not in subscales:
            _fail(path, where, f"subscale {raw['subscale']!r} is not declared in subscales")
        if not isinstance(raw["reverse"], bool):
            _fail(path, where, f"reverse must be true or false, got {raw['reverse']!r}")
        text = raw["text"]
        if not isinstance(text, str) or not text.strip():
            _fail(path, where, "empty text")
        if bool(groups) != ("{g}" in text):
            _fail(path, where, "a counterfactual scale's items need {g}; other scales' items must not have it")
        if groups:
            for g in groups:
                items.append(Item(f"{raw['id']}@{g}", text.replace("{g}", known[g].label), raw["subscale"],
                                  raw["reverse"], group=g, template=raw["id"]))
        else:
            items.append(Item(str(raw["id"]), text, raw["subscale"], raw["reverse"]))
    return Scale(name, data["version"], str(data["title"]), str(data["construct"]), str(data["citation"]),
                 str(data["wording"]), str(data["role"]), tuple(options), dict(subscales), tuple(items), groups, path)


def load_scale(path: Path | str) -> Scale:
    """Read and validate one scale file."""
    path = Path(path)
    if not path.is_file():
        raise ScaleError(f"{path}: file not found")
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise ScaleError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_scale(data, str(path))


def builtin_scales() -> dict[str, Scale]:
    """The scales shipped in src/medlab/probe/scales/, by name."""
    folder = resources.files("medlab.probe").joinpath("scales")
    scales = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            data = YAML(typ="safe").load(entry.read_text(encoding="utf-8"))
            scale = parse_scale(data, f"medlab/probe/scales/{entry.name}")
            scales[scale.name] = scale
    return scales
