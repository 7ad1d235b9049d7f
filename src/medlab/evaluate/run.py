"""One model's evaluation tasks, each a function of its items: what ``medlab.stages.evaluate`` runs and caches.

Tasks (declared in task files, ``medlab.evaluate.tasks``): MCQ per task and scoring
(log-likelihood; ``medlab.evaluate.mcq``), MCQ in generation mode, open QA (greedy;
``text_metrics``), NER (``ner``), consultations with a patient (``consult``) and, when
a judge is configured, the rubric judge on the QA answers (``judges``).

Resume: every finished task is saved at once under
``.cache/medlab/evaluate/<model>/<task>-<key>.json``, the key hashing the code that
computes it (``CODE`` and all it imports: ``medlab.cachekey.result_key``), the model's
content fingerprint (medlab.runtime), the task's settings and its item ids;
generations go through the crash-proof LLM call cache. A crash or Ctrl-C loses at most
the task in flight (and of a generation task, only the batch in flight); a rerun
reuses the rest. Any change of code, model, items or settings changes the key: nothing
stale is reused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlab.evaluate import mcq, ner, text_metrics
from medlab.llm.base import ChatRequest, Decoding, cache_identity
from medlab.llm.cache import CallCache, CallStats, generate_cached
from medlab.records import McqItem, QaItem, atomic_write_text, read_jsonl
from medlab.stats import mean_ci

# The modules an evaluation task's result is computed by: every cached task's key hashes
# their source and everything they import (task files, judges, scorers, the generation
# backend), so an edit to any of them recomputes the task and nothing older is reused.
CODE = ("medlab.evaluate.run", "medlab.stages.evaluate", "medlab.evaluate.tasks", "medlab.evaluate.judges",
        "medlab.evaluate.consult", "medlab.evaluate.seeds")

# The domain word of the MCQ instruction ("以下是{domain}单项选择题"), per item domain.
DOMAIN_WORD = {"anesthesia": "麻醉学", "general_medicine": "医学", "general": "医学", "auto": "医学"}


@dataclass
class Subject:
    """The model under evaluation: local weights, or a hosted endpoint (``backend``)."""

    name: str
    path: Path
    layout: str  # plain | chat: how MCQ prompts are rendered for it
    model: object  # None for an endpoint
    tokenizer: object  # None for an endpoint without logprobs (one with them: its tokenizer files)
    fingerprint: str
    backend: object = None  # an endpoint's OpenAIBackend
    endpoint: object = None  # its medlab.evaluate.endpoint.EndpointSpec

    @property
    def hosted(self) -> bool:
        return self.backend is not None

    @property
    def loglik(self) -> bool:
        """Whether MCQ can be scored by log-likelihood: local weights, or an endpoint that
        returns prompt log-probabilities (``logprobs: true``)."""
        return self.model is not None or bool(self.endpoint is not None and self.endpoint.logprobs)


def load_subject(name: str, path: str, root: Path, plain_models: Sequence[str], runtime=None) -> Subject:
    """Load a model directory through the runtime: full weights, a LoRA recipe (base +
    adapters, medlab_adapter.json) or the pointer the pretrain stage writes for a real base;
    or connect to the endpoint an endpoint file describes (``medlab.evaluate.endpoint``)."""
    from medlab.evaluate.endpoint import is_endpoint, load_endpoint, make_subject_backend
    from medlab.runtime import ModelLoadError, fingerprint, load_published, load_tokenizer

    if is_endpoint(path):
        spec = load_endpoint(path, root)
        backend = make_subject_backend(spec, name)
        if not spec.logprobs:
            return Subject(name, root / path, "chat", None, None, cache_identity(backend), backend, spec)
        # log-likelihood scoring: prompts rendered and tokenised here, as for local weights
        tokenizer = load_tokenizer(spec.tokenizer_path(root), runtime)
        layout = _layout(name, tokenizer, plain_models, spec.tokenizer_path(root))
        identity = f"{cache_identity(backend)}|tokenizer:{fingerprint(spec.tokenizer_path(root))}"
        return Subject(name, root / path, layout, None, tokenizer, identity, backend, spec)
    directory = Path(path) if Path(path).is_absolute() else root / path
    if not directory.is_dir():
        raise ModelLoadError(f"evaluate.models.{name}: {directory} is not a directory (run the stage that writes it)")
    model, tokenizer = load_published(directory, runtime)
    return Subject(name, directory, _layout(name, tokenizer, plain_models, directory), model, tokenizer,
                   fingerprint(directory))


def _layout(name: str, tokenizer, plain_models: Sequence[str], where: Path) -> str:
    """plain (listed in evaluate.plain_models) or chat (needs the tokenizer's chat template)."""
    from medlab.runtime import ModelLoadError

    layout = "plain" if name in plain_models else "chat"
    if layout == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(f"evaluate.models.{name}: {where} has no chat template; "
                             f"add it to evaluate.plain_models to prompt it as plain text")
    return layout


class TaskStore:
    """Finished tasks of one model, keyed by the code that computes them and what else
    determines their result (``stage`` names the computing stage; ``code`` its modules)."""

    def __init__(self, directory: Path, stage: str = "evaluate", code: tuple[str, ...] = CODE):
        self.directory, self.stage, self.code = directory, stage, code
        self.computed: list[str] = []  # tasks run in this session
        self.reused: list[str] = []  # tasks loaded from an earlier run (their time is not in this one)

    def key(self, **what) -> str:
        """Hash of the code and everything else that determines a result (the caller's
        settings, model fingerprint and item ids)."""
        from medlab.cachekey import result_key

        return result_key(self.stage, self.code, what)

    def _path(self, task: str, key: str) -> Path:
        return self.directory / f"{task}-{key}.json"

    def load(self, task: str, key: str) -> dict | None:
        path = self._path(task, key)
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, task: str, key: str, result: dict) -> dict:
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self._path(task, key), json.dumps(result, ensure_ascii=False))
        return result

    def run(self, task: str, key: str, compute: Callable[[], dict], log=print) -> dict:
        done = self.load(task, key)
        if done is not None:
            log(f"[{task}] reused (finished in an earlier run)")
            self.reused.append(task)
            return done
        result = self.save(task, key, compute())
        log(f"[{task}] computed (key {key})")
        self.computed.append(task)
        return result


