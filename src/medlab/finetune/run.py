"""Run a fine-tuning recipe stage by stage, resumably (``python -m medlab.finetune`` runs one
stage in each process of ``accelerate launch``).

Every stage's work lives in ``.cache/medlab/finetune/<key>/`` (outside DVC's outputs,
which DVC deletes before rerunning a stage): ``checkpoints/`` (the trainer's, resumed
after a crash), the stage's result and ``history.json`` (log history and token counts;
written last, so its presence means "done"). The result is ``model/`` (full weights:
full fine-tuning, or LoRA with ``merge: true``) or ``adapter/`` alone (LoRA with
``merge: false``: a few MB per stage; the next stage and the evaluation load the base
model and apply the earlier stages' adapters in order). The key hashes everything that
determines the stage: the fine-tuning code (``CODE`` and all it imports), the base
model's fingerprint (medlab.runtime), this and every earlier stage's spec and data files,
the training settings, the runtime and the seed.

Seeds (``finetune.seeds``): the first trains the published model
``models/finetune/<recipe>/``; a recipe in ``finetune.seeded_recipes`` is trained again
with every further seed (all its stages: data order, priority draw, dropout) and each
copy is published under ``models/finetune/<recipe>/seeds/s<seed>/``, for claims that
hold over seeds, not for one draw (medlab.evaluate.compare).
So a recipe whose first stages equal another's (Hypnos' recipe and Hypnos + DPO) reuses
them instead of training them twice, and any change starts afresh.

Disk per recipe (a model of P parameters; fp32 full fine-tuning saves 4P bytes, a
bf16 model 2P): full fine-tuning keeps one weight copy per stage in the cache and the
published recipe hard-links the last one (no second copy on the same filesystem;
DVC's cache adds its own unless ``cache.type`` is a link type); LoRA with ``merge:
false`` keeps adapters only (r x (d_in + d_out) parameters per adapted matrix: every
projection of Llama-3-8B at r=16 is 42M parameters, 168 MB in fp32) and publishes them
with a pointer to ``models/base``.

    accelerate launch --config_file configs/accelerate/ddp.yaml -m medlab.finetune \\
        --recipe general_to_specific --stage 0
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from medlab.cachekey import file_hashes, result_key
from medlab.finetune import data as finetune_data
from medlab.finetune.schedule import priority_order, share_along
from medlab.finetune.side_by_side import training_threads
from medlab.records import write_json
from medlab.runtime import Runtime, drop_load_only_keys, resolve_base, save_tokenizer
from medlab.runtime import fingerprint as model_fingerprint

# The trainers (medlab.finetune.sft and .dpo, medlab.checkpoints, medlab.packing,
# medlab.monitor's callback) are imported inside the functions that train: they import
# transformers' Trainer, TRL and datasets (4-5 s a process on 2 cores), which the stage's
# notebook -- it launches the seeds' training processes, then reuses and publishes what
# they trained -- never needs. medlab.codegraph counts function-level imports, so CODE's
# closure (the stage key) and the DVC deps still cover them.
# The modules a fine-tuning stage is computed by: every stage key hashes their source and
# all they import (masks, packing, the trainers, the runtime: medlab.cachekey.result_key),
# so an edit to the label masking trains afresh instead of reusing an older stage.
CODE = ("medlab.finetune.run",)


def recipe_seeds(params, recipe: str) -> list[int]:
    """The seeds ``recipe`` is trained with: all of ``finetune.seeds`` for a recipe in
    ``finetune.seeded_recipes``, the first alone otherwise."""
    ft = params.finetune
    return list(ft.seeds) if recipe in ft.seeded_recipes else list(ft.seeds[:1])


def seed_dir(out: Path, seed: int) -> Path:
    """Where a further seed's copy of a published recipe lives (inside the recipe's folder)."""
    return out / "seeds" / f"s{seed}"


def stage_key(params, recipe: str, k: int, root: Path, seed: int | None = None) -> str:
    """Fingerprint of stage ``k`` of ``recipe`` and everything before it, of the code, of
    the seed (default: the first of ``finetune.seeds``) and of the torch threads it
    trains with (``side_by_side.training_threads``: the last bits of the weights depend on them)."""
    ft = params.finetune
    base = resolve_base(root / "models" / "base")
    stages = ft.recipes[recipe][:k + 1]
    datasets = {n: [p.model_dump() for p in ft.datasets[n]] for s in stages for n in s.data}
    files = sorted({root / f for parts in datasets.values() for part in parts for f in part["files"]})
    return result_key(
        "finetune", CODE,
        [str(base), model_fingerprint(base["pretrained_model_name_or_path"], base.get("revision", "main"))],
        [s.model_dump() for s in stages], datasets,
        {str(f.relative_to(root)): d for f, d in zip(files, file_hashes(files), strict=True)},
        ft.method, ft.lora.model_dump(), ft.rope_scaling.model_dump(), ft.train.model_dump(),
        ft.dpo.model_dump(), Runtime.of(params).describe(), ft.seeds[0] if seed is None else seed,
        {"torch_threads": training_threads(params, recipe)})


def stage_dir(params, recipe: str, k: int, root: Path, seed: int | None = None) -> Path:
    return root / ".cache" / "medlab" / "finetune" / stage_key(params, recipe, k, root, seed)


def adapters_only(params) -> bool:
    return params.finetune.method == "lora" and not params.finetune.lora.merge


def is_done(directory: Path) -> bool:
    result = directory / "model" / "config.json"
    return (directory / "history.json").is_file() and (result.is_file() or
                                                      (directory / "adapter" / "adapter_config.json").is_file())


def load_start(params, recipe: str, k: int, root: Path, training: str, seed: int | None = None):
    """Model and tokenizer stage ``k`` starts from, and a name for it: the base model (with
    RoPE scaling if configured), the previous stage's weights, or -- adapters only -- the
    base with every earlier stage's adapter merged in, in order."""
    from medlab.finetune.sft import load_model, rope_scaled_config
    from medlab.runtime import load_causal_lm, load_tokenizer

    runtime = Runtime.of(params)
    base = resolve_base(root / "models" / "base")
    base_path, revision = base["pretrained_model_name_or_path"], base.get("revision", "main")
    previous = [stage_dir(params, recipe, j, root, seed) for j in range(k)]
    for j, directory in enumerate(previous):
        if not is_done(directory):
            raise RuntimeError(f"finetune.recipes.{recipe}[{k}] needs stage {j} first (not found in {directory})")
    if k and not adapters_only(params):
        start = previous[-1] / "model"
        return load_model(start, runtime=runtime, training=training), load_tokenizer(start, runtime), str(start)
    rope = params.finetune.rope_scaling
    config = rope_scaled_config(base_path, rope) if rope.type is not None else None
    remote = base["trust_remote_code"]
    model = load_causal_lm(base_path, runtime, revision, config=config, training=training, trust_remote_code=remote)
    tokenizer = (load_tokenizer(previous[-1] / "adapter", runtime) if previous
                 else load_tokenizer(base["tokenizer_path"], runtime, revision, trust_remote_code=remote))
    if previous:
        from peft import PeftModel

        for directory in previous:  # stage j's adapter was trained on top of stages < j
            model = PeftModel.from_pretrained(model, str(directory / "adapter")).merge_and_unload()
        return model, tokenizer, f"{base_path} + adapters of stages 0..{k - 1}"
    return model, tokenizer, str(base_path)


