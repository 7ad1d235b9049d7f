"""``finetune`` section of params.yaml (datasets, recipes, method, training) and the
cross-stage rule that rows fit the base model's context."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from medlab.formats.params import Encoding, data_file_problems
from medlab.section import Section

# how a dataset part's files are read: our Sample JSONL (the generate/filter stages'
# output) or a public SFT layout read as it is (medlab.formats.instructions)
PartFormat = Literal["medlab", "alpaca", "moss", "sharegpt", "huatuo_sft", "disc_med_sft"]


class DataPart(Section):
    files: list[str] = Field(min_length=1)
    methods: list[str] | None = None
    exclude_methods: list[str] | None = None
    domains: list[str] | None = None
    faults: list[str] | None = None
    take: Literal["chosen"] | None = None
    format: PartFormat = "medlab"
    domain: Literal["general_medicine", "anesthesia", "general"] | None = None
    encoding: Encoding = "utf-8"

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        if self.format == "medlab":
            return [(("domain",), "only for files in a public format (the records carry their own)")] \
                if self.domain is not None else []
        out: list[tuple[tuple, str]] = []
        if self.domain is None:
            out.append((("domain",), f"required for a {self.format} file: general_medicine | anesthesia | general"))
        for key in ("methods", "exclude_methods", "faults", "take"):
            if getattr(self, key) is not None:
                out.append(((key,), f"selects among generated records; a {self.format} file has none"))
        for k, name in enumerate(self.files):
            out += [(("files", k), why) for _, why in data_file_problems(name, "instructions", self.format,
                                                                          self.encoding, root)]
        return out


class RecipeStage(Section):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    kind: Literal["sft", "dpo"]
    data: list[str] = Field(min_length=1)
    epochs: float | None = Field(default=None, gt=0.0)
    learning_rate: float | None = Field(default=None, gt=0.0)
    schedule: Literal["shuffle", "priority"] = "shuffle"
    priority: dict[str, float] | None = None
    repeats: dict[str, int] | None = None


class FinetuneTrainParams(Section):
    epochs: float = Field(gt=0.0)
    batch_size: int = Field(ge=1)
    gradient_accumulation_steps: int = Field(ge=1)
    max_length: int = Field(ge=16)
    packing: Literal["rows", "flat", "none"]
    fused_loss: Literal["auto", "fused", "plain"]
    priority_window: int = Field(ge=1)
    learning_rate: float = Field(gt=0.0)
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"]
    warmup_ratio: float = Field(ge=0.0, lt=1.0)
    weight_decay: float = Field(ge=0.0)
    max_grad_norm: float = Field(gt=0.0)
    logging_steps: int = Field(ge=1)
    save_steps: int = Field(ge=1)


class LoraParams(Section):
    r: int = Field(ge=1)
    alpha: float = Field(gt=0.0)
    dropout: float = Field(ge=0.0, lt=1.0)
    target_modules: Literal["auto"] | list[str]
    merge: bool


class RopeScalingParams(Section):
    type: Literal["linear", "dynamic", "yarn"] | None
    factor: float = Field(ge=1.0)


class DpoParams(Section):
    beta: float = Field(gt=0.0)
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"]
    epochs: float = Field(gt=0.0)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0.0)
    max_length: int = Field(ge=16)


class LauncherParams(Section):
    kind: Literal["in_process", "accelerate"]
    config_file: str
    num_processes: int = Field(ge=1)


class FinetuneParams(Section):
    datasets: dict[str, list[DataPart]] = Field(min_length=1)
    recipes: dict[str, list[RecipeStage]] = Field(min_length=1)
    method: Literal["full", "lora"]
    lora: LoraParams
    rope_scaling: RopeScalingParams
    train: FinetuneTrainParams
    dpo: DpoParams
    launcher: LauncherParams
    seeds: list[int] = Field(min_length=1)
    seeded_recipes: list[str]
    parallel_seeds: bool

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = [(("datasets", name, k, *loc), why) for name, parts in self.datasets.items()
                                        for k, part in enumerate(parts) for loc, why in part.problems(root)]
        for recipe, stages in self.recipes.items():
            if not re.fullmatch(r"[a-z0-9_]+", recipe):
                out.append((("recipes", recipe), "recipe names are lower-case letters, digits and _"))
            for k, stage in enumerate(stages):
                where = ("recipes", recipe, k)
                for name in stage.data:
                    if name not in self.datasets:
                        out.append(((*where, "data"), f"unknown dataset {name!r} (known: {', '.join(self.datasets)})"))
                if stage.kind == "dpo" and k == 0:
                    out.append(((*where, "kind"), "a DPO stage needs an SFT stage before it (its reference model)"))
                if stage.schedule == "priority":
                    for key in ("priority", "repeats"):
                        for name in getattr(stage, key) or {}:
                            if name not in stage.data:
                                out.append(((*where, key, name), f"not one of this stage's data {stage.data}"))
                    if not stage.priority:
                        out.append(((*where, "priority"), "required when schedule is 'priority'"))
                elif stage.priority or stage.repeats:
                    out.append(((*where, "schedule"), "priority/repeats given but schedule is not 'priority'"))
                if stage.kind == "dpo" and stage.schedule != "shuffle":
                    out.append(((*where, "schedule"), "DPO stages only shuffle"))
            names = [s.name for s in stages]
            if len(set(names)) != len(names):
                out.append((("recipes", recipe), f"stage names must be unique: {names}"))
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            out.append((("seeds",), f"seeds are distinct integers >= 0, got {self.seeds}"))
        for k, name in enumerate(self.seeded_recipes):
            if name not in self.recipes:
                out.append((("seeded_recipes", k), f"unknown recipe {name!r} (known: {', '.join(self.recipes)})"))
        if self.launcher.kind == "accelerate" and not (root / self.launcher.config_file).is_file():
            out.append((("launcher", "config_file"), f"file not found: {root / self.launcher.config_file}"))
        return out


def seed_problem(params) -> str | None:
    """The published models are trained with the run's seed: one seed drives a default run."""
    if params.finetune.seeds[0] != params.base.seed:
        return (f"the first seed ({params.finetune.seeds[0]}) trains the published models and must be "
                f"base.seed ({params.base.seed}); further seeds follow it")
    return None


def context_problem(params) -> str | None:
    """Fine-tuning rows longer than the base model built here can attend over (a real
    base model's limit is only known once loaded, and checked then)."""
    if params.pretrain.init != "scratch":
        return None
    limit = params.pretrain.model.max_position_embeddings
    if params.finetune.rope_scaling.type is not None:
        limit = int(limit * params.finetune.rope_scaling.factor)
    for value in (params.finetune.train.max_length, params.finetune.dpo.max_length):
        if value > limit:
            return (f"{value} tokens exceed the base model's context ({limit}: pretrain.model."
                    f"max_position_embeddings, times finetune.rope_scaling.factor if set)")
    return None

