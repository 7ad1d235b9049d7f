"""Each params.yaml key's type and range, generated from its params model as the key line's comment.

The prose above a key in params.yaml says what it does and what it trades off; the
models (``medlab/<stage>/params.py``) hold its type and range. So that the two cannot
disagree, the type and range are never typed by hand: every key of a section (not the
entries inside lists or name maps) carries an end-of-line comment written from its
field, e.g. ``seed: 1234  # int >= 0`` or ``valid_fraction: 0.05  # float, 0 < x < 0.5``.

    python -m medlab.config --write-specs      rewrite them after changing a model
    tests/test_config.py                       fails naming the key whose comment differs
"""

from __future__ import annotations

import functools
import operator
import re
import types
from typing import Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")


def _number(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def type_name(annotation) -> str:
    """``int``, ``float``, ``a | b`` (a Literal), ``str or null``, ``list of str``, ``map of name -> ...``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join("null" if a is None else str(a) for a in args)
    if origin in (Union, types.UnionType):
        kept = [a for a in args if a is not type(None)]
        text = " or ".join(type_name(a) for a in kept)
        if len(kept) < len(args):  # optional
            return f"{text} | null" if get_origin(kept[0]) is Literal and len(kept) == 1 else f"{text} or null"
        return text
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return f"map of name -> {type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "{" + ", ".join(annotation.model_fields) + "}"
    return getattr(annotation, "__name__", str(annotation))


def field_spec(field: FieldInfo) -> str:
    """The comment for one key: its type, then its bounds, length and pattern (``or null`` last)."""
    bounds = {type(m).__name__: m for m in field.metadata}
    annotation, optional = field.annotation, ""
    args = get_args(annotation)
    if get_origin(annotation) in (Union, types.UnionType) and type(None) in args and bounds:
        kept = [a for a in args if a is not type(None)]
        annotation, optional = functools.reduce(operator.or_, kept), " or null"
    text = type_name(annotation)
    low = ("ge", bounds["Ge"].ge) if "Ge" in bounds else ("gt", bounds["Gt"].gt) if "Gt" in bounds else None
    high = ("le", bounds["Le"].le) if "Le" in bounds else ("lt", bounds["Lt"].lt) if "Lt" in bounds else None
    if low and high and low[0] == "ge" and high[0] == "le":
        text += f" {_number(low[1])}..{_number(high[1])}"
    elif low and high:
        text += f", {_number(low[1])} {'<=' if low[0] == 'ge' else '<'} x {'<=' if high[0] == 'le' else '<'} " \
                f"{_number(high[1])}"
    elif low:
        text += f" {'>=' if low[0] == 'ge' else '>'} {_number(low[1])}"
    elif high:
        text += f" {'<=' if high[0] == 'le' else '<'} {_number(high[1])}"
    if "MinLen" in bounds:
        n = bounds["MinLen"].min_length
        text += ", non-empty" if n == 1 else f", at least {n} long"
    pattern = next((m.pattern for m in field.metadata if getattr(m, "pattern", None)), None)
    if pattern:
        text += f", matching {pattern}"
    return text + optional


def _section(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def specs(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], str]:
    """Key path -> comment, for every key reachable through sections (not list items)."""
    out = {}
    for name, field in model.model_fields.items():
        sub = _section(field.annotation)
        if sub is not None:
            out.update(specs(sub, (*prefix, name)))
        else:
            out[(*prefix, name)] = field_spec(field)
    return out


def _split_comment(rest: str) -> tuple[str, str | None]:
    """' 1234  # int >= 0' -> (' 1234', 'int >= 0'); a '#' inside quotes is not a comment."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i].rstrip(), rest[i + 1:].strip()
    return rest.rstrip(), None


def _walk(lines: list[str]):
    """(line index, key path, value text, comment) of every key line outside lists."""
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    list_indent: int | None = None  # indent of the "- " of a list whose items we skip
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        is_item = stripped.startswith("- ") or stripped == "-"
        if list_indent is not None and (indent > list_indent or (indent == list_indent and is_item)):
            continue
        list_indent = None
        if is_item:
            list_indent = indent
            continue
        match = KEY_LINE.match(line)
        if not match:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*[k for _, k in stack], match["key"])
        value, comment = _split_comment(match["rest"])
        stack.append((indent, match["key"]))
        yield i, path, value, comment


def check(text: str, model: type[BaseModel], filename: str = "params.yaml") -> list[str]:
    """One line per key whose comment is not its model's spec: file:line: key: ..."""
    wanted = specs(model)
    problems = []
    for i, path, _, comment in _walk(text.splitlines()):
        if path in wanted and comment != wanted[path]:
            problems.append(f"{filename}:{i + 1}: {'.'.join(path)}: comment {comment!r}, its model says "
                            f"{wanted[path]!r} (python -m medlab.config --write-specs)")
    return problems


def write(text: str, model: type[BaseModel]) -> str:
    """``text`` with every key's end-of-line comment set to its model's spec."""
    wanted = specs(model)
    lines = text.splitlines(keepends=True)
    for i, path, value, comment in _walk([line.rstrip("\n") for line in lines]):
        if value.count("[") != value.count("]") or value.count("{") != value.count("}"):
            raise ValueError(f"line {i + 1}: {'.'.join(path)}: a flow list or map over several lines has no "
                             "end-of-line place for its spec; write it as a block list")
        if path in wanted and comment != wanted[path]:
            key = KEY_LINE.match(lines[i].rstrip("\n"))
            lines[i] = f"{key['indent']}{key['key']}:{value}  # {wanted[path]}\n"
    return "".join(lines)


def descriptions(text: str, model: type[BaseModel]) -> dict[tuple[str, ...], dict]:
    """Key path -> {line, value, spec, prose} for every key of the models: the prose is the
    block of comment lines right above the key in params.yaml (what it does, what it trades
    off), the spec its type and range from the model."""
    wanted = specs(model)
    lines = text.splitlines()
    out = {}
    for i, path, value, _ in _walk(lines):
        if path not in wanted:
            continue
        prose, j = [], i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            prose.insert(0, lines[j].strip()[1:].strip())
            j -= 1
        out[path] = {"line": i + 1, "value": value.strip(), "spec": wanted[path], "prose": " ".join(prose)}
    return out


def explain(text: str, model: type[BaseModel], key: str, filename: str = "params.yaml") -> str:
    """Every key at or under ``key`` (dotted), with its value, type and range and its prose."""
    parts = tuple(key.split(".")) if key else ()
    found = {p: d for p, d in descriptions(text, model).items() if p[:len(parts)] == parts}
    if not found:
        raise KeyError(f"{filename}: no key {key!r}")
    return "\n".join(f"{filename}:{d['line']}: {'.'.join(p)} = {d['value']}  ({d['spec']})\n    {d['prose'] or '-'}"
                     for p, d in found.items())
