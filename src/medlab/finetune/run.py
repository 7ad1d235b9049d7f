"""Run a fine-tuning recipe stage by stage, resumably; also the entry point for
``accelerate launch`` (several processes, one stage).

Every stage's work lives in ``.cache/medlab/finetune/<key>/`` (outside DVC's outputs,
which DVC deletes before rerunning a stage): ``checkpoints/`` (the trainer's, resumed
after a crash), ``model/`` (the stage's result, merged weights) and ``history.json``
(log history and token counts; written last, so its presence means "done"). The key
hashes everything that determines the stage: the starting model's files, this and every
earlier stage's spec and data files, the training settings and the seed. So a recipe
whose first stages equal another's (Hypnos' recipe and Hypnos + DPO) reuses them instead
of training them twice, and any change starts afresh.

    accelerate launch --config_file configs/accelerate/ddp.yaml -m medlab.finetune.run \\
        --recipe general_to_specific --stage 0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

from medlab.finetune import data as finetune_data
from medlab.finetune.schedule import priority_order, share_along
from medlab.finetune.sft import (
    IGNORE,
    load_model,
    lora_model,
    make_sft_trainer,
    pack,
    sft_collator,
    sft_config,
    token_stats,
    tokenize,
)
from medlab.records import write_json
from medlab.train.model import resolve_base
from medlab.train.monitor import ProgressCallback
from medlab.train.pretrain import files_digest, fingerprint, train_resumable


def stage_key(params, recipe: str, k: int, root: Path) -> str:
    """Fingerprint of stage ``k`` of ``recipe`` and everything before it."""
    ft = params.finetune
    base = resolve_base(root / "models" / "base")
    base_dir = Path(base["pretrained_model_name_or_path"])
    base_files = sorted(p for p in base_dir.glob("*") if p.is_file()) if base_dir.is_dir() else []
    stages = ft.recipes[recipe][:k + 1]
    datasets = {n: [p.model_dump() for p in ft.datasets[n]] for s in stages for n in s.data}
    files = sorted({root / f for parts in datasets.values() for part in parts for f in part["files"]})
    return fingerprint(
        [str(base), files_digest(base_files)], [s.model_dump() for s in stages], datasets,
        {str(f.relative_to(root)): d for f, d in zip(files, files_digest(files), strict=True)},
        ft.method, ft.lora.model_dump(), ft.rope_scaling.model_dump(), ft.train.model_dump(),
        ft.dpo.model_dump(), params.base.seed)


def stage_dir(params, recipe: str, k: int, root: Path) -> Path:
    return root / ".cache" / "medlab" / "finetune" / stage_key(params, recipe, k, root)


def is_done(directory: Path) -> bool:
    return (directory / "history.json").is_file() and (directory / "model" / "config.json").is_file()


def start_model_dir(params, recipe: str, k: int, root: Path) -> tuple[Path, dict]:
    """Where stage ``k`` starts: the base model, or the previous stage's result."""
    if k == 0:
        kwargs = resolve_base(root / "models" / "base")
        return Path(kwargs.pop("pretrained_model_name_or_path")), kwargs
    previous = stage_dir(params, recipe, k - 1, root)
    if not is_done(previous):
        raise RuntimeError(f"finetune.recipes.{recipe}[{k}] needs stage {k - 1} first (not found in {previous})")
    return previous / "model", {}


def sft_dataset(params, stage, tokenizer, root: Path, seed: int):
    """Tokenised, packed (or not) training rows for an SFT stage, and what went into them."""
    ft = params.finetune
    sources = {name: finetune_data.load_samples(ft.datasets[name], root, name) for name in stage.data}
    info: dict = {"samples": {n: len(v) for n, v in sources.items()}}
    if stage.schedule == "priority":
        order = priority_order({n: len(v) for n, v in sources.items()}, stage.priority or {},
                               stage.repeats or {}, seed)
        chats = [sources[n][i].messages for n, i in order]
        info["schedule"] = {n: [round(x, 4) for x in share_along(order, n)] for n in sources}
    else:
        chats = [s.messages for v in sources.values() for s in v]
    rows = tokenize(tokenizer, chats, ft.train.max_length)
    info["tokenized"] = token_stats(rows)
    if ft.train.packing != "none":
        window = ft.train.priority_window if stage.schedule == "priority" else None
        rows = pack(rows, ft.train.max_length, window)
        info["packed"] = token_stats(rows)
    return rows, info


