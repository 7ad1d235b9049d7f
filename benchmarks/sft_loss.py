"""SFT loss, three ways side by side: TRL's fused, chunked LM head; the model's own
cross-entropy over every position; the same cross-entropy with the head on answer positions only.

    python benchmarks/sft_loss.py [--recipe general_to_specific] [--epochs 1] [--repeats 2]

The real code path (medlab.finetune.sft: packed rows, the pipeline's settings, full
fine-tuning of models/base; run `dvc repro filter` first) trains the recipe's first SFT
stage for ``--epochs`` three times per repeat, alternating, each in a fresh process:
``fused`` (``finetune.train.fused_loss: fused``), ``full`` (``plain`` with
``PlainLossSFTTrainer.answer_only = False``: the model's loss over the full logits, the
pipeline's path until stop 30) and ``plain`` (the pipeline's ``auto`` for a small
vocabulary: the head on answer positions only). Measured: wall time of train(), steps/s,
and the per-step training loss of each (same batches, same seed): how far apart the
losses are is float rounding of the same quantity, not a different objective.
Writes benchmarks/results/sft_loss.json. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOSSES = ("fused", "full", "plain")


def one_run(loss: str, recipe: str, epochs: float, out_dir: Path) -> dict:
    """Train in this process with ``fused_loss=loss``; returns its measurements."""
    import torch

    from medlab.config import load_params
    from medlab.finetune.run import load_start, sft_dataset
    from medlab.finetune.sft import make_sft_trainer, sft_collator, sft_config, use_fused_loss

    params = load_params(ROOT / "params.yaml")
    torch.set_num_threads(params.base.torch_threads or os.cpu_count() or 1)
    ft = params.finetune
    k, stage = next((k, s) for k, s in enumerate(ft.recipes[recipe]) if s.kind == "sft")
    torch.manual_seed(params.base.seed)
    model, tokenizer, _ = load_start(params, recipe, k, ROOT, training="full")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows, _ = sft_dataset(params, stage, tokenizer, ROOT, params.base.seed)
    config = sft_config(ft.train, out_dir / loss, epochs, ft.train.learning_rate, params.base.seed,
                        ft.train.packing, ordered=False, runtime=params)
    config.save_strategy = "no"
    config.logging_steps = 1  # every step's loss, to compare the two
    trainer = make_sft_trainer(model, tokenizer, rows, config, data_collator=sft_collator(ft.train.packing, tokenizer),
                               fused_loss="plain" if loss == "full" else loss)
    trainer.answer_only = loss == "plain"
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    return {"loss": loss, "fused": use_fused_loss("plain" if loss == "full" else loss, model), "steps": result.global_step,
            "seconds": round(seconds, 2), "steps_per_s": round(result.global_step / seconds, 3),
            "vocabulary": model.get_output_embeddings().weight.shape[0],
            "step_losses": [round(h["loss"], 5) for h in trainer.state.log_history if "loss" in h]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="general_to_specific", help="its first SFT stage is trained")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2, help="alternating fused/full/plain runs per loss")
    parser.add_argument("--one", choices=LOSSES, help=argparse.SUPPRESS)  # internal: run one here
    parser.add_argument("--scratch", default=str(ROOT / ".cache" / "medlab" / "bench_sft_loss"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.recipe, args.epochs, Path(args.scratch))))
        return
    env = dict(os.environ, TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false")
    runs = []
    for repeat in range(args.repeats):
        for loss in LOSSES:
            cmd = [sys.executable, __file__, "--one", loss, "--recipe", args.recipe, "--epochs", str(args.epochs),
                   "--scratch", args.scratch]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{loss} failed:\n{done.stderr[-4000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]) | {"repeat": repeat})
            r = runs[-1]
            print(f"{loss:>5} (repeat {repeat}): {r['steps']} steps in {r['seconds']:.1f} s "
                  f"({r['steps_per_s']:.2f} steps/s) · final loss {r['step_losses'][-1]:.4f}", flush=True)
    best = {loss: min(r["seconds"] for r in runs if r["loss"] == loss) for loss in LOSSES}
    first = {x: next(r for r in runs if r["loss"] == x) for x in LOSSES}

    def gap(a: str, b: str) -> float:
        return max(abs(x - y) for x, y in zip(first[a]["step_losses"], first[b]["step_losses"], strict=True))

    summary = {"plain_vs_fused_speedup": round(best["fused"] / best["plain"], 2),
               "plain_vs_full_speedup": round(best["full"] / best["plain"], 2),
               "best_seconds": best, "max_step_loss_gap_plain_vs_full": round(gap("plain", "full"), 6),
               "max_step_loss_gap_plain_vs_fused": round(gap("plain", "fused"), 6)}
    print(f"answer-only plain loss (best of {args.repeats}): {best['plain']:.1f} s · full logits {best['full']:.1f} s "
          f"({summary['plain_vs_full_speedup']:.2f}x) · fused {best['fused']:.1f} s "
          f"({summary['plain_vs_fused_speedup']:.2f}x) · largest per-step loss gap vs full "
          f"{summary['max_step_loss_gap_plain_vs_full']:.1e}, vs fused {summary['max_step_loss_gap_plain_vs_fused']:.1e}")
    from medlab.records import write_json

    write_json(HERE / "results" / "sft_loss.json",
               {"recipe": args.recipe, "epochs": args.epochs, "summary": summary,
                "runs": [{k: v for k, v in r.items() if k != "step_losses"} for r in runs],
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}})


if __name__ == "__main__":
    main()
