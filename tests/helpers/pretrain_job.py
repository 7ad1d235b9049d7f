"""A tiny pre-training run for the crash/resume test: python pretrain_job.py CKPT_DIR OUT.pt

Trains a 1-layer Llama on synthetic Chinese text with medlab's Trainer setup,
checkpointing every 10 steps; sleeps a little per step so a test can kill it mid-run.
"""

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import TrainerCallback

from medlab.checkpoints import train_resumable
from medlab.packing import pack_stream
from medlab.pretrain.model import build_llama
from medlab.pretrain.tokenizer import train_tokenizer
from medlab.pretrain.trainer import make_trainer
from medlab.seeding import seed_everything


class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.05)


def main(checkpoints: Path, out: Path) -> None:
    seed_everything(7, 1)
    texts = [f"第{i}号药物可用于治疗第{i % 7}类疾病，常见不良反应为第{i % 5}种症状。" for i in range(200)]
    tokenizer = train_tokenizer(texts, 400, 2, 128)
    blocks = pack_stream(tokenizer(texts, add_special_tokens=False)["input_ids"], 32, tokenizer.eos_token_id)
    model_cfg = SimpleNamespace(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, max_position_embeddings=64, rope_theta=10000.0,
                                tie_word_embeddings=True)
    model = build_llama(model_cfg, len(tokenizer), tokenizer.eos_token_id, tokenizer.eos_token_id,
                        tokenizer.pad_token_id)
    train_cfg = SimpleNamespace(max_steps=60, batch_size=4, gradient_accumulation_steps=1, learning_rate=3e-3,
                                lr_scheduler="cosine", warmup_steps=5, weight_decay=0.1, max_grad_norm=1.0,
                                logging_steps=5, eval_steps=30, save_steps=10)
    trainer = make_trainer(model, blocks[:-4], blocks[-4:], train_cfg, checkpoints, seed=7, callbacks=[Slow()])
    resumed = train_resumable(trainer)
    print(f"RESUMED={resumed}", flush=True)
    torch.save({k: v.clone() for k, v in trainer.model.state_dict().items()}, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
