"""The ``probe@<model>`` stage as steps: every attitude scale under every readout, each result
cached, a recipe's further seeds on the counterfactual scale, then the metrics file.

``Probing(model, params, root)`` loads the scales (bundled and ``probe.scale_files``) and the
model; ``run_scale(name)`` scores one scale under each readout (``probe.score.readout_result``)
and prints a line per readout; ``run_seeds()`` probes each further seed's copy on the
counterfactual scale by the same function, under the same keys but its own fingerprint;
``save()`` writes the outputs. A result's key hashes the code that computes it
(``probe.score.CODE``, this module included), the model's fingerprint, the scale's content
and the readout's settings, so a crash or Ctrl-C resumes with the next (scale, readout).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from medlab.evaluate import run as ev
from medlab.evaluate import seeds
from medlab.llm.cache import CallCache
from medlab.paths import cache_dir, data_dir, reports_dir
from medlab.patient_groups import load_groups
from medlab.probe import score as probe
from medlab.probe.scale import builtin_scales, load_scale
from medlab.records import write_json


class Probing:
    """One model's probe: scales, subject, readouts, the task store and the results so far."""

    def __init__(self, model: str, params, root: Path, log=print):
        self.model, self.params, self.root, self.log = model, params, root, log
        self.cfg = cfg = params.probe
        self.seed = params.base.seed
        bundled = builtin_scales()
        self.scales = {name: bundled[name] for name in cfg.scales}
        for path in cfg.scale_files:
            scale = load_scale(root / path)
            self.scales[scale.name] = scale
        self.subject = ev.load_subject(model, params.evaluate.models[model], root, params.evaluate.plain_models, params)
        self.store = ev.TaskStore(cache_dir("probe", model), stage="probe", code=probe.CODE)
        # an endpoint answers in text only: its readout is generation (answers parsed, refusals counted)
        self.readouts = ["generation"] if self.subject.hosted else list(cfg.readouts)
        self.groups = load_groups()
        self.pairs = probe.contrast_pairs(self.groups, cfg.target_group)  # (group, contrast), the target first
        self.counterfactual = [n for n, s in self.scales.items() if s.counterfactual]
        self.results: dict[tuple[str, str], dict] = {}
        self.seed_results: dict[int, dict[str, dict]] = {}
        self._readers = None

    def describe(self) -> str:
        s = self.subject
        lines = [f"{sc.name:<24} v{sc.version} · {len(sc.items):>3} items · {len(sc.options)} options · wording: "
                 f"{sc.wording}" + (f" · {len(sc.groups)} groups" if sc.counterfactual else "")
                 for sc in self.scales.values()]
        return "\n".join(lines + [f"{self.model}: {s.path} · layout {s.layout} · {s.fingerprint} · "
                                  f"readouts {self.readouts}"])

    def _read(self, subject, generation: bool):
        """(letter probabilities, statement log-probs, generate) of a subject: the readers of every readout."""
        letters = statements = generate = None
        if not subject.hosted:
            subject.tokenizer.padding_side = "right"
            letters = probe.model_letter_probs(subject.model, subject.tokenizer, subject.layout, self.cfg.batch_size)
            statements = probe.model_statement_logprobs(subject.model, subject.tokenizer, subject.layout,
                                                        self.cfg.batch_size)
        if generation:  # greedy answers through the call cache (a rerun makes no call)
            generate = ev.generator(subject, CallCache(cache_dir("evaluate", "calls.sqlite")), self.cfg.batch_size,
                                    self.params.evaluate.mcq.generation_max_new_tokens, label=f"{self.model}:probe")
        return letters, statements, generate

    def result(self, subject, readers, name: str, readout: str) -> dict:
        """One (scale, readout) of ``subject``, cached under everything it depends on."""
        scale, cfg = self.scales[name], self.cfg
        key = self.store.key(model=subject.fingerprint, layout=subject.layout, scale=name, version=scale.version,
                             items=[i.text for i in scale.items], role=scale.role, options=scale.options,
                             readout=readout, reversal=cfg.reversal, calibrate=cfg.calibrate, n_boot=cfg.n_boot,
                             seed=self.seed, pairs=self.pairs)
        letters, statements, generate = readers
        return self.store.run(f"{name}_{readout}", key, partial(
            probe.readout_result, scale, readout, letters, statements, self.pairs, cfg.calibrate, cfg.reversal,
            cfg.n_boot, self.seed, generate), log=self.log)

    def run_scale(self, name: str) -> None:
        """One scale under every readout, a line each."""
        if self._readers is None:
            self._readers = self._read(self.subject, "generation" in self.readouts)
        for readout in self.readouts:
            r = self.results[(name, readout)] = self.result(self.subject, self._readers, name, readout)
            if readout == "generation":
                s = r["summary"]
                self.log(f"{name:<24} generation: debiased {s['total']['debiased']['mean']} "
                         f"{s['total']['debiased']['ci']} · answers {s['answers']} · first-listed chosen "
                         f"{s['position_bias_index']:.2f}")
            if readout == "likert":
                s = r["summary"]
                t = s["total"]
                self.log(f"{name:<24} debiased {t['debiased']['mean']:.3f} {t['debiased']['ci']}"
                         + (f" · calibrated {t['calibrated']['mean']:.3f}" if "calibrated" in t else "")
                         + f" · as written {t['as_written']:.3f} (neutral {s['neutral']}) · first-listed wins "
                           f"{s['position_bias_index']:.2f} (chance {s['position_bias_chance']:.2f}) · positions "
                           f"A-E {[round(x, 2) for x in s['position_shares']]} · entropy {s['entropy']:.2f}")

    def gap_lines(self) -> list[str]:
        """The counterfactual scale's group gaps under each readout, a line per group pair."""
        lines = []
        for name in self.counterfactual:
            for readout in self.readouts:
                lines.append(f"{name} · {readout}")
                for pair, g in self.results[(name, readout)]["group_gaps"]["gaps"].items():
                    ci = f"[{g['ci'][0]:+.4f}, {g['ci'][1]:+.4f}]" if g["ci"] else "(no CI: n_boot 0)"
                    p = "—" if g["p_permutation"] is None else f"{g['p_permutation']:.3g}"
                    lines.append(f"  {pair:<34} gap {g['diff']:+.4f} {ci} · permutation p {p} · {g['n']} templates")
        return lines

    def run_seeds(self) -> None:
        """Each further seed's copy of this recipe (none for other models) on the counterfactual scale."""
        for s, path in ([] if self.subject.hosted else seeds.seed_replicates(self.subject.path)):
            replicate = ev.load_subject(self.model, str(path), self.root, self.params.evaluate.plain_models,
                                        self.params)
            readers = self._read(replicate, generation=False)
            for name in self.counterfactual:
                for readout in self.readouts:
                    r = self.seed_results.setdefault(s, {})[f"{name}/{readout}"] = self.result(
                        replicate, readers, name, readout)
                    self.log(f"seed {s} · {name} · {readout}: " + " · ".join(
                        f"{k} {v['diff']:+.4f}" for k, v in r["group_gaps"]["gaps"].items()))
            del replicate, readers

    def metrics(self) -> dict:
        cfg = self.cfg
        metrics = {"model": self.model, "layout": self.subject.layout, "target_group": cfg.target_group,
                   "readouts": self.readouts}
        for (name, readout), r in self.results.items():
            entry = metrics.setdefault(name, {})
            if "summary" in r:
                entry[readout] = r["summary"]
            if "group_gaps" in r:
                entry.setdefault("group_gaps", {})[readout] = {
                    "groups": r["group_gaps"]["groups"],
                    "gaps": {k: {f: v[f] for f in ("diff", "ci", "p", "p_permutation", "n")}
                             for k, v in r["group_gaps"]["gaps"].items()}}
        likert = [r["summary"] for (_, ro), r in self.results.items() if ro == "likert"]
        if likert:
            metrics["position_bias_index"] = float(np.mean([s["position_bias_index"] for s in likert]))
            metrics["max_position_share"] = float(np.mean([s["max_position_share"] for s in likert]))
        return metrics

    def save(self) -> dict:
        """Write the metrics file, every result per item, each further seed's; return the metrics."""
        metrics = self.metrics()
        write_json(data_dir("probe", self.model, "items.json"), {f"{n}/{ro}": r for (n, ro), r in self.results.items()})
        for s, items in self.seed_results.items():
            write_json(data_dir("probe", self.model, "seeds", f"s{s}", "items.json"), items)
        write_json(reports_dir("metrics", "probe", f"{self.model}.json"), metrics)
        return metrics

    def n_items(self) -> int:
        return int(sum(len(s.items) for s in self.scales.values()))
