"""Validated YAML: the base of every params section and task file (strict, frozen pydantic
models), reading YAML as DVC does, and errors that name file, line and key.

Each stage package owns its section in ``<stage>/params.py``; ``medlab.config`` reads
params.yaml and validates it against all of them; evaluation task files
(``medlab.evaluate.tasks``) are validated the same way. Also here: the one check of a
model reference that several sections share.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq


class ConfigError(ValueError):
    """A params file that does not validate; the message has one line per problem."""


class Section(BaseModel):
    """Base of every params section: unknown keys and type coercion are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        """Cross-field and filesystem checks pydantic cannot express: (key path, message)."""
        return []


def looks_like_local_path(name: str, root: Path | None = None) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else is meant as a local path, and so is
    ``org/name`` when ``org`` is a folder of the repository (``external/qwen``, ``models/base``)."""
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.endswith("/"):
        return True
    head = name.split("/", 1)[0]
    return "/" in name and (head in ("models", "data", "external") or (root is not None and (root / head).is_dir()))


# where the pipeline writes models, and the stage that does it
PRODUCED_MODELS = {"base": "pretrain", "finetune": "finetune@<recipe>"}


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def in_hub_cache(repo_id: str, revision: str | None = None) -> bool:
    """Whether the local Hugging Face cache holds ``repo_id``'s config.json (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return isinstance(found, str)


def model_path_problem(name: str, root: Path, revision: str | None = None) -> str | None:
    """Why ``name`` cannot be a model (local dir or hub id), or None if it may be one.

    A local path must exist and hold config.json; under ``models/`` the message names the
    stage that writes it. A hub id (``org/name``) is accepted online; offline
    (``HF_HUB_OFFLINE=1``) only when the local Hugging Face cache holds it."""
    path = (root / Path(name).expanduser()) if not Path(name).is_absolute() else Path(name)
    if path.exists():
        if not (path / "config.json").is_file():
            return f"{path} has no config.json: not a Hugging Face model directory"
        return None
    parts = Path(name).parts
    if parts[:1] == ("models",) and len(parts) > 1 and parts[1] in PRODUCED_MODELS:
        return (f"{path} does not exist yet: stage {PRODUCED_MODELS[parts[1]]} writes it "
                f"(`dvc repro {PRODUCED_MODELS[parts[1]].split('@')[0]}` first)")
    if looks_like_local_path(name, root):
        return f"model directory not found: {path}"
    if hub_offline() and not in_hub_cache(name, revision):
        return (f"{name!r} is neither a local directory ({path}) nor in the local Hugging Face cache, "
                "and HF_HUB_OFFLINE is set: download it first or give a local path")
    return None  # a hub id: resolved at load time


# ------------------------------------------------------------------ reading and checking
def round_trip_yaml() -> YAML:
    yaml = YAML()  # round-trip: keeps line numbers (for errors) and comments (for overlays)
    yaml.preserve_quotes = True
    yaml.representer.add_representer(  # write `null`, not an empty value, as params.yaml does
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def read_yaml(path: Path) -> CommentedMap:
    try:
        doc = round_trip_yaml().load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except Exception as exc:  # ruamel's parser errors carry their own line/column
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(doc, CommentedMap):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return doc


def plain_data(node: Any) -> Any:
    """ruamel containers and scalars -> plain dict/list/str/int/float/bool/None."""
    if isinstance(node, dict):
        return {str(k): plain_data(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain_data(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _line_of(doc: Any, loc: tuple) -> int | None:
    """1-based line of the deepest key of ``loc`` present in the round-trip document."""
    line = None
    node = doc
    for key in loc:
        try:  # a key added in memory (not read from the file) has no line: keep the parent's
            if isinstance(node, CommentedMap) and key in node:
                line = node.lc.key(key)[0] + 1
                node = node[key]
            elif isinstance(node, CommentedSeq) and isinstance(key, int) and key < len(node):
                line = node.lc.item(key)[0] + 1
                node = node[key]
            else:
                break
        except (KeyError, IndexError, TypeError):
            break
    return line


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, type(int | None)):
        for arg in get_args(annotation):
            if (found := _model_of(arg)) is not None:
                return found
    return None


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the section that holds the last key of ``loc``."""
    for key in loc[:-1]:
        field = model.model_fields.get(str(key))
        sub = _model_of(field.annotation) if field else None
        if sub is None:
            return []
        model = sub
    return list(model.model_fields)


def _describe(error: dict, model: type[BaseModel], loc: tuple) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _fields_at(model, loc), n=1)
        return "unknown key" + (f" (did you mean {close[0]}?)" if close else "")
    if kind == "missing":
        return "missing key (every knob must be set in params.yaml)"
    got = error.get("input")
    if isinstance(got, (dict, list)):
        got = type(got).__name__
    return f"{error['msg'][0].lower()}{error['msg'][1:]} (got {got!r})"



def validate(doc: Any, model: type[Section], filename: str, root: Path) -> Section:
    """Validate a loaded document against ``model``, then its ``problems(root)``; raise
    ConfigError with one ``file:line: key.path: message`` line per problem."""
    lines: list[str] = []

    def emit(loc: tuple, message: str) -> None:
        line = _line_of(doc, loc)
        where = f"{filename}:{line}" if line else filename
        lines.append(f"{where}: {'.'.join(str(k) for k in loc)}: {message}")

    try:
        value = model.model_validate(plain_data(doc))
    except ValidationError as exc:
        described = [(tuple(e["loc"]), _describe(e, model, tuple(e["loc"]))) for e in exc.errors()]
        # A misspelt key is one mistake: report "unknown key (did you mean x?)" and not
        # also "x: missing key".
        renamed = {(*loc[:-1], message.split("did you mean ")[1].rstrip("?)"))
                   for loc, message in described if "did you mean" in message}
        for loc, message in described:
            if not (message.startswith("missing key") and loc in renamed):
                emit(loc, message)
        raise ConfigError("\n".join(lines)) from None
    for loc, message in value.problems(root):
        emit(loc, message)
    if lines:
        raise ConfigError("\n".join(lines))
    return value
