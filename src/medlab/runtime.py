"""The one place Hugging Face models are loaded: device, dtype, attention, revision,
remote code (params ``runtime``); the model fingerprint; the Trainer's precision flags.

Every stage that touches a model goes through here -- pre-training, fine-tuning, the
filter's likelihood judge, the ``hf`` teacher/judge backend, evaluate, probe -- so a GPU
run puts every model on the GPU in the same dtype, and a CPU run stays bit-reproducible
(fp32, SDPA).

* ``device: auto`` = ``cuda`` when a GPU is visible, else ``cpu``.
* ``dtype: auto`` = bfloat16 on a GPU that supports it (Ampere and later, H100/H200),
  float16 on an older GPU, float32 on a CPU (CPU bf16 matmuls are slower than fp32 on
  most machines, and fp32 keeps the embedded default bit-reproducible).
* ``attn_implementation: auto`` = transformers' choice (SDPA where the architecture has
  it); ``flash_attention_2`` needs the flash-attn package and a GPU.

The fingerprint identifies a model's *content*, for cache keys: config, generation
config, tokenizer files and chat template byte for byte, and the SHA-256 of every weight
file -- computed once per file and remembered in ``.cache/medlab/fingerprints.json``
under its path, size, mtime and inode, so a 15 GB model costs ~15 s the first time and
nothing on every later stage (a file rewritten in place gets a new mtime: hashed again).
A hash of only the first and last MiB would be cheaper still but misses a change in the
middle (a merged adapter on a few matrices): when in doubt, recompute.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from medlab.cachekey import file_hash

ADAPTER_POINTER = "medlab_adapter.json"  # a published LoRA recipe: adapters + where their base is
BASE_POINTER = "medlab_base.json"  # models/base when a pretrained model is used as is
MIB = 1 << 20
# files whose every byte determines behaviour (small); weights are sampled (large)
EXACT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", "chat_template.json", "tokenizer.model",
               "vocab.json", "merges.txt", "added_tokens.json", "adapter_config.json", ADAPTER_POINTER,
               BASE_POINTER)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


class ModelLoadError(RuntimeError):
    """A model or tokenizer that cannot be loaded; the message names the path or id."""


class Runtime:
    """Resolved ``runtime`` params (defaults: auto device and dtype, no remote code)."""

    def __init__(self, device: str = "auto", dtype: str = "auto", attn_implementation: str = "auto",
                 gradient_checkpointing: bool = False, trust_remote_code: bool = False):
        self.device = torch.device(resolve_device(device))
        self.dtype = resolve_dtype(dtype, self.device)
        self.attn_implementation = None if attn_implementation == "auto" else attn_implementation
        self.gradient_checkpointing = gradient_checkpointing
        self.trust_remote_code = trust_remote_code

    @classmethod
    def of(cls, params=None) -> Runtime:
        """From a ``runtime`` params section (or a whole Params), or the defaults for None."""
        if params is None:
            return cls()
        if isinstance(params, Runtime):
            return params
        section = getattr(params, "runtime", params)
        return cls(section.device, section.dtype, section.attn_implementation, section.gradient_checkpointing,
                   section.trust_remote_code)

    def describe(self) -> dict:
        return {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "attn_implementation": self.attn_implementation or "auto",
                "gradient_checkpointing": self.gradient_checkpointing}

    def trainer_precision(self) -> dict:
        """The Trainer's matching flags: mixed precision on a GPU, fp32 on a CPU, checkpointing,
        and the CPU settings (several CPU processes talk over gloo)."""
        import os

        out = {"bf16": self.dtype == torch.bfloat16, "fp16": self.dtype == torch.float16,
               "activation_checkpointing": self.gradient_checkpointing}  # transformers 5's name for it
        if self.device.type == "cpu":
            out["use_cpu"] = True
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                out["ddp_backend"] = "gloo"
        return out

    def training_arguments(self, cls=None, *, output_dir, seed: int, save_steps: int, **settings):
        """The one place ``TrainingArguments`` are built (``cls``: it or a TRL subclass,
        ``SFTConfig`` / ``DPOConfig``), for pre-training and every fine-tuning stage alike:
        ``settings`` are the stage's own (steps, batch, learning rate ...); added here are
        the precision and CPU flags (``trainer_precision``), checkpoints every ``save_steps``
        with only the last kept (all a resume needs), the seed for init and data order, and
        no progress bars or reporters (stages print progress lines and write DVCLive from
        the log history at the end: medlab.monitor)."""
        if cls is None:
            from transformers import TrainingArguments as cls
        return cls(output_dir=str(output_dir), save_strategy="steps", save_steps=save_steps, save_total_limit=1,
                   seed=seed, data_seed=seed, dataloader_num_workers=0,
                   dataloader_pin_memory=False,  # CPU default; avoids a warning per epoch
                   **self.trainer_precision(), report_to="none", disable_tqdm=True, log_level="warning",
                   **settings)

    def load_kwargs(self, training: str | None = None) -> dict:
        """``from_pretrained`` keyword arguments. ``training="full"`` loads fp32 master
        weights and lets the Trainer's autocast do bf16/fp16 (pure-bf16 AdamW loses small
        updates); ``"lora"`` keeps the frozen base in the runtime dtype (half the memory of
        fp32 on a GPU; peft keeps the adapters themselves in fp32)."""
        kwargs = {"dtype": torch.float32 if training == "full" else self.dtype, "use_safetensors": True,
                  "trust_remote_code": self.trust_remote_code}
        if self.attn_implementation is not None:
            kwargs["attn_implementation"] = self.attn_implementation
        return kwargs


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"runtime.device: {device!r} but no CUDA GPU is visible (use auto or cpu)")
    return device


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


# Keys transformers copies into tokenizer_config.json from how a tokenizer was *loaded*
# (under HF_HUB_OFFLINE=1, local_files_only: true): not part of the tokenizer, and kept they
# would make a published model's bytes (and its DVC hash) depend on the run's environment.
LOAD_ONLY_KEYS = ("local_files_only",)


def save_tokenizer(tokenizer, directory: Path) -> None:
    """``tokenizer.save_pretrained(directory)`` without the load-only keys."""
    for key in LOAD_ONLY_KEYS:
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.save_pretrained(directory)


def drop_load_only_keys(directory: Path) -> None:
    """The same for a tokenizer already saved (a stage result cached before save_tokenizer
    existed): rewrite its tokenizer_config.json as a new file -- never in place, since a
    published file may be a hard link into the cache."""
    path = Path(directory) / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if not any(key in config for key in LOAD_ONLY_KEYS):
        return
    for key in LOAD_ONLY_KEYS:
        config.pop(key, None)
    path.unlink()
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_pointer(directory: Path, name_or_path: str, revision: str, trust_remote_code: bool,
                  tokenizer=None) -> None:
    """``models/base`` as a pointer to a model used as is (no multi-GB copy in DVC's cache);
    with ``tokenizer`` (one this stage changed: a chat template added) that tokenizer is
    saved beside the pointer and used instead of the model's own."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = {"name_or_path": str(name_or_path), "revision": revision, "trust_remote_code": trust_remote_code}
    if tokenizer is not None:
        save_tokenizer(tokenizer, directory)
        spec["tokenizer"] = "."
    (directory / BASE_POINTER).write_text(json.dumps(spec, ensure_ascii=False, indent=2) + "\n")


def resolve_base(directory: Path) -> dict:
    """Where the model stored in (or pointed to by) a directory is: pretrained_model_name_or_path,
    revision, trust_remote_code, and tokenizer_path (the pointer's own tokenizer, if it has one)."""
    directory = Path(directory)
    pointer = directory / BASE_POINTER
    if pointer.is_file():
        spec = json.loads(pointer.read_text())
        tokenizer = str(directory) if spec.get("tokenizer") == "." else spec["name_or_path"]
        return {"pretrained_model_name_or_path": spec["name_or_path"], "revision": spec["revision"],
                "trust_remote_code": spec["trust_remote_code"], "tokenizer_path": tokenizer}
    if not (directory / "config.json").is_file():
        raise ModelLoadError(f"{directory}: neither a model directory (config.json) nor a "
                             f"{BASE_POINTER} pointer: run the pretrain stage first")
    return {"pretrained_model_name_or_path": str(directory), "revision": "main", "trust_remote_code": False,
            "tokenizer_path": str(directory)}


def _must_exist(name_or_path: str | Path) -> None:
    """A path that is clearly local (absolute, ./, ../, ~) but missing: say so, instead of
    the hub client's complaint that it is not a valid repository id."""
    text = str(name_or_path)
    if text.startswith(("/", "./", "../", "~")) and not Path(text).expanduser().exists():
        raise ModelLoadError(f"cannot load model {text!r}: no such directory")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_tokenizer(name_or_path: str | Path, runtime: Runtime | None = None, revision: str = "main",
                   trust_remote_code: bool = False):
    """The tokenizer (and chat template) of a model; ``trust_remote_code`` adds to the runtime's."""
    from transformers import AutoTokenizer

    runtime = Runtime.of(runtime)
    _must_exist(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path), revision=revision,
                                             trust_remote_code=runtime.trust_remote_code or trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {str(name_or_path)!r} (revision {revision!r}), its tokenizer: "
                             f"{_first_line(exc)}") from exc


def load_causal_lm(name_or_path: str | Path, runtime: Runtime | None = None, revision: str = "main",
                   config=None, training: str | None = None, trust_remote_code: bool = False):
    """A causal LM on the runtime's device and dtype (safetensors only), in eval mode
    unless ``training`` (full | lora: see ``Runtime.load_kwargs``); ``config`` overrides
    the stored one (RoPE scaling)."""
    from transformers import AutoModelForCausalLM

    runtime = Runtime.of(runtime)
    _must_exist(name_or_path)
    kwargs = runtime.load_kwargs(training)
    kwargs["trust_remote_code"] = kwargs["trust_remote_code"] or trust_remote_code
    if config is not None:
        kwargs["config"] = config
    try:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), revision=revision, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelLoadError(f"cannot load model {str(name_or_path)!r} (revision {revision!r}): "
                             f"{_first_line(exc)}") from exc
    if training is None:  # the Trainer moves a training model itself (and shards it under FSDP)
        model.to(runtime.device)
        model.eval()
    return model


def load_model_and_tokenizer(name_or_path: str | Path, runtime: Runtime | None = None, revision: str = "main",
                             training: str | None = None, trust_remote_code: bool = False):
    """Any local or hub causal LM and its tokenizer, as the runtime says, or a ModelLoadError."""
    tokenizer = load_tokenizer(name_or_path, runtime, revision, trust_remote_code)
    return load_causal_lm(name_or_path, runtime, revision, training=training,
                          trust_remote_code=trust_remote_code), tokenizer


