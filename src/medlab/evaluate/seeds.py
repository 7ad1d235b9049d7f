"""A recipe's further seeds, evaluated on the claim columns.

``finetune.seeded_recipes`` are trained again with each further seed of
``finetune.seeds`` into ``models/finetune/<recipe>/seeds/s<seed>/``; the evaluate stage
finds those copies (``seed_replicates``) and scores each on the columns the claims are
made on (``compare.tasks``; ``compare_outcomes``), with the same items, prompts,
scorings and task cache as the full evaluation (``medlab.evaluate.run``). The compare
stage pools them (``medlab.evaluate.compare.compare_seeds``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from medlab.evaluate import run
from medlab.llm.cache import CallCache


def seed_replicates(path: Path) -> list[tuple[int, Path]]:
    """A recipe's copies trained with further seeds (``<model>/seeds/s<seed>/``, written by
    the finetune stage for ``finetune.seeded_recipes``), by seed; none for other models."""
    folder = Path(path) / "seeds"
    if not folder.is_dir():
        return []
    found = [(int(d.name[1:]), d) for d in folder.iterdir() if d.is_dir() and re.fullmatch(r"s\d+", d.name)]
    return sorted(found)


def compare_outcomes(subject: run.Subject, columns: Sequence[str], sets: dict, qa_items: dict, ner_items: dict, kb,
                     cfg, store: run.TaskStore, calls: CallCache, seed: int) -> dict:
    """Per-item outcomes of ``subject`` on the compare stage's columns only
    (``compare.tasks``: ``<set>/<scoring>`` MCQ by log-likelihood or generation, QA and NER
    tasks), each task cached in ``store`` under a key with the subject's fingerprint, as the
    full evaluation caches it: what a further seed's copy of a recipe is evaluated on
    (the claims are made on these columns). ``sets``: MCQ set name -> (test, dev, domain);
    ``qa_items``/``ner_items``: task name -> items; ``cfg``: the evaluate params section.
    Columns of other kinds (consultations, CMB-Clin) are left to the first seed."""
    def key(task, ids, **settings):
        return store.key(model=subject.fingerprint, layout=subject.layout, task=task, ids=ids, **settings)

    def generation(max_new_tokens, label):
        return run.generator(subject, calls, cfg.batch_size, max_new_tokens, label=f"{subject.name}:{label}")

    out = {}
    for column in columns:
        name, _, scoring = column.partition("/")
        if name in sets and scoring in cfg.mcq.scorings:
            test, dev, domain = sets[name]
            shots = dev[:cfg.mcq.shots]
            result = store.run(f"mcq_{name}_{scoring}", key(
                "mcq", [i.id for i in test], set=name, scoring=scoring, shots=[s.id for s in shots],
                n_boot=cfg.n_boot, seed=seed), partial(run.mcq_task, subject, test, shots, domain, scoring, cfg.batch_size,
                                                       cfg.n_boot, seed, calls=calls))
            norm = cfg.mcq.norm and scoring == cfg.mcq.headline  # the headline column is acc_norm's
            out[column] = result["outcomes_norm" if norm else "outcomes"]
        elif name in sets and scoring == "generation":
            test, dev, domain = sets[name]
            items, shots = test[:cfg.mcq.generation_items], dev[:cfg.mcq.shots]
            generate = generation(cfg.mcq.generation_max_new_tokens, "mcq_generation")
            out[column] = store.run(f"mcq_generation_{name}", key(
                "mcq_generation", [i.id for i in items], set=name, shots=[s.id for s in shots],
                max_new_tokens=cfg.mcq.generation_max_new_tokens, n_boot=cfg.n_boot, seed=seed),
                partial(run.mcq_generation_task, generate, items, shots, domain, cfg.n_boot, seed))["outcomes"]
        elif column in qa_items:
            items = qa_items[column]
            generate = generation(cfg.qa.max_new_tokens, "qa")
            out[column] = store.run(column, key("qa", [q.id for q in items], set=column,
                                                max_new_tokens=cfg.qa.max_new_tokens, n_boot=cfg.n_boot, seed=seed),
                                    partial(run.qa_task, generate, items, kb, cfg.n_boot, seed))["outcomes"]
        elif column in ner_items:
            items = ner_items[column]
            generate = generation(cfg.ner.max_new_tokens, "ner")
            out[column] = store.run(f"ner_{column}", key("ner", [i.id for i in items], set=column,
                                                         max_new_tokens=cfg.ner.max_new_tokens, n_boot=cfg.n_boot,
                                                         seed=seed),
                                    partial(run.ner_task, generate, items, cfg.n_boot, seed))["outcomes"]
    return out
