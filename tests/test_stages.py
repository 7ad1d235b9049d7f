"""medlab.stages: the notebooks' set-up call and the evaluate and compare stages' steps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from medlab.config import load_params
from medlab.probe import validity as check
from medlab.stages import compare as comparison
from medlab.stages import start


@pytest.fixture
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # start() fixes base.torch_threads for the stage; give the worker its own back


def test_start_checks_the_instance_and_seeds_only_the_stages_that_run_torch(root, monkeypatch, capsys,
                                                                            keep_torch_threads):
    monkeypatch.setenv("DVC_ROOT", str(root))
    with pytest.raises(KeyError, match=r"evaluate\.models"):
        start("evaluate", "no_such_model")
    with pytest.raises(KeyError, match=r"finetune\.recipes"):
        start("finetune", "no_such_recipe")
    with pytest.raises(KeyError, match=r"evaluate\.models"):  # a probe runs on a model evaluate knows
        start("probe", "no_such_model")
    with pytest.raises(ValueError, match="no instances"):
        start("knowledge", "x")
    with pytest.raises(KeyError, match="no section"):
        start("no_such_stage")

    torch.manual_seed(7)
    here, params, cfg, timer = start("knowledge")
    assert here == root and cfg == params.knowledge and timer.stage == "knowledge"
    assert torch.initial_seed() == 7  # knowledge draws from named streams only: torch left alone
    capsys.readouterr()
    _, params, cfg, timer = start("probe", "base")
    assert cfg == params.probe and timer.stage == "probe@base"
    assert torch.initial_seed() == params.base.seed and torch.get_num_threads() == params.base.torch_threads
    printed = capsys.readouterr().out
    assert printed.startswith(f"stage probe@base · seed {params.base.seed}") and "readouts" in printed


def evaluation_workspace(root, tmp_path, monkeypatch, family_dirs):
    """A repository of its own: the CMB-Exam sample task, a toy model and a further seed's copy."""
    work = tmp_path / "repo"
    work.mkdir()
    (work / "dvc.yaml").write_text("stages: {}\n")
    shutil.copytree(root / "samples", work / "samples")
    model = family_dirs("toy")
    shutil.copytree(model, work / "models" / "tiny")
    shutil.copytree(model, work / "models" / "tiny" / "seeds" / "s1235")
    params = load_params(root / "params.yaml")  # checked against the repository's files
    monkeypatch.setenv("DVC_ROOT", str(work))
    evaluate = params.evaluate.model_copy(update={
        "models": {"tiny": "models/tiny"}, "tasks": ["cmb_exam"], "task_dirs": ["samples/tasks"], "n_boot": 20,
        "mcq": params.evaluate.mcq.model_copy(update={"scorings": ["cloze", "letter"], "generation_items": 3,
                                                      "generation_max_new_tokens": 4})})
    compare = params.compare.model_copy(update={"tasks": ["cmb_exam/cloze", "cmb_exam/generation"]})
    return work, params.model_copy(update={"evaluate": evaluate, "compare": compare})


def test_an_evaluation_caches_every_task_and_scores_further_seeds_by_the_same_tasks(root, tmp_path, monkeypatch,
                                                                                   family_dirs):
    from medlab.stages.evaluate import Evaluation

    work, params = evaluation_workspace(root, tmp_path, monkeypatch, family_dirs)
    lines = []
    ev = Evaluation("tiny", params, work, log=lambda *a: lines.append(" ".join(map(str, a))))
    assert "task cmb_exam" in ev.describe()
    ev.run_mcq()
    ev.run_mcq_generation()
    ev.run_seeds()
    metrics, _ = ev.save()
    assert sorted(ev.mcq) == [("cmb_exam", "cloze"), ("cmb_exam", "letter")]
    assert metrics["cmb_exam"]["scoring"] == "cloze" and metrics["cmb_exam"]["n"] == 12
    assert set(metrics["cmb_exam"]["scorings"]) == {"cloze", "letter", "generation"}
    outcomes = json.loads((work / "data" / "evaluate" / "tiny" / "outcomes.json").read_text())
    assert set(outcomes) == {"cmb_exam/cloze", "cmb_exam/letter", "cmb_exam/generation"}
    # the further seed: the same weights here, so the same tasks give the same outcomes on the claim columns
    further = json.loads((work / "data" / "evaluate" / "tiny" / "seeds" / "s1235" / "outcomes.json").read_text())
    assert set(further) == {"cmb_exam/cloze", "cmb_exam/generation"}
    assert further["cmb_exam/cloze"] == outcomes["cmb_exam/cloze"]
    assert metrics["seeds"]["seeds"] == [params.finetune.seeds[0], 1235]
    assert json.loads((work / "reports" / "metrics" / "evaluate" / "tiny.json").read_text()) == metrics

    again = Evaluation("tiny", params, work, log=lines.append)
    again.run_mcq()
    again.run_mcq_generation()
    again.run_seeds()
    assert again.store.computed == [] and len(again.store.reused) == 3 + 2  # three tasks, two for the seed
    assert again.results()[0] == metrics


