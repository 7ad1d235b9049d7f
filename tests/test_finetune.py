"""Fine-tuning: priority schedule, answer-only labels, packing without cross-attention,
named datasets, recipe validation, staged runs (reuse, LoRA, RoPE scaling), crash
resume and a 2-process distributed run through accelerate."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from medlab.config import ConfigError, merge_overlay, read_yaml, validate_params
from medlab.finetune import data as finetune_data
from medlab.finetune.run import is_done, load_finetuned, publish, run_stage, stage_dir
from medlab.finetune.schedule import priority_order, share_along
from medlab.finetune.sft import IGNORE, load_model, sft_collator, tokenize
from medlab.packing import pack_rows
from medlab.pretrain.model import build_llama
from medlab.pretrain.tokenizer import train_tokenizer
from medlab.records import PreferencePair, RecordError, Sample, write_jsonl

DRUGS = ("丙泊酚", "依托咪酯", "氯胺酮", "芬太尼", "瑞芬太尼", "咪达唑仑", "罗库溴铵", "新斯的明")
EFFECTS = ("低血压", "呼吸抑制", "恶心", "注射痛", "心动过缓", "肌阵挛", "皮肤瘙痒", "残余肌松")


def chat(q: str, a: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def samples(domain: str, n: int, fault_every: int = 0, method: str = "kg_qa") -> list[Sample]:
    out = []
    for i in range(n):
        drug, effect = DRUGS[i % len(DRUGS)], EFFECTS[(i * 3) % len(EFFECTS)]
        fault = "stigma" if fault_every and i % fault_every == 0 else "none"
        out.append(Sample(id=f"{domain}-{method}-{i:04d}", source=method, domain=domain,
                          messages=chat(f"{drug}第{i}问：常见不良反应是什么？", f"{drug}的常见不良反应包括{effect}。"),
                          provenance={"method": method, "source": {"subject": drug, "predicate": "不良反应"}},
                          truth={"fault": fault}))
    return out


# ------------------------------------------------------------------ schedule
def test_priority_schedule_puts_the_corpus_first_and_sft_last():
    sizes, priority, repeats = {"corpus": 300, "sft": 900}, {"corpus": 16.0, "sft": 1.0}, {"corpus": 1, "sft": 3}
    order = priority_order(sizes, priority, repeats, seed=7)
    assert len(order) == 300 + 900 * 3
    assert sorted(order) == sorted([("corpus", i) for i in range(300)] + [("sft", i) for i in range(900)] * 3)
    share = share_along(order, "sft", bins=10)
    assert share[0] < 0.5 < share[-1] == 1.0  # knowledge first, SFT last
    assert all(b >= a - 0.05 for a, b in zip(share, share[1:], strict=False))  # rises along the run
    assert order == priority_order(sizes, priority, repeats, seed=7)  # seeded
    flat = priority_order(sizes, {"corpus": 1.0, "sft": 1.0}, {}, seed=7)
    assert max(share_along(flat, "sft")) - min(share_along(flat, "sft")) < 0.3  # equal weights: no drift


# ------------------------------------------------------------ tokens and packing
@pytest.fixture(scope="module")
def tokenizer():
    texts = [m["content"] for s in samples("anesthesia", 64) for m in s.messages] * 4
    return train_tokenizer(texts, vocab_size=500, min_frequency=2, model_max_length=256)


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    cfg = SimpleNamespace(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=2, max_position_embeddings=128, rope_theta=10000.0,
                          tie_word_embeddings=True)
    torch.manual_seed(0)
    return build_llama(cfg, len(tokenizer), tokenizer.eos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)


def test_labels_are_the_answers_and_their_end_token(tokenizer):
    rows = tokenize(tokenizer, [s.messages for s in samples("anesthesia", 3)], max_length=256)
    for row, sample in zip(rows, samples("anesthesia", 3), strict=True):
        trained = [t for t in row["labels"] if t != IGNORE]
        assert tokenizer.decode(trained) == sample.messages[-1]["content"] + "<|end|>"
    cut = tokenize(tokenizer, [s.messages for s in samples("anesthesia", 3)], max_length=24)
    assert all(len(r["input_ids"]) <= 24 for r in cut)
    with pytest.raises(ValueError, match="no sample has answer tokens within max_length"):
        tokenize(tokenizer, [s.messages for s in samples("anesthesia", 3)], max_length=8)


DIALOGUE = [{"role": "system", "content": "你是麻醉科医生。"},
            {"role": "user", "content": "丙泊酚常见不良反应是什么？"},
            {"role": "assistant", "content": "丙泊酚的常见不良反应包括低血压和注射痛。"},
            {"role": "user", "content": "怎么减轻注射痛？"},
            {"role": "assistant", "content": "可先注射利多卡因，或选择较粗的静脉。"}]


def trained_runs(row) -> list[list[int]]:
    """The label ids grouped into runs of consecutive trained tokens (one run per turn)."""
    runs, current = [], []
    for t in row["labels"]:
        if t != IGNORE:
            current.append(t)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def test_labels_are_every_assistant_turn_and_its_end_token_on_every_family(family):
    """Stock templates (no {% generation %} markers) and medlab's own: the labels decode to
    exactly each assistant text plus the family's end-of-turn token, nothing else."""
    from helpers.real_models import END_OF_TURN
    from transformers import AutoTokenizer

    name, path = family
    tok = AutoTokenizer.from_pretrained(path)
    end = END_OF_TURN.get(name, "<|end|>")
    single = [m for m in DIALOGUE[:3]]
    rows = tokenize(tok, [DIALOGUE, single], max_length=512)
    answers = [m["content"] for m in DIALOGUE if m["role"] == "assistant"]
    for row, expected in zip(rows, [answers, answers[:1]], strict=True):
        runs = trained_runs(row)
        assert [tok.decode(r).strip() for r in runs] == [a + end for a in expected], name
    # a prompt token is never trained: the whole prompt of the first turn decodes without an answer
    first = rows[0]["labels"].index(next(t for t in rows[0]["labels"] if t != IGNORE))
    assert answers[0] not in tok.decode(rows[0]["input_ids"][:first])