def run_stage(params, recipe: str, k: int, root: Path, log=print) -> dict:
    """Train stage ``k`` of ``recipe`` (or reuse it); returns its history summary."""
    ft = params.finetune
    stage = ft.recipes[recipe][k]
    directory = stage_dir(params, recipe, k, root)
    if is_done(directory):
        log(f"[{recipe}:{stage.name}] reusing {directory.relative_to(root)} (same inputs, already trained)")
        return json.loads((directory / "history.json").read_text())
    torch.manual_seed(params.base.seed)
    start, kwargs = start_model_dir(params, recipe, k, root)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(start), **kwargs)
    model = load_model(start, rope=ft.rope_scaling if k == 0 else None, **kwargs)
    lr = stage.learning_rate
    started = time.perf_counter()
    if stage.kind == "sft":
        rows, info = sft_dataset(params, stage, tokenizer, root, params.base.seed)
        epochs = stage.epochs or ft.train.epochs
        config = sft_config(ft.train, directory / "checkpoints", epochs, lr or ft.train.learning_rate,
                            params.base.seed, ft.train.packing, ordered=stage.schedule == "priority")
        if ft.method == "lora":
            model = lora_model(model, ft.lora)
        per_step = ft.train.batch_size * ft.train.gradient_accumulation_steps
        tokens_per_step = int(info.get("packed", info["tokenized"])["tokens"] / max(len(rows), 1) * per_step)
        trainer = make_sft_trainer(model, tokenizer, rows, config,
                                   [ProgressCallback(tokens_per_step, label=f"{recipe}:{stage.name}")],
                                   data_collator=sft_collator(ft.train.packing, tokenizer))
    else:
        from medlab.finetune.dpo import dpo_config, make_dpo_trainer

        pairs = [p for name in stage.data for p in finetune_data.load_pairs(ft.datasets[name], root, name)]
        info = {"pairs": len(pairs)}
        epochs = stage.epochs or ft.dpo.epochs
        config = dpo_config(ft.dpo, ft.train, directory / "checkpoints", epochs, lr or ft.dpo.learning_rate,
                            params.base.seed)
        if ft.method == "lora":
            model = lora_model(model, ft.lora)
        trainer = make_dpo_trainer(model, tokenizer, pairs, config,
                                   [ProgressCallback(ft.dpo.max_length * ft.dpo.batch_size,
                                                     label=f"{recipe}:{stage.name}")])
    resumed = train_resumable(trainer)
    if not trainer.is_world_process_zero():
        return {}
    model = trainer.model
    if ft.method == "lora":
        if not ft.lora.merge:
            adapter = directory / "adapter"
            shutil.rmtree(adapter, ignore_errors=True)
            model.save_pretrained(adapter)  # adapter weights only (peft), before merging them in
        model = model.merge_and_unload()  # the next stage (and evaluation) starts from plain weights
    tmp = directory / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(directory / "model", ignore_errors=True)
    os.replace(tmp, directory / "model")
    summary = {"recipe": recipe, "stage": stage.name, "index": k, "kind": stage.kind, "epochs": epochs,
               "steps": trainer.state.global_step, "resumed": resumed,
               "world_size": trainer.args.world_size,
               "train_seconds_this_run": round(time.perf_counter() - started, 2),
               "start": str(start), "log_history": trainer.state.log_history, **info}
    write_json(directory / "history.json", summary)  # last: marks the stage done
    shutil.rmtree(directory / "checkpoints", ignore_errors=True)
    return summary


def publish(params, recipe: str, root: Path, out: Path) -> None:
    """Copy the recipe's final model to ``out`` (merged weights; or, with LoRA and
    ``merge: false``, the adapter plus the model it applies to under ``base_model/``)."""
    ft = params.finetune
    last = len(ft.recipes[recipe]) - 1
    final = stage_dir(params, recipe, last, root)
    shutil.rmtree(out, ignore_errors=True)
    if ft.method == "lora" and not ft.lora.merge:
        shutil.copytree(final / "adapter", out)
        start, _ = start_model_dir(params, recipe, last, root)
        shutil.copytree(start, out / "base_model")
        write_json(out / "medlab_adapter.json", {"base_model": "base_model", "adapter": "."})
    else:
        shutil.copytree(final / "model", out)


def load_finetuned(path: Path | str):
    """Model + tokenizer from a published recipe directory (merged, or adapter + base_model/)."""
    from transformers import AutoTokenizer

    path = Path(path)
    pointer = path / "medlab_adapter.json"
    if pointer.is_file():
        from peft import PeftModel

        base_dir = path / json.loads(pointer.read_text())["base_model"]
        model = PeftModel.from_pretrained(load_model(base_dir), str(path))
        return model, AutoTokenizer.from_pretrained(str(base_dir))
    return load_model(path), AutoTokenizer.from_pretrained(str(path))


def main(argv: list[str] | None = None) -> int:
    from medlab.config import load_params
    from medlab.paths import project_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--stage", type=int, required=True)
    args = parser.parse_args(argv)
    params = load_params()
    if args.recipe not in params.finetune.recipes:
        parser.error(f"unknown recipe {args.recipe!r} (params.yaml finetune.recipes: "
                     f"{', '.join(params.finetune.recipes)})")
    world = int(os.environ.get("WORLD_SIZE", "1"))  # processes share the cores
    torch.set_num_threads(max(1, (params.base.torch_threads or os.cpu_count() or 1) // world))
    run_stage(params, args.recipe, args.stage, project_root())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["IGNORE", "is_done", "load_finetuned", "publish", "run_stage", "stage_dir", "stage_key"]
