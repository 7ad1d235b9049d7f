"""Contracts between dvc.yaml, params.yaml and notebooks/ (no kernel started)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import papermill
import pytest
from ruamel.yaml import YAML

from medlab.config import Params
from medlab.report.site import pipeline_stages

ROOT = Path(__file__).resolve().parents[1]
DVC = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
# a foreach stage (finetune@<recipe>, evaluate@<model>) is checked through its template (`do`)
STAGES = {name: stage.get("do", stage) for name, stage in DVC["stages"].items()}
FANNED = {name for name, stage in DVC["stages"].items() if "foreach" in stage}
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def command(stage: dict) -> str:
    cmd = stage["cmd"]
    return " ".join(cmd) if isinstance(cmd, list) else cmd


def notebook_of(stage: dict) -> Path:
    return ROOT / re.search(r"notebooks/\S+\.ipynb", command(stage)).group(0)


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_name_is_notebook_verb_and_params_section(name):
    stage = STAGES[name]
    notebook = notebook_of(stage)
    assert re.fullmatch(rf"\d\d_{name}\.ipynb", notebook.name), (name, notebook.name)
    assert name in Params.model_fields, f"params.yaml has no section {name!r}"
    sections = {p.split(".")[0] for p in stage["params"] if isinstance(p, str)}
    assert name in sections


@pytest.mark.parametrize("name", sorted(STAGES))
def test_papermill_parameters_are_declared(name):
    """papermill only warns on an unknown -p name; here it is an error."""
    cmd = command(STAGES[name])
    declared = set(papermill.inspect_notebook(str(notebook_of(STAGES[name]))))
    passed = set(re.findall(r"(?:^|\s)-p\s+(\w+)\s", cmd + " "))
    assert passed <= declared, f"{name}: unknown parameters {passed - declared}"
    assert " -f " not in cmd, "never pass params.yaml with -f (YAML 1.1 floats, every key injected)"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_runs_its_notebook_with_the_fixed_settings_and_renders_html(name):
    cmd = command(STAGES[name])
    assert cmd.startswith("${run} "), f"{name}: run the notebook with ${{run}} (medlab.stages.execute)"
    stem = notebook_of(STAGES[name]).stem + ("_${key}" if name in FANNED else "")
    outs = [o if isinstance(o, str) else next(iter(o)) for o in STAGES[name]["outs"]]
    assert f"reports/notebooks/{stem}.ipynb" in outs and f"reports/html/{stem}.html" in outs


def test_the_runner_keeps_papermills_fixed_settings():
    """One process per stage (medlab.stages.execute) with the papermill CLI's fixed flags:
    ``-k python3 --cwd notebooks --log-output``, HTML as ``nbconvert --no-input``."""
    from medlab.stages import execute

    run = next(v["run"] for v in DVC["vars"] if "run" in v)
    assert run == "python -m medlab.stages.execute"
    assert (execute.KERNEL, execute.CWD, str(execute.HTML_DIR)) == ("python3", "notebooks", "reports/html")
    source = Path(execute.__file__).read_text(encoding="utf-8")
    assert "log_output=True" in source and "exclude_input=True" in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_source_notebooks_are_output_free(path):
    for cell in cells(path):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and not cell.get("execution_count"), path.name
    metadata = json.loads(path.read_text(encoding="utf-8"))["metadata"]
    assert "papermill" not in metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_reads_like_a_recipe(path):
    nb = cells(path)
    assert nb[0]["cell_type"] == "markdown"
    title = "".join(nb[0]["source"])
    assert title.startswith("# ") and "**Run:**" in title and "dvc repro" in title
    tagged = [c for c in nb if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert nb.index(tagged[0]) == 1, "the parameters cell follows the title"
    stage = next(name for name, s in STAGES.items() if notebook_of(s) == path)
    setup = "".join(nb[2]["source"])  # the first code cell after the parameters
    assert nb[2]["cell_type"] == "code" and re.search(rf'= start\("{stage}"', setup), \
        f"{path.name}: set-up is one call, start({stage!r}) (medlab.notebook: params checked, seeded, printed)"
    source = "".join(c for cell in nb for c in cell["source"])
    assert "load_params(" not in source and "Stopwatch(" not in source, "set-up is start()'s job"
    for cell in (c for c in nb if c["cell_type"] == "code"):  # the method lives in tested functions
        lines = [line for line in "".join(cell["source"]).splitlines() if line.strip()]
        assert len(lines) <= 60, f"{path.name}: a code cell of {len(lines)} lines (at most two screens)"


def test_every_notebook_is_a_stage():
    used = {notebook_of(s).name for s in STAGES.values()}
    assert used == {p.name for p in NOTEBOOKS}


def fanned_out(name: str) -> dict:
    """What a foreach stage fans out over (key -> item), read from params.yaml."""
    node = YAML(typ="safe").load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for part in DVC["stages"][name]["foreach"].strip("${}").split("."):  # ${finetune.recipes}
        node = node[part]
    return node


def expanded() -> list[tuple[str, dict]]:
    """Every stage as DVC runs it: a foreach template once per key, ${key}/${item} filled in."""
    params = YAML(typ="safe").load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    return pipeline_stages(ROOT, params, skip=())


def test_dependencies_exist_or_are_produced():
    produced = set()
    for _, stage in expanded():
        for out in (*stage.get("outs", []), *stage.get("metrics", [])):
            produced.add(out if isinstance(out, str) else next(iter(out)))
    for name, stage in expanded():
        for dep in stage.get("deps", []):
            exists = (ROOT / dep).exists()
            # an output, inside one, or a folder holding a fanned-out stage's outputs
            made = any(dep == p or dep.startswith(p + "/") or p.startswith(dep + "/") for p in produced)
            assert exists or made, f"{name}: dependency {dep} neither exists nor is produced"


def test_metrics_are_committed_and_plots_come_from_stage_outputs():
    """Each stage declares its metrics (stage-level ``metrics:``, so DVC's run cache stays on)
    under reports/metrics/ with cache: false: committed to git with dvc.lock, shown by
    `dvc metrics show` in a fresh clone. Every stage but the report has some."""
    for name, stage in STAGES.items():
        metrics = stage.get("metrics", [])
        assert bool(metrics) == (name != "report"), f"{name}: metrics {metrics}"
        for entry in metrics:
            path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            assert path.startswith("reports/metrics/") and options.get("cache") is False, (name, entry)
        assert not [o for o in stage.get("outs", []) if str(o).startswith("reports/metrics")], name
    produced = {o if isinstance(o, str) else next(iter(o))
                for s in STAGES.values() for o in s.get("outs", [])}

    def made(path):  # an output, inside one, or a folder of a fanned-out stage's outputs
        return any(path == p or path.startswith(p + "/") or p.startswith(path + "/") for p in produced)

    assert "metrics" not in DVC  # declared by the stages, once
    for plot in DVC["plots"]:
        for plot_id, spec in plot.items():
            for path in spec.get("y", [plot_id]):  # no y: the plot id is the path
                assert made(path), path


def test_params_listed_by_stages_exist():
    params = YAML(typ="safe").load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for name, stage in STAGES.items():
        keys = stage["params"]
        if name in FANNED:  # one entry per key of what the stage fans out over
            keys = [k.replace("${key}", r) for k in keys for r in fanned_out(name)]
        for key in keys:
            node = params
            for part in key.split("."):
                assert part in node, f"{name}: params key {key} not in params.yaml"
                node = node[part]


def required_sources(stage: dict) -> set[str]:
    """Repository paths a stage's notebook runs: the import closure of its code cells
    (every module, its parent packages' __init__, the package data each module names) and,
    for medlab.config, the models of the params sections the stage declares -- the rest of
    the loader's closure only validates sections this stage does not read."""
    from helpers.imports import closure, data_files, modules, notebook_imports

    known = modules()
    loader = {m for m in known if m == "medlab.config" or m.startswith("medlab.config.")}
    sections = {key.split(".")[0] for key in stage.get("params", [])}
    owners = {f"medlab.{s}.params" for s in sections} | {f"medlab.embedded.{s}.params" for s in sections}
    start = notebook_imports(ROOT / notebook_of(stage), known)
    if "${run}" in command(stage):  # the command runs medlab.stages.execute (it validates params.yaml first)
        start |= {"medlab.stages.execute", "medlab.config"}
    if start & loader:
        start = (start - loader) | {"medlab.config", "medlab.section"} | (owners & set(known))
    names = closure(start, known, skip=loader)
    names |= {"medlab.config"} if "medlab.config" in start else set()
    paths = set()
    for name in names:
        file = known[name]
        paths.add(str((file.parent if name == "medlab.config" else file).relative_to(ROOT)))
        paths.update(str(p.relative_to(ROOT)) for p in data_files(file))
    return paths


def test_every_stage_depends_on_the_code_its_notebook_runs():
    """dvc.yaml deps cover each stage's import closure (a folder covers what is in it):
    a change to any module a stage runs reruns the stage. Kept by hand; this test names
    the stage and the missing path."""
    missing = []
    for name, stage in STAGES.items():
        deps = [d.split("#")[0].strip() for d in stage.get("deps", [])]
        for path in sorted(required_sources(stage)):
            if not any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps):
                missing.append(f"{name}: {path}")
    assert not missing, "dvc.yaml deps miss code the stage runs:\n" + "\n".join(missing)