def load_base(directory: Path, runtime: Runtime | None = None, training: str | None = None):
    """The model in (or pointed to by) a ``models/base``-style directory, and its tokenizer."""
    spec = resolve_base(directory)
    remote = spec["trust_remote_code"]
    tokenizer = load_tokenizer(spec["tokenizer_path"], runtime, spec["revision"], trust_remote_code=remote)
    model = load_causal_lm(spec["pretrained_model_name_or_path"], runtime, spec["revision"], training=training,
                           trust_remote_code=remote)
    return model, tokenizer


def load_published(path: str | Path, runtime: Runtime | None = None):
    """Model + tokenizer of any model directory a stage wrote: full weights, a base pointer
    (``medlab_base.json``), or a LoRA recipe (``medlab_adapter.json``: the base directory,
    relative to this one, and the adapters to apply in order; all but the last merged,
    the last kept as a peft adapter)."""
    path = Path(path)
    pointer = path / ADAPTER_POINTER
    if not pointer.is_file():
        return load_base(path, runtime)
    from peft import PeftModel

    spec = json.loads(pointer.read_text())
    model, _ = load_base((path / spec["base_model"]).resolve(), runtime)
    adapters = spec["adapters"]
    for name in adapters[:-1]:
        model = PeftModel.from_pretrained(model, str(path / name)).merge_and_unload()
    model = PeftModel.from_pretrained(model, str(path / adapters[-1])).eval()
    return model, load_tokenizer(path, runtime)  # the recipe's tokenizer (its template)


def fingerprint(name_or_path: str | Path, revision: str = "main") -> str:
    """Cheap content fingerprint of a model directory (see the module doc); for a hub id,
    the id and revision. An adapter directory includes its base model's fingerprint."""
    path = Path(name_or_path)
    if not path.is_dir():
        return f"{name_or_path}@{revision}"
    parts = []
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        if file.name in EXACT_FILES:
            parts.append(f"{file.name}:{hashlib.sha256(file.read_bytes()).hexdigest()}")
        elif file.name.endswith(WEIGHT_SUFFIXES):
            parts.append(f"{file.name}:{file_hash(file)}")
    for file in sorted(p for p in path.rglob("adapter_model.safetensors") if p.parent != path):
        if file.relative_to(path).parts[0] == "seeds":  # a further seed's copy is another model
            continue
        parts.append(f"{file.relative_to(path)}:{file_hash(file)}")  # a recipe's stage adapters
    if (path / ADAPTER_POINTER).is_file():
        base = (path / json.loads((path / ADAPTER_POINTER).read_text())["base_model"]).resolve()
        parts.append(f"base->{fingerprint(base)}")
    if (path / BASE_POINTER).is_file():
        spec = resolve_base(path)
        parts.append(f"points to->{fingerprint(spec['pretrained_model_name_or_path'], spec['revision'])}")
    if not parts:
        raise ModelLoadError(f"{path}: no model files to fingerprint")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
