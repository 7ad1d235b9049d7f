"""The filter's rules, near-duplicate search and decontamination from 10k to 1M records: time and peak memory.

    python benchmarks/filter_scaling.py [--sizes 10000 100000 1000000] [--baseline-size 100000]

Records are the generate stage's samples (run `dvc repro generate` first), repeated with
random character edits until each size is reached, so that near-duplicates exist at every
size (about one record in three is an edited copy). Each size runs in a fresh process, so
its peak resident memory (``ru_maxrss``) is its own: the records themselves (held in
memory, as the filter stage holds them) plus what the three steps add. The steps run as
the filter notebook runs them (``medlab.filter.rules.check`` on every sample's messages,
``medlab.filter.dedup.duplicates`` on the survivors' texts, a ``Decontaminator`` holding
every benchmark item checking the rest).

Baseline, side by side at ``--baseline-size``: the dedup this replaced -- datasketch's
in-memory ``MinHashLSH`` index with every survivor's shingle set kept for the exact check
(reimplemented below, as it was); same drops required. Writes
benchmarks/results/filter_scaling.json: seconds per step, peak MiB, the scaling exponent of
each step (time ~ n^k between the smallest and largest size) and the baseline ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EDITS = "的了和是在有不这"


def corpus(size: int, seed: int = 0) -> list[list[dict]]:
    """``size`` samples (message lists): the generated ones, then edited copies of them."""
    from medlab.records import Sample, read_jsonl

    chats = [s.messages for d in ("anesthesia", "general_medicine", "general")
             for s in read_jsonl(ROOT / "data/generate" / f"{d}.jsonl", Sample)]
    rng = random.Random(seed)
    out = list(chats)
    while len(out) < size:
        messages = [dict(m) for m in rng.choice(chats)]
        turn = messages[-1]
        chars = list(turn["content"])
        for _ in range(rng.randint(1, 6)):  # edited copies: some near-duplicates, some not
            chars[rng.randrange(len(chars))] = rng.choice(EDITS)
        turn["content"] = "".join(chars)
        out.append(messages)
    rng.shuffle(out)
    return out[:size]


def baseline_duplicates(texts, n=3, num_perm=128, threshold=0.7):
    """The dedup before this benchmark: every survivor's shingle set and MinHash kept, in
    datasketch's in-memory index (the implementation measured as the baseline)."""
    from datasketch import MinHash, MinHashLSH

    from medlab.filter.dedup import normalize, shingles

    dropped, first = {}, {}
    for i, text in enumerate(texts):
        key = hashlib.sha1(normalize(text).encode()).hexdigest()
        if key in first:
            dropped[i] = (first[key], "exact")
        else:
            first[key] = i
    survivors = [i for i in range(len(texts)) if i not in dropped]
    sets = {i: shingles(texts[i], n) for i in survivors}
    lsh = MinHashLSH(threshold=max(0.2, threshold - 0.2), num_perm=num_perm)
    hashes = MinHash.bulk([sets[i] for i in survivors], num_perm=num_perm, seed=1)
    for i, mh in zip(survivors, hashes, strict=True):
        best = None
        for j in lsh.query(mh):
            similarity = len(sets[i] & sets[j]) / max(len(sets[i] | sets[j]), 1)
            if similarity >= threshold and (best is None or j < best):
                best = j
        if best is not None:
            dropped[i] = (best, "near")
        else:
            lsh.insert(i, mh)
    return dropped


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def one(size: int, baseline: bool) -> dict:
    """Run the three steps on ``size`` records in this process (called in a fresh one)."""
    from medlab.config import load_params
    from medlab.filter import dedup, rules
    from medlab.filter.decontaminate import Decontaminator
    from medlab.knowledge.kb import load_records
    from medlab.records import McqItem, QaItem, read_jsonl

    cfg = load_params(ROOT / "params.yaml").filter
    samples = corpus(size)
    loaded = peak_mib()
    out = {"records": size, "mib_records_loaded": round(loaded)}

    start = time.perf_counter()
    rule_params = rules.RuleParams(cfg.rules.min_chars, cfg.rules.max_chars, cfg.rules.max_repeat_share)
    alive = [m for m in samples if rules.check(m, rule_params) is None]
    out["rules_s"] = round(time.perf_counter() - start, 2)
    texts = ["\n".join(m["content"] for m in messages) for messages in alive]

    start = time.perf_counter()
    find = baseline_duplicates if baseline else dedup.duplicates
    dropped = find(texts, cfg.dedup.ngram, cfg.dedup.num_perm, cfg.dedup.threshold)
    out["dedup_s"] = round(time.perf_counter() - start, 2)
    out["dropped"] = len(dropped)
    out["dropped_digest"] = hashlib.sha256(json.dumps(sorted(dropped.items())).encode()).hexdigest()[:16]

    start = time.perf_counter()
    kb = load_records(ROOT / "data/knowledge")
    names = set(kb.entities) | {t.object for t in kb.triples if t.object_type == "literal"}
    decontaminator = Decontaminator(names, cfg.decontaminate.n_question, cfg.decontaminate.n_context)
    for name in ("anesthesia_mcq", "general_mcq", "anesthesia_qa", "anesthesia_rc"):
        for item in read_jsonl(ROOT / "data/benchmark" / f"{name}.jsonl", McqItem if "qa" not in name else QaItem):
            decontaminator.add(item.id, item.question, getattr(item, "context", None))
    kept = [t for i, t in enumerate(texts) if i not in dropped]
    out["contaminated"] = sum(1 for t in kept if decontaminator.check(t)[0])
    out["decontaminate_s"] = round(time.perf_counter() - start, 2)
    out["total_s"] = round(out["rules_s"] + out["dedup_s"] + out["decontaminate_s"], 2)
    out["peak_mib"] = round(peak_mib())
    return out


