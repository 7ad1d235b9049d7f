"""MCQ scoring speed: the batched scorer vs one forward pass per option, same answers.

    python benchmarks/mcq_scoring.py [--model models/finetune/specific_only] [--items 280] [--batch 16]

The naive way (what many medical-LLM eval scripts do) runs the model once per
(question, option) pair, batch size 1. medlab.evaluate.loglik batches by length,
answers every single-token continuation (option letters) of a prompt from one forward
pass, and puts the option texts of one prompt side by side in one row that shares the
prompt (cloze). A third way, batched without the shared row, shows what that adds.
All must pick the same options (checked); reported: items/s of each and the ratio of
batched to one-pass-per-option, per scoring (letter with all 4 rotations, cloze). Then the letter and
option-text scorings (the same rotated prompts) scored apart, as two calls, and together through one
``mcq.PairScores`` (each prompt run once, the letters read at its end), interleaved: same picks (checked)
and the ratio. Uses the test split of the anesthesia MCQ benchmark (run `dvc repro` first). Writes
benchmarks/results/mcq_scoring.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from functools import partial
from pathlib import Path

import torch

import medlab.evaluate.mcq as mcq
from medlab.evaluate.loglik import Scored, continuation_logprobs, split_tokens
from medlab.evaluate.mcq import PairScores, score_loglik, summarise
from medlab.finetune.run import load_finetuned
from medlab.records import McqItem, read_jsonl, write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def one_pass_per_option(model, tokenizer, pairs, batch_size=None, progress=None) -> list[Scored]:
    """The baseline: every (context, continuation) its own forward pass."""
    out = []
    for context, continuation in pairs:
        head, tail = split_tokens(tokenizer, context, continuation)
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=torch.tensor([head + tail])).logits[0].float(), -1)
        picked = [float(logp[len(head) - 1 + t, tok]) for t, tok in enumerate(tail)]
        greedy = all(int(logp[len(head) - 1 + t].argmax()) == tok for t, tok in enumerate(tail))
        out.append(Scored(sum(picked), len(tail), greedy))
    return out


def scorings_together(model, tokenizer, items, batch_size: int, repeat: int) -> dict:
    """letter + option_text: two score_loglik calls, or one PairScores for both (the evaluate stage's way)."""
    scorings, kwargs = ("letter", "option_text"), dict(layout="chat", domain="麻醉学", batch_size=batch_size)
    best, picks = {"apart": float("inf"), "together": float("inf")}, {}
    for _ in range(repeat):  # interleaved, the fastest of each kept
        for way in best:
            start = time.perf_counter()
            scorer = None
            if way == "together":
                scorer = PairScores(model, tokenizer, batch_size)
                scorer.prefetch([p for sc in scorings for p in mcq.loglik_requests(
                    tokenizer, items, (), sc, "chat", "麻醉学")[0]])
            results = {sc: score_loglik(model, tokenizer, items, scoring=sc, scorer=scorer, **kwargs) for sc in scorings}
            best[way] = min(best[way], time.perf_counter() - start)
            picks[way] = {sc: [r.picks for r in rs] for sc, rs in results.items()}
    same, ratio = picks["apart"] == picks["together"], best["apart"] / best["together"]
    print(f"letter + option_text: apart {best['apart']:.2f} s, together {best['together']:.2f} s ({ratio:.2f}x); "
          f"same picks: {same}")
    return {"items": len(items), "seconds": {k: round(v, 2) for k, v in best.items()}, "ratio": round(ratio, 2),
            "same_picks": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/finetune/specific_only")
    parser.add_argument("--items", type=int, default=280)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="time each way this often; keep the fastest")
    args = parser.parse_args()
    model, tokenizer = load_finetuned(ROOT / args.model)
    model.eval()
    items = [i for i in read_jsonl(ROOT / "data/benchmark/anesthesia_mcq.jsonl", McqItem) if i.split != "dev"]
    items = items[:args.items]

    rows = []
    for scoring in ("letter", "cloze"):
        timings, picks = {}, {}
        for way in ("one_pass_per_option", "batched_separate_rows", "batched"):
            mcq.continuation_logprobs = {  # the scorer's engine, swapped
                "one_pass_per_option": one_pass_per_option,
                "batched_separate_rows": partial(continuation_logprobs, share_context=False),
                "batched": continuation_logprobs}[way]
            timings[way] = float("inf")
            for _ in range(args.repeat):  # the fastest of a few runs: the least disturbed by the rest of the machine
                start = time.perf_counter()
                results = score_loglik(model, tokenizer, items, scoring=scoring, layout="chat", domain="麻醉学",
                                       batch_size=args.batch)
                timings[way] = min(timings[way], time.perf_counter() - start)
            picks[way] = [r.picks for r in results]
            acc = summarise(results, chance=0.25, n_boot=10)["acc"]
            print(f"{scoring:>7} {way:>22}: {len(items) / timings[way]:7.1f} items/s  acc {acc:.3f}", flush=True)
        same = picks["batched"] == picks["one_pass_per_option"] == picks["batched_separate_rows"]
        ratio = timings["one_pass_per_option"] / timings["batched"]
        print(f"{scoring:>7}: batched is {ratio:.1f}x faster; same picks: {same}")
        rows.append({"scoring": scoring, "items": len(items), "acc": acc, "same_picks": same,
                     "items_per_s": {k: round(len(items) / v, 2) for k, v in timings.items()},
                     "ratio": round(ratio, 2)})
    mcq.continuation_logprobs = continuation_logprobs
    joint = scorings_together(model, tokenizer, items, args.batch, args.repeat)
    write_json(HERE / "results" / "mcq_scoring.json",
               {"model": args.model, "batch_size": args.batch, "repeat": args.repeat, "runs": rows,
                "letter_and_option_text": joint,
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "torch_threads": torch.get_num_threads()}})


if __name__ == "__main__":
    main()
