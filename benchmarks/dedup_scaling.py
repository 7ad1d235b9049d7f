"""Dedup wall time from 10k to 100k records (character 3-gram MinHash LSH + exact check).

    python benchmarks/dedup_scaling.py [--sizes 10000 30000 100000]

Records are the generate stage's samples (run `dvc repro generate` first), repeated with
random character edits until each size is reached, so that near-duplicates exist at
every size (about one record in three is an edited copy). Reports seconds per size and
the scaling exponent (time ~ n^k); writes benchmarks/results/dedup_scaling.json.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import time
from pathlib import Path

from medlab.filter.dedup import duplicates
from medlab.records import Sample, read_jsonl, write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def corpus(size: int, seed: int = 0) -> list[str]:
    texts = ["\n".join(m["content"] for m in s.messages) for d in ("anesthesia", "general_medicine", "general")
             for s in read_jsonl(ROOT / "data/generate" / f"{d}.jsonl", Sample)]
    rng = random.Random(seed)
    out = list(texts)
    while len(out) < size:
        chars = list(rng.choice(texts))
        for _ in range(rng.randint(1, 6)):  # edited copies: some near-duplicates, some not
            chars[rng.randrange(len(chars))] = rng.choice("的了和是在有不这")
        out.append("".join(chars))
    rng.shuffle(out)
    return out[:size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        texts = corpus(size)
        start = time.perf_counter()
        dropped = duplicates(texts, n=3, num_perm=128, threshold=0.7)
        seconds = time.perf_counter() - start
        rows.append({"records": size, "seconds": round(seconds, 2), "dropped": len(dropped),
                     "near": sum(k == "near" for _, k in dropped.values())})
        print(f"{size:>7,} records {seconds:7.1f} s  ({len(dropped):,} dropped)", flush=True)
    k = math.log(rows[-1]["seconds"] / rows[0]["seconds"]) / math.log(rows[-1]["records"] / rows[0]["records"])
    print(f"time ~ n^{k:.2f}")
    write_json(HERE / "results" / "dedup_scaling.json", {"runs": rows, "exponent": round(k, 2),
                                                          "machine": {"cpus": os.cpu_count(),
                                                                      "platform": platform.platform()}})


if __name__ == "__main__":
    main()