def run_child(size: int, baseline: bool) -> dict:
    cmd = [sys.executable, __file__, "--one", str(size)] + (["--baseline"] if baseline else [])
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--baseline-size", type=int, default=100_000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.baseline)))
        return
    rows = []
    for size in args.sizes:
        row = run_child(size, baseline=False)
        rows.append(row)
        print(f"{size:>9,} records · rules {row['rules_s']:6.1f} s · dedup {row['dedup_s']:6.1f} s · decontamination "
              f"{row['decontaminate_s']:6.1f} s · total {row['total_s']:6.1f} s · peak {row['peak_mib']:,} MiB "
              f"({row['mib_records_loaded']:,} holding the records) · {row['dropped']:,} duplicates", flush=True)
    small, large = rows[0], rows[-1]
    exponents = {step: round(math.log(large[f"{step}_s"] / small[f"{step}_s"])
                             / math.log(large["records"] / small["records"]), 2)
                 for step in ("rules", "dedup", "decontaminate", "total")}
    print("time ~ n^k:", exponents)
    result = {"runs": rows, "exponent": exponents,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    if args.baseline_size:
        ours = next((r for r in rows if r["records"] == args.baseline_size), None) or run_child(args.baseline_size,
                                                                                                 False)
        base = run_child(args.baseline_size, baseline=True)
        if base["dropped_digest"] != ours["dropped_digest"]:
            raise SystemExit(f"the baseline drops other records at {args.baseline_size:,}: "
                             f"{base['dropped']} vs {ours['dropped']}")
        result["baseline"] = {"records": args.baseline_size, "run": base,
                              "dedup_time_ratio": round(base["dedup_s"] / ours["dedup_s"], 2),
                              "peak_memory_ratio": round(base["peak_mib"] / ours["peak_mib"], 2),
                              "added_memory_ratio": round((base["peak_mib"] - base["mib_records_loaded"])
                                                          / max(ours["peak_mib"] - ours["mib_records_loaded"], 1),
                                                          2)}
        print(f"baseline at {args.baseline_size:,}: dedup {base['dedup_s']} s, peak {base['peak_mib']:,} MiB -> "
              f"time ratio {result['baseline']['dedup_time_ratio']}, added-memory ratio "
              f"{result['baseline']['added_memory_ratio']} (same drops)")
    from medlab.records import write_json

    write_json(HERE / "results" / "filter_scaling.json", result)


if __name__ == "__main__":
    main()
