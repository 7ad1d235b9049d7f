"""Cross-model filtering of generated data (``filter`` stage), one check per module.

    rules.py             cheap rule filters with a named reason per rejection
    dedup.py             exact and MinHash-LSH near-duplicate removal
    decontaminate.py     n-gram overlap with the benchmarks
    likelihood_judge.py  a causal LM that is not the teacher scores each answer
    rubric_judge.py      an instruction model grades Hypnos' five aspects
    deid.py              protected health information -> typed placeholders
    pairs.py             DPO preference pairs from kept and rejected answers
    metrics.py           how well the filter finds the faults planted in the embedded world
"""
