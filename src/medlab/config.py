"""params.yaml -> typed, validated sections.

Read the file the way DVC reads it (ruamel.yaml, YAML 1.2: ``2e-5`` is a float, not a
string as in PyYAML), then validate every section with strict pydantic models
(``extra="forbid"``, no silent type coercion). Any problem stops the run before work
starts, with one line per problem that names the file, the line and the key path::

    params.yaml:61: pretrain.model.hiden_size: unknown key (did you mean hidden_size?)

Every stage validates the *whole* file, so a typo in a downstream section fails the
first stage of ``dvc repro`` instead of an hour later.

The section models below are the schema of params.yaml; the comments on every key
(what it does, what it trades off) live in params.yaml itself.
"""

from __future__ import annotations

import difflib
import io
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from medlab.paths import project_root


class ConfigError(ValueError):
    """A params file that does not validate; the message has one line per problem."""


class Section(BaseModel):
    """Base of every params section: unknown keys and type coercion are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        """Cross-field and filesystem checks pydantic cannot express: (key path, message)."""
        return []


# --------------------------------------------------------------------------- base
class BaseParams(Section):
    seed: int = Field(ge=0)
    torch_threads: int = Field(ge=0)


# ---------------------------------------------------------------------- knowledge
class RuntimeParams(Section):
    """How every stage loads Hugging Face models (medlab.runtime)."""

    device: str = Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"]
    gradient_checkpointing: bool
    trust_remote_code: bool


class ExternalKG(Section):
    path: str | None
    format: Literal["triples_jsonl", "cmekg_json"]
    on_error: Literal["raise", "skip"]
    domain: Literal["general", "anesthesia"]


class KnowledgeParams(Section):
    source: Literal["embedded", "external", "both"]
    external: ExternalKG

    def problems(self, root: Path) -> list[tuple[tuple[str, ...], str]]:
        if self.source == "embedded":
            return []
        if self.external.path is None:
            return [(("external", "path"), f"required when source is {self.source!r}")]
        path = root / self.external.path
        if not path.is_file():
            return [(("external", "path"), f"file not found: {path}")]
        return []


# ------------------------------------------------------------------------- corpus
class CorpusParams(Section):
    paragraphs_per_entity: int = Field(ge=1)
    list_probability: float = Field(ge=0.0, le=1.0)
    anesthesia_coverage: float = Field(ge=0.0, le=1.0)
    valid_fraction: float = Field(gt=0.0, lt=0.5)


# ---------------------------------------------------------------------- benchmark
class McqParams(Section):
    n_options: int = Field(ge=4, le=5)
    anesthesia_items: int = Field(ge=1)
    general_items: int = Field(ge=1)
    dev_items: int = Field(ge=0)


class QaParams(Section):
    anesthesia_items: int = Field(ge=1)


class VignetteParams(Section):
    n_cases: int = Field(ge=1)
    questions_per_case: int = Field(ge=1, le=3)


class BenchmarkParams(Section):
    mcq: McqParams
    qa: QaParams
    vignettes: VignetteParams


# ----------------------------------------------------------------------- pretrain
class PretrainedModel(Section):
    name_or_path: str | None
    revision: str
    trust_remote_code: bool
    continue_training: bool


class TokenizerParams(Section):
    vocab_size: int = Field(ge=300)
    min_frequency: int = Field(ge=1)


class ModelParams(Section):
    hidden_size: int = Field(ge=8)
    intermediate_size: int = Field(ge=8)
    num_hidden_layers: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_key_value_heads: int = Field(ge=1)
    max_position_embeddings: int = Field(ge=16)
    rope_theta: float = Field(gt=0.0)
    tie_word_embeddings: bool


class TrainParams(Section):
    block_size: int = Field(ge=8)
    batch_size: int = Field(ge=1)
    gradient_accumulation_steps: int = Field(ge=1)
    max_steps: int = Field(ge=1)
    learning_rate: float = Field(gt=0.0)
    warmup_steps: int = Field(ge=0)
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"]
    weight_decay: float = Field(ge=0.0)
    max_grad_norm: float = Field(gt=0.0)
    logging_steps: int = Field(ge=1)
    eval_steps: int = Field(ge=1)
    save_steps: int = Field(ge=1)
    keep_checkpoints: bool


class PretrainParams(Section):
    init: Literal["scratch", "pretrained"]
    pretrained: PretrainedModel
    tokenizer: TokenizerParams
    model: ModelParams
    train: TrainParams

    def problems(self, root: Path) -> list[tuple[tuple[str, ...], str]]:
        out: list[tuple[tuple[str, ...], str]] = []
        m = self.model
        if m.hidden_size % m.num_attention_heads:
            out.append((("model", "num_attention_heads"),
                        f"must divide hidden_size ({m.hidden_size})"))
        if m.num_attention_heads % m.num_key_value_heads:
            out.append((("model", "num_key_value_heads"),
                        f"must divide num_attention_heads ({m.num_attention_heads})"))
        if self.init == "scratch" and self.train.block_size > m.max_position_embeddings:
            out.append((("train", "block_size"),
                        f"exceeds model.max_position_embeddings ({m.max_position_embeddings})"))
        if self.init == "pretrained":
            name = self.pretrained.name_or_path
            if name is None:
                out.append((("pretrained", "name_or_path"), "required when init is 'pretrained'"))
            else:
                problem = model_path_problem(name, root)
                if problem:
                    out.append((("pretrained", "name_or_path"), problem))
        return out


def looks_like_local_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else is meant as a local path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.endswith("/")


def model_path_problem(name: str, root: Path) -> str | None:
    """Why ``name`` cannot be a model (local dir or hub id), or None if it may be one."""
    path = (root / Path(name).expanduser()) if not Path(name).is_absolute() else Path(name)
    if path.exists():
        if not (path / "config.json").is_file():
            return f"{path} has no config.json: not a Hugging Face model directory"
        return None
    if looks_like_local_path(name):
        return f"model directory not found: {path}"
    return None  # a hub id: resolved (or refused, when offline) at load time


# ----------------------------------------------------------------------- generate
class FaultRates(Section):
    factual: float = Field(ge=0.0, le=1.0)
    unsafe: float = Field(ge=0.0, le=1.0)
    off_format: float = Field(ge=0.0, le=1.0)
    stigma: float = Field(ge=0.0, le=1.0)


class SimulatedTeacherParams(Section):
    faults: FaultRates
    stigma_group: str


class HFTeacherParams(Section):
    name_or_path: str | None
    revision: str
    trust_remote_code: bool
    batch_size: int = Field(ge=1)


class OpenAITeacherParams(Section):
    base_url: str
    model: str
    api_key_env: str
    max_concurrency: int = Field(ge=1)
    timeout_s: float = Field(gt=0.0)
    max_retries: int = Field(ge=0)


class TeacherParams(Section):
    backend: Literal["simulated", "hf", "openai"]
    simulated: SimulatedTeacherParams
    hf: HFTeacherParams
    openai: OpenAITeacherParams

    def problems(self, root: Path) -> list[tuple[tuple[str, ...], str]]:
        out: list[tuple[tuple[str, ...], str]] = []
        total = sum(self.simulated.faults.model_dump().values())
        if total > 1.0:
            out.append((("simulated", "faults"), f"rates sum to {total:.2f} > 1"))
        from medlab.patient_groups import load_groups

        if self.simulated.stigma_group not in load_groups():
            out.append((("simulated", "stigma_group"),
                        f"unknown group {self.simulated.stigma_group!r} (known: {', '.join(load_groups())})"))
        if self.backend == "hf":
            if self.hf.name_or_path is None:
                out.append((("hf", "name_or_path"), "required when backend is 'hf'"))
            elif problem := model_path_problem(self.hf.name_or_path, root):
                out.append((("hf", "name_or_path"), problem))
        return out


class DecodingParams(Section):
    temperature: float = Field(ge=0.0)
    top_p: float = Field(gt=0.0, le=1.0)
    max_new_tokens: int = Field(ge=1)


class KgQaParams(Section):
    general_medicine: int = Field(ge=0)
    anesthesia: int = Field(ge=0)
    context_facts: int = Field(ge=0)


class KgDialogueParams(Section):
    general_medicine: int = Field(ge=0)
    anesthesia: int = Field(ge=0)
    persona_rate: float = Field(ge=0.0, le=1.0)


class SelfInstructParams(Section):
    seed_file: str
    general_medicine: int = Field(ge=0)
    anesthesia: int = Field(ge=0)
    examples_per_prompt: int = Field(ge=1)
    tasks_per_request: int = Field(ge=1)
    novelty_threshold: float = Field(gt=0.0, le=1.0)
    max_requests: int = Field(ge=1)


class DialogueFile(Section):
    path: str
    format: Literal["meddialog_txt", "meddialog_json", "cmedqa2", "disc_med_sft"]
    domain: Literal["general_medicine", "anesthesia"]


class McqFile(Section):
    path: str
    format: Literal["medlab", "cmb_exam", "cmexam", "medqa", "medmcqa", "medmcqa_hf", "ceval"]
    domain: Literal["general_medicine", "anesthesia", "auto"]


class InstructionFile(Section):
    path: str
    format: Literal["alpaca", "moss", "sharegpt"]


class DialogueRewriteParams(Section):
    files: list[DialogueFile]


class McqToQaParams(Section):
    files: list[McqFile]


class CorpusToInstructionParams(Section):
    max_paragraph_chars: int = Field(ge=20)
    paragraphs_per_subject: int | None = Field(ge=1)


class GeneralMixParams(Section):
    files: list[InstructionFile]


class GenerateParams(Section):
    teacher: TeacherParams
    decoding: DecodingParams
    cache: Literal["use", "refresh", "off"]
    kg_qa: KgQaParams
    kg_dialogue: KgDialogueParams
    self_instruct: SelfInstructParams
    dialogue_rewrite: DialogueRewriteParams
    mcq_to_qa: McqToQaParams
    corpus_to_instruction: CorpusToInstructionParams
    general_mix: GeneralMixParams

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = [(("teacher", *loc), m) for loc, m in self.teacher.problems(root)]
        if not (root / self.self_instruct.seed_file).is_file():
            out.append((("self_instruct", "seed_file"), f"file not found: {root / self.self_instruct.seed_file}"))
        for section in ("dialogue_rewrite", "mcq_to_qa", "general_mix"):
            for k, spec in enumerate(getattr(self, section).files):
                if not (root / spec.path).exists():
                    out.append(((section, "files", k, "path"), f"not found: {root / spec.path}"))
        return out


# ------------------------------------------------------------------------- filter
class RuleFilterParams(Section):
    min_chars: int = Field(ge=0)
    max_chars: int = Field(ge=1)
    max_repeat_share: float = Field(gt=0.0, le=1.0)


class LikelihoodJudgeParams(Section):
    model: str
    score: Literal["fact_span", "pmi", "mean_logprob"]
    contrast_weight: float = Field(ge=0.0)
    format: Literal["plain", "chat"]
    batch_size: int = Field(ge=1)
    max_tokens: int = Field(ge=16)


class RubricJudgeParams(Section):
    backend: Literal["hf", "openai"]
    hf: HFTeacherParams
    openai: OpenAITeacherParams
    decoding: DecodingParams
    max_attempts: int = Field(ge=1)


class JudgeParams(Section):
    kind: Literal["likelihood", "rubric", "none"]
    allow_self_judge: bool
    likelihood: LikelihoodJudgeParams
    rubric: RubricJudgeParams
    mode: Literal["quantile", "threshold"]
    keep_quantile: float = Field(gt=0.0, le=1.0)
    keep_quantile_prose: float = Field(gt=0.0, le=1.0)
    threshold: float


class DedupParams(Section):
    ngram: int = Field(ge=1)
    num_perm: int = Field(ge=16)
    threshold: float = Field(gt=0.0, le=1.0)


class ExternalBenchmark(Section):
    path: str
    format: Literal["medlab", "cmb_exam", "cmexam", "medqa", "medmcqa", "medmcqa_hf", "ceval"]


class DecontaminateParams(Section):
    n_question: int = Field(ge=4)
    n_context: int = Field(ge=4)
    external: list[ExternalBenchmark]


class DeidParams(Section):
    development_file: str
    heldout_file: str


class PairsParams(Section):
    max_pairs: int = Field(ge=0)


class FilterParams(Section):
    rules: RuleFilterParams
    judge: JudgeParams
    dedup: DedupParams
    decontaminate: DecontaminateParams
    deid: DeidParams
    pairs: PairsParams

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = []
        model = self.judge.likelihood.model
        produced = Path(model).parts[:1] in (("models",), ("data",))  # made by the pipeline
        if self.judge.kind == "likelihood" and not produced:
            if problem := model_path_problem(model, root):
                out.append((("judge", "likelihood", "model"), problem))
        for k, spec in enumerate(self.decontaminate.external):
            if not (root / spec.path).is_file():
                out.append((("decontaminate", "external", k, "path"), f"file not found: {root / spec.path}"))
        for key in ("development_file", "heldout_file"):
            if not (root / getattr(self.deid, key)).is_file():
                out.append((("deid", key), f"file not found: {root / getattr(self.deid, key)}"))
        return out


def self_judging(params) -> str | None:
    """Why the filter's judge is the generate stage's teacher, or None if it is not."""
    teacher, judge = params.generate.teacher, params.filter.judge
    if judge.kind == "rubric" and judge.rubric.backend == teacher.backend:
        same = (judge.rubric.openai.model == teacher.openai.model and
                judge.rubric.openai.base_url == teacher.openai.base_url) if teacher.backend == "openai" \
            else judge.rubric.hf.name_or_path == teacher.hf.name_or_path
        if same:
            return f"the rubric judge is the teacher ({teacher.backend})"
    if judge.kind == "likelihood" and teacher.backend == "hf" and teacher.hf.name_or_path == judge.likelihood.model:
        return f"the likelihood judge is the teacher ({judge.likelihood.model})"
    return None


# ----------------------------------------------------------------------- finetune
class DataPart(Section):
    files: list[str] = Field(min_length=1)
    methods: list[str] | None = None
    exclude_methods: list[str] | None = None
    domains: list[str] | None = None
    faults: list[str] | None = None
    take: Literal["chosen"] | None = None


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

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = []
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
        if self.launcher.kind == "accelerate" and not (root / self.launcher.config_file).is_file():
            out.append((("launcher", "config_file"), f"file not found: {root / self.launcher.config_file}"))
        return out


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


# ----------------------------------------------------------------------- evaluate
class EvalMcqParams(Section):
    sets: list[str]
    external: list[McqFile]
    scorings: list[Literal["cloze", "option_text", "letter"]] = Field(min_length=1)
    headline: Literal["cloze", "option_text", "letter"]
    norm: bool
    shots: int = Field(ge=0, le=10)
    generation_items: int = Field(ge=0)
    generation_max_new_tokens: int = Field(ge=1)


class EvalQaParams(Section):
    items: int = Field(ge=0)
    max_new_tokens: int = Field(ge=1)


class EvalNerParams(Section):
    items: int = Field(ge=0)
    max_new_tokens: int = Field(ge=1)
    external: str | None
    external_format: Literal["cmeee", "promptcblue"]


class EvalJudgeParams(RubricJudgeParams):
    """The filter's rubric-judge settings, plus ``none`` (no judge: the embedded default)."""

    backend: Literal["none", "hf", "openai"]


