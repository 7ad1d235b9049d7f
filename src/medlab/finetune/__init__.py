"""Staged fine-tuning recipes (``finetune@<recipe>`` stages).

    data.py      named training sets from the filter's files
    schedule.py  HuatuoGPT-II's one-stage priority sampling
    masks.py     which tokens are the assistant's (the SFT loss mask), any chat template
    sft.py       supervised fine-tuning with TRL (packing, LoRA, RoPE scaling)
    dpo.py       direct preference optimisation with TRL
    run.py       a recipe stage by stage, resumable and shared between recipes; publishing
    __main__.py  one stage from the command line (what ``accelerate launch`` runs)
"""
