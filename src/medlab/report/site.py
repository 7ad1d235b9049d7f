"""The results site: check that a run's outputs are all there, gather them, render
``reports/index.html`` and ``reports/README.md``.

The report stage reads only what earlier stages wrote (metrics JSON, figures, executed
notebooks' HTML, timings) plus the run's provenance (git revision, a hash of dvc.lock,
date, hardware). Before anything is rendered, every file the page shows is checked:
a missing one stops the stage with a message naming it and the stage that writes it,
so the page is never half empty. Both files are written whole (temp file + rename).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
from ruamel.yaml import YAML

from medlab.evaluate.compare import COLUMNS
from medlab.records import atomic_write_text
from medlab.report.provenance import REPORT_STAGE, run_info

SECTIONS = {  # id -> heading; the browser check looks for every one
    "run": "What was run",
    "data": "Data",
    "training": "Training",
    "evaluation": "Evaluation",
    "human": "Human evaluation",
    "bias": "Bias probing",
    "timing": "Stage times",
    "notebooks": "Executed notebooks",
}


class ReportError(RuntimeError):
    """An input of the report is missing or unreadable."""


@dataclass(frozen=True)
class Needed:
    path: str  # relative to the repository root
    stage: str  # the DVC stage that writes it


def _resolve_foreach(expr: str, params: Mapping) -> dict:
    node = params
    for part in expr.strip("${}").split("."):
        node = node[part]
    return dict(node)


def pipeline_stages(root: Path, params: Mapping, skip: Sequence[str] = (REPORT_STAGE,)
                    ) -> list[tuple[str, dict]]:
    """Every stage of dvc.yaml in file order, foreach stages expanded (``finetune@<key>``),
    ``${key}`` and ``${item}`` filled in; the stages in ``skip`` (the report itself) left out."""
    dvc = YAML(typ="safe").load((root / "dvc.yaml").read_text(encoding="utf-8"))
    out = []
    for name, stage in dvc["stages"].items():
        if name in skip:
            continue
        if "foreach" not in stage:
            out.append((name, stage))
            continue
        for key, item in _resolve_foreach(stage["foreach"], params).items():
            text = json.dumps(stage["do"]).replace("${key}", key).replace("${item}", str(item))
            out.append((f"{name}@{key}", json.loads(text)))
    return out


def _outs(stage: dict) -> list[str]:
    """Every file or folder a stage writes: its outs and its (stage-level) metrics."""
    return [o if isinstance(o, str) else next(iter(o)) for o in (*stage.get("outs", []), *stage.get("metrics", []))]


def stage_pages(root: Path, params: Mapping) -> list[tuple[str, str]]:
    """(stage, reports/html/<page>.html) of every stage, in pipeline order."""
    return [(name, path) for name, stage in pipeline_stages(root, params) for path in _outs(stage)
            if path.startswith("reports/html/") and path.endswith(".html")]


# figures the page shows: (path under reports/figures, caption); {m} = each model, {r} = each recipe
FIGURES = {
    "data": [("knowledge/overview.png", "Knowledge base: entities and triples by type"),
             ("corpus/lengths.png", "Pre-training corpus: paragraph lengths"),
             ("generate/mix.png", "Instruction data: mix by domain and method"),
             ("filter/judge.png", "Cross-model filter: judge scores of clean and faulty samples")],
    "pretrain": [("pretrain/loss.png", "Pre-training loss")],
    "recipes": [("finetune/{r}/loss.png", "{r}")],
    "evaluation": [("compare/overview.png", "Every model on every task, 95% CIs")],
    "per_model": [("evaluate/{m}/mcq.png", "{m}")],
    "bias": [("compare/position_bias.png", "Likert answers by option position, per model")],
    "probe": [("probe/{m}/scales.png", "{m}")],
}


def _figure_paths(models: Sequence[str], recipes: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for group, entries in FIGURES.items():
        rows = []
        for path, caption in entries:
            if "{m}" in path:
                rows += [(path.format(m=m), caption.format(m=m)) for m in models]
            elif "{r}" in path:
                rows += [(path.format(r=r), caption.format(r=r)) for r in recipes]
            else:
                rows.append((path, caption))
        out[group] = rows
    return out


def _figure_stage(path: str) -> str:
    parts = path.split("/")
    return f"{parts[0]}@{parts[1]}" if parts[0] in ("finetune", "evaluate", "probe") else parts[0]


def needed_files(root: Path, params: Mapping) -> list[Needed]:
    """Every file the page reads or links: metrics and timings of every stage, the figures
    it shows and every stage's HTML page."""
    need = []
    for name, stage in pipeline_stages(root, params):
        for path in _outs(stage):
            if path.endswith(".json") and path.startswith(("reports/metrics/", "reports/timing/")) \
                    or path.startswith("reports/html/"):
                need.append(Needed(path, name))
    models, recipes = list(params["evaluate"]["models"]), list(params["finetune"]["recipes"])
    for rows in _figure_paths(models, recipes).values():
        need += [Needed(f"reports/figures/{p}", _figure_stage(p)) for p, _ in rows]
    return need


