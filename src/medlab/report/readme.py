"""README.md's result sections, rendered from the run's committed metrics.

Every result number in README.md (the embedded world, what the filter achieves, what the
recipes achieve) sits between the two markers below and is written by this module from
``reports/metrics/*.json`` (committed with dvc.lock after each default run),
``params.yaml`` and ``benchmarks/results/``, through ``templates/readme_results.md.j2``.
``make repro`` ends with it; a test renders the block again from the committed files and
fails when README.md and the metrics disagree. No result number is typed by hand.

    python -m medlab.report.readme           # rewrite the block in README.md
    python -m medlab.report.readme --check   # exit 1 with a diff when README.md is stale
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ruamel.yaml import YAML

from medlab.records import atomic_write_text
from medlab.report.repro_time import params_digest
from medlab.report.site import ReportError, environment, num, read_json

BEGIN = "<!-- results: written by `make readme` from reports/metrics/, params.yaml and benchmarks/results/; do not edit by hand -->"
END = "<!-- /results -->"
# Two more generated blocks: how long `make repro` and `make test` take, and the stage table with
# its times (benchmarks/results/repro_default.json, written by `make repro`; make_test.json, by
# .ci/run; stage_times_smoke.json).
BLOCKS = {
    "results": (BEGIN, END, "readme_results.md.j2"),
    "times": ("<!-- times: written by `make readme` from benchmarks/results/; do not edit by hand -->",
              "<!-- /times -->", "readme_times.md.j2"),
    "stages": ("<!-- stages: written by `make readme` from benchmarks/results/; do not edit by hand -->",
               "<!-- /stages -->", "readme_stages.md.j2"),
}
# What each compared pair measures (compare.pairs); a pair not named here is shown as a - b.
CLAIMS = {
    ("general_to_specific", "specific_only"): "Hypnos' general-medicine stage first",
    ("general_to_specific", "general_to_specific_unfiltered_matched"): "the filter, same recipe on filtered vs "
                                                                       "unfiltered data at the same token budget",
    ("one_stage_priority", "general_to_specific"): "HuatuoGPT-II's one stage vs Hypnos' two",
    ("two_stage_disc", "general_to_specific"): "DISC's behaviour stage after broad SFT vs Hypnos' recipe",
    ("general_to_specific_dpo", "general_to_specific"): "DPO on the filter's preference pairs",
    ("general_to_specific_stigma", "general_to_specific"): "keeping the teacher's planted-stigma samples",
}
SYSTEMS = {"general_to_specific": "Hypnos", "one_stage_priority": "HuatuoGPT-II", "two_stage_disc": "DISC",
           "base": "pre-trained only"}
SIGNIFICANT = 0.05  # Holm-adjusted


# --- number formats (the filters the template uses) --------------------------------------
def signed(value: float, digits: int = 3) -> str:
    """+0.171 / −0.093 (a true minus sign, as the rest of the README writes it)."""
    text = f"{abs(value):.{digits}f}"
    if float(text) == 0:
        return text  # no sign on a difference that rounds to zero
    return ("−" if value < 0 else "+") + text


def interval(ci: Sequence[float] | None, digits: int = 3, sign: bool = False) -> str:
    """[lo, hi] (with explicit signs for a difference); nothing when there is no interval."""
    if ci is None:
        return ""
    return "[" + ", ".join(signed(v, digits) if sign else num(v, digits) for v in ci) + "]"


def holm(p: float) -> str:
    """Holm-adjusted p as the claims read it: n.s., p = 0.010, or p < 1e-6."""
    if p >= SIGNIFICANT:
        return f"n.s., p = {p:.2f}"
    if p >= 0.001:
        return f"p = {p:.3f}"
    exponent = 3
    while p < 10 ** -(exponent + 1) and exponent < 12:
        exponent += 1
    return f"p < 1e-{exponent}"


def difference(row: Mapping | None, n_boot: int | None = None) -> str:
    """a - b [CI] (Holm p). A claim over seeds is judged by its hierarchical bootstrap, whose
    p cannot resolve below one resample in ``n_boot``: shown as p < 1/n_boot, not as 0."""
    if row is None:
        return "not compared"
    p = row["p_holm"]
    if row.get("n_seeds", 1) > 1 and n_boot and p < 1 / n_boot:
        return f"{signed(row['diff'])} {interval(row['ci'], sign=True)} (p < {1 / n_boot:.4g}, bootstrap)"
    return f"{signed(row['diff'])} {interval(row['ci'], sign=True)} ({holm(p)})"


def over_seeds(row: Mapping | None) -> str:
    """After a claim's difference: over how many seeds, each seed's own difference and
    whether they share the pooled sign; "(1 seed)" for a claim on one trained model each."""
    if row is None:
        return ""
    if row.get("n_seeds", 1) == 1:
        return " (1 seed)"
    agree = "the same sign on every seed" if row["sign_agreement"] else "**not the same sign on every seed**"
    return f" over {row['n_seeds']} seeds (per seed {', '.join(signed(v) for v in row['per_seed'].values())}: {agree})"


def span(values: Sequence[float], digits: int = 2) -> str:
    low, high = min(values), max(values)
    return num(low, digits) if f"{low:.{digits}f}" == f"{high:.{digits}f}" else f"{num(low, digits)}-{num(high, digits)}"


def percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def span_percent(values: Sequence[float]) -> str:
    low, high = (f"{100 * v:.0f}" for v in (min(values), max(values)))
    return f"{low}%" if low == high else f"{low}-{high}%"


def bold_if(value: float, flag: bool, digits: int = 3) -> str:
    return f"**{num(value, digits)}**" if flag else num(value, digits)


# --- what the template reads ------------------------------------------------------------
def _pair(paired: Sequence[Mapping], a: str, b: str, task: str) -> Mapping | None:
    return next((r for r in paired if r["a"] == a and r["b"] == b and r["task"] == task), None)


def _budget(root: Path, recipe: str) -> dict | None:
    """What a recipe trained on: optimizer steps and answer tokens (the loss-bearing tokens of
    each SFT stage's packed data x its epochs), from reports/metrics/finetune/<recipe>.json;
    None for a model no recipe trained."""
    path = root / "reports" / "metrics" / "finetune" / f"{recipe}.json"
    if not path.is_file():
        return None
    metrics = read_json(root, f"reports/metrics/finetune/{recipe}.json")
    tokens = sum(s["packed"]["trained_tokens"] * s["epochs"] for s in metrics["stages"]
                 if isinstance(s.get("packed"), dict) and "trained_tokens" in s["packed"])
    return {"steps": metrics["total_steps"], "tokens": tokens}


def context(root: Path) -> dict:
    """Everything the result sections show, read from the run's files (a missing one is named)."""
    root = Path(root)
    params = YAML(typ="safe").load((root / "params.yaml").read_text(encoding="utf-8"))
    metric = {name: read_json(root, f"reports/metrics/{name}.json")
              for name in ("knowledge", "corpus", "generate", "pretrain", "filter", "compare", "probe_validity")}
    models = list(params["evaluate"]["models"])
    evaluate = {m: read_json(root, f"reports/metrics/evaluate/{m}.json") for m in models}
    compare, cross = metric["compare"], metric["filter"]["cross_filter"]
    table = {row["model"]: row for row in compare["table"]}
    paired, baseline = compare["paired"], compare["baseline"]

    best_anesthesia = max(table[m]["anesthesia MCQ"]["value"] for m in models)
    best_general = max(table[m]["general MCQ"]["value"] for m in models)
    rows = []
    for m in models:
        t = table[m]
        rows.append({"label": f"{m} ({SYSTEMS[m]})" if m in SYSTEMS else m,
                     "anesthesia": t["anesthesia MCQ"]["value"], "anesthesia_ci": t["anesthesia MCQ"]["ci"],
                     "best_anesthesia": t["anesthesia MCQ"]["value"] == best_anesthesia,
                     "rotation": t["anesthesia MCQ, options shown, rotation-consistent"]["value"],
                     "general": t["general MCQ"]["value"], "best_general": t["general MCQ"]["value"] == best_general,
                     "grounded": t["QA grounded"]["value"], "bleu": t["QA BLEU"]["value"]})
    headline = evaluate[models[0]]["headline_scoring"]
    vs_base = [r for r in paired if r["b"] == baseline and r["task"] == f"anesthesia_mcq/{headline}"]
    if not vs_base:
        raise ReportError(f"reports/metrics/compare.json: no paired test against {baseline} "
                          f"on anesthesia_mcq/{headline} (written by compare)")
    letters = [evaluate[m]["anesthesia_mcq"]["scorings"]["letter"]["acc"] for m in models
               if "letter" in evaluate[m]["anesthesia_mcq"].get("scorings", {})]
    chance = evaluate[models[0]]["anesthesia_mcq"]["chance"]
    deid = metric["filter"]["deid"]
    heldout = deid["heldout"]["recall_by_type"]
    reasons = metric["filter"]["reasons"]
    scaling = read_json(root, "benchmarks/results/filter_scaling.json")
    train = params["pretrain"]["train"]
    return {
        "params": params, "knowledge": metric["knowledge"], "corpus": metric["corpus"],
        "anesthesia_types": metric["knowledge"]["anesthesia_subjects_by_type"],
        "generate": metric["generate"], "faults": metric["generate"]["fault_rate"]["by_type"],
        "pretrain": metric["pretrain"], "model": params["pretrain"]["model"], "train": train,
        "tokens_per_step": train["batch_size"] * train.get("gradient_accumulation_steps", 1) * train["block_size"],
        "counts": metric["filter"]["counts"], "cross": cross, "deid": deid, "pairs": metric["filter"]["pairs"],
        "dropped": {"rules": sum(v for k, v in reasons.items() if k.startswith("rule:")),
                    "duplicates": sum(v for k, v in reasons.items() if k.startswith("duplicate:")),
                    "contaminated": metric["filter"]["decontamination"]["contaminated"],
                    "judge": sum(v for k, v in reasons.items() if k.startswith("judge"))},
        "by_knowledge": [(name, row) for name, row in cross["factual_auroc_by_knowledge"].items()
                         if name != "no KB subject"],
        "deid_worst": sorted(((k, v) for k, v in heldout.items() if v < 1), key=lambda kv: kv[1])[:2],
        "deid_perfect": sorted(k for k, v in heldout.items() if v == 1),
        "scale": max(scaling["runs"], key=lambda r: r["records"]), "scale_exponent": scaling["exponent"],
        "scale_cpus": scaling["machine"]["cpus"], "scale_baseline": scaling.get("baseline"),
        "n_tests": len(paired), "n_seeds": len(params["finetune"]["seeds"]), "headline_scoring": headline, "chance": chance, "rows": rows,
        "letters": letters, "letters_at_chance": all(abs(v - chance) <= 0.03 for v in letters),
        "vs_base": {"low": min(r["diff"] for r in vs_base), "high": max(r["diff"] for r in vs_base),
                    "n": len(vs_base), "significant": sum(r["p_holm"] < SIGNIFICANT for r in vs_base),
                    "max_p": max(r["p_holm"] for r in vs_base)},
        "claims": [{"a": a, "b": b, "label": CLAIMS.get((a, b), f"{a} vs {b}"),
                    "anesthesia": _pair(paired, a, b, f"anesthesia_mcq/{headline}"),
                    "general": _pair(paired, a, b, f"general_mcq/{headline}"),
                    "budget": (_budget(root, a), _budget(root, b))}
                   for a, b in params["compare"]["pairs"]],
        "ner": [table[m]["NER F1"]["value"] for m in models],
        "ner_max": max(table[m]["NER F1"]["value"] for m in models),
        "no_answer": [table[m]["MCQ by generation: no answer"]["value"] for m in models
                      if table[m]["MCQ by generation: no answer"]["value"] is not None],
        "validity": metric["probe_validity"],
        "floor": [(name, f["reason"]) for name, f in compare.get("floor", {}).items() if not f["above"]],
        "consult": _consult(evaluate, compare),
        "human": {"blind": read_json(root, "reports/metrics/blind.json"),
                  "unblind": read_json(root, "reports/metrics/unblind.json")},
    }


def _consult(evaluate: Mapping[str, Mapping], compare: Mapping, task: str = "anesthesia_consult") -> dict | None:
    """The consultation task's measures across models and which of them separate the models."""
    rows = [m[task] for m in evaluate.values() if task in m]
    if not rows:
        return None
    separation = (compare.get("consult_separation") or {}).get(task, {}).get("measures", {})
    return {"task": task, "patient": rows[0].get("patient", ""), "cases": rows[0]["cases"],
            **{k: [r[k] for r in rows if r.get(k) is not None] for k in ("elicited", "diagnosis", "criteria_score",
                                                                          "turns")},
            "separating": [k for k, v in separation.items() if v["separates"]]}


def _seconds(values: Sequence[float]) -> str:
    """12 s / 1.5 min, or a range over a fan-out's stages."""
    def one(v: float) -> str:
        return "<1 s" if v < 0.5 else f"{v:.0f} s" if v < 100 else f"{v / 60:.1f} min"
    low, high = min(values), max(values)
    return one(low) if one(low) == one(high) else f"{one(low)} - {one(high)} each"


def times_context(root: Path) -> dict:
    """The last full `make repro` (every stage's notebook time) and the smoke stage times."""
    repro = read_json(root, "benchmarks/results/repro_default.json")
    smoke_path = Path(root) / "benchmarks" / "results" / "stage_times_smoke.json"
    smoke = {r["stage"]: r["wall_s"] for r in json.loads(smoke_path.read_text())["stages"]} \
        if smoke_path.is_file() else {}

    def pick(times: Mapping[str, float], stage: str) -> list[float]:
        group = stage.split("@")[0]
        return [v for k, v in times.items() if k == stage or ("@" in stage and k.split("@")[0] == group)]

    def default(stage: str) -> str:
        found = pick(repro["stages"], stage)
        if not found:
            raise ReportError(f"benchmarks/results/repro_default.json: no stage {stage!r} (run `make repro`)")
        return _seconds(found)

    def smoke_time(stage: str) -> str:
        found = pick(smoke, stage)
        return _seconds(found) if found else "–"

    # a record made on another params.yaml times another pipeline (other data sizes, seeds)
    current = params_digest(root)
    tests_path = Path(root) / "benchmarks" / "results" / "make_test.json"
    tests = json.loads(tests_path.read_text()) if tests_path.is_file() else None  # written by .ci/run
    return {"repro": repro, "repro_current": repro.get("params_sha256") == current, "default": default,
            "smoke": smoke_time, "tests": tests}


def render_block(root: Path, name: str = "results") -> str:
    begin, end, template = BLOCKS[name]
    env = environment()
    env.filters.update(signed=signed, interval=interval, difference=difference, span=span, percent=percent,
                       span_percent=span_percent, bold_if=bold_if, over_seeds=over_seeds)
    values = context(root) if name == "results" else times_context(root)
    body = env.get_template(template).render(**values).strip()
    return f"{begin}\n{body}\n{end}"


def replace_block(readme: str, block: str, name: str = "README.md", which: str = "results") -> str:
    begin, end, _ = BLOCKS[which]
    if readme.count(begin) != 1 or readme.count(end) != 1 or readme.index(begin) > readme.index(end):
        raise ReportError(f"{name}: needs exactly one {which} block, {begin!r} ... {end!r}")
    return readme[:readme.index(begin)] + block + readme[readme.index(end) + len(end):]


def update(root: Path, check: bool = False) -> str:
    """Rewrite README.md's results block (or, with ``check``, return the diff: empty when fresh)."""
    path = Path(root) / "README.md"
    current = path.read_text(encoding="utf-8")
    fresh = current
    for which in BLOCKS:
        fresh = replace_block(fresh, render_block(root, which), which=which)
    if check:
        return "".join(difflib.unified_diff(current.splitlines(True), fresh.splitlines(True),
                                            "README.md (committed)", "README.md (from reports/metrics)"))
    if fresh != current:
        atomic_write_text(path, fresh)
    return ""


def params_changed(root: Path) -> bool:
    """params.yaml differs from the committed one (README.md describes the default run)."""
    import subprocess

    committed = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=root, capture_output=True)
    return committed.returncode == 0 and committed.stdout != (Path(root) / "params.yaml").read_bytes()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 with a diff when README.md is stale")
    parser.add_argument("--force", action="store_true", help="rewrite even when params.yaml is not the committed one")
    args = parser.parse_args(argv)
    from medlab.paths import project_root

    root = project_root()
    if not args.check and not args.force and params_changed(root):
        print("readme: params.yaml differs from the committed one; README.md describes the default run, "
              "so it is left as it is (--force rewrites it; reports/README.md has this run's results)")
        return 0
    try:
        diff = update(root, check=args.check)
    except (ReportError, KeyError) as exc:
        print(f"readme: {exc}", file=sys.stderr)
        return 2
    if diff:
        print(diff + "\nREADME.md's results differ from reports/metrics/: run `make readme`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