class EvaluateParams(Section):
    models: dict[str, str] = Field(min_length=1)
    plain_models: list[str]
    batch_size: int = Field(ge=1)
    n_boot: int = Field(ge=0)
    mcq: EvalMcqParams
    qa: EvalQaParams
    ner: EvalNerParams
    judge: EvalJudgeParams

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        out: list[tuple[tuple, str]] = []
        for name, path in self.models.items():
            if not re.fullmatch(r"[a-z0-9_]+", name):
                out.append((("models", name), "model names are lower-case letters, digits and _"))
            if Path(path).parts[:1] != ("models",) and (problem := model_path_problem(path, root)):
                out.append((("models", name), problem))
        for name in self.plain_models:
            if name not in self.models:
                out.append((("plain_models",), f"{name!r} is not in evaluate.models"))
        known = ("anesthesia_mcq", "general_mcq", "anesthesia_rc")
        for name in self.mcq.sets:
            if name not in known:
                out.append((("mcq", "sets"), f"unknown set {name!r} (the benchmark stage writes {', '.join(known)})"))
        if self.mcq.headline not in self.mcq.scorings:
            out.append((("mcq", "headline"), f"{self.mcq.headline!r} is not one of mcq.scorings {self.mcq.scorings}"))
        for k, spec in enumerate(self.mcq.external):
            if not (root / spec.path).is_file():
                out.append((("mcq", "external", k, "path"), f"file not found: {root / spec.path}"))
        if self.ner.external is not None and not (root / self.ner.external).is_file():
            out.append((("ner", "external"), f"file not found: {root / self.ner.external}"))
        if self.judge.backend == "hf":
            if self.judge.hf.name_or_path is None:
                out.append((("judge", "hf", "name_or_path"), "required when backend is 'hf'"))
            elif problem := model_path_problem(self.judge.hf.name_or_path, root):
                out.append((("judge", "hf", "name_or_path"), problem))
        return out


