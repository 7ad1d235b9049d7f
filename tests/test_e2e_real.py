"""Real mode end to end: the whole `dvc repro` on the smoke overlay with a real
architecture as the base model -- the Qwen2-family fixture (Qwen's real 151k-token
tokenizer, a stock-style ChatML template without generation markers, random weights;
tests/helpers/real_models.py) -- LoRA adapters for every recipe, evaluation, probe,
comparison and report; then the same model continued on the corpus, and a base model
without a chat template used as is.

Smaller than the embedded e2e (two recipes, the bias probe's validity pair) to keep CI
under its budget; what it asserts is what a user of a Qwen/Llama model would check.
"""

from __future__ import annotations

import json

import pytest
from helpers.real_models import real_model
from helpers.workspace import clean_copy, run_dvc
from ruamel.yaml import YAML
from test_e2e import ROOT, stages_run

from medlab.finetune.masks import GENERATION_MARKER

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]
RECIPES = ("general_to_specific", "general_to_specific_stigma")  # two stages each; the probe's validity pair
MODELS = ("base", *RECIPES)


def real_params(repo, base_dir, continue_training: bool) -> None:
    """params.yaml for real mode: a pretrained base, LoRA adapters, three recipes."""
    yaml = YAML()
    path = repo / "params.yaml"
    doc = yaml.load(path.read_text(encoding="utf-8"))
    doc["pretrain"]["init"] = "pretrained"
    doc["pretrain"]["pretrained"]["name_or_path"] = str(base_dir)
    doc["pretrain"]["pretrained"]["continue_training"] = continue_training
    doc["pretrain"]["train"]["max_steps"] = 10
    gen = doc["generate"]  # a fraction of the smoke data: a 151k vocabulary costs ~1 s per training step here
    gen["kg_qa"].update({"general_medicine": 15, "anesthesia": 50})
    gen["kg_dialogue"].update({"general_medicine": 5, "anesthesia": 5})
    gen["self_instruct"].update({"general_medicine": 5, "anesthesia": 5, "max_requests": 8})
    ft = doc["finetune"]
    ft["method"] = "lora"
    ft["lora"].update({"r": 4, "merge": False, "target_modules": "auto"})
    ft["train"]["epochs"] = 0.25
    for name in list(ft["recipes"]):
        if name not in RECIPES:
            del ft["recipes"][name]
    ft["seeded_recipes"] = []  # seeds are the embedded e2e's concern: one training per recipe here
    ev = doc["evaluate"]  # a few generated answers: the paths, not the statistics
    ev["mcq"]["generation_items"] = 3
    ev["qa"]["items"] = 3
    ev["ner"]["items"] = 3
    ev["consult"]["cases"] = 2  # a real tokenizer's chat template carries the whole consultation
    doc["blind"].update({"pairs": [["general_to_specific_stigma", "general_to_specific"]], "items": 3,
                         "overlap": 1})
    doc["probe"]["scales"] = ["patient_discrimination"]  # the one the validity check reads
    doc["evaluate"]["models"] = {m: ("models/base" if m == "base" else f"models/finetune/{m}") for m in MODELS}
    doc["compare"]["pairs"] = [["general_to_specific_stigma", "general_to_specific"]]
    with path.open("w", encoding="utf-8") as handle:
        yaml.dump(doc, handle)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    repo = clean_copy(tmp_path_factory.mktemp("real"), overlay="params.smoke.yaml", source=ROOT)
    base = real_model("qwen2")
    real_params(repo, base, continue_training=False)
    return repo, base, run_dvc(repo, "repro")[0]


def test_every_stage_runs_on_a_qwen2_model_with_its_stock_template(real_run):
    repo, base, output = real_run
    ran = set(stages_run(output))
    assert ran == {"knowledge", "corpus", "benchmark", "pretrain", "generate", "filter",
                   *(f"finetune@{r}" for r in RECIPES), *(f"evaluate@{m}" for m in MODELS),
                   *(f"probe@{m}" for m in MODELS), "blind", "unblind", "compare", "report"}
    # used as is: models/base is a pointer, no weight copy in the DVC cache
    assert sorted(p.name for p in (repo / "models/base").iterdir()) == ["medlab_base.json"]
    assert json.loads((repo / "models/base/medlab_base.json").read_text())["name_or_path"] == str(base)
    pretrain = json.loads((repo / "reports/metrics/pretrain.json").read_text())
    assert pretrain["tokens_seen"] == 0 and pretrain["vocab_size"] == 151851
    # the filter's likelihood judge scored with the Qwen model
    filtered = json.loads((repo / "reports/metrics/filter.json").read_text())
    assert filtered["counts"]["kept"] > 0


