"""The evaluation harness (``evaluate@<model>`` and ``compare`` stages).

    loglik.py        batched continuation log-likelihoods (the scorer under every MCQ scoring)
    endpoint_loglik.py  the same log-likelihoods from a served model's prompt log-probs (vLLM echo)
    endpoint.py      endpoint files: a hosted model as an evaluation subject
    mcq.py           MCQ scorings (cloze / option_text / letter), rotations, generation mode, accuracy family
    text_metrics.py  BLEU (zh), ROUGE-L on characters and jieba words, distinct-n, grounded correctness
    ner.py           entity extraction by generation, micro-F1, CMeEE / PromptCBLUE loaders
    judges.py        versioned LLM judges: DISC rubric with reference, pairwise with position swap
    run.py           one model's tasks, each a function of its items, cached by TaskStore (resume)
    seeds.py         where a recipe's further seeds are (models/finetune/<recipe>/seeds/s<seed>/)
    consult.py       consultations with a simulated or LLM patient, judge-free measures
    criteria.py      per-case rubric criteria (HealthBench-style), exact marks and the judge's
    tasks.py         declarative task files (tasks/*.yaml) resolved and validated
    params.py        the evaluate section of params.yaml
    compare.py       model x metric table, paired tests with Holm adjustment, pooled over seeds

The stages run these as steps: ``medlab.stages.evaluate``, ``medlab.stages.probe``, ``medlab.stages.compare``.
"""
