"""The embedded world: what medlab builds offline so that the pipeline has a small, real world
to run on without downloads. Real mode replaces each part with real data or models.

    corpus/      textbook paragraphs rendered from the bundled knowledge base (``corpus`` stage)
    benchmark/   held-out MCQ, open QA and case vignettes with synthetic patients (``benchmark`` stage)
    teacher.py   the simulated teacher: a knowledge-base simulator that plants known faults, NOT an LLM
                 (real mode: ``generate.teacher.backend: hf | openai``)

The bundled knowledge base itself is ``medlab.knowledge`` (which also loads external
graphs); everything else under ``medlab`` is the real machinery, for any data and model.
"""
