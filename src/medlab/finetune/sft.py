"""Supervised fine-tuning with TRL: chat template, loss on answers only, packing, LoRA.

* Tokenisation: the tokenizer's own chat template; labels are the assistant tokens
  (every assistant turn, end-of-turn token included) and every prompt token is -100:
  the loss is on responses only, and the model learns to stop. The mask comes from the
  template's ``{% generation %}`` markers (medlab's template) or, for stock templates
  without them, from rendering each turn's prefix (``medlab.finetune.masks``).
* Packing: samples are packed best-fit-decreasing (``medlab.packing.pack_rows``) into
  rows of at most ``max_length`` tokens, with per-sample ``position_ids`` from which
  transformers builds a block-diagonal mask (SDPA/eager) or varlen boundaries
  (FlashAttention) — no attention across samples (tests/test_finetune.py checks packed
  losses equal separate ones). Two layouts (``finetune.train.packing``):
  ``rows`` keeps a batch as batch_size rows (``PackedRowsCollator``); ``flat`` is TRL's
  padding-free batch, all rows flattened into one sequence. With a varlen kernel
  (FlashAttention on a GPU) flat wastes nothing; with dense attention (SDPA on a CPU) it
  computes (B*L)^2 scores instead of B*L^2, so ``rows`` is 1.6x faster there
  (benchmarks/packed_vs_padded.py).
  An ordered schedule (priority sampling) is packed window by window, so the order
  survives packing up to ``priority_window`` samples.
* Padded baseline (``packing: none``): each sample its own row, padded to the longest
  in the batch.
* Loss (``finetune.train.fused_loss``): TRL computes it with a fused, chunked LM head
  that never holds the whole logits tensor (batch x length x vocabulary) and recomputes
  chunks in the backward pass; that saves 4 x 512 x 152k x 4 B = 1.2 GB of fp32 logits
  per step for a Qwen-size vocabulary, but for the embedded model's 2,000-token
  vocabulary the logits are 16 MB and the recomputation costs 39% of each CPU step
  (one epoch of the general stage, best of three: 31.7 s fused vs 22.8 s
  over the full logits; benchmarks/sft_loss.py). ``auto`` fuses from 32,000 tokens of vocabulary up.
  The plain loss is the same cross-entropy on the same labels with the same normalisation
  (summed over answer tokens, divided by the batch's answer-token count), but the output
  layer runs on the *answer positions only* (``answer_only_loss``): a prompt position's
  logits are never read. Prompts are 40% of the positions (the general stage's data:
  194,749 of 326,310 tokens are answers) and the head is 40% of the embedded model's
  multiply-adds per token (2,000 x 128 = 256k against 389k in the two blocks), so that
  is ~16% of the matmul work and 40% of the log-softmax; measured on one epoch of the
  general stage: 17.5 s against 22.8 s, best of three (1.30x; 1.10-1.35x per interleaved
  repeat; per-step losses equal to 1e-5, benchmarks/sft_loss.py). Used for the architectures whose causal-LM head is the plain
  linear layer tested against the model's own loss (``ANSWER_ONLY_TYPES``: Llama,
  Qwen2/3, Mistral) and an unwrapped model; any other model (a soft-capped head,
  a DDP-wrapped model in a multi-process run) gets the model's own full-logits loss.
* LoRA (peft) or full fine-tuning; optional RoPE scaling for a longer context.
"""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoConfig, Trainer
from trl import SFTConfig, SFTTrainer

from medlab.finetune.masks import answer_masks

IGNORE = -100


def tokenize(tokenizer, chats: list[list[dict[str, str]]], max_length: int) -> Dataset:
    """input_ids + labels (assistant tokens only) per chat, cut to ``max_length`` tokens."""
    rows = []
    for ids, mask in answer_masks(tokenizer, chats):
        ids, mask = ids[:max_length], mask[:max_length]
        if not any(mask):
            continue  # the answer was cut off entirely: nothing to learn from
        rows.append({"input_ids": ids, "labels": [t if m else IGNORE for t, m in zip(ids, mask, strict=True)]})
    if not rows:
        raise ValueError("no sample has answer tokens within max_length")
    return Dataset.from_list(rows)


