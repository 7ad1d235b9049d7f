"""medlab.runtime: device/dtype resolution, the Trainer's precision flags, loading through
one place (any family), and the content fingerprint that cache keys use."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from medlab.config import read_yaml, validate_params
from medlab.runtime import (
    ModelLoadError,
    Runtime,
    drop_load_only_keys,
    fingerprint,
    load_model_and_tokenizer,
    load_published,
    resolve_dtype,
    save_tokenizer,
)


def test_auto_resolves_to_fp32_on_a_cpu_and_the_trainer_gets_matching_flags(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    runtime = Runtime()
    assert runtime.device.type == "cpu" and runtime.dtype == torch.float32
    flags = runtime.trainer_precision()
    assert flags["bf16"] is False and flags["fp16"] is False and flags["use_cpu"] is True
    assert "ddp_backend" not in flags
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert runtime.trainer_precision()["ddp_backend"] == "gloo"
    assert Runtime(dtype="bfloat16").trainer_precision()["bf16"] is True
    with pytest.raises(ModelLoadError, match="runtime.device: 'cuda' but no CUDA GPU"):
        Runtime(device="cuda")


def test_auto_dtype_on_a_gpu_is_bf16_where_supported(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16


def test_training_loads_full_weights_in_fp32_and_lora_bases_in_the_runtime_dtype():
    runtime = Runtime(dtype="bfloat16")
    assert runtime.load_kwargs("full")["dtype"] == torch.float32
    assert runtime.load_kwargs("lora")["dtype"] == torch.bfloat16
    assert runtime.load_kwargs()["dtype"] == torch.bfloat16
    assert "attn_implementation" not in runtime.load_kwargs()
    assert Runtime(attn_implementation="eager").load_kwargs()["attn_implementation"] == "eager"


def test_the_runtime_section_is_validated_with_named_keys(root):
    doc = read_yaml(root / "params.yaml")
    doc["runtime"]["device"] = "gpu"
    doc["runtime"]["dtype"] = "fp8"
    with pytest.raises(Exception) as err:
        validate_params(doc, root=root)
    assert "runtime.device" in str(err.value) and "runtime.dtype" in str(err.value)


def test_every_family_loads_in_the_requested_dtype(family):
    name, path = family
    model, tokenizer = load_model_and_tokenizer(path, Runtime(dtype="bfloat16"))
    assert next(model.parameters()).dtype == torch.bfloat16 and not model.training
    assert tokenizer.chat_template, name
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_model_and_tokenizer(path.parent / "not-there")


def test_fingerprint_follows_content_not_mtime(tmp_path, family_dirs):
    source = family_dirs("mistral")
    model = tmp_path / "m"
    shutil.copytree(source, model)
    first = fingerprint(model)
    stamp = model / "model.safetensors"
    os.utime(stamp, (1, 1))  # touched, same bytes: same model
    assert fingerprint(model) == first
    config = json.loads((model / "tokenizer_config.json").read_text())  # a changed chat template is a new model
    config["chat_template"] = "{{ messages[0]['content'] }}"
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    changed_template = fingerprint(model)
    assert changed_template != first
    loaded, _ = load_published(model)  # retrained weights (same size) change it too
    with torch.no_grad():
        loaded.lm_head.weight[-1, :] += 1.0
    loaded.save_pretrained(model)
    assert fingerprint(model) not in (first, changed_template)
    assert fingerprint("Qwen/Qwen2.5-7B-Instruct", "abc123") == "Qwen/Qwen2.5-7B-Instruct@abc123"


def test_a_recipes_adapters_count_and_its_further_seeds_adapters_do_not(tmp_path):
    """A LoRA recipe kept unmerged (merge: false) is its stage adapters: each one's bytes are
    in the fingerprint; a further seed's copy (seeds/s<seed>/) is another model, and
    retraining it leaves the first seed's cached results valid."""
    recipe = tmp_path / "recipe"
    for stage in ("0_general", "seeds/s1235/0_general"):
        (recipe / stage).mkdir(parents=True)
        (recipe / stage / "adapter_model.safetensors").write_bytes(b"adapter " + stage.encode())
    (recipe / "config.json").write_text("{}")
    first = fingerprint(recipe)
    (recipe / "seeds/s1235/0_general/adapter_model.safetensors").write_bytes(b"retrained")
    assert fingerprint(recipe) == first
    (recipe / "0_general/adapter_model.safetensors").write_bytes(b"retrained")
    assert fingerprint(recipe) != first


def test_a_saved_tokenizer_does_not_depend_on_how_it_was_loaded(tmp_path, family_dirs):
    """Loaded offline (HF_HUB_OFFLINE=1 passes local_files_only=True) or not, the tokenizer a
    stage publishes is byte-identical: a model's DVC hash must not depend on the environment."""
    from transformers import AutoTokenizer

    source = family_dirs("qwen2")
    saved = []
    for k, offline in enumerate((False, True)):
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
        save_tokenizer(tokenizer, tmp_path / str(k))
        saved.append({p.name: p.read_bytes() for p in sorted((tmp_path / str(k)).iterdir())})
    assert saved[0] == saved[1] and "local_files_only" not in saved[1]["tokenizer_config.json"].decode()
    # a tokenizer saved the old way (a cached stage result), cleaned when published: the same bytes,
    # and the file it was hard-linked from is left as it was
    stale = tmp_path / "stale"
    AutoTokenizer.from_pretrained(source, local_files_only=True).save_pretrained(stale)
    published = tmp_path / "published"
    published.mkdir()
    for file in stale.iterdir():
        os.link(file, published / file.name)
    drop_load_only_keys(published)
    assert {p.name: p.read_bytes() for p in sorted(published.iterdir())} == saved[0]
    assert "local_files_only" in (stale / "tokenizer_config.json").read_text()
