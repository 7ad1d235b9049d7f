"""The whole pipeline, end to end, on the smoke profile in a temporary copy of the repo.

Asserts on what the stages produced (files, record counts, metric ranges), that a
second `dvc repro` runs nothing, that changing a downstream knob reruns only that
stage, and that a clean second run gives byte-identical data and identical metrics.
Later issues extend the assertions as they add stages.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers.raters import fill_rating_page
from helpers.workspace import clean_copy, edit_function_body, run_dvc
from ruamel.yaml import YAML

from medlab.records import CorpusDoc, McqItem, QaItem, Triple, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def repo_copy(dest: Path) -> Path:
    return clean_copy(dest, overlay="params.smoke.yaml", source=ROOT)


def dvc(repo: Path, *args: str) -> str:
    return run_dvc(repo, *args)[0]


# the default run's recipes and models, as params.yaml lists them (the smoke overlay keeps them all)
RECIPES = tuple(YAML(typ="safe").load((ROOT / "params.yaml").read_text(encoding="utf-8"))["finetune"]["recipes"])
MODELS = ("base", *RECIPES)
EVALUATED = sorted(f"evaluate@{m}" for m in MODELS)
PROBED = sorted(f"probe@{m}" for m in MODELS)


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def data_hashes(repo: Path) -> dict[str, str]:
    """md5 of every data/model output as recorded in dvc.lock (executed notebooks excluded:
    papermill writes timestamps into them)."""
    lock = YAML(typ="safe").load((repo / "dvc.lock").read_text(encoding="utf-8"))
    out = {}
    for stage in lock["stages"].values():
        for entry in stage.get("outs", []):
            if entry["path"].startswith(("data/", "models/", "reports/metrics/", "reports/figures/")):
                out[entry["path"]] = entry["md5"]
    return out


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    repo = repo_copy(tmp_path_factory.mktemp("run1"))
    output = dvc(repo, "repro")
    return repo, output


def test_every_stage_ran_and_produced_its_outputs(first_run):
    repo, output = first_run
    assert set(stages_run(output)) == {"knowledge", "corpus", "benchmark", "pretrain", "generate", "filter",
                                       *(f"finetune@{r}" for r in RECIPES), *EVALUATED, *PROBED, "blind", "unblind",
                                       "compare", "report"}
    for stem in ("01_knowledge", "02_corpus", "03_benchmark", "04_pretrain", "05_generate", "06_filter",
                 "10_blind", "11_unblind", "12_compare", "13_report"):
        assert (repo / "reports/notebooks" / f"{stem}.ipynb").is_file()
        html = (repo / "reports/html" / f"{stem}.html").read_text(encoding="utf-8")
        assert "<html" in html and "Traceback" not in html
    for figure in ("knowledge/overview.png", "corpus/lengths.png", "pretrain/loss.png", "generate/mix.png",
                   "filter/judge.png"):
        assert (repo / "reports/figures" / figure).stat().st_size > 10_000


def image_outputs(notebook: Path) -> int:
    """PNG outputs of an executed notebook (what JupyterLab and nbconvert show)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return sum("image/png" in out.get("data", {}) for c in cells for out in c.get("outputs", []))


def test_every_notebook_and_stage_page_shows_the_figures_it_saves(first_run):
    """Each stage's figures are saved as PNG *and* drawn inline: the executed notebook has
    an image/png output per saved figure, and its HTML page an <img> per figure."""
    from medlab.config import read_plain
    from medlab.report.site import pipeline_stages

    repo, _ = first_run
    shown = {}
    for name, stage in pipeline_stages(repo, read_plain(repo / "params.yaml")):
        outs = [o if isinstance(o, str) else next(iter(o)) for o in stage.get("outs", [])]
        folder = next((o for o in outs if o.startswith("reports/figures/")), None)
        notebook = next(o for o in outs if o.startswith("reports/notebooks/"))
        page = next(o for o in outs if o.startswith("reports/html/"))
        saved = len(list((repo / folder).rglob("*.png"))) if folder else 0
        images = image_outputs(repo / notebook)
        tags = (repo / page).read_text(encoding="utf-8").count("<img ")
        shown[name] = (saved, images, tags)
        assert images >= saved and tags >= saved, (name, shown[name])
        assert (repo / page).stat().st_size < 3_000_000, (page, (repo / page).stat().st_size)
    with_figures = [n for n, (saved, _, _) in shown.items() if saved]
    # knowledge, corpus, pretrain, generate, filter; each recipe, each model twice; compare
    assert len(with_figures) == 5 + len(RECIPES) + 2 * len(MODELS) + 1, shown