def token_stats(dataset: Dataset) -> dict[str, int]:
    """Tokens and trained (label) tokens in a tokenised or packed dataset."""
    tokens = sum(len(x) for x in dataset["input_ids"])
    trained = sum(sum(t != IGNORE for t in x) for x in dataset["labels"])
    return {"rows": len(dataset), "tokens": tokens, "trained_tokens": trained}


def rope_scaled_config(path: Path | str, rope):
    """The model's config with RoPE stretched by ``rope.factor`` (linear / dynamic NTK /
    YaRN) and the context limit raised accordingly; None if ``rope.type`` is null.
    Arithmetic: a model trained on 512 positions with factor 8 accepts 4,096 (ChiMed-GPT's
    context); linear scaling divides every rotation angle by 8 so that position 4,096
    looks like 512 did, and a short fine-tune on long samples adapts the model to it."""
    if rope.type is None:
        return None
    config = AutoConfig.from_pretrained(str(path))
    original = config.max_position_embeddings
    parameters = dict(getattr(config, "rope_parameters", None) or {})
    parameters.update({"rope_type": rope.type, "factor": float(rope.factor)})
    if rope.type in ("yarn", "dynamic"):
        parameters["original_max_position_embeddings"] = original
    config.rope_parameters = parameters
    config.max_position_embeddings = int(original * rope.factor)
    return config


def lora_targets(lora):
    """peft's ``target_modules``: ``auto`` = every linear projection inside the transformer
    blocks, whatever the family calls them (Llama/Qwen2/Mistral: q/k/v/o_proj,
    gate/up/down_proj; GPT-2: c_attn, c_proj, c_fc), the output head excluded -- peft's
    ``all-linear``; a list names them explicitly."""
    return "all-linear" if lora.target_modules == "auto" else list(lora.target_modules)


def lora_model(model, lora):
    """Wrap ``model`` with LoRA adapters (peft) on ``lora.target_modules``."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora_targets(lora), task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def load_model(path: Path | str, rope=None, runtime=None, training: str | None = None):
    """A causal LM from a local directory (safetensors) through the runtime, with RoPE
    scaling if configured; ``training``: full | lora (weights dtype, see medlab.runtime)."""
    from medlab.runtime import load_causal_lm

    config = rope_scaled_config(path, rope) if rope is not None else None
    return load_causal_lm(path, runtime, config=config, training=training)


def trainer_args(train, epochs: float, batch_size: int, learning_rate: float) -> dict:
    """Settings every fine-tuning stage (SFT or DPO) shares, from ``finetune.train`` and the
    stage's overrides; the rest (precision, checkpoints, seed) is ``Runtime.training_arguments``."""
    return dict(
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        logging_steps=train.logging_steps,
    )


def sft_config(train, output_dir: Path, epochs: float, learning_rate: float, seed: int, packing: str,
               ordered: bool, runtime=None) -> SFTConfig:
    """TRL settings for one SFT stage (``finetune.train`` plus the stage's overrides)."""
    from medlab.runtime import Runtime

    return Runtime.of(runtime).training_arguments(
        SFTConfig, output_dir=output_dir, seed=seed, save_steps=train.save_steps,
        **trainer_args(train, epochs, train.batch_size, learning_rate),
        padding_free=packing == "flat",
        max_length=None,  # sequences were cut and packed by tokenize()/pack_rows()
        dataset_kwargs={"skip_prepare_dataset": True},
        train_sampling_strategy="sequential" if ordered else "random",
    )


class PackedRowsCollator:
    """Packed rows kept as rows: a batch is ``batch_size`` rows right-padded to the longest,
    with per-sample ``position_ids`` and no ``attention_mask``, so transformers finds the
    sample boundaries in the positions and masks attention block-diagonally *within* each
    row (pad tokens get position 0: each is its own one-token sequence, label -100).
    Why not padding-free: flattening B rows of L tokens into one sequence makes a dense
    (CPU SDPA) attention compute (B*L)^2 scores instead of B*L^2 -- 4x more at B=4."""

    def __init__(self, pad_token_id: int):
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        self.inner = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, return_position_ids=True)

    def __call__(self, examples):
        batch = self.inner(examples)
        del batch["attention_mask"]  # present -> transformers would not look for packed samples
        return batch


