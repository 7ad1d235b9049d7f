"""``python -m medlab.finetune --recipe R [--stage K] [--seed S] [--threads N]``: train one
stage of a recipe (every stage in order without ``--stage``), as ``accelerate launch ...
-m medlab.finetune`` runs it in every process (see medlab.finetune.run) and as
medlab.finetune.side_by_side runs one seed per process."""

from __future__ import annotations

import argparse
import os

import torch

from medlab.config import load_params
from medlab.finetune.run import run_stage
from medlab.finetune.side_by_side import training_threads
from medlab.paths import project_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--stage", type=int, help="stage index (default: every stage, in order)")
    parser.add_argument("--seed", type=int, help="one of finetune.seeds (default: the first)")
    parser.add_argument("--threads", type=int, help="torch threads (default: what params.yaml gives this recipe)")
    args = parser.parse_args(argv)
    params = load_params()
    if args.recipe not in params.finetune.recipes:
        parser.error(f"unknown recipe {args.recipe!r} (params.yaml finetune.recipes: "
                     f"{', '.join(params.finetune.recipes)})")
    if args.seed is not None and args.seed not in params.finetune.seeds:
        parser.error(f"--seed {args.seed} is not in params.yaml finetune.seeds {params.finetune.seeds}")
    stages = range(len(params.finetune.recipes[args.recipe]))
    if args.stage is not None and args.stage not in stages:
        parser.error(f"--stage {args.stage}: {args.recipe} has stages 0..{len(stages) - 1}")
    world = int(os.environ.get("WORLD_SIZE", "1"))  # under a launcher, its processes share the cores
    torch.set_num_threads(args.threads or (training_threads(params, args.recipe) if world == 1 or
                                           params.finetune.launcher.kind == "accelerate" else
                                           max(1, (params.base.torch_threads or os.cpu_count() or 1) // world)))
    for k in stages if args.stage is None else [args.stage]:
        run_stage(params, args.recipe, k, project_root(), seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
