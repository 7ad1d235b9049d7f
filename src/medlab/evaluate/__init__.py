"""The evaluation harness (``evaluate@<model>`` and ``compare`` stages).

    loglik.py        batched continuation log-likelihoods (the scorer under every MCQ scoring)
    mcq.py           MCQ scorings (cloze / option_text / letter), rotations, generation mode, accuracy family
    text_metrics.py  BLEU (zh), ROUGE-L on characters and jieba words, distinct-n, grounded correctness
    ner.py           entity extraction by generation, micro-F1, CMeEE / PromptCBLUE loaders
    judges.py        versioned LLM judges: DISC rubric with reference, pairwise with position swap
    run.py           one model's tasks, each saved when done (resume)
    compare.py       model x metric table, paired tests with Holm adjustment
"""