def test_a_template_that_rewrites_earlier_turns_is_refused_naming_the_model(family_dirs):
    from transformers import AutoTokenizer

    from medlab.finetune.masks import TemplateError

    tok = AutoTokenizer.from_pretrained(family_dirs("qwen2"))
    # like a reasoning model's template: earlier answers are shortened once a later turn exists
    tok.chat_template = tok.chat_template.replace(
        "message['content'] + '<|im_end|>", "(message['content'][:4] if not loop.last else message['content'])"
        " + '<|im_end|>")
    with pytest.raises(TemplateError, match=r"qwen2-.*not a prefix"):
        tokenize(tok, [DIALOGUE], max_length=512)
    tok.chat_template = None
    with pytest.raises(TemplateError, match="no chat template"):
        tokenize(tok, [DIALOGUE], max_length=512)


@pytest.mark.parametrize("layout", ["flat", "rows"])
def test_packed_loss_equals_the_loss_of_each_sample_alone(tokenizer, tiny_model, layout):
    """Packed samples carry per-sample positions: no token attends across samples, so the
    loss of packed rows equals the token-weighted loss of their samples run alone -- in
    both layouts (flat: one padding-free sequence; rows: padded rows, no attention mask)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = tokenize(tokenizer, [s.messages for s in samples("anesthesia", 16)], max_length=256)
    packed = pack_rows(rows, max_length=128)
    assert len(packed) >= 2 and len(packed) < len(rows) and sum(map(len, packed["seq_lengths"])) == len(rows)
    if layout == "flat":
        collate = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    else:
        collate = sft_collator("rows", tokenizer)
    # plus a row holding one sample: shorter than the others, so the rows layout pads it
    examples = [packed[i] for i in range(len(packed))]
    examples.append({**rows[0], "seq_lengths": [len(rows[0]["input_ids"])]})
    rows = [*rows, rows[0]]
    model = tiny_model.eval()
    with torch.no_grad():
        batch = collate(examples)
        assert "attention_mask" not in batch
        assert batch["input_ids"].shape[0] == (1 if layout == "flat" else len(examples))
        if layout == "rows":
            assert (batch["input_ids"][-1] == tokenizer.pad_token_id).sum() > 10
        # use_cache=False as in training (TRL sets it): with a KV cache transformers does
        # not look for packed sequences in position_ids
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        labels = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels.flatten(),
                                                ignore_index=IGNORE, reduction="sum")
        alone, count = 0.0, 0
        for row in rows:
            ids, lab = torch.tensor([row["input_ids"]]), torch.tensor(row["labels"][1:])
            out = model(input_ids=ids).logits[0, :-1]
            alone += torch.nn.functional.cross_entropy(out, lab, ignore_index=IGNORE, reduction="sum").item()
            count += int((lab != IGNORE).sum())
    assert int((labels != IGNORE).sum()) == count
    assert abs(nll.item() - alone) / count < 1e-4
    # with attention across samples (plain causal rows) the loss is different
    with torch.no_grad():
        crossed = model(input_ids=batch["input_ids"], use_cache=False).logits[:, :-1]
        crossed_nll = torch.nn.functional.cross_entropy(crossed.flatten(0, 1), labels.flatten(),
                                                        ignore_index=IGNORE, reduction="sum")
    assert abs(crossed_nll.item() - alone) / count > 1e-3


def test_windowed_packing_keeps_the_order(tokenizer):
    rows = tokenize(tokenizer, [s.messages for s in samples("anesthesia", 40)], max_length=256)
    packed = pack_rows(rows, max_length=128, window=10)
    # each packed row holds samples from one window of 10 consecutive samples
    lengths = [len(r) for r in rows["input_ids"]]
    assert sum(map(len, packed["seq_lengths"])) == 40 and sum(map(sum, packed["seq_lengths"])) == sum(lengths)


# ------------------------------------------------------------------ datasets
def test_dataset_parts_select_by_method_domain_fault_and_take_chosen(tmp_path):
    kept = samples("anesthesia", 6) + samples("anesthesia", 4, method="corpus_to_instruction")
    write_jsonl(tmp_path / "kept.jsonl", kept)
    write_jsonl(tmp_path / "rejected.jsonl", samples("general_medicine", 6, fault_every=2))
    pair = PreferencePair(id="pair-0", source="filter", prompt=chat("问", "答")[:1], chosen="好答案", rejected="坏答案",
                          provenance={"chosen_id": "x-1", "domain": "anesthesia"},
                          truth={"chosen_fault": "none", "rejected_fault": "factual"})
    write_jsonl(tmp_path / "pairs.jsonl", [pair])
    part = SimpleNamespace
    none = {"methods": None, "exclude_methods": None, "domains": None, "faults": None, "take": None,
            "format": "medlab"}
    got = finetune_data.load_samples([part(**{**none, "files": ["kept.jsonl"], "methods": ["corpus_to_instruction"]})],
                                     tmp_path, "d")
    assert len(got) == 4
    got = finetune_data.load_samples([part(**{**none, "files": ["kept.jsonl"]}),
                                      part(**{**none, "files": ["rejected.jsonl"], "faults": ["stigma"]})], tmp_path, "d")
    assert len(got) == 10 + 3 and sum(s.truth["fault"] == "stigma" for s in got) == 3
    got = finetune_data.load_samples([part(**{**none, "files": ["pairs.jsonl"], "take": "chosen"})], tmp_path, "d")
    assert got[0].messages[-1] == {"role": "assistant", "content": "好答案"} and got[0].id == "x-1"
    write_jsonl(tmp_path / "real.jsonl", [s.model_copy(update={"truth": None}) for s in kept])
    with pytest.raises(RecordError, match="finetune.datasets.d.*no record with ground truth"):
        finetune_data.load_samples([part(**{**none, "files": ["real.jsonl"], "faults": ["stigma"]})], tmp_path, "d")
    with pytest.raises(RecordError, match="finetune.datasets.d: no sample matches"):
        finetune_data.load_samples([part(**{**none, "files": ["kept.jsonl"], "domains": ["general"]})], tmp_path, "d")


def test_public_sft_sets_are_datasets_as_they_are_next_to_generated_data(root, tmp_path):
    """DISC-Med-SFT + HuatuoGPT-II as the general-medicine stage of general-to-specific,
    validated at pre-flight, read as samples of the domain the part names."""
    doc = _params_doc(root)
    doc["finetune"]["datasets"]["public_general"] = [
        {"files": ["samples/dialogues/disc_med_sft.jsonl"], "format": "disc_med_sft", "domain": "general_medicine"},
        {"files": ["samples/general/huatuo_sft.jsonl"], "format": "huatuo_sft", "domain": "general_medicine"},
        {"files": ["data/filter/general.jsonl"]}]
    doc["finetune"]["recipes"]["public_to_specific"] = [
        {"name": "general", "kind": "sft", "data": ["public_general"]},
        {"name": "anesthesia", "kind": "sft", "data": ["anesthesia"]}]
    params = validate_params(doc, root=root).finetune
    write_jsonl(tmp_path / "data/filter/general.jsonl", samples("general", 3))
    for name in ("samples/dialogues/disc_med_sft.jsonl", "samples/general/huatuo_sft.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((root / name).read_bytes())
    got = finetune_data.load_samples(params.datasets["public_general"], tmp_path, "public_general")
    public = [s for s in got if s.provenance["method"] == "external"]
    assert len(public) == len(got) - 3 >= 12 and {s.domain for s in public} == {"general_medicine"}
    assert {s.source for s in public} == {"disc_med_sft", "huatuo_sft"} and all(s.truth is None for s in public)
    assert "huatuo_sft-h-0002" in {s.id for s in public}
    assert Path("samples/general/huatuo_sft.jsonl") in finetune_data.data_files(params, "public_to_specific")
    doc["finetune"]["datasets"]["public_general"][0] = {"files": ["samples/general/huatuo_sft.jsonl"],
                                                       "format": "disc_med_sft", "faults": ["stigma"]}
    with pytest.raises(ConfigError) as err:
        validate_params(doc, root=root)
    lines = str(err.value).splitlines()
    assert any("finetune.datasets.public_general.0.domain: required for a disc_med_sft file" in x for x in lines)
    assert any("finetune.datasets.public_general.0.faults: selects among generated records" in x for x in lines)
    assert any("finetune.datasets.public_general.0.files.0: " in x and "huatuo_sft.jsonl:1: conversation: missing"
               in x for x in lines)


# ------------------------------------------------------------------ config
def _params_doc(root: Path):
    doc = read_yaml(root / "params.yaml")
    merge_overlay(doc, read_yaml(root / "params.smoke.yaml"), "params.smoke.yaml")
    return doc


def test_recipes_are_validated_with_named_keys(root):
    doc = _params_doc(root)
    doc["finetune"]["recipes"]["broken"] = [{"name": "dpo_first", "kind": "dpo", "data": ["pairs"]},
                                            {"name": "x", "kind": "sft", "data": ["no_such_set"]}]
    doc["finetune"]["train"]["max_length"] = 4096
    with pytest.raises(ConfigError) as err:
        validate_params(doc, root=root)
    text = str(err.value)
    assert "finetune.recipes.broken.0.kind: a DPO stage needs an SFT stage before it" in text
    assert "finetune.recipes.broken.1.data: unknown dataset 'no_such_set'" in text
    assert "finetune.train.max_length: 4096 tokens exceed the base model's context (128" in text


def test_seeds_are_validated_with_named_keys(root):
    doc = _params_doc(root)
    doc["finetune"]["seeds"] = [7, 7]
    doc["finetune"]["seeded_recipes"] = ["general_to_specific", "no_such_recipe"]
    with pytest.raises(ConfigError) as err:
        validate_params(doc, root=root)
    text = str(err.value)
    assert "finetune.seeds: seeds are distinct integers >= 0, got [7, 7]" in text
    assert "finetune.seeded_recipes.1: unknown recipe 'no_such_recipe'" in text
    assert "finetune.seeds.0: the first seed (7) trains the published models and must be base.seed (1234)" in text


def test_every_builtin_recipe_validates_and_uses_known_datasets(root):
    params = validate_params(read_yaml(root / "params.yaml"), root=root)
    assert set(params.finetune.recipes) >= {
        "specific_only", "general_to_specific", "one_stage_priority", "two_stage_disc",
        "general_to_specific_unfiltered_matched", "general_to_specific_dpo", "general_to_specific_stigma"}
    assert params.finetune.recipes["one_stage_priority"][0].schedule == "priority"
    assert [s.kind for s in params.finetune.recipes["general_to_specific_dpo"]] == ["sft", "sft", "dpo"]


# ------------------------------------------------------------- staged runs
def make_mini_repo(path: Path, root: Path, tokenizer, tiny_model, **finetune_overrides) -> Path:
    """A repository folder with params (smoke), a tiny base model and filter outputs."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "dvc.yaml").write_text("stages: {}\n")
    shutil.copytree(root / "samples", path / "samples", dirs_exist_ok=True)  # params name files there
    (path / "ratings").mkdir(exist_ok=True)  # unblind.ratings_dir: checked to exist with the rest of params
    doc = _params_doc(root)
    for key, value in finetune_overrides.items():
        section, name = key.split("__")
        doc["finetune"][section][name] = value
    from ruamel.yaml import YAML

    with (path / "params.yaml").open("w", encoding="utf-8") as handle:
        YAML().dump(doc, handle)
    tiny_model.save_pretrained(path / "models" / "base", safe_serialization=True)
    tokenizer.save_pretrained(path / "models" / "base")
    filt = path / "data" / "filter"
    write_jsonl(filt / "anesthesia.jsonl", samples("anesthesia", 48))
    write_jsonl(filt / "general_medicine.jsonl", samples("general_medicine", 48)
                + samples("general_medicine", 16, method="corpus_to_instruction"))
    write_jsonl(filt / "general.jsonl", samples("general", 8, method="general_mix"))
    write_jsonl(filt / "rejected.jsonl", samples("anesthesia", 12, fault_every=2))
    pairs = [PreferencePair(id=f"pair-{i}", source="filter", prompt=s.messages[:1], chosen=s.messages[1]["content"],
                            rejected=s.messages[1]["content"].replace("包括", "不包括"),
                            provenance={"chosen_id": s.id, "domain": "anesthesia"},
                            truth={"chosen_fault": "none", "rejected_fault": "factual"})
             for i, s in enumerate(samples("anesthesia", 24))]
    write_jsonl(filt / "pairs.jsonl", pairs)
    gen = path / "data" / "generate"
    for name in ("anesthesia", "general_medicine", "general"):
        shutil.copy(filt / f"{name}.jsonl", gen / f"{name}.jsonl") if gen.is_dir() else (
            gen.mkdir(parents=True), shutil.copy(filt / f"{name}.jsonl", gen / f"{name}.jsonl"))
    return path


