"""The pre-training corpus of the embedded world (``corpus`` stage).

    render.py    knowledge base -> textbook-style paragraphs, 12-14 paraphrase templates per relation
"""