# ------------------------------------------------------------------------ items
def mcq_items(task, root: Path) -> tuple[list[McqItem], list[McqItem], str, int]:
    """An MCQ task's test items, its dev items (the few-shot pool), its domain and how many
    multi-answer items were left out (log-likelihood picks one option)."""
    from medlab.formats.mcq import load_mcq

    path = root / task.spec.data
    items = load_mcq(path, task.spec.format, source=task.name, encoding=task.spec.encoding)
    test, skipped = mcq.single_answer([i for i in items if i.split != "dev"])
    dev, _ = mcq.single_answer([i for i in items if i.split == "dev"])
    if not test:
        raise ValueError(f"{path} (task {task.name}): no single-answer test items")
    domain = task.spec.domain if task.spec.domain != "auto" else (test[0].meta or {}).get("domain", "general_medicine")
    return test, dev, domain, skipped


def clin_items(task, root: Path, limit: int = 0) -> list:
    """A CMB-Clin task's cases (the first ``limit``; 0 = all)."""
    from medlab.formats.cases import load_cases

    cases = load_cases(root / task.spec.data, task.spec.format, task.spec.encoding)
    return cases[:limit] if limit else cases


def consult_items(task, root: Path, kb, limit: int = 0) -> list:
    """A consultation task's cases (the first ``limit``; 0 = all): the benchmark's vignettes
    with their facts from the knowledge base, or CMB-Clin case descriptions."""
    from medlab.evaluate import consult

    if task.spec.format == "vignettes":
        cases = consult.vignette_cases(read_jsonl(root / task.spec.data, McqItem), kb, limit)
    else:
        from medlab.evaluate.criteria import load_criteria

        criteria = load_criteria(root / task.spec.criteria, task.spec.encoding) if task.spec.criteria else None
        cases = consult.clin_cases(clin_items(task, root), limit, criteria)
    if not cases:
        raise ValueError(f"{root / task.spec.data} (task {task.name}): no case to consult on")
    return cases