def test_knowledge_and_corpus_outputs(first_run):
    repo, _ = first_run
    triples = read_jsonl(repo / "data/knowledge/triples.jsonl", Triple)
    metrics = json.loads((repo / "reports/metrics/knowledge.json").read_text())
    assert metrics["triples"] == len(triples) > 2000
    assert metrics["general_diseases"] >= 120 and metrics["general_departments"] >= 10
    corpus = {d: read_jsonl(repo / f"data/corpus/{d}.jsonl", CorpusDoc) for d in ("general", "anesthesia")}
    coverage = json.loads((repo / "data/corpus/coverage.json").read_text())
    # smoke: 2 paragraphs per entity; anesthesia only for covered subjects
    assert len(corpus["general"]) == 2 * metrics["general_diseases"]
    assert len(corpus["anesthesia"]) == 2 * len(coverage["covered"])
    assert 0 < len(coverage["covered"]) < metrics["anesthesia_subjects"]


def test_benchmark_outputs(first_run):
    repo, _ = first_run
    mcq = read_jsonl(repo / "data/benchmark/anesthesia_mcq.jsonl", McqItem)
    assert len(mcq) == 40 and sum(i.split == "dev" for i in mcq) == 5
    assert len(read_jsonl(repo / "data/benchmark/general_mcq.jsonl", McqItem)) == 40
    assert len(read_jsonl(repo / "data/benchmark/anesthesia_qa.jsonl", QaItem)) == 10
    rc = read_jsonl(repo / "data/benchmark/anesthesia_rc.jsonl", McqItem)
    assert rc and all(i.private and i.phi for i in rc)
    assert {i.meta["case"] for i in rc} == {f"anesthesia_rc-{k:04d}" for k in range(6)}