def check_present(root: Path, needed: Sequence[Needed]) -> None:
    """Raise ReportError naming every missing input and the stage that writes it."""
    missing = [n for n in needed if not (root / n.path).is_file() or (root / n.path).stat().st_size == 0]
    if missing:
        lines = "\n".join(f"  {n.path}: missing (written by stage {n.stage})" for n in missing)
        stages = " ".join(dict.fromkeys(n.stage for n in missing))
        raise ReportError(f"{len(missing)} input(s) of the report are missing:\n{lines}\n"
                          f"Run `dvc repro {stages}` (or `dvc repro` for everything) first.")


def read_json(root: Path, rel: str) -> dict:
    try:
        return json.loads((root / rel).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ReportError(f"{rel}: cannot read it as JSON ({err})") from err


# --- the page's content ---------------------------------------------------------------

def _finetune_rows(root: Path, recipes: Sequence[str]) -> list[dict]:
    rows = []
    for r in recipes:
        m = read_json(root, f"reports/metrics/finetune/{r}.json")
        timing = read_json(root, f"reports/timing/finetune/{r}.json")
        rows.append({"recipe": r, "method": m.get("method"), "total_steps": m.get("total_steps"),
                     "wall_s": timing.get("wall_s"),
                     "stages": [{"stage": s.get("stage"), "kind": s.get("kind"), "epochs": s.get("epochs"),
                                 "steps": s.get("steps"), "final_loss": s.get("final_loss"),
                                 "samples": sum((s.get("samples") or {}).values()) or s.get("pairs")}
                                for s in m.get("stages", [])]})
    return rows


def _bias_rows(root: Path, models: Sequence[str], scales: Sequence[str], target_pair: str | None) -> list[dict]:
    rows = []
    for m in models:
        probe = read_json(root, f"reports/metrics/probe/{m}.json")
        row = {"model": m, "max_position_share": probe.get("max_position_share"),
               "position_bias_index": probe.get("position_bias_index"), "scales": {}, "gaps": {}}
        for scale in scales:
            total = ((probe.get(scale) or {}).get("likert") or {}).get("total") or {}
            row["scales"][scale] = {"as_written": total.get("as_written"),
                                    "debiased": total.get("debiased"), "calibrated": total.get("calibrated")}
        for readout, gaps in ((probe.get("patient_discrimination") or {}).get("group_gaps") or {}).items():
            if target_pair and target_pair in gaps.get("gaps", {}):
                row["gaps"][readout] = gaps["gaps"][target_pair]
        rows.append(row)
    return rows


def _consult_section(root: Path, models: Sequence[str], separation: Mapping, shown: int = 1) -> dict:
    """Per consultation task: which measures separate the models (compare stage) and the
    first ``shown`` transcripts of every model (data/evaluate/<model>/<task>_answers.jsonl)."""
    from medlab.evaluate.consult import render

    out = {}
    for task, sep in separation.items():
        transcripts = {}
        for model in models:
            path = root / "data" / "evaluate" / model / f"{task}_answers.jsonl"
            if path.is_file():
                rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:shown] if line]
                transcripts[model] = [{"id": r["id"], "diagnosis": r["case"].get("diagnosis"), "text": render(r)}
                                      for r in rows]
        patient = next((read_json(root, f"reports/metrics/evaluate/{m}.json").get(task, {}).get("patient")
                        for m in models), None)
        out[task] = {"separation": sep, "transcripts": transcripts, "patient": patient or "unknown"}
    return out


def recipe_stage(spec: Mapping) -> str:
    """One recipe stage as a line: ``general: sft on general_medicine`` + what differs from the defaults."""
    extras = {k: v for k, v in spec.items() if k not in ("name", "kind", "data")}
    text = f"{spec.get('name')}: {spec.get('kind')} on {' + '.join(spec.get('data', []))}"
    return text + "".join(f"; {k} {json.dumps(v, ensure_ascii=False)}" for k, v in extras.items())


def mix_table(by_method: Mapping[str, int]) -> tuple[list[str], list[dict]]:
    """``domain/method -> n`` as (domains, rows of method -> {domain: n})."""
    domains = list(dict.fromkeys(k.split("/", 1)[0] for k in by_method))
    rows: dict[str, dict] = {}
    for key, n in by_method.items():
        domain, method = key.split("/", 1) if "/" in key else ("", key)
        rows.setdefault(method, {"method": method})[domain] = n
    return domains, list(rows.values())