def sft_dataset(params, stage, tokenizer, root: Path, seed: int):
    """Tokenised, packed (or not) training rows for an SFT stage, and what went into them."""
    from medlab.finetune.sft import token_stats, tokenize
    from medlab.packing import pack_rows

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
        rows = pack_rows(rows, ft.train.max_length, window)
        info["packed"] = token_stats(rows)
    return rows, info


def run_stage(params, recipe: str, k: int, root: Path, log=print, seed: int | None = None) -> dict:
    """Train stage ``k`` of ``recipe`` with ``seed`` (default: the first of
    ``finetune.seeds``), or reuse it; returns its history summary."""
    ft = params.finetune
    seed = ft.seeds[0] if seed is None else seed
    stage = ft.recipes[recipe][k]
    directory = stage_dir(params, recipe, k, root, seed)
    label = recipe if seed == ft.seeds[0] else f"{recipe}/s{seed}"
    if is_done(directory):
        log(f"[{label}:{stage.name}] reusing {directory.relative_to(root)} (same inputs, already trained)")
        return json.loads((directory / "history.json").read_text())
    from medlab.checkpoints import train_resumable
    from medlab.finetune.sft import lora_model, make_sft_trainer, sft_collator, sft_config
    from medlab.progress import ProgressCallback

    torch.manual_seed(seed)
    runtime = Runtime.of(params)
    model, tokenizer, start = load_start(params, recipe, k, root, training=ft.method, seed=seed)
    if tokenizer.pad_token is None:  # Llama 3 ships none; padded positions carry no loss (label -100)
        tokenizer.pad_token = tokenizer.eos_token
    lr = stage.learning_rate
    started = time.perf_counter()
    if stage.kind == "sft":
        rows, info = sft_dataset(params, stage, tokenizer, root, seed)
        epochs = stage.epochs or ft.train.epochs
        config = sft_config(ft.train, directory / "checkpoints", epochs, lr or ft.train.learning_rate,
                            seed, ft.train.packing, ordered=stage.schedule == "priority",
                            runtime=runtime)
        if ft.method == "lora":
            model = lora_model(model, ft.lora)
        per_step = ft.train.batch_size * ft.train.gradient_accumulation_steps
        tokens_per_step = int(info.get("packed", info["tokenized"])["tokens"] / max(len(rows), 1) * per_step)
        trainer = make_sft_trainer(model, tokenizer, rows, config,
                                   [ProgressCallback(tokens_per_step, label=f"{label}:{stage.name}")],
                                   data_collator=sft_collator(ft.train.packing, tokenizer),
                                   fused_loss=ft.train.fused_loss)
    else:
        from medlab.finetune.dpo import dpo_config, make_dpo_trainer

        pairs = [p for name in stage.data for p in finetune_data.load_pairs(ft.datasets[name], root, name)]
        info = {"pairs": len(pairs)}
        epochs = stage.epochs or ft.dpo.epochs
        config = dpo_config(ft.dpo, ft.train, directory / "checkpoints", epochs, lr or ft.dpo.learning_rate,
                            seed, runtime=runtime)
        if ft.method == "lora":
            model = lora_model(model, ft.lora)
        trainer = make_dpo_trainer(model, tokenizer, pairs, config,
                                   [ProgressCallback(ft.dpo.max_length * ft.dpo.batch_size,
                                                     label=f"{label}:{stage.name}")])
    check_sharding(trainer, params)
    resumed = train_resumable(trainer)
    save_result(trainer, tokenizer, directory, adapters=adapters_only(params))
    if not trainer.is_world_process_zero():
        return {}
    summary = {"recipe": recipe, "seed": seed, "stage": stage.name, "index": k, "kind": stage.kind, "epochs": epochs,
               "steps": trainer.state.global_step, "resumed": resumed,
               "world_size": trainer.args.world_size,
               "train_seconds_this_run": round(time.perf_counter() - started, 2),
               "start": start, "log_history": trainer.state.log_history, **info}
    write_json(directory / "history.json", summary)  # last: marks the stage done
    shutil.rmtree(directory / "checkpoints", ignore_errors=True)
    return summary