class ProbeParams(Section):
    scales: list[str]
    scale_files: list[str]
    readouts: list[Literal["likert", "statement"]] = Field(min_length=1)
    reversal: bool
    calibrate: bool
    target_group: str
    batch_size: int = Field(ge=1)
    n_boot: int = Field(ge=0)

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        from medlab.patient_groups import load_groups
        from medlab.probe.scale import ScaleError, builtin_scales, load_scale

        out: list[tuple[tuple, str]] = []
        try:
            known = builtin_scales()
        except ScaleError as exc:  # a bundled file broken by an edit
            return [(("scales",), str(exc))]
        for name in self.scales:
            if name not in known:
                out.append((("scales",), f"unknown scale {name!r} (bundled: {', '.join(known)})"))
        for k, path in enumerate(self.scale_files):
            try:
                load_scale(root / path)
            except ScaleError as exc:
                out.append((("scale_files", k), str(exc)))
        if self.target_group not in load_groups():
            out.append((("target_group",), f"unknown patient group {self.target_group!r}"))
        return out


class CompareParams(Section):
    baseline: str
    stigma_model: str
    clean_model: str
    validity_readout: Literal["likert", "statement"]
    pairs: list[list[str]]
    tasks: list[str] = Field(min_length=1)
    n_boot: int = Field(ge=100)
    pairwise_judge: bool

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        return [(("pairs", k), f"a pair is two model names, got {pair}") for k, pair in enumerate(self.pairs)
                if len(pair) != 2 or pair[0] == pair[1]]


