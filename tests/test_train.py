"""Tokenizer, model building/loading, packing, perplexity baselines and crash-safe resume."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer

from medlab.cachekey import digest
from medlab.checkpoints import last_complete_checkpoint
from medlab.packing import pack_stream
from medlab.pretrain.model import build_llama, count_parameters
from medlab.pretrain.tokenizer import END, EOS, ROLE_TOKENS, ensure_chat_template, train_tokenizer
from medlab.pretrain.trainer import perplexity, unigram_perplexity
from medlab.runtime import (
    ModelLoadError,
    load_base,
    load_model_and_tokenizer,
    resolve_base,
    write_pointer,
)

TEXTS = [f"{drug}的常见不良反应包括{effect}和{other}。" for drug in ("丙泊酚", "依托咪酯", "氯胺酮", "芬太尼")
         for effect in ("低血压", "呼吸抑制", "恶心", "注射痛") for other in ("心动过缓", "肌阵挛")] * 3
TINY = SimpleNamespace(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=2, max_position_embeddings=64, rope_theta=10000.0,
                       tie_word_embeddings=True)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=400, min_frequency=2, model_max_length=64)


def test_tokenizer_round_trips_chinese_and_knows_its_specials(tokenizer):
    text = "丙泊酚的常见不良反应包括低血压。罕见字：䓬"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text  # byte-level: nothing is unknown
    assert len(ids) < len(text.encode())  # merges learned: fewer tokens than bytes
    for special in (EOS, *ROLE_TOKENS, END):
        assert len(tokenizer(special, add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_chat_template_and_assistant_mask(tokenizer):
    messages = [{"role": "user", "content": "丙泊酚有什么不良反应？"},
                {"role": "assistant", "content": "低血压和呼吸抑制。"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == "<|user|>\n丙泊酚有什么不良反应？<|end|>\n<|assistant|>\n低血压和呼吸抑制。<|end|>\n"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n")
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(masked) == "低血压和呼吸抑制。<|end|>"
    with pytest.raises(Exception, match="unknown role"):
        tokenizer.apply_chat_template([{"role": "doctor", "content": "x"}], tokenize=False)


def test_tokenizer_training_is_deterministic(tokenizer):
    again = train_tokenizer(TEXTS, vocab_size=400, min_frequency=2, model_max_length=64)
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_pack_cuts_full_blocks_with_eos():
    blocks = pack_stream([[1, 2, 3], [4, 5], [6]], block_size=3, eos_id=0)
    assert blocks == [[1, 2, 3], [0, 4, 5], [0, 6, 0]]
    assert pack_stream([[1, 2]], block_size=4, eos_id=0) == []  # the tail is dropped


def test_unigram_perplexity():
    # Uniform training counts over a 4-token vocabulary -> perplexity 4 on anything.
    assert unigram_perplexity([[0, 1, 2, 3]], [[0, 1, 2, 3]], vocab_size=4) == pytest.approx(4.0)
    skewed = unigram_perplexity([[0] * 50 + [1]], [[0] * 10], vocab_size=2)
    assert skewed < 1.1


def test_build_llama_and_perplexity_of_random_model(tokenizer):
    model = build_llama(TINY, len(tokenizer), tokenizer.eos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert model.config.vocab_size == len(tokenizer)
    # tied embeddings counted once: embeddings + 1 layer
    assert count_parameters(model) < sum(p.numel() for p in model.parameters()) + 1
    blocks = pack_stream(tokenizer(TEXTS, add_special_tokens=False)["input_ids"], 16, tokenizer.eos_token_id)
    ppl = perplexity(model, blocks, batch_size=8)
    assert 0.3 * len(tokenizer) < ppl < 3 * len(tokenizer)  # an untrained model is ~uniform


def test_resume_skips_a_checkpoint_torn_by_a_kill_during_its_save(tmp_path):
    assert last_complete_checkpoint(tmp_path / "absent") is None
    for step, state in [(8, '{"global_step": 8}'), (16, None), (24, '{"global_st')]:
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x")
        if state is not None:
            (d / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-3").mkdir()  # numeric order, not name order: 8 > 3
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-8"
    assert not (tmp_path / "checkpoint-16").exists() and not (tmp_path / "checkpoint-24").exists()
    assert (tmp_path / "checkpoint-3").exists()


def test_fingerprint_is_stable_and_sensitive():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})


# ------------------------------------------------------------- real-mode loading
@pytest.fixture(scope="module")
def local_model(tmp_path_factory, tokenizer):
    """A tiny model saved the way any Hugging Face model directory is."""
    path = tmp_path_factory.mktemp("tiny-llama")
    model = build_llama(TINY, len(tokenizer), tokenizer.eos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def test_load_local_model_directory(local_model):
    model, tokenizer = load_model_and_tokenizer(str(local_model))
    assert (local_model / "model.safetensors").is_file()
    out = model.generate(**tokenizer("丙泊酚", return_tensors="pt", add_special_tokens=False),
                         max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] >= 2


def test_missing_model_gives_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"cannot load model '.*no-such-model'"):
        load_model_and_tokenizer(str(tmp_path / "no-such-model"))


def test_pointer_resolves_to_the_pretrained_model(local_model, tmp_path):
    write_pointer(tmp_path / "base", str(local_model), "main", False)
    assert sorted(p.name for p in (tmp_path / "base").iterdir()) == ["medlab_base.json"]  # no weight copy
    model, tokenizer = load_base(tmp_path / "base")
    assert model.config.hidden_size == TINY.hidden_size and tokenizer.chat_template
    # a pointer that keeps this stage's tokenizer (a chat template it added) loads that one
    own = AutoTokenizer.from_pretrained(local_model)
    own.chat_template = "{{ messages[0]['content'] }}"
    write_pointer(tmp_path / "with_template", str(local_model), "main", False, tokenizer=own)
    assert resolve_base(tmp_path / "with_template")["tokenizer_path"] == str(tmp_path / "with_template")
    _, loaded = load_base(tmp_path / "with_template")
    assert loaded.chat_template == own.chat_template
    with pytest.raises(ModelLoadError, match="run the pretrain stage first"):
        resolve_base(tmp_path / "empty")


def test_ensure_chat_template_on_a_tokenizer_without_one(local_model):
    tokenizer = AutoTokenizer.from_pretrained(local_model)
    tokenizer.chat_template = None
    assert ensure_chat_template(tokenizer) is True
    assert tokenizer.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False)
    assert ensure_chat_template(tokenizer) is False


# ------------------------------------------------------------------- resume
HELPER = Path(__file__).parent / "helpers" / "pretrain_job.py"


def run_job(checkpoints: Path, out: Path, kill_after_checkpoint: str | None = None) -> str:
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(HELPER), str(checkpoints), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if kill_after_checkpoint:
        deadline = time.time() + 120
        while not (checkpoints / kill_after_checkpoint / "trainer_state.json").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        time.sleep(0.2)  # let it get a few steps past the checkpoint
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return ""
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    return output


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_and_matches_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference.pt"
    assert "RESUMED=False" in run_job(tmp_path / "ckpt_a", reference)
    resumed = tmp_path / "resumed.pt"
    run_job(tmp_path / "ckpt_b", resumed, kill_after_checkpoint="checkpoint-20")
    assert not resumed.exists()  # the killed run never finished
    assert "RESUMED=True" in run_job(tmp_path / "ckpt_b", resumed)
    a, b = torch.load(reference), torch.load(resumed)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-6, f"resumed run differs from the uninterrupted one by {worst}"
    assert math.isfinite(worst)
