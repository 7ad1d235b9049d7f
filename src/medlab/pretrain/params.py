"""``pretrain`` section of params.yaml: the tokenizer and base model, from scratch or pretrained."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from medlab.section import Section, model_path_problem


class PretrainedModel(Section):
    name_or_path: str | None
    revision: str
    trust_remote_code: bool
    continue_training: bool


class TokenizerParams(Section):
    vocab_size: int = Field(ge=300)
    min_frequency: int = Field(ge=1)


class ModelParams(Section):
    hidden_size: int = Field(ge=8)
    intermediate_size: int = Field(ge=8)
    num_hidden_layers: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_key_value_heads: int = Field(ge=1)
    max_position_embeddings: int = Field(ge=16)
    rope_theta: float = Field(gt=0.0)
    tie_word_embeddings: bool


class TrainParams(Section):
    block_size: int = Field(ge=8)
    batch_size: int = Field(ge=1)
    gradient_accumulation_steps: int = Field(ge=1)
    max_steps: int = Field(ge=1)
    learning_rate: float = Field(gt=0.0)
    warmup_steps: int = Field(ge=0)
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"]
    weight_decay: float = Field(ge=0.0)
    max_grad_norm: float = Field(gt=0.0)
    logging_steps: int = Field(ge=1)
    eval_steps: int = Field(ge=1)
    save_steps: int = Field(ge=1)
    keep_checkpoints: bool


class PretrainParams(Section):
    init: Literal["scratch", "pretrained"]
    pretrained: PretrainedModel
    tokenizer: TokenizerParams
    model: ModelParams
    train: TrainParams

    def problems(self, root: Path) -> list[tuple[tuple[str, ...], str]]:
        out: list[tuple[tuple[str, ...], str]] = []
        m = self.model
        if m.hidden_size % m.num_attention_heads:
            out.append((("model", "num_attention_heads"),
                        f"must divide hidden_size ({m.hidden_size})"))
        if m.num_attention_heads % m.num_key_value_heads:
            out.append((("model", "num_key_value_heads"),
                        f"must divide num_attention_heads ({m.num_attention_heads})"))
        if self.init == "scratch" and self.train.block_size > m.max_position_embeddings:
            out.append((("train", "block_size"),
                        f"exceeds model.max_position_embeddings ({m.max_position_embeddings})"))
        if self.init == "pretrained":
            name = self.pretrained.name_or_path
            if name is None:
                out.append((("pretrained", "name_or_path"), "required when init is 'pretrained'"))
            else:
                problem = model_path_problem(name, root)
                if problem:
                    out.append((("pretrained", "name_or_path"), problem))
        return out