def save_result(trainer, tokenizer, directory: Path, adapters: bool) -> None:
    """Write the stage's result atomically (``model.tmp`` -> ``model``). Every process calls
    this: under FSDP or DeepSpeed ZeRO-3 the weights are sharded, and ``trainer.save_model``
    gathers the full state dict from all ranks (rank 0 writes it). LoRA: the adapter alone
    (``adapters``), or merged into full weights (unsharded runs only: ``check_sharding``)."""
    from peft import PeftModel

    name = "adapter" if adapters else "model"
    tmp = directory / f"{name}.tmp"
    main = trainer.is_world_process_zero()
    if trainer.is_fsdp_enabled:  # checkpoints may be sharded; the result is one full state dict
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    model = trainer.model
    if isinstance(model, PeftModel) and not adapters:  # not sharded: refused before training
        if not main:
            return
        model.merge_and_unload().save_pretrained(tmp, safe_serialization=True)
    else:
        trainer.save_model(str(tmp))  # every rank: gathers sharded weights; rank 0 writes
        trainer.accelerator.wait_for_everyone()
        if not main:
            return
    save_tokenizer(tokenizer, tmp)
    (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle holding this run's paths: not the model
    shutil.rmtree(directory / name, ignore_errors=True)
    os.replace(tmp, directory / name)


def check_sharding(trainer, params) -> None:
    """Before any training step: merging LoRA adapters needs the whole model in one process,
    which FSDP and ZeRO-3 do not give; sharded LoRA runs keep adapters (gathered on save)."""
    ft = params.finetune
    if ft.method == "lora" and ft.lora.merge and (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        raise ValueError("finetune.lora.merge: true cannot merge adapters under FSDP/DeepSpeed sharding; "
                         "set it to false (each stage keeps its gathered adapter)")


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link a file (no second copy of the weights on disk), copy across filesystems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def publish(params, recipe: str, root: Path, out: Path, seed: int | None = None) -> None:
    """Put the recipe's final model (trained with ``seed``) at ``out``: its weights
    (hard-linked from the stage cache), or -- LoRA, ``merge: false`` -- every stage's
    adapter under ``adapters/`` plus ``medlab_adapter.json`` pointing at ``models/base``
    (no weight copy at all)."""
    ft = params.finetune
    stages = ft.recipes[recipe]
    dirs = [stage_dir(params, recipe, k, root, seed) for k in range(len(stages))]
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if adapters_only(params):
        names = []
        for k, (stage, directory) in enumerate(zip(stages, dirs, strict=True)):
            names.append(f"adapters/{k}-{stage.name}")
            shutil.copytree(directory / "adapter", out / names[-1])
        for file in (dirs[-1] / "adapter").iterdir():  # the last stage's tokenizer files, at the top
            if file.is_file() and not file.name.startswith("adapter_"):
                shutil.copy2(file, out / file.name)
        write_json(out / "medlab_adapter.json",
                   {"base_model": os.path.relpath(root / "models" / "base", out), "adapters": names})
    else:
        for file in sorted((dirs[-1] / "model").iterdir()):
            _link_or_copy(file, out / file.name)
    drop_load_only_keys(out)  # a result cached before save_tokenizer may still carry them


def load_finetuned(path: Path | str, runtime=None):
    """Model + tokenizer from a published recipe directory (see ``medlab.runtime.load_published``)."""
    from medlab.runtime import load_published

    return load_published(path, runtime)


__all__ = ["is_done", "load_finetuned", "publish", "recipe_seeds", "run_stage", "seed_dir", "stage_dir",
           "stage_key"]
