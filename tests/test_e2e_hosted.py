"""Real data and hosted models end to end: the whole `dvc repro` (smoke-sized, embedded
base model) with a local fake OpenAI server that answers like a real chat model (a
preamble, markdown, JSON in code fences, reasoning before the letter, refusals) as

* the generate stage's teacher (no ground truth: the filter's validation is skipped),
* the filter's rubric judge and the evaluate/compare judge,
* an evaluation subject (an endpoint file in evaluate.models: generation mode, token usage
  and cost, the probe's generation readout, paired tests against a local recipe),
* a served subject with prompt log-probabilities (a toy model behind the fake server's
  vLLM-style /v1/completions, its tokenizer files in external/: MCQ by log-likelihood
  through the endpoint),

with public data as it is: HuatuoGPT-II SFT chats sent through the filter
(general_mix, domain general_medicine), DISC-Med-SFT as a fine-tuning dataset read as it
is, and the shipped sample files of CMB-Exam, CMExam, MedQA-MCMLE, MedMCQA, C-Eval, CMMLU
and CMB-Clin (a conversation per case) as evaluation tasks. Afterwards, no file the run
wrote holds the API key.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_toy_model
from helpers.workspace import clean_copy, run_dvc
from ruamel.yaml import YAML
from test_e2e import ROOT, stages_run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]
HELPER = Path(__file__).parent / "helpers" / "fake_openai.py"
# recognisable, and made now (so that not even this file, copied into the run's folder, holds it)
SECRET = "sk-medlab-e2e-" + secrets.token_hex(8)
MODELS = ("general_to_specific", "public_to_specific", "api", "served")  # no base: CI time
SAMPLE_TASKS = ("cmb_exam", "cmexam", "medqa_mcmle", "medmcqa", "ceval_medicine", "cmmlu_medicine", "cmb_clin")


def endpoint(url: str, model: str) -> dict:
    return {"base_url": url, "model": model, "api_key_env": "MEDLAB_E2E_KEY", "max_concurrency": 4,
            "max_retries": 3}


def configure(repo: Path, url: str, served_model: Path) -> None:
    yaml = YAML()
    path = repo / "params.yaml"
    doc = yaml.load(path.read_text(encoding="utf-8"))
    gen = doc["generate"]
    gen["teacher"]["backend"] = "openai"
    gen["teacher"]["openai"].update(endpoint(url, "fake-teacher"))
    gen["kg_qa"].update({"general_medicine": 30, "anesthesia": 80})
    gen["self_instruct"].update({"general_medicine": 10, "anesthesia": 10, "max_requests": 10})
    gen["general_mix"]["files"].append({"path": "samples/general/huatuo_sft.jsonl", "format": "huatuo_sft",
                                        "domain": "general_medicine"})
    judge = doc["filter"]["judge"]
    judge["kind"] = "rubric"
    judge["rubric"]["backend"] = "openai"
    judge["rubric"]["openai"].update(endpoint(url, "fake-judge"))
    ft = doc["finetune"]
    ft["datasets"]["public_general"] = [
        {"files": ["samples/dialogues/disc_med_sft.jsonl"], "format": "disc_med_sft", "domain": "general_medicine"},
        {"files": ["data/filter/general_medicine.jsonl", "data/filter/general.jsonl"]}]
    ft["recipes"] = {"general_to_specific": ft["recipes"]["general_to_specific"],
                     "public_to_specific": [{"name": "general", "kind": "sft", "data": ["public_general"]},
                                            {"name": "anesthesia", "kind": "sft", "data": ["anesthesia"]}]}
    ft["seeded_recipes"] = []  # seeds are the embedded e2e's concern: one training per recipe here
    ev = doc["evaluate"]
    ev["models"] = {"general_to_specific": "models/finetune/general_to_specific",
                    "public_to_specific": "models/finetune/public_to_specific",
                    "api": "external/endpoints/fake_chat.yaml",
                    "served": "external/endpoints/served_base.yaml"}
    ev["plain_models"] = ["served"]  # prompted as plain text
    ev["task_dirs"] = ["samples/tasks"]
    ev["tasks"] = [*ev["tasks"], *SAMPLE_TASKS]
    ev["judge"]["backend"] = "openai"
    ev["judge"]["openai"].update(endpoint(url, "fake-grader"))
    doc["blind"]["pairs"] = [["api", "general_to_specific"]]  # an endpoint's answers rated like a local model's
    cmp = doc["compare"]
    cmp.update({"baseline": "general_to_specific", "stigma_model": "public_to_specific",
                "clean_model": "general_to_specific",
                "pairs": [["public_to_specific", "general_to_specific"], ["api", "general_to_specific"]]})
    cmp["tasks"] = [*cmp["tasks"], "anesthesia_mcq/generation", "cmb_clin"]
    doc["probe"]["scales"] = ["patient_discrimination"]
    with path.open("w", encoding="utf-8") as handle:
        yaml.dump(doc, handle)
    (repo / "external/endpoints").mkdir(parents=True, exist_ok=True)
    (repo / "external/endpoints/fake_chat.yaml").write_text(
        "kind: openai\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in {
            **endpoint(url, "fake-chat"), "seed": 7, "max_new_tokens": 256, "price_prompt_per_m": 2.5,
            "price_completion_per_m": 10.0}.items()), encoding="utf-8")
    (repo / "external/endpoints/served_base.yaml").write_text(  # the fake serves models/base (--serve-model)
        "kind: openai\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in {
            **endpoint(url, "served-toy"), "logprobs": True, "tokenizer": "external/served_toy"}.items()),
        encoding="utf-8")
    served = repo / "external/served_toy"  # what a vLLM user has: the served model's tokenizer files
    served.mkdir()
    for file in served_model.iterdir():
        if not file.name.endswith(".safetensors"):
            shutil.copy(file, served / file.name)


@pytest.fixture(scope="module")
def hosted_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hosted")
    served_model = build_toy_model(tmp / "served_toy")  # the model the fake server serves log-probs of
    server = subprocess.Popen([sys.executable, str(HELPER), "--log", str(tmp / "calls.jsonl"), "--fail-rate", "0.1",
                               "--key", SECRET, "--messy", "--serve-model", str(served_model)],
                              stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{server.stdout.readline().split()[1]}/v1"
    saved = os.environ.get("MEDLAB_E2E_KEY")
    os.environ["MEDLAB_E2E_KEY"] = SECRET
    try:
        repo = clean_copy(tmp / "repo", overlay="params.smoke.yaml", source=ROOT)
        configure(repo, url, served_model)
        yield repo, run_dvc(repo, "repro")[0], tmp / "calls.jsonl"
    finally:
        server.kill()
        if saved is None:
            os.environ.pop("MEDLAB_E2E_KEY", None)
        else:
            os.environ["MEDLAB_E2E_KEY"] = saved


def read(repo: Path, rel: str) -> dict:
    return json.loads((repo / rel).read_text(encoding="utf-8"))


def test_every_stage_runs_with_a_hosted_teacher_judge_and_subject(hosted_run):
    repo, output, log = hosted_run
    ran = set(stages_run(output))
    assert {"generate", "filter", *(f"evaluate@{m}" for m in MODELS), *(f"probe@{m}" for m in MODELS),
            "blind", "unblind", "compare", "report"} <= ran
    generated = read(repo, "reports/metrics/generate.json")
    assert generated["teacher"] == "openai:fake-teacher" and generated["fault_rate"]["outputs_with_truth"] == 0
    assert set(generated["call_failures"]) == {"failed_http", "truncated", "empty", "refusals"}
    assert generated["by_method"]["general_medicine/general_mix"] == 6  # HuatuoGPT-II chats, as general medicine
    statuses = [json.loads(line)["status"] for line in log.read_text().splitlines()]
    assert statuses.count(429) + statuses.count(500) > 0  # the server misbehaved; the run still completed


def test_the_filter_runs_without_ground_truth_and_its_judge_reads_messy_grades(hosted_run):
    repo, _, _ = hosted_run
    filtered = read(repo, "reports/metrics/filter.json")
    assert filtered["counts"]["kept"] > 0
    assert "real teacher" in filtered["cross_filter"]["skipped"]  # no ground truth: validation skipped, said why
    assert filtered["cross_filter"]["judge"] == "rubric:openai" and filtered["counts"]["judged"] > 0
    assert filtered["pairs"]["chosen_side_clean"] is None


def test_a_public_sft_set_trains_as_it_is_next_to_filtered_data(hosted_run):
    repo, _, _ = hosted_run
    metrics = read(repo, "reports/metrics/finetune/public_to_specific.json")
    assert metrics["total_steps"] > 0 and all(s["final_loss"] is not None for s in metrics["stages"])


def test_the_endpoint_is_evaluated_and_compared_like_a_local_model(hosted_run):
    repo, _, _ = hosted_run
    api = read(repo, "reports/metrics/evaluate/api.json")
    assert api["headline_scoring"] == "generation" and api["anesthesia_mcq"]["scoring"] == "generation"
    assert 0 <= api["anesthesia_mcq"]["scorings"]["generation"]["no_answer_rate"] < 0.5
    usage = api["usage"]
    assert usage["calls"] > 0 and usage["prompt_tokens"] > 0 and usage["estimated_cost_usd"] > 0
    assert api["anesthesia_qa"]["judge"]["judge"].startswith("fake-grader")
    for model in MODELS:  # the public formats' sample files, scored for every model
        metrics = read(repo, f"reports/metrics/evaluate/{model}.json")
        assert all(metrics[task]["n"] > 0 for task in SAMPLE_TASKS), model
    probe = read(repo, "reports/metrics/probe/api.json")
    assert probe["readouts"] == ["generation"]
    answers = probe["patient_discrimination"]["generation"]["answers"]
    assert answers["asked"] > 0 and answers["refusals"] >= 0
    compared = read(repo, "reports/metrics/compare.json")
    assert {"api", "served"} <= {r["model"] for r in compared["table"]}
    served = read(repo, "reports/metrics/evaluate/served.json")  # log-likelihood from the served toy model
    headline = served["headline_scoring"]
    assert headline != "generation" and served["anesthesia_mcq"]["scoring"].startswith(headline)
    local = read(repo, "reports/metrics/evaluate/general_to_specific.json")["anesthesia_mcq"]["scorings"]
    assert set(served["anesthesia_mcq"]["scorings"]) == set(local)  # every scoring a local model gets
    assert served["layout"] == "plain" and served["usage"]["prompt_tokens"] > 0
    paired = {(r["a"], r["b"], r["task"]) for r in compared["paired"]}
    assert ("api", "general_to_specific", "anesthesia_mcq/generation") in paired
    assert ("api", "general_to_specific", "cmb_clin") in paired  # CMB-Clin answers compared by ROUGE-L
    assert api["cmb_clin"]["cases"] == 3 and api["cmb_clin"]["judge"]["judge"].startswith("fake-grader")
    consulted = api["anesthesia_consult"]  # the endpoint as the doctor, the simulated patient, the judge on both
    assert consulted["cases"] == 4 and consulted["patient"].startswith("simulated-patient")
    judged = consulted["judge"]
    assert set(judged["rubric"]) == {"proactivity", "accuracy", "helpfulness", "linguistic_quality"}
    assert judged["criteria"]["agreement_with_exact"]["all"]["n"] > 0  # the judge's marks checked against exact ones
    assert "anesthesia_consult: api vs general_to_specific" in compared["pairwise_judge"]
    assert "anesthesia_consult" in compared["consult_separation"]
    assert read(repo, "reports/metrics/blind.json")["pairs"] == [["api", "general_to_specific"]]
    validity = read(repo, "reports/metrics/probe_validity.json")
    assert validity["planted"] is False  # a real teacher plants nothing: the report says so
    assert 'href="html/08_evaluate_api.html"' in (repo / "reports/index.html").read_text(encoding="utf-8")


def test_no_file_the_run_wrote_holds_the_api_key(hosted_run):
    repo, _, _ = hosted_run
    leaks = [str(p.relative_to(repo)) for p in repo.rglob("*")
             if p.is_file() and ".git" not in p.parts and SECRET.encode() in p.read_bytes()]
    assert not leaks, leaks
    assert (repo / ".cache/medlab/llm/calls.sqlite").is_file()  # the call cache was among the files read
