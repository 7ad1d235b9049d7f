"""params.yaml -> typed, validated sections: the loader, its error messages and overlays.

Read the file the way DVC reads it (ruamel.yaml, YAML 1.2: ``2e-5`` is a float, not a
string as in PyYAML), then validate every section with strict pydantic models
(``extra="forbid"``, no silent type coercion). Any problem stops the run before work
starts, with one line per problem that names the file, the line and the key path::

    params.yaml:61: pretrain.model.hiden_size: unknown key (did you mean hidden_size?)

Every stage validates the *whole* file, so a typo in a downstream section fails the
first stage of ``dvc repro`` instead of an hour later.

Each stage owns its section's model, next to its code (``medlab/<stage>/params.py``);
this package assembles them into ``Params`` and holds only the two sections no stage
owns (``base``, ``runtime``). The comments on every key (what it does, what it trades
off) live in params.yaml itself. ``python -m medlab.config`` is the command line.
"""

from __future__ import annotations

import difflib
import io
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from medlab.benchmark.params import BenchmarkParams
from medlab.corpus.params import CorpusParams
from medlab.evaluate.params import (
    CompareParams,
    EvaluateParams,
    compare_problems,
    unknown_recipe_models,
)
from medlab.filter.params import FilterParams, self_judging
from medlab.finetune.params import FinetuneParams, context_problem
from medlab.generate.params import GenerateParams
from medlab.knowledge.params import KnowledgeParams
from medlab.paths import project_root
from medlab.pretrain.params import PretrainParams
from medlab.probe.params import ProbeParams
from medlab.report.params import ReportParams
from medlab.section import ConfigError, Section

__all__ = ["ConfigError", "Params", "apply_overlay", "dump", "load_params", "merge_overlay", "read_plain",
           "read_yaml", "validate_params"]


# ------------------------------------------------------------ sections no stage owns
class BaseParams(Section):
    seed: int = Field(ge=0)
    torch_threads: int = Field(ge=0)


class RuntimeParams(Section):
    """How every stage loads Hugging Face models (medlab.runtime)."""

    device: str = Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"]
    gradient_checkpointing: bool
    trust_remote_code: bool


# -------------------------------------------------------------------------- whole
class Params(Section):
    """The whole params.yaml: one section per stage (stage name = notebook verb = section)."""

    base: BaseParams
    runtime: RuntimeParams
    knowledge: KnowledgeParams
    corpus: CorpusParams
    benchmark: BenchmarkParams
    pretrain: PretrainParams
    generate: GenerateParams
    filter: FilterParams
    finetune: FinetuneParams
    evaluate: EvaluateParams
    probe: ProbeParams
    compare: CompareParams
    report: ReportParams


# ------------------------------------------------------------------------ loading
def _yaml() -> YAML:
    yaml = YAML()  # round-trip: keeps line numbers (for errors) and comments (for overlays)
    yaml.preserve_quotes = True
    yaml.representer.add_representer(  # write `null`, not an empty value, as params.yaml does
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def read_yaml(path: Path) -> CommentedMap:
    try:
        doc = _yaml().load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except Exception as exc:  # ruamel's parser errors carry their own line/column
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(doc, CommentedMap):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return doc


def read_plain(path: Path) -> dict:
    """params.yaml as plain dicts and lists, exactly as written (what DVC reads too)."""
    return _plain(read_yaml(path))


def _plain(node: Any) -> Any:
    """ruamel containers and scalars -> plain dict/list/str/int/float/bool/None."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
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


def validate_params(doc: CommentedMap, filename: str = "params.yaml",
                    root: Path | None = None) -> Params:
    """Validate a loaded params document; raise ConfigError naming every bad key."""
    root = root or project_root()
    lines: list[str] = []

    def emit(loc: tuple, message: str) -> None:
        line = _line_of(doc, loc)
        where = f"{filename}:{line}" if line else filename
        lines.append(f"{where}: {'.'.join(str(k) for k in loc)}: {message}")

    try:
        params = Params.model_validate(_plain(doc))
    except ValidationError as exc:
        errors = exc.errors()
        described = [(tuple(e["loc"]), _describe(e, Params, tuple(e["loc"]))) for e in errors]
        # A misspelt key is one mistake: report "unknown key (did you mean x?)" and not
        # also "x: missing key".
        renamed = {(*loc[:-1], message.split("did you mean ")[1].rstrip("?)"))
                   for loc, message in described if "did you mean" in message}
        for loc, message in described:
            if not (message.startswith("missing key") and loc in renamed):
                emit(loc, message)
        raise ConfigError("\n".join(lines)) from None
    for name in Params.model_fields:
        for loc, message in getattr(params, name).problems(root):
            emit((name, *loc), message)
    if (why := self_judging(params)) and not params.filter.judge.allow_self_judge:
        emit(("filter", "judge", "allow_self_judge"),
             f"{why}: a model grading its own output is not cross-filtering; set true to allow it")
    if (why := context_problem(params)) is not None:
        emit(("finetune", "train", "max_length"), why)
    for name, why in unknown_recipe_models(params):
        emit(("evaluate", "models", name), why)
    for loc, why in compare_problems(params):
        emit(loc, why)
    if lines:
        raise ConfigError("\n".join(lines))
    return params


def load_params(path: Path | str | None = None) -> Params:
    """Read and validate params.yaml (default: the one at the repository root)."""
    root = project_root()
    path = Path(path) if path is not None else root / "params.yaml"
    return validate_params(read_yaml(path), filename=path.name, root=root)


# ----------------------------------------------------------------------- overlays
def merge_overlay(base: CommentedMap, overlay: CommentedMap, filename: str,
                  _loc: tuple = ()) -> None:
    """Deep-merge ``overlay`` into ``base`` in place; an overlay may only override keys
    that exist in the base (a typo in the overlay is an error, not a new knob)."""
    for key, value in overlay.items():
        loc = (*_loc, key)
        if key not in base:
            line = overlay.lc.key(key)[0] + 1
            raise ConfigError(f"{filename}:{line}: {'.'.join(map(str, loc))}: "
                              "not a key of params.yaml (overlays only override)")
        if isinstance(value, dict) and isinstance(base[key], dict):
            merge_overlay(base[key], value, filename, loc)
        else:
            base[key] = value


def apply_overlay(params_path: Path, overlay_path: Path, out_path: Path | None = None,
                  root: Path | None = None) -> Params:
    """Write params.yaml with the overlay applied (comments kept) and return it validated
    (paths in it resolved from ``root``, by default the folder holding params.yaml)."""
    doc = read_yaml(params_path)
    merge_overlay(doc, read_yaml(overlay_path), Path(overlay_path).name)
    params = validate_params(doc, filename=f"{Path(params_path).name}+{Path(overlay_path).name}",
                             root=root or Path(params_path).resolve().parent)
    buffer = io.StringIO()
    _yaml().dump(doc, buffer)
    Path(out_path or params_path).write_text(buffer.getvalue(), encoding="utf-8")
    return params


def dump(section: BaseModel) -> str:
    """A section as YAML text, for the "resolved config" cell of every notebook."""
    buffer = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(section.model_dump(), buffer)
    return buffer.getvalue()
