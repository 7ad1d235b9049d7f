"""Tokenizer, base model and training loops (pre-training here; SFT/DPO stages later)."""
