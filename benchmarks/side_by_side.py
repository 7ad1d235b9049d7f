"""A seeded recipe's seeds: one after another (all threads) vs side by side (one process per seed).

    python benchmarks/side_by_side.py [--recipe specific_only] [--repeats 2]

The real code path on the default data (run `dvc repro filter pretrain` first): every
stage of ``--recipe`` for each of ``finetune.seeds``, twice per repeat, alternating:

* ``sequential``    ``finetune.parallel_seeds: false``: ``run_stage`` for each seed in turn
                    in one process with ``base.torch_threads`` threads (the pipeline until
                    stop 30);
* ``side_by_side``  ``medlab.finetune.side_by_side.train_seeds``: one process per seed,
                    ``base.torch_threads // seeds`` threads each, all at once.

Each run trains from scratch in its own scratch root (links to data/, models/, samples/
and configs/; an empty stage cache). Measured: wall time for all seeds, and each seed's
final training loss (the two ways differ only in the last bits: threads change the
order of sums). Writes benchmarks/results/side_by_side_<recipe>.json. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODES = ("sequential", "side_by_side")


def scratch_root(base: Path) -> Path:
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    for name in ("data", "models", "samples", "configs", "external", "ratings"):
        if (ROOT / name).exists():
            (base / name).symlink_to(ROOT / name)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy2(ROOT / name, base / name)
    return base


def one_mode(mode: str, recipe: str, root: Path) -> dict:
    """All seeds of ``recipe`` in ``mode``, in this process (side_by_side: its children)."""
    import torch

    from medlab.config import load_params
    from medlab.finetune.run import recipe_seeds, run_stage
    from medlab.finetune.side_by_side import train_seeds, training_threads

    params = load_params(root / "params.yaml")
    params = params.model_copy(update={"finetune": params.finetune.model_copy(
        update={"parallel_seeds": mode == "side_by_side"})})
    seeds = recipe_seeds(params, recipe)
    stages = range(len(params.finetune.recipes[recipe]))
    threads = training_threads(params, recipe)
    start = time.perf_counter()
    if mode == "side_by_side":
        train_seeds(params, recipe, seeds, root, log=lambda *_: None)
    else:
        torch.set_num_threads(threads)
    losses = {}
    for seed in seeds:  # side_by_side: reads what the processes saved
        for k in stages:
            summary = run_stage(params, recipe, k, root, log=lambda *_: None, seed=seed)
        losses[str(seed)] = [h["train_loss"] for h in summary["log_history"] if "train_loss" in h][-1]
    return {"mode": mode, "seconds": round(time.perf_counter() - start, 2), "threads_per_training": threads,
            "seeds": seeds, "final_train_loss": {s: round(v, 4) for s, v in losses.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="specific_only")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # internal: run one mode here
    parser.add_argument("--scratch", default=str(ROOT / ".cache" / "medlab" / "bench_side_by_side"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_mode(args.one, args.recipe, Path(args.scratch))))
        return
    env = dict(os.environ, TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false")
    runs = []
    for repeat in range(args.repeats):
        for mode in MODES:
            scratch = scratch_root(Path(args.scratch) / mode)
            cmd = [sys.executable, __file__, "--one", mode, "--recipe", args.recipe, "--scratch", str(scratch)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=scratch)
            if done.returncode:
                sys.exit(f"{mode} failed:\n{done.stderr[-4000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]) | {"repeat": repeat})
            r = runs[-1]
            print(f"{mode:>12} (repeat {repeat}): {len(r['seeds'])} seeds in {r['seconds']:.1f} s, "
                  f"{r['threads_per_training']} thread(s) each · final losses {r['final_train_loss']}", flush=True)
    best = {m: min(r["seconds"] for r in runs if r["mode"] == m) for m in MODES}
    pairs = [round(a["seconds"] / b["seconds"], 2) for a, b in zip(runs[::2], runs[1::2], strict=True)]
    summary = {"best_seconds": best, "speedup_best": round(best["sequential"] / best["side_by_side"], 2),
               "speedup_per_repeat": pairs}
    print(f"side by side: {summary['speedup_best']:.2f}x (best of {args.repeats}: {best['sequential']:.1f} s vs "
          f"{best['side_by_side']:.1f} s; per repeat {pairs})")
    from medlab.records import write_json

    write_json(HERE / "results" / f"side_by_side_{args.recipe}.json",
               {"recipe": args.recipe, "summary": summary, "runs": runs,
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}})


if __name__ == "__main__":
    main()
