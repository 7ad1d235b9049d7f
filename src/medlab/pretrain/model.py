"""The embedded base causal LM: a small Llama built from ``pretrain.model`` params.

(Loading any Hugging Face model, and the ``models/base`` pointer for a pretrained model
used as is, live in ``medlab.runtime``.)
"""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM


def build_llama(cfg, vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> LlamaForCausalLM:
    """A freshly initialised Llama-architecture model from ``pretrain.model`` params."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    return LlamaForCausalLM(config)


def count_parameters(model) -> int:
    """Unique parameters (tied input/output embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
