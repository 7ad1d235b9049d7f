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

import io
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from medlab.embedded.benchmark.params import BenchmarkParams
from medlab.embedded.corpus.params import CorpusParams
from medlab.evaluate.params import (
    CompareParams,
    EvaluateParams,
    compare_problems,
    unknown_recipe_models,
)
from medlab.filter.params import FilterParams, self_judging
from medlab.finetune.params import FinetuneParams, context_problem, seed_problem
from medlab.generate.params import GenerateParams
from medlab.human.params import BlindParams, UnblindParams, human_problems
from medlab.knowledge.params import KnowledgeParams
from medlab.paths import project_root
from medlab.pretrain.params import PretrainParams
from medlab.probe.params import ProbeParams
from medlab.report.params import ReportParams
from medlab.section import ConfigError, Section, plain_data, read_yaml, round_trip_yaml, validate

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
    blind: BlindParams
    unblind: UnblindParams
    compare: CompareParams
    report: ReportParams

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        """Every section's own checks, then the rules that span sections."""
        out = [((name, *loc), message) for name in type(self).model_fields
               for loc, message in getattr(self, name).problems(root)]
        if (why := self_judging(self)) and not self.filter.judge.allow_self_judge:
            out.append((("filter", "judge", "allow_self_judge"),
                        f"{why}: a model grading its own output is not cross-filtering; set true to allow it"))
        if (why := context_problem(self)) is not None:
            out.append((("finetune", "train", "max_length"), why))
        if (why := seed_problem(self)) is not None:
            out.append((("finetune", "seeds", 0), why))
        out += [(("evaluate", "models", name), why) for name, why in unknown_recipe_models(self)]
        out += unknown_methods(self)
        return out + compare_problems(self) + human_problems(self)


def unknown_methods(params: Params) -> list[tuple[tuple, str]]:
    """Keys naming a generation method that is not one: a misspelt name would select nothing
    (a training set without its part) or fall back silently (the pooled judge cut-off)."""
    known = params.generate.methods()
    named = [(("filter", "judge", "own_cutoff_methods", k), name)
             for k, name in enumerate(params.filter.judge.own_cutoff_methods)]
    for dataset, parts in params.finetune.datasets.items():
        for i, part in enumerate(parts):
            for key in ("methods", "exclude_methods"):
                named += [(("finetune", "datasets", dataset, i, key, k), name)
                          for k, name in enumerate(getattr(part, key) or [])]
    return [(loc, f"unknown generation method {name!r} (known: {', '.join(known)})")
            for loc, name in named if name not in known]


# ------------------------------------------------------------------------ loading
def read_plain(path: Path) -> dict:
    """params.yaml as plain dicts and lists, exactly as written (what DVC reads too)."""
    return plain_data(read_yaml(path))


def validate_params(doc: CommentedMap, filename: str = "params.yaml",
                    root: Path | None = None) -> Params:
    """Validate a loaded params document; raise ConfigError naming every bad key."""
    return validate(doc, Params, filename, root or project_root())

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
    round_trip_yaml().dump(doc, buffer)
    Path(out_path or params_path).write_text(buffer.getvalue(), encoding="utf-8")
    return params


def dump(section: BaseModel) -> str:
    """A section as YAML text, for the "resolved config" cell of every notebook."""
    buffer = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(section.model_dump(), buffer)
    return buffer.getvalue()
