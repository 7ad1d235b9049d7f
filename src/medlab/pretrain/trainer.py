"""Pre-training a causal LM on the corpus with the Hugging Face Trainer: fixed-length blocks
(``medlab.packing.pack_stream``), the trainer, and the perplexities the stage reports.
Resuming is ``medlab.checkpoints``; the run key ``medlab.cachekey`` (over ``CODE``).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import torch
from transformers import Trainer
from transformers.trainer_callback import PrinterCallback

# The modules a pre-training run is computed by: its checkpoints' key hashes their source
# and all they import (medlab.cachekey.result_key), so a run resumes only under the same code.
CODE = ("medlab.pretrain.trainer", "medlab.pretrain.model", "medlab.packing", "medlab.checkpoints",
        "medlab.runtime")


def unigram_perplexity(train_blocks: list[list[int]], eval_blocks: list[list[int]],
                       vocab_size: int) -> float:
    """Perplexity of an add-one unigram model fitted on train, on the tokens a causal
    LM predicts in eval (every token but the first of each block): the floor any LM
    that uses context must beat."""
    counts = Counter(t for block in train_blocks for t in block)
    total = sum(counts.values()) + vocab_size
    nll, n = 0.0, 0
    for block in eval_blocks:
        for t in block[1:]:
            nll -= math.log((counts.get(t, 0) + 1) / total)
            n += 1
    return math.exp(nll / n)


@torch.no_grad()
def perplexity(model, blocks: list[list[int]], batch_size: int) -> float:
    """exp(mean next-token NLL) over all blocks."""
    model.eval()
    device = next(model.parameters()).device
    nll, n = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        x = torch.tensor(blocks[i:i + batch_size], device=device)
        logits = model(input_ids=x).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum")
        nll += loss.item()
        n += x[:, 1:].numel()
    return math.exp(nll / n)


class BlockDataset(torch.utils.data.Dataset):
    """Fixed-length token blocks; labels = inputs (the model shifts them)."""

    def __init__(self, blocks: list[list[int]]):
        self.blocks = torch.tensor(blocks, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


def make_trainer(model, train_blocks: list[list[int]], valid_blocks: list[list[int]], cfg,
                 output_dir: Path, seed: int, callbacks: list | None = None, runtime=None) -> Trainer:
    """An HF Trainer for ``pretrain.train`` params, checkpointing into ``output_dir``; precision,
    activation checkpointing and CPU flags from the runtime (as fine-tuning gets them)."""
    from medlab.runtime import Runtime

    args = Runtime.of(runtime).training_arguments(
        output_dir=output_dir,
        seed=seed,
        save_steps=cfg.save_steps,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
    )
    trainer = Trainer(model=model, args=args, train_dataset=BlockDataset(train_blocks),
                      eval_dataset=BlockDataset(valid_blocks), callbacks=callbacks or [])
    trainer.remove_callback(PrinterCallback)  # one dict per log step is noise; see monitor.py
    return trainer