def qa_items(task, root: Path, limit: int = 0) -> list[QaItem]:
    """A QA task's non-dev items (the first ``limit``; 0 = all)."""
    items = [q for q in read_jsonl(root / task.spec.data, QaItem) if q.split != "dev"]
    return items[:limit] if limit else items


def ner_items(task, root: Path, kb=None, corpus_docs: Sequence[dict] = (), limit: int = 0) -> list[ner.NerItem]:
    """A NER task's sentences: ``kb_sentences`` builds them from the QA file named as its data
    and the held-out corpus paragraphs (``limit`` of them), else the file's own loader."""
    if task.spec.format == "kb_sentences":
        qa = read_jsonl(root / task.spec.data, QaItem)
        return ner.kb_sentences(kb, ner_sentences(qa, corpus_docs), limit) if limit else []
    return ner.load_ner(root / task.spec.data, task.spec.format, task.spec.encoding)


def chance_of(items: Sequence[McqItem]) -> float:
    """Expected accuracy of a uniform guess: mean over items of 1 / number of options."""
    return float(np.mean([1 / len(i.options) for i in items]))


def ner_sentences(qa_items: Sequence[QaItem], corpus_docs: Sequence[dict]) -> list[tuple[str, str]]:
    """(id, sentence) pairs for our NER set: QA reference answers, then the sentences of
    held-out (``valid``) corpus paragraphs — text no model trained on."""
    out = [(q.id, q.reference) for q in qa_items]
    for doc in corpus_docs:
        if doc.get("split") == "valid":
            for k, sentence in enumerate(s for s in re.split(r"(?<=。)", doc["text"]) if len(s) > 4):
                out.append((f"{doc['id']}-s{k}", sentence))
    return out


def conflicting_objects(kb, predicate: str, gold: Sequence[str]) -> list[str]:
    """Objects the knowledge base gives for ``predicate`` of any subject, minus the gold:
    same-type answers that contradict the fact if named instead of (or beside) it."""
    gold_set = set(gold)
    return sorted({t.object for t in kb.triples if t.predicate == predicate} - gold_set)


# ------------------------------------------------------------------------ generation
def generator(subject: Subject, cache: CallCache, batch_size: int, max_new_tokens: int, label: str,
              stats: CallStats | None = None):
    """``generate(list of chats) -> texts``: greedy, batched, every answer cached. A hosted
    subject answers through its endpoint with its own ``max_new_tokens`` (no cap sized
    for a toy model cuts its reasoning short); ``stats`` adds up its token usage."""
    if subject.hosted:
        backend = subject.backend
        max_new_tokens = subject.endpoint.max_new_tokens
    else:
        from medlab.llm.hf import HFBackend

        backend = HFBackend(str(subject.path), batch_size, model=subject.model, tokenizer=subject.tokenizer,
                            layout=subject.layout)
        backend.model = HFBackend.identity(subject.fingerprint, subject.layout)
    decoding = Decoding(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens)

    def generate(chats: Sequence[list[dict]]) -> list[str]:
        requests = [ChatRequest.of(list(c), decoding) for c in chats]
        # an answer cut at max_new_tokens is the model's answer: scored as given (and counted)
        return [c.text for c in generate_cached(backend, requests, cache, label=label, truncated="keep",
                                                stats=stats)]

    return generate