def page_grid(pages: Sequence[tuple[str, str]], order: Sequence[str] = ()
              ) -> tuple[list[dict], list[str], list[dict]]:
    """Stage pages as (single stages, fanned-out stage verbs, one row per key: verb -> href),
    rows in ``order`` first."""
    single, verbs, rows = [], [], {}
    for stage, path in pages:
        href = path.removeprefix("reports/")
        if "@" not in stage:
            single.append({"stage": stage, "href": href})
            continue
        verb, key = stage.split("@", 1)
        verbs = verbs if verb in verbs else [*verbs, verb]
        rows.setdefault(key, {"key": key})[verb] = href
    rank = {k: i for i, k in enumerate(order)}
    return single, verbs, sorted(rows.values(), key=lambda r: rank.get(r["key"], len(rank)))


def collect(root: Path, params: Mapping, title: str = "medlab results") -> dict:
    """Check every input, then gather the page's content (raises ReportError first).
    ``params``: params.yaml as plain dicts (``medlab.config.read_plain``)."""
    root = Path(root)
    check_present(root, needed_files(root, params))
    models, recipes = list(params["evaluate"]["models"]), list(params["finetune"]["recipes"])
    metric = {k: read_json(root, f"reports/metrics/{k}.json")
              for k in ("knowledge", "corpus", "benchmark", "pretrain", "generate", "filter", "blind", "unblind",
                        "compare", "probe_validity")}
    validity = metric["probe_validity"]
    pages = stage_pages(root, params)
    timings = []
    for name, stage in pipeline_stages(root, params):
        for path in _outs(stage):
            if path.startswith("reports/timing/") and path.endswith(".json"):
                t = read_json(root, path)
                timings.append({"stage": name, "wall_s": t.get("wall_s"), "cpus": t.get("cpus"),
                                "reused": len(t.get("tasks_reused") or []),
                                "tasks": len(t.get("tasks_reused") or []) + len(t.get("tasks_computed") or [])})
    compare = metric["compare"]
    columns = [c for c in COLUMNS if any((row.get(c) or {}).get("value") is not None for row in compare["table"])]
    return {
        "title": title,
        "sections": SECTIONS,
        "run": run_info(root),
        "params_yaml": (root / "params.yaml").read_text(encoding="utf-8"),
        "teacher": metric["generate"].get("teacher", ""),
        "metrics": metric,
        "figures": _figure_paths(models, recipes),
        "models": models,
        "recipes": recipes,
        "finetune": _finetune_rows(root, recipes),
        "columns": columns,
        "table": compare["table"],
        "paired": compare.get("paired", []),
        "claims": [tuple(pair) for pair in params["compare"]["pairs"]],
        "best": compare.get("best_anesthesia_mcq", {}),
        "baseline": compare.get("baseline"),
        "validity": validity,
        "consult": _consult_section(root, models, compare.get("consult_separation") or {}),
        "floor": {name: f["reason"] for name, f in (compare.get("floor") or {}).items() if not f["above"]},
        "human": {"blind": metric["blind"], "unblind": metric["unblind"],
                  "pages": {r: f"blind/{r}/rate.html" for r in metric["blind"]["raters"]},
                  "figure": "unblind/overview.png" if metric["unblind"]["rated"] else None},
        "scales": list(params["probe"]["scales"]),
        "target_group": params["probe"]["target_group"],
        "bias": _bias_rows(root, models, list(params["probe"]["scales"]), validity.get("target_pair")),
        "timings": timings,
        "total_wall_s": round(sum(t["wall_s"] or 0 for t in timings), 1),
        "resumed_stages": sum(1 for t in timings if t["reused"]),
        "pages": [{"stage": s, "href": p.removeprefix("reports/")} for s, p in pages],
        "page_grid": dict(zip(("single", "verbs", "rows"), page_grid(pages, order=models), strict=True)),
        "recipe_specs": {r: [recipe_stage(x) for x in params["finetune"]["recipes"][r]] for r in recipes},
        "mix": dict(zip(("domains", "rows"), mix_table(metric["generate"].get("by_method", {})), strict=True)),
    }


# --- rendering ------------------------------------------------------------------------

def num(value, digits: int = 3) -> str:
    """A number as the page shows it; "–" for a value a stage did not produce."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def est(value, ci=None, digits: int = 3) -> str:
    """value [lo, hi]: an estimate with its 95% interval."""
    if ci is None or value is None:
        return num(value, digits)
    return f"{num(value, digits)} [{num(ci[0], digits)}, {num(ci[1], digits)}]"


def pvalue(p) -> str:
    if p is None:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def environment() -> jinja2.Environment:
    """The templates folder with the number filters (num, est, pvalue); the page and README.md use it."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("medlab.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html.j2"]), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(num=num, est=est, pvalue=pvalue)
    return env


def render(context: Mapping, reports_dir: Path) -> dict[str, Path]:
    """Write index.html and README.md into ``reports_dir`` (each whole, or not at all)."""
    env = environment()
    html = env.get_template("index.html.j2").render(**context)
    markdown = env.get_template("README.md.j2").render(**context)
    written = {"html": Path(reports_dir) / "index.html", "markdown": Path(reports_dir) / "README.md"}
    atomic_write_text(written["html"], html)
    atomic_write_text(written["markdown"], markdown)
    return written
