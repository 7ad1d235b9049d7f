"""SFT on the same data: padding-free packing vs padded batches.

    python benchmarks/packed_vs_padded.py [--recipe specific_only] [--samples 0] [--epochs 1]

One epoch of the recipe's first SFT stage (the real code path: medlab.finetune.sft,
TRL's SFTTrainer, full fine-tuning of models/base; run `dvc repro filter` first), four ways:

* ``packed_rows``     best-fit-decreasing packing into rows of max_length, batch_size
                      rows per step, per-sample positions, no attention across samples
                      (the pipeline's ``packing: rows``);
* ``packed_flat``     the same rows flattened into one padding-free sequence per batch
                      (TRL's padding_free, ``packing: flat``);
* ``padded_max``      one sample per row, every batch padded to max_length (fixed shapes,
                      what a static-shape setup or ``padding="max_length"`` does);
* ``padded_longest``  one sample per row, padded to the longest in the batch (TRL's
                      collator without packing: the pipeline's ``packing: none``);
* ``padded_grouped``  as padded_longest, with batches of similar lengths
                      (``train_sampling_strategy="group_by_length"``): the strongest
                      padded baseline.

Every mode sees the same samples and the same answer tokens, with batch_size rows per
step (packed rows hold several samples each, so packed takes fewer steps). Measured:

* effective tokens/s = real (non-padding) tokens of the epoch / wall time of train();
* padding fraction   = padding tokens / all token positions the model computed on,
  counted from the trainer's own dataloader;
* peak memory        = on CPU, the peak resident set of a fresh process per mode minus
  its resident set just before train() (model, data and libraries loaded); on CUDA,
  torch.cuda.max_memory_allocated.

Each mode runs in its own process so peaks do not mix. Writes
benchmarks/results/packed_vs_padded.json. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODES = ("packed_rows", "packed_flat", "padded_max", "padded_longest", "padded_grouped")


def rss_mib() -> float:
    """Current resident set (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def one_mode(mode: str, recipe: str, samples: int, epochs: float, out_dir: Path) -> dict:
    """Train one epoch in ``mode`` in this process; returns its measurements."""
    import torch
    from transformers import AutoTokenizer

    from medlab.config import load_params
    from medlab.finetune.run import sft_dataset
    from medlab.finetune.sft import (
        IGNORE,
        load_model,
        make_sft_trainer,
        sft_collator,
        sft_config,
    )
    from medlab.packing import pack_rows
    from medlab.runtime import resolve_base

    params = load_params(ROOT / "params.yaml")
    ft = params.finetune
    stage = next(s for s in ft.recipes[recipe] if s.kind == "sft")
    base = resolve_base(ROOT / "models" / "base")
    path = base["pretrained_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(base["tokenizer_path"], revision=base["revision"])
    unpacked = params.model_copy(update={"finetune": ft.model_copy(update={
        "train": ft.train.model_copy(update={"packing": "none"})})})  # tokenised rows; packed below if asked
    rows, _ = sft_dataset(unpacked, stage, tokenizer, ROOT, params.base.seed)
    if samples:
        rows = rows.shuffle(seed=params.base.seed).select(range(min(samples, len(rows))))
    n_samples = len(rows)
    packing = {"packed_rows": "rows", "packed_flat": "flat"}.get(mode, "none")
    if packing != "none":
        rows = pack_rows(rows, ft.train.max_length)
    config = sft_config(ft.train, out_dir / mode, epochs, ft.train.learning_rate, params.base.seed,
                        packing=packing, ordered=False)
    config.save_strategy = "no"
    config.logging_steps = 10**6  # no logging work inside the timed loop
    if mode == "padded_max":
        config.pad_to_multiple_of = ft.train.max_length
    if mode == "padded_grouped":
        config.train_sampling_strategy = "group_by_length"  # transformers 5: was group_by_length=True
    torch.manual_seed(params.base.seed)
    model = load_model(path, runtime=params, training="full")
    trainer = make_sft_trainer(model, tokenizer, rows, config, data_collator=sft_collator(packing, tokenizer))
    positions = real = trained = 0  # what the model will compute on, counted from its own batches
    for batch in trainer.get_train_dataloader():
        positions += batch["input_ids"].numel()
        if "attention_mask" in batch:
            real += int(batch["attention_mask"].sum())
        elif packing == "rows":  # no attention mask: the pad token is never in the text
            real += int((batch["input_ids"] != tokenizer.pad_token_id).sum())
        else:
            real += batch["input_ids"].numel()
        trained += int((batch["labels"] != IGNORE).sum())
    positions, real, trained = (int(x * epochs) for x in (positions, real, trained))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = rss_mib()
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mib() - before
    return {"mode": mode, "samples": n_samples, "rows": len(rows), "steps": result.global_step,
            "seconds": round(seconds, 2), "real_tokens": real, "trained_tokens": trained,
            "positions": positions, "padding_fraction": round(1 - real / positions, 4),
            "effective_tokens_per_s": round(real / seconds, 1),
            "peak_memory_mib": round(peak, 1), "memory_kind": "cuda allocated" if cuda else "cpu rss increase",
            "train_loss": round(result.training_loss, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="specific_only", help="its first SFT stage's data is used")
    parser.add_argument("--samples", type=int, default=0, help="a random subset of this many samples (0: all)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # internal: run one mode here
    parser.add_argument("--scratch", default=str(ROOT / ".cache" / "medlab" / "bench_packing"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_mode(args.one, args.recipe, args.samples, args.epochs, Path(args.scratch))))
        return
    env = dict(os.environ, TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false")
    rows = []
    for mode in args.modes:
        cmd = [sys.executable, __file__, "--one", mode, "--recipe", args.recipe, "--samples", str(args.samples),
               "--epochs", str(args.epochs), "--scratch", args.scratch]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{mode} failed:\n{done.stderr[-4000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{mode:>15}: {row['steps']:>4} steps {row['seconds']:7.1f} s  "
              f"{row['effective_tokens_per_s']:>8,.0f} real tok/s  padding {row['padding_fraction']:.1%}  "
              f"peak +{row['peak_memory_mib']:,.0f} MiB  loss {row['train_loss']:.3f}", flush=True)
    by = {r["mode"]: r for r in rows}
    ratios = {}
    if "packed_rows" in by:
        ratios = {f"packed_rows_vs_{m}": round(by["packed_rows"]["effective_tokens_per_s"]
                                               / by[m]["effective_tokens_per_s"], 2)
                  for m in by if m != "packed_rows"}
        for name, value in ratios.items():
            print(f"{name}: {value:.2f}x effective tokens/s")
    from medlab.records import write_json

    write_json(HERE / "results" / "packed_vs_padded.json",
               {"recipe": args.recipe, "epochs": args.epochs, "runs": rows, "ratios": ratios,
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "torch_threads": __import__("torch").get_num_threads()}})


if __name__ == "__main__":
    main()
