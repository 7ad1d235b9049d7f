"""Stage-level paths on the toy model and on real architectures (Qwen2, Llama-3, Mistral
with their real tokenizers and stock-style templates, tests/helpers/real_models.py):
evaluation tasks, the bias probe, the hf backend (chat and, for base models without a
template, plain text) and a full SFT -> SFT -> DPO recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlab.evaluate import run as ev
from medlab.llm.base import ChatRequest, Decoding
from medlab.llm.cache import CallCache
from medlab.records import McqItem

DRUGS = ["丙泊酚", "罗库溴铵", "芬太尼", "舒更葡糖"]


def items(n: int = 4) -> list[McqItem]:
    return [McqItem(id=f"q{i}", source="t", question=f"第{i}题：哪一种是肌松药？",
                    options={k: DRUGS[(i + j) % 4] for j, k in enumerate("ABCD")}, answer="ABCD"[(1 - i) % 4],
                    category="药物类别") for i in range(n)]


@pytest.mark.parametrize("plain", [False, True], ids=["chat", "plain"])
def test_evaluation_and_probe_run_on_every_family(family, family_dirs, tmp_path, plain):
    """load_subject -> MCQ (cloze and letter), QA by greedy generation, both probe readouts;
    a base model without a template (plain) is prompted as plain text, never through a template."""
    from medlab.probe import score as probe
    from medlab.probe.scale import builtin_scales

    name, _ = family
    path = family_dirs(name, plain=plain)
    plain_models = [name] if plain else []
    subject = ev.load_subject(name, str(path), tmp_path, plain_models)
    assert subject.layout == ("plain" if plain else "chat")
    for scoring in ("cloze", "letter"):
        out = ev.mcq_task(subject, items(), [], "anesthesia", scoring, batch_size=4, n_boot=10, seed=0)
        assert len(out["outcomes"]) == 4 and 0.0 <= out["summary"]["acc"] <= 1.0
    generate = ev.generator(subject, CallCache(tmp_path / "calls.sqlite"), batch_size=2, max_new_tokens=6,
                            label=name)
    answers = generate([[{"role": "user", "content": "丙泊酚的常见不良反应是什么？"}],
                        [{"role": "user", "content": "罗库溴铵用什么拮抗？"}]])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    scale = next(iter(builtin_scales().values()))
    few = scale.items[:2]
    letters = probe.model_letter_probs(subject.model, subject.tokenizer, subject.layout, batch_size=8)
    scores, content_free = probe.score_scale(scale, letters, calibrate=True, reversal=True, items=few)
    assert len(scores) == 2 and content_free is not None
    assert all(np.isclose(sum(r.distribution), 1.0, atol=1e-4) for r in scores)
    statements = probe.model_statement_logprobs(subject.model, subject.tokenizer, subject.layout, batch_size=8)
    assert len(probe.score_statements(scale, statements, items=few)) == 2


def test_the_hf_backend_speaks_each_family_s_template_and_plain_text(family, family_dirs):
    from medlab.llm.hf import PLAIN_ASSISTANT, HFBackend, plain_prompt

    name, path = family
    chat = HFBackend(str(path), batch_size=2)
    assert chat.layout == "chat"
    requests = [ChatRequest.of([{"role": "user", "content": q}], Decoding(max_new_tokens=5))
                for q in ("丙泊酚", "罗库溴铵的拮抗药是什么？请说明")]
    batched = chat.generate(requests)
    single = HFBackend(str(path), batch_size=1, model=chat.hf_model, tokenizer=chat.tokenizer).generate(requests)
    assert [c.text for c in batched] == [c.text for c in single]  # left padding changes nothing
    assert all(0 < c.completion_tokens <= 5 for c in batched)
    base = HFBackend(str(family_dirs(name, plain=True)), batch_size=2)
    assert base.layout == "plain" and base.model != chat.model  # no template: another model's cache keys
    assert all(c.completion_tokens > 0 for c in base.generate(requests))
    assert plain_prompt([{"role": "system", "content": "你是医生。"}, {"role": "user", "content": "问题"}]) \
        == f"你是医生。\n问：问题\n{PLAIN_ASSISTANT}"


@pytest.mark.slow
def test_sft_sft_dpo_recipe_trains_and_publishes_on_every_family(family, tmp_path, root):
    """Full fine-tuning of Hypnos + DPO (general -> anesthesia -> preference pairs) on each
    family: every stage takes optimizer steps with a finite loss, the published model loads
    and generates, and its weights moved."""
    from test_finetune import make_mini_repo, mini_params
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medlab.finetune.run import load_finetuned, publish, run_stage

    name, path = family
    if name == "toy":
        pytest.skip("the toy model's DPO recipe: test_finetune.py::test_recipe_stages_chain_reuse_and_publish")
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    repo = make_mini_repo(tmp_path / "repo", root, tok, model, train__epochs=0.25, dpo__epochs=0.5)
    params = mini_params(repo)
    for k in range(3):
        summary = run_stage(params, "general_to_specific_dpo", k, repo, log=lambda *_: None)
        losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
        assert summary["steps"] > 0 and losses and all(np.isfinite(losses)), (name, k)
    out = repo / "models" / "finetune" / "dpo"
    publish(params, "general_to_specific_dpo", repo, out)
    tuned, tuned_tok = load_finetuned(out)
    ids = tuned_tok.apply_chat_template([{"role": "user", "content": "丙泊酚常见不良反应是什么？"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    generated = tuned.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tuned_tok.pad_token_id)
    assert generated.shape[1] > ids["input_ids"].shape[1]
    before = dict(AutoModelForCausalLM.from_pretrained(path).named_parameters())
    assert any((before[k] - v).abs().max() > 0 for k, v in tuned.named_parameters() if k in before)
    assert torch.isfinite(next(tuned.parameters())).all()


def test_a_consultation_runs_through_each_family_s_template_as_doctor_and_as_patient(family, root, tmp_path):
    """Both sides of a consultation through a real chat template: the model as the doctor (the
    patient's opening as the first user turn) and as an LLM patient (our system prompt with the
    case, the doctor's replies as user turns), every call through the cache."""
    from test_consult import CASE

    from medlab.backends import make_patient
    from medlab.config import load_params
    from medlab.evaluate import consult
    from medlab.llm.cache import generate_cached
    from medlab.llm.hf import HFBackend

    name, path = family
    cfg = load_params(root / "params.yaml").evaluate.consult.patient
    cfg = cfg.model_copy(update={"backend": "hf", "hf": cfg.hf.model_copy(update={"name_or_path": str(path),
                                                                                  "batch_size": 2})})
    patient_backend = make_patient(cfg, root)
    assert isinstance(patient_backend, HFBackend) and patient_backend.layout == "chat"
    doctor_backend = HFBackend(str(path), batch_size=2, model=patient_backend.hf_model,
                               tokenizer=patient_backend.tokenizer)
    cache = CallCache(tmp_path / "calls.sqlite")

    def doctor(chats):
        requests = [ChatRequest.of(c, Decoding(max_new_tokens=6)) for c in chats]
        return [c.text for c in generate_cached(doctor_backend, requests, cache, label="doctor", truncated="keep")]

    patient = consult.patient_answers(patient_backend, cache)
    short = Decoding(max_new_tokens=6)
    first = consult.consult([CASE], doctor, patient, max_turns=3, decoding=short)
    roles = [t["role"] for t in first[0]["turns"]]
    assert roles[:2] == ["patient", "doctor"] and all(a != b for a, b in zip(roles, roles[1:], strict=False))
    assert first[0]["ended_by"] in ("patient", "turn_limit") and len(cache) >= 2  # both sides were called
    calls = len(cache)
    assert consult.consult([CASE], doctor, patient, max_turns=3, decoding=short) == first and len(cache) == calls
    assert set(consult.measures(CASE, first[0])) >= {"elicited", "diagnosis", "turns"}