def sft_collator(packing: str, tokenizer):
    """The batch collator for a packing layout (rows | flat | none); None = TRL's own."""
    return PackedRowsCollator(tokenizer.pad_token_id) if packing == "rows" else None


# From this vocabulary size up, ``fused_loss: auto`` keeps TRL's fused LM head (see the
# module doc): below it the full logits are small and recomputing them is the bigger cost.
FUSED_FROM_VOCAB = 32_000


def use_fused_loss(setting: str, model) -> bool:
    """``finetune.train.fused_loss`` (auto | fused | plain) for this model."""
    if setting == "auto":
        return model.get_output_embeddings().weight.shape[0] >= FUSED_FROM_VOCAB
    return setting == "fused"


# Causal-LM classes whose forward is ``logits = lm_head(model(...).last_hidden_state)``
# with nothing in between (no soft-capping or logit scale): the head can be applied to
# the answer positions alone. tests/test_finetune.py checks loss and gradients against
# the model's own loss on the toy model and on tiny Qwen2, Llama and Mistral models.
ANSWER_ONLY_TYPES = ("llama", "qwen2", "qwen3", "mistral")


def answer_only_parts(model):
    """(decoder, output layer) when the loss may skip prompt positions, else None."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: same modules
    config = getattr(inner, "config", None)
    if (getattr(config, "model_type", None) not in ANSWER_ONLY_TYPES or getattr(config, "final_logit_softcapping", None)
            or not type(inner).__name__.endswith("ForCausalLM") or not hasattr(inner, "model")):
        return None
    return inner.model, inner.get_output_embeddings()


def answer_only_loss(model, inputs: dict, num_items_in_batch=None):
    """The causal-LM loss with the output layer applied where a label is read: the
    decoder's hidden state at position t predicts token t+1, so the positions whose
    *next* label is not -100 (the same shift as transformers' ForCausalLMLoss); summed
    cross-entropy divided by ``num_items_in_batch`` (the Trainer's count over the
    accumulated batch) or by this batch's answer tokens. None if the model does not allow it."""
    parts = answer_only_parts(model)
    if parts is None:
        return None
    decoder, head = parts
    labels = inputs["labels"]
    # no KV cache: with one, transformers stops looking for packed samples in position_ids
    hidden = decoder(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    read = targets != IGNORE
    logits = head(hidden[:, :-1][read]).float()  # (answer tokens, vocabulary), not (batch, length, vocabulary)
    loss = torch.nn.functional.cross_entropy(logits, targets[read], reduction="sum")
    if num_items_in_batch is None:
        return loss / read.sum().clamp(min=1)
    return loss / torch.as_tensor(num_items_in_batch, device=loss.device)


class PlainLossSFTTrainer(SFTTrainer):
    """TRL's SFT trainer with the plain cross-entropy (the same labels and normalisation as
    the model's own loss) instead of TRL's fused, chunked LM head; on the answer positions
    only where ``answer_only_parts`` allows. It logs no entropy or token accuracy."""

    answer_only = True  # False: the model's own loss over every position (benchmarks/sft_loss.py's baseline)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        direct = self.answer_only and not return_outputs and model is self.accelerator.unwrap_model(model)
        loss = answer_only_loss(model, inputs, num_items_in_batch) if direct else None
        if loss is None:
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # as Trainer.compute_loss
        return loss


def make_sft_trainer(model, tokenizer, dataset: Dataset, config: SFTConfig, callbacks=None,
                     data_collator=None, fused_loss: str = "auto") -> SFTTrainer:
    cls = SFTTrainer if use_fused_loss(fused_loss, model) else PlainLossSFTTrainer
    trainer = cls(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                  callbacks=callbacks or [], data_collator=data_collator)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer
