"""``python -m medlab.finetune --recipe R --stage K [--seed S]``: train one stage of a recipe, as
``accelerate launch ... -m medlab.finetune`` runs it in every process (see medlab.finetune.run)."""

from __future__ import annotations

import argparse
import os

import torch

from medlab.config import load_params
from medlab.finetune.run import run_stage
from medlab.paths import project_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--stage", type=int, required=True)
    parser.add_argument("--seed", type=int, help="one of finetune.seeds (default: the first)")
    args = parser.parse_args(argv)
    params = load_params()
    if args.recipe not in params.finetune.recipes:
        parser.error(f"unknown recipe {args.recipe!r} (params.yaml finetune.recipes: "
                     f"{', '.join(params.finetune.recipes)})")
    world = int(os.environ.get("WORLD_SIZE", "1"))  # processes share the cores
    torch.set_num_threads(max(1, (params.base.torch_threads or os.cpu_count() or 1) // world))
    if args.seed is not None and args.seed not in params.finetune.seeds:
        parser.error(f"--seed {args.seed} is not in params.yaml finetune.seeds {params.finetune.seeds}")
    run_stage(params, args.recipe, args.stage, project_root(), seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