def gaps(target_gap: dict[str, float], control_gap: dict[str, float]) -> dict:
    """group_gaps of a model: the target pair and one control pair, per template."""
    return {"gaps": {"t-a": {"diff": 0.0, "per_template": target_gap},
                     "a-b": {"diff": 0.0, "per_template": control_gap}}}


def probe_items(target: dict[str, float], control: dict[str, float], readouts=("likert",)) -> dict:
    return {f"cf/{r}": {"group_gaps": gaps(target, control)} for r in readouts} | {"plain/likert": {"scores": []}}


def test_the_validity_check_is_pooled_over_seeds_only_when_both_recipes_have_several():
    templates = [f"t{i}" for i in range(8)]
    clean = {1234: probe_items(dict.fromkeys(templates, 0.0), dict.fromkeys(templates, 0.0))}
    stigma = {1234: probe_items({t: 0.2 + 0.01 * i for i, t in enumerate(templates)}, dict.fromkeys(templates, 0.01))}
    scale, one = check.validity_checks(stigma, clean, ["likert"], "t", n_boot=200, seed=0)
    assert scale == "cf" and one["likert"]["seeds"] == [1234] and "per_seed" not in one["likert"]
    assert one["likert"]["holds"] and one["likert"]["targeted_gap_diff"] == pytest.approx(0.235)

    clean[1235] = clean[1234]
    stigma[1235] = probe_items({t: -0.1 for t in templates}, dict.fromkeys(templates, 0.0))  # this seed disagrees
    _, pooled = check.validity_checks(stigma, clean, ["likert"], "t", n_boot=200, seed=0)
    assert pooled["likert"]["seeds"] == [1234, 1235] and pooled["likert"]["sign_agreement"] is False
    assert pooled["likert"]["targeted_gap_diff"] == pytest.approx((0.235 - 0.1) / 2)
    record = check.validity_record(pooled, "likert", "stigma", "clean", scale, planted=True)
    assert record["seeds"] == [1234, 1235] and set(record["per_seed"]) == {"1234", "1235"}
    assert record["other_readouts"] == {} and record["planted"] is True
    assert "same sign on every seed: False" in check.validity_line("likert", pooled["likert"], True)


def test_compare_inputs_name_what_is_missing_and_read_further_seeds(tmp_path):
    data, reports = tmp_path / "data", tmp_path / "reports"
    with pytest.raises(FileNotFoundError, match=r"metrics/evaluate/a\.json"):
        comparison.Inputs(["a"], 1234, data, reports)
    for m in ("a", "b"):
        for path, body in ((reports / "metrics" / "evaluate" / f"{m}.json", {"x": {"acc": 0.5}}),
                           (data / "evaluate" / m / "outcomes.json", {"x/cloze": {"q1": 1}}),
                           (reports / "metrics" / "probe" / f"{m}.json", {}),
                           (data / "probe" / m / "items.json", probe_items({"t0": 0.1}, {"t0": 0.0}))):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(body))
    seed_file = data / "evaluate" / "a" / "seeds" / "s1235" / "outcomes.json"
    seed_file.parent.mkdir(parents=True)
    seed_file.write_text(json.dumps({"x/cloze": {"q1": 0}}))
    inputs = comparison.Inputs(["a", "b"], 1234, data, reports)
    assert inputs.replicates == {"a": {1234: {"x/cloze": {"q1": 1}}, 1235: {"x/cloze": {"q1": 0}}}}
    assert list(inputs.probe_by_seed("b")) == [1234]
    assert inputs.gap_table("cf", "likert") == {"a": {"t-a": 0.0, "a-b": 0.0}, "b": {"t-a": 0.0, "a-b": 0.0}}
    assert comparison.pairs_of(["a", "b", "c"], "a", [["b", "a"], ["c", "b"]]) == [("b", "a"), ("c", "a"), ("c", "b")]


def test_the_paired_table_marks_holm_significance_and_seed_agreement():
    row = {"a": "m1", "b": "m0", "task": "x/cloze", "metric": "acc", "mean_a": 0.6, "mean_b": 0.5, "diff": 0.1,
           "ci": [0.05, 0.15], "p_test": 0.001, "p_holm": 0.004, "n_seeds": 1}
    seeded = row | {"p_holm": 0.2, "n_seeds": 2, "per_seed": {"1234": 0.1, "1235": -0.02}, "sign_agreement": False}
    table = comparison.paired_markdown([row, seeded]).splitlines()
    assert table[2].endswith("| 0.004 ** |") and "| – |" in table[2]
    assert "+0.100 -0.020 ✗" in table[3] and not table[3].endswith("** |")


