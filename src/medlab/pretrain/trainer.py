"""Pre-training a causal LM on the corpus with the Hugging Face Trainer, resumably.

Packing: documents are tokenised, each followed by EOS, concatenated and cut into
``block_size`` blocks, so no step wastes compute on padding (pre-training attends
across document boundaries, as GPT-style pre-training does).

Resume: checkpoints go to ``.cache/medlab/checkpoints/pretrain/<fingerprint>``,
outside DVC's outputs (DVC deletes outputs before rerunning a stage). The
fingerprint hashes everything that changes the run (params, data, seed), so a rerun
after a crash or Ctrl-C resumes the same run, and a changed run starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback


def pack(token_lists: Iterable[Sequence[int]], block_size: int, eos_id: int) -> list[list[int]]:
    """Concatenate documents (each + EOS) and cut into full blocks; the tail is dropped."""
    stream: list[int] = []
    for tokens in token_lists:
        stream.extend(tokens)
        stream.append(eos_id)
    n = len(stream) // block_size
    return [stream[i * block_size:(i + 1) * block_size] for i in range(n)]


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


def fingerprint(*parts: object) -> str:
    """Short stable hash of JSON-able parts (params, data hashes, seed)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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

    args = TrainingArguments(
        output_dir=str(output_dir),
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
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=1,  # the last checkpoint is all a resume needs
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,  # CPU default; avoids a warning per epoch
        **Runtime.of(runtime).trainer_precision(),
        report_to="none",  # DVCLive is written from the log history at the end
        disable_tqdm=True,
        log_level="warning",
    )
    trainer = Trainer(model=model, args=args, train_dataset=BlockDataset(train_blocks),
                      eval_dataset=BlockDataset(valid_blocks), callbacks=callbacks or [])
    trainer.remove_callback(PrinterCallback)  # one dict per log step is noise; see monitor.py
    return trainer


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` whose save finished; half-written newer ones are removed.

    The Trainer writes a checkpoint as weights -> optimizer/scheduler -> RNG ->
    ``trainer_state.json``, and deletes the older checkpoint (save_total_limit) only
    after that. A kill during the save therefore leaves checkpoint-N without a
    readable trainer_state.json next to a complete checkpoint-(N - save_steps):
    resume from the complete one and drop the torn one, which the Trainer would
    otherwise pick (transformers' get_last_checkpoint only looks at the name).
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    steps = sorted((int(m.group(1)), d) for d in output_dir.iterdir()
                   if d.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", d.name)))
    for _, ckpt in reversed(steps):
        try:
            json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
            return ckpt
        except (OSError, ValueError):
            print(f"[resume] {ckpt} is incomplete (killed while saving); removing it", flush=True)
            shutil.rmtree(ckpt, ignore_errors=True)
    return None


def train_resumable(trainer: Trainer) -> bool:
    """Train, resuming from the last complete checkpoint in the output dir; True if it resumed."""
    last = last_complete_checkpoint(Path(trainer.args.output_dir))
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    return last is not None


def clear_checkpoints(output_dir: Path) -> None:
    shutil.rmtree(output_dir, ignore_errors=True)


def files_digest(paths: Iterable[Path]) -> list[str]:
    """SHA-256 of each file's bytes, for run fingerprints."""
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]