# ------------------------------------------------------------------------ tasks
def mcq_task(subject: Subject, items: Sequence[McqItem], shots: Sequence[McqItem], domain: str, scoring: str,
             batch_size: int, n_boot: int, seed: int, progress=None, calls: CallCache | None = None,
             stats: CallStats | None = None, scorer=None) -> dict:
    """One set under one log-likelihood scoring: summary (acc and acc_norm families),
    per-category accuracy and per-item outcomes (for paired comparisons). A served subject
    (``logprobs: true``) is scored from its endpoint's log-probabilities, each call through
    ``calls``; a local one by ``scorer`` when given (a ``mcq.PairScores`` shared by the
    set's scorings), else by its own forward passes."""
    if subject.layout == "chat":
        subject.tokenizer.padding_side = "right"  # the generation backend may have set left
    if subject.hosted:
        if calls is None:
            raise ValueError(f"{subject.name}: an endpoint's log-likelihoods go through a call cache; pass calls=")
        from medlab.evaluate.endpoint_loglik import endpoint_logprobs

        def scorer(pairs):
            return endpoint_logprobs(subject.backend, subject.tokenizer, pairs, calls,
                                     label=f"{subject.name}:mcq_{scoring}", stats=stats)
    results = mcq.score_loglik(subject.model, subject.tokenizer, items, shots, scoring=scoring,
                               layout=subject.layout, domain=DOMAIN_WORD.get(domain, "医学"),
                               batch_size=batch_size, progress=progress, scorer=scorer)
    chance = chance_of(items)
    summary = mcq.summarise(results, chance, n_boot=n_boot, seed=seed)
    normed = mcq.summarise(results, chance, norm=True, n_boot=n_boot, seed=seed)
    summary.update({f"{k}_norm": normed[k] for k in ("acc", "acc_ci", "acc_rotation", "acc_rotation_ci")})
    return {"summary": summary, "by_category": mcq.by_category(results),
            "outcomes": mcq.item_outcomes(results), "outcomes_norm": mcq.item_outcomes(results, norm=True)}


def mcq_generation_task(generate, items: Sequence[McqItem], shots: Sequence[McqItem], domain: str,
                        n_boot: int, seed: int) -> dict:
    """The set asked as chats, answers parsed; unparseable answers are wrong and counted."""
    results = mcq.score_generation(generate, items, shots, domain=DOMAIN_WORD.get(domain, "医学"))
    summary = mcq.summarise(results, chance_of(items), n_boot=n_boot, seed=seed)
    return {"summary": summary, "outcomes": mcq.item_outcomes(results),
            "answers": {r.item.id: r.extracted[0] for r in results}}


def clin_task(generate, cases: Sequence, n_boot: int, seed: int) -> dict:
    """CMB-Clin: each case's questions asked in order in one conversation (the case
    description opens it; every earlier answer is carried), each answer scored against its
    reference by ROUGE-L (characters, jieba words) and BLEU (sacrebleu zh). Turn k of every
    case is generated in one batch."""
    chats = [[] for _ in cases]
    answers: dict[str, dict] = {}
    for turn in range(max(len(c.qa) for c in cases)):
        asking = [k for k, c in enumerate(cases) if turn < len(c.qa)]
        for k in asking:
            question = cases[k].qa[turn][0]
            opening = f"{cases[k].description}\n\n" if turn == 0 else ""
            chats[k].append({"role": "user", "content": opening + question})
        for k, text in zip(asking, generate([list(chats[k]) for k in asking]), strict=True):
            chats[k].append({"role": "assistant", "content": text})
            question, reference = cases[k].qa[turn]
            answers[f"{cases[k].id}/{turn + 1}"] = {"id": f"{cases[k].id}/{turn + 1}", "question": question,
                                                   "reference": reference, "answer": text,
                                                   "case": cases[k].description}
    rows = list(answers.values())
    per_item = {r["id"]: {"grounded": None, "rouge_l_char": text_metrics.rouge_l(r["answer"], r["reference"], "char")}
                for r in rows}
    rouge = mean_ci([v["rouge_l_char"] for v in per_item.values()], n_boot=n_boot, seed=seed)
    summary = {"n": len(rows), "cases": len(cases), "bleu": text_metrics.bleu([r["answer"] for r in rows],
                                                                               [r["reference"] for r in rows]),
               "rouge_l_char": rouge["mean"], "rouge_l_char_ci": rouge["ci"],
               "rouge_l_word": float(np.mean([text_metrics.rouge_l(r["answer"], r["reference"], "word")
                                              for r in rows])),
               "mean_answer_chars": float(np.mean([len(r["answer"]) for r in rows]))}
    return {"summary": summary, "outcomes": per_item, "answers": rows}