def mini_params(path: Path):
    return validate_params(read_yaml(path / "params.yaml"), root=path)


def test_recipe_stages_chain_reuse_and_publish(tmp_path, root, tokenizer, tiny_model):
    repo = make_mini_repo(tmp_path / "repo", root, tokenizer, tiny_model)
    params = mini_params(repo)
    first = run_stage(params, "general_to_specific", 0, repo, log=lambda *_: None)
    assert first["steps"] > 0 and first["packed"]["rows"] < first["tokenized"]["rows"]
    second = run_stage(params, "general_to_specific", 1, repo, log=lambda *_: None)
    assert second["start"] == str(stage_dir(params, "general_to_specific", 0, repo) / "model")
    # the DPO recipe's first two stages are the same: reused, not retrained
    messages = []
    again = run_stage(params, "general_to_specific_dpo", 1, repo, log=messages.append)
    assert "reusing" in messages[0] and again["log_history"] == second["log_history"]
    dpo = run_stage(params, "general_to_specific_dpo", 2, repo, log=lambda *_: None)
    assert dpo["kind"] == "dpo" and dpo["pairs"] == 24 and dpo["steps"] > 0
    assert any("rewards/accuracies" in h or "rewards/margins" in h for h in dpo["log_history"])
    publish(params, "general_to_specific_dpo", repo, repo / "models" / "finetune" / "g2s_dpo")
    model, tok = load_finetuned(repo / "models" / "finetune" / "g2s_dpo")
    ids = tok.apply_chat_template(chat("丙泊酚常见不良反应是什么？", "")[:1], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    # weights really changed along the way
    base = load_model(repo / "models" / "base")
    final = load_model(repo / "models" / "finetune" / "g2s_dpo")
    assert any((a - b).abs().max() > 0 for a, b in zip(base.parameters(), final.parameters(), strict=True))


def test_a_further_seed_trains_every_stage_again_and_publishes_beside_the_first(tmp_path, root, tokenizer,
                                                                              tiny_model):
    from medlab.evaluate.seeds import seed_replicates
    from medlab.finetune.run import recipe_seeds, seed_dir

    repo = make_mini_repo(tmp_path / "repo", root, tokenizer, tiny_model, train__epochs=4.0, train__warmup_ratio=0.0)
    params = mini_params(repo)  # smoke: seeds [1234, 1235] for general_to_specific and specific_only
    assert recipe_seeds(params, "general_to_specific") == [1234, 1235]
    assert recipe_seeds(params, "one_stage_priority") == [1234]
    first = [run_stage(params, "specific_only", 0, repo, log=lambda *_: None, seed=s) for s in (1234, 1235)]
    assert stage_dir(params, "specific_only", 0, repo) == stage_dir(params, "specific_only", 0, repo, 1234)
    assert stage_dir(params, "specific_only", 0, repo, 1235) != stage_dir(params, "specific_only", 0, repo, 1234)
    assert first[0]["seed"] == 1234 and first[1]["seed"] == 1235 and first[0]["steps"] == first[1]["steps"] > 1
    assert first[0]["log_history"] != first[1]["log_history"]  # another data order: another run
    out = repo / "models" / "finetune" / "specific_only"
    publish(params, "specific_only", repo, out, 1234)
    publish(params, "specific_only", repo, seed_dir(out, 1235), 1235)
    assert [s for s, _ in seed_replicates(out)] == [1235] and seed_replicates(repo / "models" / "base") == []
    a, b = load_model(out), load_model(seed_dir(out, 1235))
    assert any((x - y).abs().max() > 0 for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_seeds_side_by_side_train_what_one_process_trains(tmp_path, root, tokenizer, tiny_model):
    """finetune.parallel_seeds: one process per seed (python -m medlab.finetune --seed S),
    base.torch_threads / seeds threads each; every stage of every seed is saved where
    run_stage finds it (the notebook then reuses it), its lines carry the seed, and the
    weights are bit-identical to training that seed in one process with the same threads.
    The thread count is in the stage key: all threads, one after another, is another stage."""
    from medlab.finetune.run import recipe_seeds
    from medlab.finetune.side_by_side import side_by_side, train_seeds, training_threads

    repo = make_mini_repo(tmp_path / "repo", root, tokenizer, tiny_model)
    params = mini_params(repo)
    seeds = recipe_seeds(params, "general_to_specific")
    assert seeds == [1234, 1235] and side_by_side(params, "general_to_specific")
    assert not side_by_side(params, "one_stage_priority")  # one seed: nothing to share
    threads = training_threads(params, "general_to_specific")
    assert threads == max(1, (params.base.torch_threads or os.cpu_count()) // 2)
    lines = []
    train_seeds(params, "general_to_specific", seeds, repo, log=lines.append)
    assert any(x.startswith("[s1234] ") for x in lines) and any(x.startswith("[s1235] ") for x in lines)
    for seed in seeds:
        assert all(is_done(stage_dir(params, "general_to_specific", k, repo, seed)) for k in (0, 1)), lines
    messages = []
    run_stage(params, "general_to_specific", 1, repo, log=messages.append, seed=1235)
    assert "reusing" in messages[0]
    alone = make_mini_repo(tmp_path / "alone", root, tokenizer, tiny_model)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        for k in (0, 1):
            run_stage(mini_params(alone), "general_to_specific", k, alone, log=lambda *_: None, seed=1235)
    finally:
        torch.set_num_threads(before)
    a = load_model(stage_dir(params, "general_to_specific", 1, repo, 1235) / "model").state_dict()
    b = load_model(stage_dir(params, "general_to_specific", 1, alone, 1235) / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    sequential = params.model_copy(update={"finetune": params.finetune.model_copy(update={"parallel_seeds": False})})
    if training_threads(sequential, "general_to_specific") != threads:
        assert stage_dir(sequential, "general_to_specific", 0, repo) != stage_dir(params, "general_to_specific", 0, repo)


def test_a_failing_seed_stops_the_others_and_is_named(tmp_path, root, tokenizer, tiny_model):
    from medlab.finetune.side_by_side import train_seeds

    repo = make_mini_repo(tmp_path / "repo", root, tokenizer, tiny_model)
    with pytest.raises(RuntimeError, match=r"(?s)seed 999 failed.*--seed 999 is not in params.yaml finetune.seeds"):
        train_seeds(mini_params(repo), "general_to_specific", [1234, 999], repo, log=lambda *_: None)


def test_the_plain_loss_is_the_fused_loss_on_the_same_batch(tmp_path, tokenizer, tiny_model):
    """finetune.train.fused_loss: TRL's chunked LM head and the model's own cross-entropy
    give the same loss and the same gradients; auto picks plain for a small vocabulary."""
    from trl import SFTConfig

    from medlab.finetune.sft import FUSED_FROM_VOCAB, make_sft_trainer, use_fused_loss

    rows = pack_rows(tokenize(tokenizer, [s.messages for s in samples("anesthesia", 16)], max_length=256), 128)
    batch = sft_collator("rows", tokenizer)([rows[i] for i in range(len(rows))])
    assert not use_fused_loss("auto", tiny_model) and use_fused_loss("fused", tiny_model)
    assert len(tokenizer) < FUSED_FROM_VOCAB
    results = {}
    for loss in ("fused", "plain"):
        model = type(tiny_model)(tiny_model.config)
        model.load_state_dict(tiny_model.state_dict())
        config = SFTConfig(output_dir=str(tmp_path / loss), report_to="none", use_cpu=True, max_length=None,
                           dataset_kwargs={"skip_prepare_dataset": True})
        trainer = make_sft_trainer(model.train(), tokenizer, rows, config, data_collator=sft_collator(
            "rows", tokenizer), fused_loss=loss)
        value = trainer.compute_loss(model, dict(batch))
        value.backward()
        results[loss] = (value.item(), model.model.embed_tokens.weight.grad.clone())
    assert results["fused"][0] == pytest.approx(results["plain"][0], rel=1e-5)
    assert torch.allclose(results["fused"][1], results["plain"][1], atol=1e-6)


def test_the_answer_only_loss_is_the_models_own_loss_on_every_family(tmp_path, family):
    """The plain loss applies the output layer to answer positions only: on the toy model and
    on tiny Qwen2, Llama and Mistral models (real tokenizers and templates, packed rows) it
    gives the model's own full-logits loss and the same gradients, alone and through the
    trainer; with the Trainer's count over an accumulated batch it divides by that count."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from medlab.finetune.sft import answer_only_loss, answer_only_parts, make_sft_trainer

    name, path = family
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows = pack_rows(tokenize(tok, [s.messages for s in samples("anesthesia", 24)], max_length=256), 160)
    batch = dict(sft_collator("rows", tok)([rows[i] for i in range(min(4, len(rows)))]))
    assert "position_ids" in batch and len(rows) < 24  # several samples share a row
    answers = int((batch["labels"][:, 1:] != IGNORE).sum())
    results = {}
    for way in ("own", "answer_only", "trainer_own", "trainer_answer_only"):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(path).train()
        assert answer_only_parts(model) is not None, name
        if way == "own":
            loss = model(**batch, use_cache=False).loss  # as in training (TRL turns the cache off)
        elif way == "answer_only":
            loss = answer_only_loss(model, batch)
        else:
            config = SFTConfig(output_dir=str(tmp_path / way), report_to="none", use_cpu=True, max_length=None,
                               dataset_kwargs={"skip_prepare_dataset": True})
            trainer = make_sft_trainer(model, tok, rows, config, data_collator=sft_collator("rows", tok),
                                       fused_loss="plain")
            trainer.answer_only = way == "trainer_answer_only"
            loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        results[way] = (loss.item(), model.get_input_embeddings().weight.grad.clone())
    for way in ("answer_only", "trainer_own", "trainer_answer_only"):
        assert results[way][0] == pytest.approx(results["own"][0], rel=1e-5), (name, way)
        assert torch.allclose(results[way][1], results["own"][1], atol=1e-6), (name, way)
    model = AutoModelForCausalLM.from_pretrained(path)
    summed = answer_only_loss(model, batch, num_items_in_batch=1).item()  # a count from outside: sum / count
    assert summed == pytest.approx(results["own"][0] * answers, rel=1e-5)


def test_the_answer_only_loss_declines_a_head_it_was_not_tested_on(tiny_model):
    """A soft-capped head (Gemma-2 style) or an architecture outside the tested families
    gets the model's own loss: answer_only_parts says no."""
    from medlab.finetune.sft import answer_only_parts

    assert answer_only_parts(tiny_model) is not None
    capped = type(tiny_model)(tiny_model.config.__class__(**tiny_model.config.to_dict()))
    capped.config.final_logit_softcapping = 30.0
    assert answer_only_parts(capped) is None
    other = type(tiny_model)(tiny_model.config.__class__(**tiny_model.config.to_dict()))
    other.config.model_type = "gemma2"
    assert answer_only_parts(other) is None


def test_priority_recipe_records_its_schedule(tmp_path, root, tokenizer, tiny_model):
    repo = make_mini_repo(tmp_path / "repo", root, tokenizer, tiny_model)
    params = mini_params(repo)
    summary = run_stage(params, "one_stage_priority", 0, repo, log=lambda *_: None)
    share = summary["schedule"]["sft_instructions"]
    assert share[0] < share[-1]
    assert summary["samples"] == {"corpus_instructions": 16, "sft_instructions": 48 + 48 + 8}


def test_lora_adapters_chain_publish_without_weight_copies_and_load_on_every_family(tmp_path, root, family):
    """LoRA on each family (target_modules: auto = the family's projections): a two-stage
    recipe trains stage 1's adapter on top of stage 0's, publishes both adapters and a
    pointer to models/base (no weight file), and loads as base + adapters in order."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medlab.runtime import load_causal_lm

    name, path = family
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    repo = make_mini_repo(tmp_path / "repo", root, tok, model)
    doc = read_yaml(repo / "params.yaml")
    doc["finetune"]["method"] = "lora"
    doc["finetune"]["lora"].update({"merge": False, "r": 4, "target_modules": "auto"})
    doc["finetune"]["train"]["epochs"] = 0.25  # a few steps per stage are what is tested
    params = validate_params(doc, root=repo)
    first = run_stage(params, "general_to_specific", 0, repo, log=lambda *_: None)
    second = run_stage(params, "general_to_specific", 1, repo, log=lambda *_: None)
    assert first["steps"] > 0 and second["steps"] > 0 and "adapters of stages 0..0" in second["start"]
    adapter0 = stage_dir(params, "general_to_specific", 0, repo) / "adapter"
    config = __import__("json").loads((adapter0 / "adapter_config.json").read_text())
    if name != "toy":  # every projection of the family's blocks, not the head
        assert {m.rsplit(".", 1)[-1] for m in config["target_modules"]} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"}, name
    out = repo / "models" / "finetune" / "g2s"
    publish(params, "general_to_specific", repo, out)
    assert (out / "medlab_adapter.json").is_file() and not (out / "config.json").exists()
    weights = [p.name for p in out.rglob("*.safetensors")]
    assert weights == ["adapter_model.safetensors"] * 2  # two small adapters, no model copy
    assert sum(p.stat().st_size for p in out.rglob("*.safetensors")) < (repo / "models/base/model.safetensors"
                                                                         ).stat().st_size
    loaded, loaded_tok = load_finetuned(out)
    assert loaded_tok.chat_template == tok.chat_template
    by_hand = PeftModel.from_pretrained(load_causal_lm(repo / "models" / "base"), str(adapter0)).merge_and_unload()
    adapter1 = stage_dir(params, "general_to_specific", 1, repo) / "adapter"
    by_hand = PeftModel.from_pretrained(by_hand, str(adapter1)).eval()
    x = torch.tensor([loaded_tok("丙泊酚的常见不良反应包括低血压。")["input_ids"]])
    with torch.no_grad():
        got, want = loaded(input_ids=x).logits, by_hand(input_ids=x).logits
        assert torch.allclose(got, want, atol=1e-4)
        plain = load_causal_lm(repo / "models" / "base")(input_ids=x).logits
        assert not torch.allclose(got, plain, atol=1e-4)  # the adapters changed the model


def test_rope_scaling_runs_past_the_original_context(tmp_path, tokenizer, tiny_model):
    path = tmp_path / "m"
    tiny_model.save_pretrained(path, safe_serialization=True)
    rope = SimpleNamespace(type="linear", factor=4.0)
    model = load_model(path, rope=rope)
    assert model.config.max_position_embeddings == 4 * 128
    assert model.config.rope_parameters["rope_type"] == "linear"
    x = torch.randint(5, 100, (1, 400))  # > 128, the original limit
    with torch.no_grad():
        logits = model(input_ids=x).logits
    assert logits.shape == (1, 400, len(tokenizer)) and torch.isfinite(logits).all()
    plain = load_model(path)
    with torch.no_grad():  # the scaling really changes positions (not a no-op)
        assert not torch.allclose(plain(input_ids=x[:, :64]).logits, model(input_ids=x[:, :64]).logits)
    model.save_pretrained(tmp_path / "extended")
    again = load_model(tmp_path / "extended")
    assert again.config.max_position_embeddings == 512


# --------------------------------------------------- crash resume and distributed
def _run(repo: Path, args: list[str], **kwargs) -> subprocess.Popen:
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    env.pop("DVC_ROOT", None)
    return subprocess.Popen(args, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


@pytest.mark.slow
def test_sigkill_mid_stage_then_rerun_resumes_and_matches(tmp_path, root, tokenizer, tiny_model):
    overrides = {"train__save_steps": 8, "train__epochs": 24.0, "train__batch_size": 1, "train__packing": "none"}
    reference = make_mini_repo(tmp_path / "a", root, tokenizer, tiny_model, **overrides)
    cmd = [sys.executable, "-m", "medlab.finetune", "--recipe", "specific_only", "--stage", "0"]
    out, _ = _run(reference, cmd).communicate(timeout=300)
    params = mini_params(reference)
    assert is_done(stage_dir(params, "specific_only", 0, reference)), out

    crashed = make_mini_repo(tmp_path / "b", root, tokenizer, tiny_model, **overrides)
    checkpoints = stage_dir(mini_params(crashed), "specific_only", 0, crashed) / "checkpoints"
    proc = _run(crashed, cmd)
    deadline = time.time() + 120
    while not list(checkpoints.glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(0.3)  # a few steps past the checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    directory = stage_dir(mini_params(crashed), "specific_only", 0, crashed)
    assert not is_done(directory)
    out, _ = _run(crashed, cmd).communicate(timeout=300)
    assert "resumed at step" in out, out
    import json

    summary = json.loads((directory / "history.json").read_text())
    assert summary["resumed"] is True
    a = load_model(stage_dir(params, "specific_only", 0, reference) / "model").state_dict()
    b = load_model(directory / "model").state_dict()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-5, f"resumed run differs from the uninterrupted one by {worst}"


def launch_two_processes(repo: Path, root: Path, config: str) -> tuple[Path, str]:
    """``accelerate launch`` of stage 0 of specific_only as 2 CPU processes; (stage dir, output)."""
    shutil.copytree(root / "configs", repo / "configs")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"configs/accelerate/{config}",
           "--num_processes", "2", "-m", "medlab.finetune", "--recipe", "specific_only", "--stage", "0"]
    out, _ = _run(repo, cmd).communicate(timeout=600)
    directory = stage_dir(mini_params(repo), "specific_only", 0, repo)
    assert is_done(directory), out
    return directory, out


@pytest.mark.slow
def test_two_cpu_processes_through_accelerate(tmp_path, root, tokenizer, tiny_model):
    """The distributed path: `accelerate launch` with 2 CPU processes (gloo backend)."""
    overrides = {"train__epochs": 4.0, "train__packing": "none"}
    repo = make_mini_repo(tmp_path / "repo", root, tokenizer, tiny_model, **overrides)
    directory, out = launch_two_processes(repo, root, "ddp_cpu.yaml")
    import json

    summary = json.loads((directory / "history.json").read_text())
    assert summary["world_size"] == 2, out
    single = make_mini_repo(tmp_path / "single", root, tokenizer, tiny_model, **overrides)
    alone = run_stage(mini_params(single), "specific_only", 0, single, log=lambda *_: None)
    # two processes split each epoch: half the optimizer steps of one process
    assert summary["steps"] * 2 == alone["steps"], (summary["steps"], alone["steps"])


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_saves_a_gathered_model(tmp_path, root, family_dirs):
    """FSDP2 (parameters sharded across 2 gloo processes) on a real architecture: every rank
    takes part in trainer.save_model, which gathers the full state dict; the saved model
    loads as a normal Hugging Face directory and its weights moved."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = family_dirs("llama")
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    repo = make_mini_repo(tmp_path / "repo", root, tok, model, train__epochs=1.0, train__packing="none")
    directory, _ = launch_two_processes(repo, root, "fsdp_cpu.yaml")
    assert json.loads((directory / "history.json").read_text())["world_size"] == 2
    saved = AutoModelForCausalLM.from_pretrained(directory / "model")
    names = dict(model.named_parameters())
    assert set(dict(saved.named_parameters())) == set(names)  # whole, not one rank's shard
    assert any((names[k] - v).abs().max() > 0 for k, v in saved.named_parameters())
    assert all(torch.isfinite(v).all() for v in saved.parameters())


def test_merged_lora_under_sharding_is_refused_before_training():
    from medlab.finetune.run import check_sharding

    def params(method, merge):
        return SimpleNamespace(finetune=SimpleNamespace(method=method, lora=SimpleNamespace(merge=merge)))

    sharded = SimpleNamespace(is_fsdp_enabled=True, is_deepspeed_enabled=False)
    with pytest.raises(ValueError, match="finetune.lora.merge: true cannot merge"):
        check_sharding(sharded, params("lora", True))
    check_sharding(sharded, params("lora", False))  # adapters only: fine
    check_sharding(sharded, params("full", True))
    check_sharding(SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=False), params("lora", True))
