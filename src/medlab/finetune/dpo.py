"""Direct preference optimisation with TRL on the filter's preference pairs.

The prompt is the conversation up to the answer, ``chosen`` the answer the filter kept
and ``rejected`` the one it dropped. The reference model is the policy's starting point
(the previous SFT stage): TRL copies it for full fine-tuning, and with LoRA uses the
base weights with the adapter switched off (no second copy in memory).
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from medlab.finetune.sft import bf16_available, cpu_settings
from medlab.records import PreferencePair


def pairs_dataset(pairs: list[PreferencePair]) -> Dataset:
    return Dataset.from_list([
        {"prompt": p.prompt, "chosen": [{"role": "assistant", "content": p.chosen}],
         "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs])


def dpo_config(dpo, train, output_dir: Path, epochs: float, learning_rate: float, seed: int) -> DPOConfig:
    return DPOConfig(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=dpo.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        logging_steps=train.logging_steps,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=1,
        seed=seed,
        data_seed=seed,
        beta=dpo.beta,
        loss_type=[dpo.loss_type],
        max_length=dpo.max_length,
        gradient_checkpointing=train.gradient_checkpointing,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        bf16=bf16_available(),  # TRL defaults to bf16; a CPU trains in fp32
        **cpu_settings(),
        report_to="none",
        disable_tqdm=True,
        log_level="warning",
    )


def make_dpo_trainer(model, tokenizer, pairs: list[PreferencePair], config: DPOConfig, callbacks=None) -> DPOTrainer:
    trainer = DPOTrainer(model=model, args=config, train_dataset=pairs_dataset(pairs), processing_class=tokenizer,
                         callbacks=callbacks or [])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer
