"""The base model (``pretrain`` stage): a tokenizer and a small Llama trained from scratch on the
corpus, or a real pretrained model loaded (and optionally trained further) through medlab.runtime.

    tokenizer.py  byte-level BPE trained on the corpus, with medlab's chat template
    model.py      the embedded Llama built from ``pretrain.model``
    trainer.py    the HF Trainer on fixed-length blocks; perplexities
"""