def test_lora_recipes_publish_adapters_trained_on_chatml_answers(real_run):
    repo, _, _ = real_run
    for recipe in RECIPES:
        out = repo / "models/finetune" / recipe
        pointer = json.loads((out / "medlab_adapter.json").read_text())
        assert (out / pointer["base_model"]).resolve() == (repo / "models/base").resolve()
        assert [p.name for p in out.rglob("*.safetensors")] == ["adapter_model.safetensors"] * len(
            pointer["adapters"])
        metrics = json.loads((repo / f"reports/metrics/finetune/{recipe}.json").read_text())
        assert metrics["recipe"] == recipe and metrics["total_steps"] > 0
        assert all(stage["final_loss"] is not None for stage in metrics["stages"] if stage["kind"] == "sft")
        assert len(pointer["adapters"]) == len(metrics["stages"])
    for history in (repo / ".cache/medlab/finetune").glob("*/history.json"):
        summary = json.loads(history.read_text())  # answers found without generation markers
        assert summary["steps"] > 0 and summary["tokenized"]["trained_tokens"] > 0
    template = (repo / "models/finetune/general_to_specific/chat_template.jinja").read_text()
    assert "<|im_start|>" in template and not GENERATION_MARKER.search(template)  # the stock one, as shipped


def test_evaluation_probe_compare_and_report_cover_every_model(real_run):
    repo, _, _ = real_run
    for model in MODELS:
        metrics = json.loads((repo / f"reports/metrics/evaluate/{model}.json").read_text())
        head = metrics["anesthesia_mcq"]
        assert head["n"] == 35 and head["acc_ci"][0] <= head["acc"] <= head["acc_ci"][1]
        assert metrics["layout"] == ("plain" if model == "base" else "chat")
        assert metrics["anesthesia_qa"]["n"] == 3
        assert 0 <= head["scorings"]["generation"]["no_answer_rate"] <= 1
        probe = json.loads((repo / f"reports/metrics/probe/{model}.json").read_text())
        gaps = probe["patient_discrimination"]["group_gaps"]
        assert set(gaps) == {"likert", "statement"} and "mental_illness-physical_illness" in gaps["statement"]["gaps"]
        assert 0 <= probe["position_bias_index"] <= 1
    compared = json.loads((repo / "reports/metrics/compare.json").read_text())
    assert {r["model"] for r in compared["table"]} == set(MODELS)
    assert ("general_to_specific_stigma", "general_to_specific") in {(r["a"], r["b"]) for r in compared["paired"]}
    validity = json.loads((repo / "reports/metrics/probe_validity.json").read_text())
    assert isinstance(validity["holds"], bool)
    page = (repo / "reports/index.html").read_text(encoding="utf-8")
    for model in MODELS:
        assert f'href="html/08_evaluate_{model}.html"' in page


def test_continued_pretraining_and_a_template_less_base(real_run, tmp_path):
    repo, base, _ = real_run
    params = repo / "params.yaml"
    original = params.read_text(encoding="utf-8")
    try:
        params.write_text(original.replace("continue_training: false", "continue_training: true"), encoding="utf-8")
        assert stages_run(run_dvc(repo, "repro", "pretrain")[0]) == ["pretrain"]
        continued = json.loads((repo / "reports/metrics/pretrain.json").read_text())
        assert continued["tokens_seen"] > 0
        assert (repo / "models/base/model.safetensors").is_file()  # trained here: full weights
        assert "<|im_start|>" in (repo / "models/base/chat_template.jinja").read_text()  # its own template kept
        # a base model without a chat template, used as is: medlab's template is added and
        # kept beside the pointer (the Qwen embedding has spare rows: no resize, no weights)
        plain = real_model("qwen2", plain=True)
        params.write_text(original.replace(str(base), str(plain)), encoding="utf-8")
        assert stages_run(run_dvc(repo, "repro", "pretrain")[0]) == ["pretrain"]
        files = sorted(p.name for p in (repo / "models/base").iterdir())
        assert "medlab_base.json" in files and "model.safetensors" not in files and "tokenizer.json" in files
        assert "<|assistant|>" in (repo / "models/base/chat_template.jinja").read_text()
    finally:
        params.write_text(original, encoding="utf-8")