def qa_task(generate, items: Sequence[QaItem], kb, n_boot: int, seed: int) -> dict:
    """Greedy answers scored against the references, and the grounded-correctness check."""
    answers = generate([[{"role": "user", "content": q.question}] for q in items])
    references = [q.reference for q in items]
    grounded, per_item = [], {}
    for q, answer in zip(items, answers, strict=True):
        gold = list(q.gold or (q.meta or {}).get("objects") or [])
        ok = None
        if gold:
            ok = text_metrics.grounded_correct(answer, gold, conflicting_objects(kb, q.meta["predicate"], gold))
            grounded.append(float(ok))
        per_item[q.id] = {"grounded": None if ok is None else int(ok),
                          "rouge_l_char": text_metrics.rouge_l(answer, q.reference, "char")}
    rouge_char = [v["rouge_l_char"] for v in per_item.values()]
    rouge_word = [text_metrics.rouge_l(a, r, "word") for a, r in zip(answers, references, strict=True)]
    grounded_ci = mean_ci(grounded, n_boot=n_boot, seed=seed) if grounded else None
    summary = {"n": len(items), "bleu": text_metrics.bleu(answers, references),
               "rouge_l_char": float(np.mean(rouge_char)), "rouge_l_word": float(np.mean(rouge_word)),
               "distinct_1": text_metrics.distinct_n(answers, 1), "distinct_2": text_metrics.distinct_n(answers, 2),
               "grounded_acc": grounded_ci["mean"] if grounded_ci else None,
               "grounded_acc_ci": grounded_ci["ci"] if grounded_ci else None, "grounded_n": len(grounded),
               "mean_answer_chars": float(np.mean([len(a) for a in answers]))}
    return {"summary": summary, "outcomes": per_item,
            "answers": [{"id": q.id, "question": q.question, "reference": q.reference, "answer": a}
                        for q, a in zip(items, answers, strict=True)]}


def ner_task(generate, items: Sequence[ner.NerItem], n_boot: int, seed: int) -> dict:
    """Entities extracted by generation; micro-F1 over (entity, type) pairs, bootstrap CI
    over sentences."""
    from medlab.stats import bootstrap_ci

    answers = generate([ner.prompt(i) for i in items])
    predicted = [ner.parse_entities(a, i.types) for a, i in zip(answers, items, strict=True)]
    scores = ner.micro_f1([i.gold for i in items], predicted)
    counts = np.array([[len(p & i.gold), len(p), len(i.gold)] for p, i in zip(predicted, items, strict=True)],
                      dtype=float)

    ci = bootstrap_ci(ner.micro_f1_of_counts, counts, n_boot=n_boot, seed=seed) if n_boot else None
    return {"summary": {"n": len(items), **scores, "f1_ci": list(ci) if ci else None},
            "outcomes": {i.id: [int(c[0]), int(c[1]), int(c[2])] for i, c in zip(items, counts, strict=True)},
            "answers": [{"id": i.id, "text": i.text, "gold": sorted(i.gold), "predicted": sorted(p), "answer": a}
                        for i, p, a in zip(items, predicted, answers, strict=True)]}


def rubric_summary(scores: Sequence[dict | None], n_boot: int, seed: int) -> dict:
    """Mean and CI per rubric dimension over the answers the judge graded."""
    graded = [s for s in scores if s is not None]
    out: dict = {"n": len(scores), "graded": len(graded), "unparseable": len(scores) - len(graded)}
    for dim in (graded[0] if graded else {}):
        out[dim] = mean_ci([s[dim] for s in graded], n_boot=n_boot, seed=seed)
    return out