class ReportParams(Section):
    title: str = Field(min_length=1)
    browser: str
    width: int = Field(ge=600, le=4000)
    timeout_s: float = Field(gt=0)

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        if self.browser and not (shutil.which(self.browser) or Path(self.browser).is_file()):
            return [(("browser",), f"{self.browser!r} is neither a command on PATH nor a file; "
                                   "\"\" looks for chromium, chromium-browser or google-chrome")]
        return []


def compare_problems(params) -> list[tuple[tuple, str]]:
    """compare.* names every model it compares in evaluate.models."""
    known = params.evaluate.models
    out = []
    for key in ("baseline", "stigma_model", "clean_model"):
        if getattr(params.compare, key) not in known:
            out.append((("compare", key), f"{getattr(params.compare, key)!r} is not in evaluate.models"))
    if params.compare.validity_readout not in params.probe.readouts:
        out.append((("compare", "validity_readout"), f"{params.compare.validity_readout!r} is not one of "
                    f"probe.readouts {params.probe.readouts}"))
    if params.probe.target_group != params.generate.teacher.simulated.stigma_group:
        out.append((("probe", "target_group"), f"{params.probe.target_group!r} is not the group the teacher's "
                    f"planted stigma targets (generate.teacher.simulated.stigma_group: "
                    f"{params.generate.teacher.simulated.stigma_group!r}): the validity check would test nothing"))
    for k, pair in enumerate(params.compare.pairs):
        for name in pair:
            if name not in known:
                out.append((("compare", "pairs", k), f"{name!r} is not in evaluate.models"))
    return out


def unknown_recipe_models(params) -> list[tuple[str, str]]:
    """evaluate.models entries under models/finetune/ naming no recipe: (name, message)."""
    out = []
    for name, path in params.evaluate.models.items():
        parts = Path(path).parts
        if parts[:2] == ("models", "finetune") and (len(parts) != 3 or parts[2] not in params.finetune.recipes):
            out.append((name, f"{path}: no such recipe in finetune.recipes ({', '.join(params.finetune.recipes)})"))
        elif parts[:1] == ("models",) and parts[:2] not in (("models", "base"), ("models", "finetune")):
            out.append((name, f"{path}: the pipeline writes models/base and models/finetune/<recipe> only"))
    return out


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


def main(argv: list[str] | None = None) -> int:
    """``python -m medlab.config [params.yaml] [--overlay smoke.yaml]``: validate, print ok."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("params", nargs="?", default=None)
    parser.add_argument("--overlay", help="apply this overlay in place before validating")
    args = parser.parse_args(argv)
    try:
        path = Path(args.params) if args.params else project_root() / "params.yaml"
        if args.overlay:
            apply_overlay(path, Path(args.overlay))
        else:
            load_params(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{path}: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
