"""Throughput and MFU of the `gpu` profile: pre-training, SFT and MCQ scoring.

    python benchmarks/gpu_profile.py                 # params.yaml + params.gpu.yaml, on the GPU
    python benchmarks/gpu_profile.py --tiny --steps 4    # the same code at a CPU size (a test runs this)

Builds the profile's model from scratch (``pretrain.model`` of the merged params) and
its tokenizer from the corpus rendered from the embedded knowledge base, then measures,
each after ``--warmup`` steps:

* pre-training: tokens/s of Trainer steps on packed ``block_size`` blocks;
* SFT: tokens/s (real tokens, not padding) of SFTTrainer steps on chats built from the
  corpus, packed in the profile's layout (``finetune.train.packing``);
* MCQ scoring: items/s of cloze scoring of the anesthesia MCQ items.

MFU = achieved FLOP/s / peak. FLOPs per token (PaLM, appendix B): 6 x N for the matrix
multiplies of forward + backward (N = parameters without the embedding table; the
tied output head counted once, as it is a matmul) + 12 x layers x hidden x sequence for
attention scores. Peak: H100/H200 SXM bf16 dense 989 TFLOP/s (``--peak-tflops`` for
another GPU); on a CPU no MFU is reported. Everything goes through ``medlab.runtime``
(dtype, attention) exactly as the stages do. Writes benchmarks/results/gpu_profile.json
(``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
H200_BF16_DENSE_TFLOPS = 989.0
TINY = {"pretrain": {"tokenizer": {"vocab_size": 400},
                     "model": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                               "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 512},
                     "train": {"block_size": 64, "batch_size": 4}},
        "finetune": {"train": {"batch_size": 4, "max_length": 128, "packing": "rows"}},
        "evaluate": {"batch_size": 8}}


def merged_params(tiny: bool):
    from medlab.config import merge_overlay, read_yaml, validate_params

    doc = read_yaml(ROOT / "params.yaml")
    merge_overlay(doc, read_yaml(ROOT / "params.gpu.yaml"), "params.gpu.yaml")
    if tiny:
        _merge_plain(doc, TINY)
        doc["runtime"]["dtype"] = "auto"  # a CPU: fp32
    return validate_params(doc, root=ROOT)


def _merge_plain(doc, overlay: dict) -> None:
    for key, value in overlay.items():
        if isinstance(value, dict):
            _merge_plain(doc[key], value)
        else:
            doc[key] = value


def flops_per_token(config, sequence: int) -> float:
    """6 N + 12 L d T (forward + backward; N without the input embedding table)."""
    layers, hidden = config.num_hidden_layers, config.hidden_size
    kv = config.num_key_value_heads * (hidden // config.num_attention_heads)
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * config.intermediate_size
    head = hidden * config.vocab_size  # the output projection is a matmul even when tied
    return 6 * (layers * per_layer + head) + 12 * layers * hidden * sequence


class StepTimer:
    """Wall time of training steps after the first ``warmup`` (CUDA-synchronised)."""

    def __init__(self, warmup: int):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                if state.global_step == timer.warmup:
                    timer.start = time.perf_counter()
                timer.end = time.perf_counter()

        self.warmup, self.start, self.end, self.callback = warmup, None, None, Callback()

    def seconds(self) -> float:
        if self.start is None:
            raise RuntimeError("fewer steps than warmup: raise --steps")
        return self.end - self.start


def corpus_and_tokenizer(params):
    from medlab.embedded.corpus.render import render_corpus
    from medlab.knowledge import load_embedded
    from medlab.pretrain.tokenizer import train_tokenizer

    kb = load_embedded()
    c = params.corpus
    docs, _ = render_corpus(kb, c.paragraphs_per_entity, c.list_probability, c.anesthesia_coverage,
                            c.valid_fraction, params.base.seed)
    texts = [d.text for d in docs]
    cfg = params.pretrain
    tokenizer = train_tokenizer(texts, cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency,
                                model_max_length=cfg.model.max_position_embeddings)
    return kb, docs, tokenizer


def measure_pretrain(params, runtime, model, tokenizer, docs, steps, warmup, out_dir) -> dict:
    from medlab.packing import pack_stream
    from medlab.pretrain.trainer import make_trainer

    cfg = params.pretrain.train
    ids = tokenizer([d.text for d in docs], add_special_tokens=False)["input_ids"]
    blocks = pack_stream(ids, cfg.block_size, tokenizer.eos_token_id)
    train = cfg.model_copy(update={"max_steps": steps + warmup, "eval_steps": 10 ** 9, "save_steps": 10 ** 9,
                                   "logging_steps": 10 ** 9})
    timer = StepTimer(warmup)
    trainer = make_trainer(model, blocks, blocks[:cfg.batch_size], train, out_dir, params.base.seed,
                           callbacks=[timer.callback], runtime=runtime)
    trainer.train()
    tokens = steps * cfg.batch_size * cfg.gradient_accumulation_steps * cfg.block_size
    return {"steps": steps, "tokens_per_step": tokens // steps, "sequence": cfg.block_size,
            "tokens_per_s": tokens / timer.seconds()}


def measure_sft(params, runtime, model, tokenizer, docs, steps, warmup, out_dir) -> dict:
    from medlab.finetune.sft import (
        make_sft_trainer,
        sft_collator,
        sft_config,
        token_stats,
        tokenize,
    )
    from medlab.packing import pack_rows

    ft = params.finetune.train
    chats = [[{"role": "user", "content": f"请介绍{d.subject}。"}, {"role": "assistant", "content": d.text}]
             for d in docs]
    rows = tokenize(tokenizer, chats, ft.max_length)
    if ft.packing != "none":
        rows = pack_rows(rows, ft.max_length)
    per_row = token_stats(rows)["tokens"] / len(rows)
    config = sft_config(ft, out_dir, 1.0, ft.learning_rate, params.base.seed, ft.packing, ordered=False,
                        runtime=runtime)
    config.max_steps = steps + warmup
    config.save_strategy = "no"
    timer = StepTimer(warmup)
    trainer = make_sft_trainer(model, tokenizer, rows, config, [timer.callback],
                               data_collator=sft_collator(ft.packing, tokenizer))
    trainer.train()
    tokens = steps * ft.batch_size * ft.gradient_accumulation_steps * per_row
    return {"steps": steps, "packing": ft.packing, "sequence": ft.max_length, "tokens_per_s": tokens / timer.seconds()}


def measure_scoring(params, model, tokenizer, kb, items: int) -> dict:
    from medlab.embedded.benchmark.build import build_mcq
    from medlab.evaluate.mcq import score_loglik

    test = [i for i in build_mcq(kb, "anesthesia", items + 20, 4, 20, params.base.seed, "anesthesia_mcq")
            if i.split != "dev"][:items]
    model.eval()
    score_loglik(model, tokenizer, test[:8], scoring="cloze", layout="chat", batch_size=params.evaluate.batch_size)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    score_loglik(model, tokenizer, test, scoring="cloze", layout="chat", batch_size=params.evaluate.batch_size)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return {"items": len(test), "items_per_s": len(test) / (time.perf_counter() - start)}


def main(argv=None) -> dict:
    import tempfile

    from medlab.pretrain.model import build_llama, count_parameters
    from medlab.records import write_json
    from medlab.runtime import Runtime
    from medlab.seeding import seed_everything

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU-sized model, same code")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--items", type=int, default=280)
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gpu_profile.json")
    args = parser.parse_args(argv)
    params = merged_params(args.tiny)
    seed_everything(params.base.seed, params.base.torch_threads)
    runtime = Runtime.of(params)
    kb, docs, tokenizer = corpus_and_tokenizer(params)
    cfg = params.pretrain.model

    def fresh_model():
        torch.manual_seed(params.base.seed)
        model = build_llama(cfg, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                            tokenizer.pad_token_id)
        if runtime.attn_implementation:
            model.set_attn_implementation(runtime.attn_implementation)
        return model

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    peak = args.peak_tflops * 1e12 if gpu else None
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = fresh_model()
        rows["pretrain"] = measure_pretrain(params, runtime, model, tokenizer, docs, args.steps, args.warmup,
                                            Path(tmp) / "pt")
        rows["sft"] = measure_sft(params, runtime, fresh_model(), tokenizer, docs, args.steps, args.warmup,
                                  Path(tmp) / "sft")
        scorer = model.to(runtime.device, dtype=runtime.dtype)
        rows["mcq_scoring"] = measure_scoring(params, scorer, tokenizer, kb, args.items)
    for name in ("pretrain", "sft"):
        row = rows[name]
        row["flops_per_token"] = flops_per_token(model.config, row["sequence"])
        row["mfu"] = round(row["tokens_per_s"] * row["flops_per_token"] / peak, 4) if peak else None
        row["tokens_per_s"] = round(row["tokens_per_s"], 1)
    result = {"profile": "tiny (CPU check)" if args.tiny else "params.gpu.yaml", "device": gpu or "cpu",
              "runtime": runtime.describe(), "parameters": count_parameters(model),
              "peak_tflops": args.peak_tflops if gpu else None, **rows,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__}}
    for name in ("pretrain", "sft"):
        r = rows[name]
        print(f"{name:>8}: {r['tokens_per_s']:>12,.0f} tokens/s" + (f"  MFU {r['mfu']:.1%}" if r["mfu"] else ""))
    print(f"     mcq: {rows['mcq_scoring']['items_per_s']:>12,.1f} items/s (cloze, {rows['mcq_scoring']['items']} items)")
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