def test_pretrain_outputs_load_and_beat_the_unigram_baseline(first_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    repo, _ = first_run
    base = repo / "models/base"
    assert (base / "model.safetensors").is_file() and (base / "tokenizer.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    assert model.config.hidden_size == 64 and tokenizer.chat_template
    metrics = json.loads((repo / "reports/metrics/pretrain.json").read_text())
    assert metrics["tokens_seen"] == 200 * 8 * 64
    assert metrics["valid_perplexity"] < metrics["initial_perplexity"] / 3
    assert metrics["valid_perplexity"] < metrics["unigram_perplexity"] / 2
    loss = (repo / "reports/pretrain/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert loss[0].split("\t") == ["step", "loss"] and len(loss) == 1 + 200 // 10
    assert not any((repo / ".cache/medlab/checkpoints/pretrain").glob("*/checkpoint-*"))


def test_generate_outputs(first_run):
    from medlab.records import Rejected, Sample

    repo, _ = first_run
    metrics = json.loads((repo / "reports/metrics/generate.json").read_text())
    data = {d: read_jsonl(repo / f"data/generate/{d}.jsonl", Sample)
            for d in ("anesthesia", "general_medicine", "general")}
    assert {d: len(v) for d, v in data.items()} == metrics["counts"]
    assert metrics["counts"]["general"] == 120  # the shipped general chats, as they are
    assert metrics["counts"]["anesthesia"] > 100 and metrics["counts"]["general_medicine"] > 200
    methods = {s.provenance["method"] for v in data.values() for s in v}
    assert methods == {"kg_qa", "kg_dialogue", "self_instruct", "dialogue_rewrite", "mcq_to_qa",
                       "corpus_to_instruction", "corpus_ner", "kg_mcq", "kg_consult", "general_mix"}
    rate = metrics["fault_rate"]
    assert abs(rate["realized"] - rate["configured"]) < 0.05
    for sample in data["anesthesia"] + data["general_medicine"]:
        assert sample.truth["fault"] in ("none", "factual", "unsafe", "off_format", "stigma")
        assert sample.provenance["prompt_hash"] and sample.provenance["teacher"].startswith("simulated:")
    rejected = read_jsonl(repo / "data/generate/rejected.jsonl", Rejected)
    assert rejected and all(r.reason for r in rejected)
    assert (repo / ".cache/medlab/llm/calls.sqlite").is_file()


def test_filter_outputs(first_run):
    from medlab.records import McqItem, PreferencePair, Sample

    repo, _ = first_run
    metrics = json.loads((repo / "reports/metrics/filter.json").read_text())
    kept = {d: read_jsonl(repo / f"data/filter/{d}.jsonl", Sample) for d in ("anesthesia", "general_medicine", "general")}
    rejected = read_jsonl(repo / "data/filter/rejected.jsonl", Sample)
    generated = json.loads((repo / "reports/metrics/generate.json").read_text())["counts"]
    assert sum(map(len, kept.values())) + len(rejected) == sum(generated.values()) == metrics["counts"]["input"]
    assert metrics["counts"]["kept"] == sum(map(len, kept.values())) < metrics["counts"]["input"]
    assert sum(metrics["reasons"].values()) == len(rejected)
    cross = metrics["cross_filter"]
    # the smoke model knows next to nothing: only the accounting is checked here (the default
    # run's numbers are in the README; the judge's behaviour is unit-tested on a trained model)
    assert 0.0 <= cross["auroc"] <= 1.0 and cross["auroc_ci"][0] <= cross["auroc"] <= cross["auroc_ci"][1]
    assert 0.0 <= cross["error_rate_after"] <= 1.0 and cross["error_rate_before"] > 0.0
    assert metrics["deid"]["development"]["recall"] >= 0.99 and metrics["deid"]["vignettes"]["recall"] >= 0.99
    private = read_jsonl(repo / "data/filter/private/anesthesia_rc.jsonl", McqItem)
    assert private and all("[姓名]" in i.context and not i.phi for i in private)
    pairs = read_jsonl(repo / "data/filter/pairs.jsonl", PreferencePair)
    assert metrics["pairs"]["n"] == len(pairs)
    kept_ids = {s.id for samples in kept.values() for s in samples}
    rejected_by = {s.id: s for s in rejected}
    for pair in pairs:
        assert pair.provenance["chosen_id"] in kept_ids and pair.provenance["rejected_id"] in rejected_by
        assert pair.rejected == rejected_by[pair.provenance["rejected_id"]].messages[-1]["content"]
    if not pairs:
        # the smoke world is small: then no quality-rejected sample may share an instruction
        # or a fact with a kept one (the default run makes ~1,100 pairs)
        from medlab.filter.pairs import fact_key, prompt_key
        from medlab.formats.text import iter_json_lines
        kept_keys = {k for samples in kept.values() for s in samples for k in (prompt_key(s), fact_key(s))}
        decisions = {d["id"]: d for _, d in iter_json_lines(repo / "data/filter/decisions.jsonl")}
        quality = [s for s in rejected if decisions[s.id]["reason"].startswith(("rule", "judge"))]
        assert not any(prompt_key(s) in kept_keys or fact_key(s) in kept_keys - {None} for s in quality)


def test_finetune_outputs(first_run):
    from medlab.finetune.run import load_finetuned

    repo, output = first_run
    for recipe in RECIPES:
        metrics = json.loads((repo / f"reports/metrics/finetune/{recipe}.json").read_text())
        assert metrics["recipe"] == recipe and metrics["total_steps"] > 0
        assert all(stage["final_loss"] is not None for stage in metrics["stages"] if stage["kind"] == "sft")
        assert (repo / f"reports/finetune/{recipe}/plots/metrics/train/loss.tsv").is_file()
        assert (repo / f"reports/figures/finetune/{recipe}/loss.png").is_file()
        assert (repo / f"reports/html/07_finetune_{recipe}.html").is_file()
    model, tokenizer = load_finetuned(repo / "models/finetune/general_to_specific")
    assert model.config.vocab_size == len(tokenizer)
    dpo = json.loads((repo / "reports/metrics/finetune/general_to_specific_dpo.json").read_text())
    assert [s["kind"] for s in dpo["stages"]] == ["sft", "sft", "dpo"] and dpo["stages"][2]["pairs"] > 0
    assert "[general_to_specific_dpo:general] reusing" in output  # same inputs as Hypnos' recipe: not retrained
    one = json.loads((repo / "reports/metrics/finetune/one_stage_priority.json").read_text())
    share = one["stages"][0]["schedule"]["sft_instructions"]
    assert share[0] < share[-1]  # SFT data comes later in the run
    # the smoke overlay's seeds: Hypnos' recipe and its baseline trained again with seed 1235, the rest once
    hypnos = json.loads((repo / "reports/metrics/finetune/general_to_specific.json").read_text())
    assert set(hypnos["seeds"]) == {"1234", "1235"} and "seeds" not in one
    again, _ = load_finetuned(repo / "models/finetune/general_to_specific/seeds/s1235")
    assert any((x - y).abs().max() > 0 for x, y in zip(model.parameters(), again.parameters(), strict=True))
    assert not (repo / "models/finetune/one_stage_priority/seeds").exists()


def test_evaluate_and_compare_outputs(first_run):
    repo, _ = first_run
    for model in MODELS:
        metrics = json.loads((repo / f"reports/metrics/evaluate/{model}.json").read_text())
        head = metrics["anesthesia_mcq"]
        assert {"acc", "acc_ci", "acc_rotation", "n", "chance"} <= head.keys() and head["chance"] == 0.25
        assert head["acc_ci"][0] <= head["acc"] <= head["acc_ci"][1] and head["n"] == 35  # 40 items - 5 dev
        shown = head["scorings"]["option_text"]
        assert shown["acc_rotation"] <= shown["acc_rotation_mean"] + 1e-9 and 0 <= shown["position_bias"] <= 1
        assert 0 <= head["scorings"]["generation"]["no_answer_rate"] <= 1
        assert metrics["layout"] == ("plain" if model == "base" else "chat")
        assert metrics["anesthesia_qa"]["n"] == 5 and metrics["kb_ner"]["n"] == 5
        outcomes = json.loads((repo / f"data/evaluate/{model}/outcomes.json").read_text())
        assert len(outcomes["anesthesia_mcq/cloze"]) == 35
        consulted = metrics["anesthesia_consult"]  # 4 of the 6 vignette cases, at most 3 doctor replies each
        assert consulted["cases"] == 4 and 1 <= consulted["turns"] <= 3 and consulted["patient"].startswith(
            "simulated-patient")
        assert 0 <= consulted["elicited"] <= 1 and 0 <= consulted["criteria_score"] <= 1
        transcripts = [json.loads(line) for line in
                       (repo / f"data/evaluate/{model}/anesthesia_consult_answers.jsonl").read_text().splitlines()]
        assert len(transcripts) == 4 and all(t["turns"][0]["role"] == "patient" for t in transcripts)
        assert set(outcomes["anesthesia_consult"]) == {t["id"] for t in transcripts}
        page = (repo / f"reports/html/08_evaluate_{model}.html").read_text(encoding="utf-8")
        assert "患者：医生您好" in page  # transcripts shown on the stage's page
    compared = json.loads((repo / "reports/metrics/compare.json").read_text())
    assert {r["model"] for r in compared["table"]} == set(MODELS)
    # further seeds: evaluated on the claim columns, and Hypnos' claim pooled over both seeds
    further = json.loads((repo / "data/evaluate/general_to_specific/seeds/s1235/outcomes.json").read_text())
    assert set(further) == {"anesthesia_mcq/cloze", "anesthesia_mcq/option_text", "general_mcq/cloze",
                            "anesthesia_rc/cloze", "anesthesia_qa", "kb_ner"}  # compare.tasks
    seeded = json.loads((repo / "reports/metrics/evaluate/general_to_specific.json").read_text())["seeds"]
    assert seeded["seeds"] == [1234, 1235] and set(seeded["columns"]["kb_ner"]) == {"1234", "1235"}
    hypnos = [r for r in compared["paired"] if (r["a"], r["b"]) == ("general_to_specific", "specific_only")]
    assert hypnos and all(r["n_seeds"] == 2 and set(r["per_seed"]) == {"1234", "1235"} for r in hypnos)
    assert all(r["diff"] == pytest.approx(sum(r["per_seed"].values()) / 2) for r in hypnos)
    assert all(r["n_seeds"] == 1 for r in compared["paired"] if r["a"] == "one_stage_priority")
    pairs = {(r["a"], r["b"]) for r in compared["paired"]}
    assert ("general_to_specific", "specific_only") in pairs and ("specific_only", "base") in pairs
    assert all(r["p_holm"] >= r["p_test"] for r in compared["paired"])
    table = (repo / "reports/compare/table.md").read_text(encoding="utf-8")
    assert table.count("\n") == len(MODELS) + 2 and "| general_to_specific_stigma |" in table
    assert (repo / "reports/figures/compare/overview.png").stat().st_size > 10_000
    separation = compared["consult_separation"]["anesthesia_consult"]["measures"]
    assert set(separation) == {"elicited", "diagnosis", "advice", "criteria_score", "flagged"}
    assert all(s["separates"] in (True, False, None) for s in separation.values())


def test_probe_outputs_and_validity_report(first_run):
    repo, _ = first_run
    for model in MODELS:
        metrics = json.loads((repo / f"reports/metrics/probe/{model}.json").read_text())
        likert = metrics["mica_like"]["likert"]
        assert 1 <= likert["total"]["debiased"]["mean"] <= 5 and likert["n_items"] == 10
        assert 0 <= metrics["position_bias_index"] <= 1 and 0.2 <= metrics["max_position_share"] <= 1
        gaps = metrics["patient_discrimination"]["group_gaps"]
        assert set(gaps) == {"likert", "statement"} and len(gaps["statement"]["gaps"]) == 8
        assert "mental_illness-physical_illness" in gaps["statement"]["gaps"]
        assert (repo / f"reports/html/09_probe_{model}.html").is_file()
    further = json.loads((repo / "data/probe/general_to_specific/seeds/s1235/items.json").read_text())
    assert set(further) == {"patient_discrimination/likert", "patient_discrimination/statement"}
    validity = json.loads((repo / "reports/metrics/probe_validity.json").read_text())
    assert {"targeted_gap_diff", "ci", "control_gap_diff", "holds"} <= validity.keys()
    assert validity["seeds"] == [1234]  # the smoke overlay trains the stigma recipe once
    assert validity["ci"][0] <= validity["targeted_gap_diff"] <= validity["ci"][1]
    assert validity["readout"] == "statement" and isinstance(validity["holds"], bool)
    assert validity["holds"] == (validity["ci"][0] > 0
                                 and abs(validity["control_gap_diff"]) < 0.5 * validity["targeted_gap_diff"])


def test_report_shows_this_run_and_names_a_missing_input(first_run):
    repo, _ = first_run
    page = (repo / "reports/index.html").read_text(encoding="utf-8")
    for section in ("run", "data", "training", "evaluation", "human", "bias", "timing", "notebooks"):
        assert f'<section id="{section}">' in page
    compared = json.loads((repo / "reports/metrics/compare.json").read_text())
    best = compared["best_anesthesia_mcq"]
    shown = f"{best['acc']:.3f} [{best['acc_ci'][0]:.3f}, {best['acc_ci'][1]:.3f}]"
    assert shown in page  # this run's numbers, as the compare stage wrote them
    validity = json.loads((repo / "reports/metrics/probe_validity.json").read_text())
    assert f"{validity['targeted_gap_diff']:.3f}" in page
    filtered = json.loads((repo / "reports/metrics/filter.json").read_text())["counts"]
    assert f"{filtered['kept']:,} of {filtered['input']:,} kept" in page
    # data 4, pre-training 1, one curve per recipe, overview 1, MCQ per model, position bias 1, scales per model
    assert page.count('<img src="figures/') == 4 + 1 + len(RECIPES) + 1 + len(MODELS) + 1 + len(MODELS)
    for model in MODELS:
        assert f'href="html/09_probe_{model}.html"' in page
    assert "simulated" in page and "clean copy" in page  # the teacher is named simulated; the git subject
    assert "No ratings returned yet" in page and 'href="blind/r1/rate.html"' in page
    readme = (repo / "reports/README.md").read_text(encoding="utf-8")
    assert all(f"| {m} |" in readme for m in MODELS) and shown in readme
    from PIL import Image

    shot = Image.open(repo / "reports/index.png")
    assert shot.size[0] == 1400 and shot.size[1] > 3000  # the whole page, not the first screen
    # dvc.yaml's metrics and plots work out of the box (every file of a plotted folder is a plot)
    plots = dvc(repo, "plots", "show", "-o", str(repo / "dvc_plots"))
    assert "WARNING" not in plots, plots
    drawn = (repo / "dvc_plots/index.html").read_text(encoding="utf-8")
    assert all(f"reports/finetune/{r}/plots/metrics/train/loss.tsv" in drawn for r in RECIPES)
    assert "reports/metrics/evaluate/general_to_specific_stigma.json" in dvc(repo, "metrics", "show")
    timing = json.loads((repo / "reports/timing/report.json").read_text())
    assert timing["images"] == page.count("<img ") and timing["links"] > len(MODELS) * 2
    # A missing figure stops the report stage (run alone: DVC would otherwise remake the
    # figure first) with a message naming it, and leaves the last page as it was.
    figure = repo / "reports/figures/finetune/specific_only/loss.png"
    kept = figure.read_bytes()
    figure.unlink()
    try:
        with pytest.raises(RuntimeError) as err:
            dvc(repo, "repro", "-s", "-f", "report")
        assert "reports/figures/finetune/specific_only/loss.png: missing (written by stage finetune@specific_only)" \
            in str(err.value)
        assert (repo / "reports/README.md").read_text(encoding="utf-8") == readme
    finally:
        figure.write_bytes(kept)
    assert stages_run(dvc(repo, "repro", "-s", "-f", "report")) == ["report"]


def test_second_repro_runs_nothing_and_a_knob_reruns_only_what_depends_on_it(first_run):
    repo, _ = first_run
    assert stages_run(dvc(repo, "repro")) == []
    params = repo / "params.yaml"
    original = params.read_text(encoding="utf-8")
    # An upstream knob: its stage reruns with the new value; DVC then sees everything downstream stale.
    params.write_text(original.replace("max_steps: 200", "max_steps: 150"), encoding="utf-8")
    assert stages_run(dvc(repo, "repro", "pretrain")) == ["pretrain"]
    assert json.loads((repo / "reports/metrics/pretrain.json").read_text())["tokens_seen"] == 150 * 8 * 64
    stale = dvc(repo, "status")
    assert all(f"{name}:" in stale for name in ("filter", "finetune@specific_only", "evaluate@base", "probe@base"))
    # Back to 200 steps: DVC's run cache restores the earlier base model (no training), and
    # nothing downstream is stale any more (no rerun of the 25 stages below it).
    params.write_text(original, encoding="utf-8")
    assert stages_run(dvc(repo, "repro", "pretrain")) == []
    assert "Data and pipelines are up to date" in dvc(repo, "status")
    # A benchmark knob marks the benchmark stage (decontamination and evaluation follow it).
    params.write_text(original.replace("n_cases: 6", "n_cases: 5"), encoding="utf-8")
    assert "benchmark:" in dvc(repo, "status")
    # One recipe's knob reruns its own branch of the fan-out, and the comparison.
    changed, n = re.subn(r"(specific_only:\n\s*- \{name: anesthesia, kind: sft, data: \[anesthesia\])\}",
                         r"\1, epochs: 1.0}", original)
    assert n == 1
    params.write_text(changed, encoding="utf-8")
    ran = stages_run(dvc(repo, "repro"))
    assert ran[0] == "finetune@specific_only" and ran[-2:] == ["compare", "report"]
    # its evaluation and probe, and the human-evaluation packages (specific_only is in blind.pairs)
    assert sorted(ran[1:-2]) == ["blind", "evaluate@specific_only", "probe@specific_only", "unblind"]


def test_a_second_clean_run_is_bit_identical(first_run, tmp_path_factory):
    repo, _ = first_run
    other = repo_copy(tmp_path_factory.mktemp("run2"))
    # Bring run 1 back to the smoke parameters the previous test changed (one recipe's branch reruns).
    shutil.copy2(other / "params.yaml", repo / "params.yaml")
    dvc(repo, "repro")
    # The second run covers one branch of each fan-out (the DPO recipe: it reuses the
    # general_to_specific stages, then its evaluation and probe) — every kind of stage, at
    # a third of the time of all eight models (CI has 30 minutes for everything).
    branch = "general_to_specific_dpo"
    dvc(other, "repro", f"evaluate@{branch}", f"probe@{branch}")
    a, b = data_hashes(repo), data_hashes(other)
    assert {"models/base", "data/filter", f"models/finetune/{branch}", f"data/evaluate/{branch}",
            f"reports/metrics/probe/{branch}.json"} <= b.keys() <= a.keys()
    assert all(a[k] == b[k] for k in b), {k: (a[k], b[k]) for k in b if a[k] != b[k]}


def test_caches_follow_the_code_and_a_warm_cache_from_other_code_returns_nothing_stale(first_run,
                                                                                      tmp_path_factory):
    """Issue 16 §1 and §5: cached results are keyed by the code that computes them. The copy
    runs its own src/ (tests/helpers/workspace.py), edited here as a developer would."""
    repo, _ = first_run
    before = data_hashes(repo)
    timing = repo / "reports/timing/evaluate/base.json"
    computed = json.loads(timing.read_text())["tasks_computed"]
    sources = {name: repo / "src/medlab" / name for name in
               ("filter/dedup.py", "evaluate/text_metrics.py", "embedded/teacher.py")}
    originals = {name: path.read_text(encoding="utf-8") for name, path in sources.items()}
    # evaluate never imports the filter's dedup: DVC leaves it alone, and forced, it reuses every task
    edit_function_body(sources["filter/dedup.py"], "normalize")
    assert "evaluate@base:" not in dvc(repo, "status", "evaluate@base")
    output = dvc(repo, "repro", "-s", "-f", "evaluate@base")
    again = json.loads(timing.read_text())
    assert again["tasks_computed"] == [] and sorted(again["tasks_reused"]) == sorted(computed)
    assert "reused (finished in an earlier run)" in output and "] computed (key" not in output
    # a behaviour change in a module evaluate imports (ROUGE-L always 0), and in the simulated
    # teacher (never a fault): both stages rerun, no cached task or call answers for the old code
    edit_function_body(sources["evaluate/text_metrics.py"], "rouge_l", "return 0.0")
    edit_function_body(sources["embedded/teacher.py"], "draw_fault", 'return "none"')
    assert "evaluate@base:" in dvc(repo, "status", "evaluate@base")
    output = dvc(repo, "repro", "-s", "generate", "evaluate@base")
    again = json.loads(timing.read_text())
    assert again["tasks_reused"] == [] and sorted(again["tasks_computed"]) == sorted(computed)
    assert "] computed (key" in output and "reused (finished" not in output
    edited = data_hashes(repo)
    assert all(edited[k] != before[k] for k in ("data/generate", "reports/metrics/evaluate/base.json"))
    # The original code, in a fresh copy, with the caches the edited code left behind: the
    # original outputs, byte for byte (nothing stale comes back)
    for name, path in sources.items():
        path.write_text(originals[name], encoding="utf-8")
    warm = repo_copy(tmp_path_factory.mktemp("warm"))
    shutil.copytree(repo / ".cache", warm / ".cache")
    dvc(warm, "repro", "generate", "evaluate@base")
    after = data_hashes(warm)
    assert {"data/generate", "data/evaluate/base", "reports/metrics/evaluate/base.json"} <= after.keys()
    assert all(after[k] == before[k] for k in after), {k: (before[k], after[k]) for k in after if after[k] != before[k]}


def test_human_evaluation_round_trip_on_the_pipelines_models(first_run, tmp_path):
    """Issue 17 §2: the blind stage's pages filled in by two scripted raters in headless
    Chromium, returned to ratings/, and the unblind, compare and report stages rerun on them.
    Runs last: it adds rating files to the copy (single-stage reruns, whatever earlier tests edited)."""
    repo, _ = first_run
    manifest = json.loads((repo / "reports/blind/manifest.json").read_text())
    key = json.loads((repo / "data/blind/key.json").read_text())
    assert set(manifest["raters"]) == {"r1", "r2"} and len(key) == 2 * 4

    def rater(offset: int):
        def choose(unit, answers, dims):  # a longer answer scores higher; r2 one point lower on some units
            score = {label: min(5, 1 + len(text) // 8) for label, text in answers.items()}
            if offset and int(unit[1:]) % 3 == 0:
                score = {label: max(1, s - offset) for label, s in score.items()}
            preference = "tie" if score["A"] == score["B"] else max(score, key=score.get)
            return {label: dict.fromkeys(dims, s) for label, s in score.items()}, preference, ""
        return choose

    for name, offset in (("r1", 0), ("r2", 1)):
        fill_rating_page(repo / f"reports/blind/{name}/rate.html", repo / "ratings", rater(offset))
    output = dvc(repo, "repro", "-s", "unblind", "compare", "report")
    assert stages_run(output) == ["unblind", "compare", "report"]
    human = json.loads((repo / "reports/metrics/unblind.json").read_text())
    assert human["rated"] and len(human["files"]) == 2
    summary = human["summary"]
    assert summary["raters"] == ["r1", "r2"] and summary["ratings"] == sum(len(v) for v in manifest["raters"].values())
    assert set(summary["win_tie_lose"]) == {f"{a} vs {b}" for a, b in
                                            json.loads((repo / "reports/metrics/blind.json").read_text())["pairs"]}
    for w in summary["win_tie_lose"].values():
        assert w["win"] + w["tie"] + w["lose"] == pytest.approx(1.0)
    assert summary["agreement"]["accuracy"]["n_multi"] == 2 * 2 * 2  # 2 shared units x 2 pairs x 2 answers
    assert json.loads((repo / "reports/metrics/compare.json").read_text())["human"] == summary
    page = (repo / "reports/index.html").read_text(encoding="utf-8")
    assert "No ratings returned yet" not in page and "Krippendorff" in page
    assert 'src="figures/unblind/overview.png"' in page