def test_a_probe_caches_each_scale_and_readout_and_probes_further_seeds_on_the_counterfactual_scale(
        root, tmp_path, monkeypatch, family_dirs):
    from medlab.stages.probe import Probing

    work, params = evaluation_workspace(root, tmp_path, monkeypatch, family_dirs)
    cf = next(n for n in params.probe.scales if n.startswith("patient"))  # the counterfactual scale
    probe_cfg = params.probe.model_copy(update={"scales": [cf], "readouts": ["statement"], "n_boot": 20})
    params = params.model_copy(update={"probe": probe_cfg})
    pr = Probing("tiny", params, work, log=lambda *a: None)
    assert pr.counterfactual == [cf] and pr.readouts == ["statement"]
    pr.run_scale(cf)
    pr.run_seeds()
    metrics = pr.save()
    gaps = metrics[cf]["group_gaps"]["statement"]["gaps"]
    assert any(k.startswith(f"{params.probe.target_group}-") for k in gaps)  # the target group is contrasted
    assert [line.split()[0] for line in pr.gap_lines()[1:]] == list(gaps)
    further = json.loads((work / "data" / "probe" / "tiny" / "seeds" / "s1235" / "items.json").read_text())
    first = json.loads((work / "data" / "probe" / "tiny" / "items.json").read_text())
    assert further[f"{cf}/statement"]["group_gaps"] == first[f"{cf}/statement"]["group_gaps"]  # same weights

    again = Probing("tiny", params, work, log=lambda *a: None)
    again.run_scale(cf)
    again.run_seeds()
    assert again.store.computed == [] and len(again.store.reused) == 2 and again.metrics() == metrics


def notebook(*sources: str) -> dict:
    """A notebook of a parameters cell (tagged) and code cells."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(sources[0], metadata={"tags": ["parameters"]}),
                *(nbformat.v4.new_code_cell(s) for s in sources[1:])]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_the_stage_runner_is_the_papermill_and_nbconvert_commands_in_one_process(root, tmp_path):
    """``python -m medlab.stages.execute``: params.yaml validated first, the notebook run
    in notebooks/ with the selectors given, its HTML byte-identical to ``jupyter nbconvert
    --to html --no-input``; a failing cell: exit 1 naming the cell and the error, the
    executed copy kept with the traceback."""
    import subprocess
    import sys

    import nbformat
    from helpers.workspace import pipeline_env

    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    shutil.copy(root / "params.yaml", project / "params.yaml")
    (project / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
    (project / "samples").symlink_to(root / "samples")  # the files params.yaml names
    (project / "ratings").mkdir()
    nbformat.write(notebook('recipe = "none"', "import os\nprint('ran', recipe, os.path.basename(os.getcwd()))",
                            "print(1 / int(recipe != 'zero'))"), project / "notebooks" / "00_try.ipynb")
    env = {**pipeline_env(), "PYTHONPATH": str(root / "src")}

    def execute(*args):
        return subprocess.run([sys.executable, "-m", "medlab.stages.execute", "notebooks/00_try.ipynb",
                               "reports/notebooks/00_try.ipynb", *args], cwd=project, env=env,
                              capture_output=True, text=True, timeout=300)

    done = execute("-p", "recipe", "one")
    assert done.returncode == 0, done.stderr
    assert "ran one notebooks" in done.stderr  # the selector reached the cell, which ran in notebooks/
    html = project / "reports" / "html" / "00_try.html"
    by_cli = tmp_path / "cli"
    subprocess.run([str(Path(sys.executable).parent / "jupyter"), "nbconvert", "--log-level", "WARN",
                    "--to", "html", "--no-input", "--output-dir", str(by_cli),
                    str(project / "reports" / "notebooks" / "00_try.ipynb")], check=True, env=env,
                   capture_output=True)
    assert html.read_bytes() == (by_cli / "00_try.html").read_bytes()

    done = execute("-p", "recipe", "zero")
    assert done.returncode == 1
    assert "cell 4 failed: ZeroDivisionError" in done.stderr  # cell 2 is papermill's injected parameters
    assert "1 / int(recipe != 'zero')" in done.stderr  # the traceback, as the papermill CLI prints it
    executed = nbformat.read(project / "reports" / "notebooks" / "00_try.ipynb", as_version=4)
    assert executed.cells[-1].outputs[-1]["ename"] == "ZeroDivisionError"

    (project / "params.yaml").write_text((root / "params.yaml").read_text(encoding="utf-8")
                                         .replace("seed: 1234", "sed: 1234", 1), encoding="utf-8")
    done = execute()
    assert done.returncode == 2 and "sed" in done.stderr and "ran" not in done.stderr
