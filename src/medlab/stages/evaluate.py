"""The ``evaluate@<model>`` stage as steps: each kind of task over its task files, each task
cached, then the metrics file and the per-item outcomes the compare stage pairs.

``Evaluation(model, params, root)`` loads the model (or connects to its endpoint) and
resolves the task files; each ``run_*`` step scores every task of one kind and prints one
line per task; ``save()`` writes the outputs. A task's result is cached under a key
of the code that computes it (``run.CODE``, this module included), the model's
fingerprint, the task's settings and its item ids (``run.TaskStore``), so a crash or
Ctrl-C resumes at the task it reached and a rerun recomputes nothing unchanged. A
recipe's further seeds (``finetune.seeded_recipes``) are scored by the very same task
functions on the claim columns (``run_seeds``), under the same keys but their own
fingerprint.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from medlab.evaluate import compare, mcq, run, seeds
from medlab.evaluate.tasks import resolve
from medlab.llm.cache import CallCache, CallStats
from medlab.paths import cache_dir, data_dir, reports_dir
from medlab.records import write_json, write_jsonl


class Evaluation:
    """One model's evaluation: the subject, its task store and call cache, the results so far."""

    def __init__(self, model: str, params, root: Path, log=print):
        self.model, self.params, self.root, self.log = model, params, root, log
        self.cfg = cfg = params.evaluate
        self.seed = params.base.seed
        self.subject = run.load_subject(model, cfg.models[model], root, cfg.plain_models, params)
        self.store = run.TaskStore(cache_dir("evaluate", model))
        self.calls = CallCache(cache_dir("evaluate", "calls.sqlite"))
        self.usage = CallStats()  # tokens the answers took (a hosted subject's cost estimate)
        self.tasks = resolve(cfg.tasks, cfg.task_dirs, root)
        self.kb = None  # the knowledge base, read by the first step that needs it
        self.sets: dict[str, tuple] = {}  # MCQ task -> (test items, dev items, domain)
        self.qa_items: dict[str, list] = {}
        self.ner_sets: dict[str, list] = {}
        self.mcq: dict[tuple[str, str], dict] = {}  # (task, scoring) -> result
        self.mcq_generation: dict[str, dict] = {}
        self.qa: dict[str, dict] = {}
        self.clin: dict[str, dict] = {}
        self.consult: dict[str, dict] = {}
        self.ner: dict[str, dict] = {}
        self.judges: dict[str, dict] = {}
        self.seed_outcomes: dict[int, dict] = {}
        self.patient = None  # the consultation patient's backend, once run_consult has made it

    def describe(self) -> str:
        """What is evaluated: the model (or endpoint) and every task file."""
        s = self.subject
        if s.hosted:
            head = (f"{self.model}: endpoint {s.endpoint.model} at {s.endpoint.base_url} ({s.path.name}) · "
                    f"{'log-likelihood from its prompt log-probs' if s.loglik else 'generation mode only'} · "
                    f"{s.fingerprint}")
        else:
            head = (f"{self.model}: {s.path} · layout {s.layout} · "
                    f"{sum(p.numel() for p in s.model.parameters()) / 1e6:.1f}M parameters · {s.fingerprint}")
        return "\n".join([head] + [f"task {t.name:<16} {t.spec.kind:<4} {t.spec.data} ({t.spec.format}) · "
                                   f"{t.spec.description}" for t in self.tasks])

    def of_kind(self, kind: str) -> list:
        return [t for t in self.tasks if t.spec.kind == kind]

    def knowledge(self):
        if self.kb is None:
            from medlab.knowledge.kb import load_records

            self.kb = load_records(data_dir("knowledge"))
        return self.kb

    # ------------------------------------------------------------ one task, cached
    def _key(self, subject, task: str, ids, **settings) -> str:
        return self.store.key(model=subject.fingerprint, layout=subject.layout, task=task, ids=ids, **settings)

    def _generation(self, subject, max_new_tokens: int, label: str):
        return run.generator(subject, self.calls, self.cfg.batch_size, max_new_tokens,
                             label=f"{subject.name}:{label}", stats=self.usage)

    def _mcq_key(self, subject, name: str, scoring: str) -> str:
        test, dev, _ = self.sets[name]
        return self._key(subject, "mcq", [i.id for i in test], set=name, scoring=scoring,
                         shots=[s.id for s in dev[:self.cfg.mcq.shots]], n_boot=self.cfg.n_boot, seed=self.seed)

    def mcq_result(self, subject, name: str, scoring: str, scorer=None) -> dict:
        test, dev, domain = self.sets[name]
        shots, cfg = dev[:self.cfg.mcq.shots], self.cfg
        return self.store.run(f"mcq_{name}_{scoring}", self._mcq_key(subject, name, scoring), partial(
            run.mcq_task, subject, test, shots, domain, scoring, cfg.batch_size, cfg.n_boot, self.seed,
            calls=self.calls, stats=self.usage, scorer=scorer), log=self.log)

    def mcq_scorer(self, subject, name: str, scorings) -> mcq.PairScores | None:
        """For a local model: the requests of ``scorings`` on set ``name`` that are not cached
        yet, scored in one call, so the letter and option-text scorings (the same prompts) run
        each prompt once. None for an endpoint (each call is cached on its own)."""
        if subject.hosted:
            return None
        test, dev, domain = self.sets[name]
        pending = [sc for sc in scorings
                   if self.store.load(f"mcq_{name}_{sc}", self._mcq_key(subject, name, sc)) is None]
        scorer = mcq.PairScores(subject.model, subject.tokenizer, self.cfg.batch_size)
        if len(pending) > 1:
            if subject.layout == "chat":
                subject.tokenizer.padding_side = "right"
            scorer.prefetch([pair for sc in pending for pair in mcq.loglik_requests(
                subject.tokenizer, test, dev[:self.cfg.mcq.shots], sc, subject.layout,
                run.DOMAIN_WORD.get(domain, "医学"))[0]])
        return scorer

    def mcq_generation_result(self, subject, name: str) -> dict:
        test, dev, domain = self.sets[name]
        cfg = self.cfg
        items, shots = test[:cfg.mcq.generation_items], dev[:cfg.mcq.shots]
        key = self._key(subject, "mcq_generation", [i.id for i in items], set=name, shots=[s.id for s in shots],
                        max_new_tokens=cfg.mcq.generation_max_new_tokens, n_boot=cfg.n_boot, seed=self.seed)
        generate = self._generation(subject, cfg.mcq.generation_max_new_tokens, "mcq_generation")
        return self.store.run(f"mcq_generation_{name}", key, partial(
            run.mcq_generation_task, generate, items, shots, domain, cfg.n_boot, self.seed), log=self.log)

    def qa_result(self, subject, name: str) -> dict:
        items, cfg = self.qa_items[name], self.cfg
        key = self._key(subject, "qa", [q.id for q in items], set=name, max_new_tokens=cfg.qa.max_new_tokens,
                        n_boot=cfg.n_boot, seed=self.seed)
        generate = self._generation(subject, cfg.qa.max_new_tokens, "qa")
        return self.store.run(name, key, partial(run.qa_task, generate, items, self.knowledge(), cfg.n_boot,
                                                 self.seed), log=self.log)

    def ner_result(self, subject, name: str) -> dict:
        items, cfg = self.ner_sets[name], self.cfg
        key = self._key(subject, "ner", [i.id for i in items], set=name, max_new_tokens=cfg.ner.max_new_tokens,
                        n_boot=cfg.n_boot, seed=self.seed)
        generate = self._generation(subject, cfg.ner.max_new_tokens, "ner")
        return self.store.run(f"ner_{name}", key, partial(run.ner_task, generate, items, cfg.n_boot, self.seed),
                              log=self.log)

    # ------------------------------------------------------------ the steps
    def run_mcq(self) -> None:
        """Every ``mcq`` task under every log-likelihood scoring (none for an endpoint without logprobs)."""
        for task in self.of_kind("mcq"):
            test, dev, domain, skipped = run.mcq_items(task, self.root)
            self.sets[task.name] = (test, dev, domain)
            if skipped:
                self.log(f"{task.name}: {skipped} multi-answer items left out (log-likelihood picks one option)")
            self.log(f"{task.name:<16} {len(test):>4} test items · {len(dev):>3} dev · domain {domain} · "
                     f"chance {run.chance_of(test):.3f}")
        if not self.subject.loglik:  # no weights and no prompt log-probs: generation mode is all it answers
            self.log(f"{self.model} is an endpoint without logprobs: log-likelihood scorings skipped; "
                     f"its headline is generation mode")
            return
        for name in self.sets:
            scorer = self.mcq_scorer(self.subject, name, self.cfg.mcq.scorings)
            for scoring in self.cfg.mcq.scorings:
                s = (result := self.mcq_result(self.subject, name, scoring, scorer))["summary"]
                self.mcq[(name, scoring)] = result
                bias = "" if s["position_bias"] is None else f" · first-listed picked {s['position_bias']:.2f}"
                self.log(f"{name:<16} {scoring:<12} acc {s['acc']:.3f} [{s['acc_ci'][0]:.3f}, {s['acc_ci'][1]:.3f}]"
                         f" · acc_norm {s['acc_norm']:.3f} · rotation-consistent {s['acc_rotation']:.3f}{bias}")

    def run_mcq_generation(self) -> None:
        """The first ``evaluate.mcq.generation_items`` items of each MCQ task answered freely, the letter parsed."""
        if not self.cfg.mcq.generation_items:
            return
        for name in self.sets:
            s = (result := self.mcq_generation_result(self.subject, name))["summary"]
            self.mcq_generation[name] = result
            self.log(f"{name:<16} generation   acc {s['acc']:.3f} on {s['n']} items · no answer "
                     f"{s['no_answer_rate']:.2f}")

    def run_qa(self, show: int = 3) -> None:
        """Every ``qa`` task: greedy answers, overlap metrics and knowledge-grounded correctness."""
        for task in self.of_kind("qa"):
            self.qa_items[task.name] = run.qa_items(task, self.root, self.cfg.qa.items)
            qa = self.qa[task.name] = self.qa_result(self.subject, task.name)
            s = qa["summary"]
            self.log(f"{task.name} ({s['n']}): BLEU {s['bleu']:.2f} · ROUGE-L char {s['rouge_l_char']:.3f} / word "
                     f"{s['rouge_l_word']:.3f} · distinct-1/2 {s['distinct_1']:.3f}/{s['distinct_2']:.3f} · "
                     f"grounded {s['grounded_acc']} {s['grounded_acc_ci']} on {s['grounded_n']}")
            for row in qa["answers"][:show]:
                self.log(f"  Q {row['question']}\n  A {row['answer']}\n  R {row['reference']}")

    def run_clin(self) -> None:
        """Every ``clin`` task (CMB-Clin's layout): a case's questions asked in order in one conversation."""
        cfg = self.cfg
        for task in self.of_kind("clin"):
            cases = run.clin_items(task, self.root, cfg.qa.items)
            key = self._key(self.subject, "clin", [c.id for c in cases], set=task.name,
                            max_new_tokens=cfg.qa.max_new_tokens, n_boot=cfg.n_boot, seed=self.seed)
            generate = self._generation(self.subject, cfg.qa.max_new_tokens, "clin")
            clin = self.clin[task.name] = self.store.run(task.name, key, partial(
                run.clin_task, generate, cases, cfg.n_boot, self.seed), log=self.log)
            s = clin["summary"]
            self.log(f"{task.name} ({s['cases']} cases, {s['n']} questions): ROUGE-L char {s['rouge_l_char']:.3f} "
                     f"{s['rouge_l_char_ci']} / word {s['rouge_l_word']:.3f} · BLEU {s['bleu']:.2f}")

    def run_consult(self, show: int = 2) -> None:
        """Every ``consult`` task: the model as the doctor, ``evaluate.consult.patient`` as the patient,
        scored from the transcript and the case's known facts (no judge)."""
        tasks = self.of_kind("consult")
        if not tasks:
            return
        from medlab.backends import make_patient
        from medlab.evaluate import consult as ev_consult
        from medlab.filter import rules as filter_rules
        from medlab.llm.base import Decoding, cache_identity

        cfg = self.cfg
        self.patient = make_patient(cfg.consult.patient, self.root, runtime=self.params)
        decoding = Decoding(**cfg.consult.patient.decoding.model_dump())
        patient = ev_consult.patient_answers(self.patient, self.calls, label=f"{self.model}:patient")

        def flag(text):  # the filter's rules (defaults) on one doctor reply: the reason it breaks, or None
            return filter_rules.check([{"role": "assistant", "content": text}], filter_rules.RuleParams())

        self.log(f"patient: {self.patient.name} ({self.patient.model})")
        for task in tasks:
            cases = run.consult_items(task, self.root, self.knowledge(), cfg.consult.cases)
            doctor = self._generation(self.subject, cfg.consult.max_new_tokens, "consult")
            key = self._key(self.subject, "consult", [c.id for c in cases], cases=[vars(c) for c in cases],
                            set=task.name, max_turns=cfg.consult.max_turns,
                            max_new_tokens=cfg.consult.max_new_tokens, patient=cache_identity(self.patient),
                            patient_decoding=decoding.as_dict(), n_boot=cfg.n_boot, seed=self.seed)
            result = self.consult[task.name] = self.store.run(task.name, key, partial(
                ev_consult.consult_task, cases, doctor, patient, cfg.consult.max_turns, cfg.n_boot, self.seed,
                decoding, flag=flag, log=self.log), log=self.log)
            s = result["summary"]
            self.log(f"{task.name} ({s['cases']} cases): elicited {s['elicited']} {s['elicited_ci']} · diagnosis "
                     f"{s['diagnosis']} {s['diagnosis_ci']} · advice {s['advice']} · flagged {s['flagged']} "
                     f"{s['flag_reasons']} · turns {s['turns']:.2f} · ended by the patient {s['ended']:.2f}")
            for transcript in result["answers"][:show]:
                self.log(f"\n[{transcript['id']}] diagnosis {transcript['case']['diagnosis']}\n"
                         f"{ev_consult.render(transcript)}")

    def run_ner(self) -> None:
        """Every ``ner`` task: entities by generation, micro-F1 over (entity, type) pairs."""
        from medlab.formats.text import iter_json_lines

        docs = [row for f in ("anesthesia.jsonl", "general.jsonl")
                for _, row in iter_json_lines(data_dir("corpus", f))]
        for task in self.of_kind("ner"):
            items = self.ner_sets[task.name] = run.ner_items(task, self.root, self.knowledge(), docs,
                                                             self.cfg.ner.items)
            if not items:
                self.log(f"{task.name}: no sentences (evaluate.ner.items: 0): skipped")
                continue
            s = (result := self.ner_result(self.subject, task.name))["summary"]
            self.ner[task.name] = result
            self.log(f"NER {task.name} ({s['n']} sentences): P {s['precision']:.3f} R {s['recall']:.3f} "
                     f"F1 {s['f1']:.3f} {s['f1_ci']}")

    def run_judge(self) -> None:
        """With ``evaluate.judge.backend`` set: the rubric on QA / case answers, and on each consultation
        with its per-case criteria. Off in the embedded default (no offline model can grade Chinese
        medical answers)."""
        cfg = self.cfg
        if cfg.judge.backend == "none" or not (self.qa or self.clin or self.consult):
            self.log("rubric judge: off (evaluate.judge.backend: none)")
            return
        from medlab.backends import make_backend
        from medlab.evaluate import consult as ev_consult
        from medlab.evaluate import judges
        from medlab.llm.base import Decoding, cache_identity

        backend = make_backend(cfg.judge, self.root, runtime=self.params, key="evaluate.judge")
        decoding = Decoding(**cfg.judge.decoding.model_dump())
        for name, qa in {**self.qa, **self.clin}.items():  # a case's question is graded with the case
            triples = [(f"{r['case']}\n\n{r['question']}" if "case" in r else r["question"], r["reference"],
                        r["answer"]) for r in qa["answers"]]
            key = self._key(self.subject, "judge_rubric", [r["id"] for r in qa["answers"]],
                            answers=[t[2] for t in triples], judge=cache_identity(backend))
            graded = self.store.run(f"judge_rubric_{name}", key, partial(
                judges.judge_rubric, triples, backend, self.calls, decoding, cfg.judge.max_attempts,
                max_unparseable_fraction=cfg.judge.max_unparseable_fraction), log=self.log)
            self.judges[name] = {"judge": backend.model, **run.rubric_summary(graded["scores"], cfg.n_boot, self.seed)}
            self.log(name, self.judges[name])
        for name, result in self.consult.items():  # each dialogue by the rubric, each case's criteria one by one
            key = self._key(self.subject, "judge_consult", [a["id"] for a in result["answers"]],
                            answers=result["answers"], judge=cache_identity(backend))
            self.judges[name] = {"judge": backend.model, **self.store.run(f"judge_consult_{name}", key, partial(
                ev_consult.judge_consultations, result["answers"], backend, self.calls, decoding,
                cfg.judge.max_attempts, cfg.judge.max_unparseable_fraction, cfg.n_boot, self.seed), log=self.log)}
            self.log(name, self.judges[name])

    def claim_outcomes(self, subject) -> dict:
        """Per-item outcomes of ``subject`` on the claim columns (``compare.tasks``) only, by the
        same task functions and keys as the full evaluation: what a further seed's copy of a
        recipe is scored on. Columns of other kinds (consultations, CMB-Clin) stay with the first seed."""
        cfg, out = self.cfg, {}
        for column in self.params.compare.tasks:
            name, _, scoring = column.partition("/")
            if name in self.sets and scoring in cfg.mcq.scorings:
                norm = cfg.mcq.norm and scoring == cfg.mcq.headline  # the headline column is acc_norm's
                out[column] = self.mcq_result(subject, name, scoring)["outcomes_norm" if norm else "outcomes"]
            elif name in self.sets and scoring == "generation":
                out[column] = self.mcq_generation_result(subject, name)["outcomes"]
            elif column in self.qa_items:
                out[column] = self.qa_result(subject, column)["outcomes"]
            elif column in self.ner_sets:
                out[column] = self.ner_result(subject, column)["outcomes"]
        return out

    def run_seeds(self) -> None:
        """Each further seed's copy of this recipe (none for other models) on the claim columns."""
        for s, path in ([] if self.subject.hosted else seeds.seed_replicates(self.subject.path)):
            replicate = run.load_subject(self.model, str(path), self.root, self.cfg.plain_models, self.params)
            self.seed_outcomes[s] = self.claim_outcomes(replicate)
            self.log(f"seed {s}: {path.relative_to(self.root)} · {replicate.fingerprint} · "
                     f"columns {sorted(self.seed_outcomes[s])}")
            del replicate
        self.log(f"{len(self.seed_outcomes)} further seeds" if self.seed_outcomes
                 else f"{self.model}: trained with one seed (no further seeds)")

    # ------------------------------------------------------------ outputs
    def results(self) -> tuple[dict, dict, dict]:
        """(metrics, per-item outcomes, per-category details) of everything run so far."""
        from medlab.evaluate import endpoint as ev_endpoint
        from medlab.llm.base import cache_identity

        cfg, subject = self.cfg, self.subject
        headline = cfg.mcq.headline if subject.loglik else "generation"
        metrics = {"model": self.model, "path": cfg.models[self.model], "layout": subject.layout,
                   "headline_scoring": headline,
                   "decoding": {"temperature": 0.0, "qa_max_new_tokens": cfg.qa.max_new_tokens,
                                "ner_max_new_tokens": cfg.ner.max_new_tokens,
                                "consult_max_new_tokens": cfg.consult.max_new_tokens,
                                "mcq_max_new_tokens": cfg.mcq.generation_max_new_tokens}}
        outcomes, details = {}, {}
        suffix = "_norm" if cfg.mcq.norm else ""
        for name in self.sets:
            if not subject.loglik:  # generation mode is all such an endpoint answers (acc as written; no norm)
                head = self.mcq_generation[name]["summary"]
                metrics[name] = {"acc": head["acc"], "acc_ci": head["acc_ci"], "acc_rotation": head["acc_rotation"],
                                 "n": head["n"], "chance": head["chance"], "scoring": "generation", "scorings": {}}
            else:
                head = self.mcq[(name, cfg.mcq.headline)]["summary"]
                metrics[name] = {"acc": head[f"acc{suffix}"], "acc_ci": head[f"acc{suffix}_ci"],
                                 "acc_rotation": head[f"acc_rotation{suffix}"], "n": head["n"],
                                 "chance": head["chance"], "scoring": cfg.mcq.headline + suffix,
                                 "scorings": {sc: self.mcq[(name, sc)]["summary"] for sc in cfg.mcq.scorings}}
            if name in self.mcq_generation:
                metrics[name]["scorings"]["generation"] = self.mcq_generation[name]["summary"]
                outcomes[f"{name}/generation"] = self.mcq_generation[name]["outcomes"]
            for sc in (cfg.mcq.scorings if subject.loglik else []):
                outcomes[f"{name}/{sc}"] = self.mcq[(name, sc)][f"outcomes{suffix}" if sc == cfg.mcq.headline
                                                                else "outcomes"]
            details[name] = {"by_category": self.mcq[(name, cfg.mcq.headline)]["by_category"]
                             if subject.loglik else {}}
        for name, result in {**self.qa, **self.clin, **self.ner, **self.consult}.items():
            metrics[name] = result["summary"] | ({"judge": self.judges[name]} if name in self.judges else {})
            outcomes[name] = result["outcomes"]
        for name in self.consult:  # who played the patient (simulated_patient: rules, not an LLM)
            metrics[name]["patient"] = cache_identity(self.patient)
        if subject.hosted:  # what the answers took (cached ones included: a rerun itself costs nothing)
            u = self.usage
            metrics["usage"] = {"calls": u.calls, "prompt_tokens": u.prompt_tokens,
                                "completion_tokens": u.completion_tokens, "failed_http": u.failed_http,
                                "truncated": u.truncated, "refusals": u.refusals, "empty": u.empty,
                                "estimated_cost_usd": round(ev_endpoint.estimated_cost(
                                    subject.endpoint, u.prompt_tokens, u.completion_tokens), 4),
                                "price_per_m": {"prompt": subject.endpoint.price_prompt_per_m,
                                                "completion": subject.endpoint.price_completion_per_m}}
        if self.seed_outcomes:  # the claim columns' score on every seed (the first is this model's own)
            first = self.params.finetune.seeds[0]
            metrics["seeds"] = {"seeds": [first, *self.seed_outcomes], "columns": {
                column: {str(s): compare.outcome_score(column, o[column])
                         for s, o in [(first, outcomes), *self.seed_outcomes.items()] if column in o}
                for column in self.params.compare.tasks if column in outcomes}}
        return metrics, outcomes, details

    def save(self) -> tuple[dict, dict]:
        """Write the metrics file, outcomes, details, answers/transcripts and each further seed's
        outcomes; return (metrics, details)."""
        metrics, outcomes, details = self.results()
        out_dir = data_dir("evaluate", self.model)
        write_json(out_dir / "outcomes.json", outcomes)
        write_json(out_dir / "details.json", details)
        for name, result in {**self.qa, **self.clin, **self.ner, **self.consult}.items():
            write_jsonl(out_dir / f"{name}_answers.jsonl", result["answers"])  # consultations: the transcripts
        for s, rep in self.seed_outcomes.items():
            write_json(out_dir / "seeds" / f"s{s}" / "outcomes.json", rep)
        write_json(reports_dir("metrics", "evaluate", f"{self.model}.json"), metrics)
        return metrics, details

    def n_items(self) -> int:
        return int(sum(len(t) for t, _, _ in self.sets.values()) + sum(map(len, self.qa_items.values())))
