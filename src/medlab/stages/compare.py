"""The ``compare`` stage's steps: read every model's evaluation and probe outputs, the paired
table (tests in ``medlab.evaluate.compare``), the pairwise judge; the probe's validity check
over seeds is ``medlab.probe.validity``'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def further_seeds(folder: Path, name: str) -> dict[int, dict]:
    """``<folder>/seeds/s<seed>/<name>`` read per seed (a recipe's further seeds' outputs)."""
    return {int(f.parent.name[1:]): _read(f) for f in sorted(folder.glob(f"seeds/s*/{name}"))}


class Inputs:
    """Every model's evaluation metrics, per-item outcomes (per seed where there are several)
    and probe results, read from the evaluate and probe stages' outputs."""

    def __init__(self, models: Sequence[str], first_seed: int, data: Path, reports: Path):
        missing = [str(p) for m in models
                   for p in (reports / "metrics" / "evaluate" / f"{m}.json", data / "evaluate" / m / "outcomes.json",
                             reports / "metrics" / "probe" / f"{m}.json", data / "probe" / m / "items.json")
                   if not p.is_file()]
        if missing:
            raise FileNotFoundError("run the evaluate and probe stages first; missing: " + ", ".join(missing))
        self.first_seed = first_seed
        self.metrics = {m: _read(reports / "metrics" / "evaluate" / f"{m}.json") for m in models}
        self.outcomes = {m: _read(data / "evaluate" / m / "outcomes.json") for m in models}
        self.replicates = {}  # model -> seed -> outcomes, the first seed's being outcomes[m]
        for m in models:
            if further := further_seeds(data / "evaluate" / m, "outcomes.json"):
                self.replicates[m] = {first_seed: self.outcomes[m]} | further
        self.probe_metrics = {m: _read(reports / "metrics" / "probe" / f"{m}.json") for m in models}
        self.probe_items = {m: _read(data / "probe" / m / "items.json") for m in models}
        self.probe_seeds = {m: further_seeds(data / "probe" / m, "items.json") for m in models}

    def probe_by_seed(self, model: str) -> dict[int, dict]:
        """seed -> ``model``'s probe items, the first seed first."""
        return {self.first_seed: self.probe_items[model]} | self.probe_seeds[model]

    def gap_table(self, scale: str, readout: str) -> dict[str, dict[str, float]]:
        """model -> group pair -> gap, for the models probed under ``readout`` (endpoints: generation only)."""
        key = f"{scale}/{readout}"
        return {m: {k: v["diff"] for k, v in items[key]["group_gaps"]["gaps"].items()}
                for m, items in self.probe_items.items() if key in items}


def pairs_of(models: Sequence[str], baseline: str, claims: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    """Every model against the baseline, then the claim pairs; each pair once, in that order."""
    pairs = [(m, baseline) for m in models if m != baseline] + [tuple(p) for p in claims]
    return list(dict.fromkeys(pairs))


def paired_markdown(results: Sequence[Mapping]) -> str:
    """The paired comparisons as a Markdown table (** = Holm p < 0.05; per seed ✓ when every seed
    shares the mean's sign, ✗ when not)."""
    lines = ["| a | b | task | seeds | a | b | a − b [95% CI] | per seed | p | Holm p |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        star = " **" if r["p_holm"] is not None and r["p_holm"] < 0.05 else ""
        per_seed = ("–" if r["n_seeds"] == 1 else " ".join(f"{v:+.3f}" for v in r["per_seed"].values())
                    + (" ✓" if r["sign_agreement"] else " ✗"))
        lines.append(f"| {r['a']} | {r['b']} | {r['task']} ({r['metric']}) | {r['n_seeds']} | {r['mean_a']:.3f} | "
                     f"{r['mean_b']:.3f} | {r['diff']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] | {per_seed} | "
                     f"{r['p_test']:.3g} | {r['p_holm']:.3g}{star} |")
    return "\n".join(lines) + "\n"


def separation_lines(separation: Mapping[str, Mapping]) -> list[str]:
    """One line per consultation measure: its spread over models and whether it separates any two."""
    verdicts = {True: "separates models", False: "CANNOT separate models (all CIs overlap)", None: "no estimate"}
    lines = []
    for name, sep in separation.items():
        for group in ("measures", "rubric"):
            for measure, s in sep[group].items():
                spread = "–" if s["spread"] is None else f"{s['spread']:.3f}"
                kind = "measure" if group == "measures" else "judge"
                lines.append(f"{name} {kind} {measure:<16} spread {spread} · {verdicts[s['separates']]}")
        lines += [f"{name} Spearman over models {pair}: {rho:+.2f}" for pair, rho in sep["correlation"].items()]
    return lines


def pairwise_judge(params, root: Path, data: Path, log=print) -> dict:
    """Each claim pair's QA answers and whole consultations judged in both orders
    (``judges.judge_pairwise``: a verdict counts only when it survives the swap)."""
    from medlab.backends import make_backend
    from medlab.evaluate import consult as ev_consult
    from medlab.evaluate import judges
    from medlab.evaluate.tasks import resolve
    from medlab.formats.text import iter_json_lines
    from medlab.llm.base import Decoding
    from medlab.llm.cache import CallCache
    from medlab.paths import cache_dir

    judge = params.evaluate.judge
    backend = make_backend(judge, root, runtime=params, key="evaluate.judge")
    calls = CallCache(cache_dir("evaluate", "calls.sqlite"))
    resolved = resolve(params.evaluate.tasks, params.evaluate.task_dirs, root)
    consult_tasks = [t.name for t in resolved if t.spec.kind == "consult"]
    judged = {}
    for task in [t.name for t in resolved if t.spec.kind == "qa"] + consult_tasks:
        files = {m: data / "evaluate" / m / f"{task}_answers.jsonl" for m in params.evaluate.models}
        answers = {m: {row["id"]: row for _, row in iter_json_lines(f)} for m, f in files.items() if f.is_file()}
        for a, b in (tuple(p) for p in params.compare.pairs):
            ids = [i for i in answers[a] if i in answers[b]]
            if task in consult_tasks:  # the patient's opening, then each model's whole consultation
                items = [(answers[a][i]["turns"][0]["text"], ev_consult.render(answers[a][i]),
                          ev_consult.render(answers[b][i])) for i in ids]
            else:
                items = [(answers[a][i]["question"], answers[a][i]["answer"], answers[b][i]["answer"]) for i in ids]
            result = judges.judge_pairwise(items, backend, calls, Decoding(**judge.decoding.model_dump()),
                                           judge.max_attempts, max_unparseable_fraction=judge.max_unparseable_fraction)
            judged[f"{task}: {a} vs {b}"] = {k: v for k, v in result.items() if k != "outcomes"} | {"n": len(items)}
            log(task, a, "vs", b, judged[f"{task}: {a} vs {b}"])
    return judged


def best_on(metrics: Mapping[str, Mapping], task: str = "anesthesia_mcq") -> dict | None:
    """The model with the highest headline accuracy on ``task``, with its CI and chance."""
    return max(({"model": m, "acc": v[task]["acc"], "acc_ci": v[task]["acc_ci"], "chance": v[task]["chance"]}
                for m, v in metrics.items() if task in v), key=lambda x: x["acc"], default=None)
