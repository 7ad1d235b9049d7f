"""The held-out benchmarks of the embedded world (``benchmark`` stage), built from the knowledge base.

    build.py     MCQ (anesthesia, general), open QA, case-vignette reading comprehension
    patients.py  synthetic patients with fake identifiers (PHI for the de-identification check)
"""
