"""Scoring memory and speed at a real vocabulary: before vs after, same run, same machine.

    python benchmarks/scoring_memory.py [--before 927e255] [--items 280] [--batch 16]

At Qwen's 151,936-token vocabulary the old scorer materialised batch x length x vocab
logits in fp32 and copied them to the CPU (16 rows x 100 positions = 0.97 GB per batch);
the new one runs the decoder, gathers the positions it reads and applies the output
layer only there (``medlab.evaluate.loglik.TokenReader``). Measured here on the tiny
Qwen2-architecture fixture with the real Qwen tokenizer (tests/helpers/real_models.py:
2 layers, hidden 64 -- the vocabulary dominates, as it does in cost per token for the
logits of any model): cloze scoring and letter scoring (4 option-order rotations) of the
anesthesia MCQ test items (built from the embedded knowledge base, as the benchmark
stage does) and the filter's likelihood judge on 64 answers, each way in its own
process so that peak memory is its own:

* peak extra RSS: the highest resident set size while scoring minus the size just
  before (sampled every 2 ms), MiB;
* items/s: the fastest of ``--repeat`` runs;
* the same picks (MCQ) / the same log-probabilities (judge) both ways, checked.

"before" is the code of a git revision (default: the last one before the change),
imported from ``git show``; "after" is the working tree. Writes
benchmarks/results/scoring_memory.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


class PeakRss:
    """Highest RSS seen while the block runs, by a sampling thread."""

    def __enter__(self):
        self.start, self.peak, self.running = rss_mib(), rss_mib(), True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, rss_mib())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_mib())

    @property
    def extra(self) -> float:
        return self.peak - self.start


def module_at(revision: str, path: str, name: str):
    """Import ``path`` as it was at ``revision`` (its own imports resolve to today's package)."""
    source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    folder = Path(tempfile.mkdtemp())
    (folder / f"{name}.py").write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def anesthesia_items(count: int):
    from medlab.embedded.benchmark.build import build_mcq
    from medlab.knowledge import load_embedded

    items = build_mcq(load_embedded(), "anesthesia", count + 20, 4, 20, 0, "anesthesia_mcq")
    return [i for i in items if i.split != "dev"][:count]


def answers(count: int) -> list[list[dict[str, str]]]:
    items = anesthesia_items(count)
    return [[{"role": "user", "content": i.question}, {"role": "assistant", "content": f"{i.options[i.answer]}。"}]
            for i in items]


def worker(way: str, task: str, revision: str, items: int, batch: int, repeat: int) -> dict:
    import torch
    from helpers.real_models import real_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import medlab.evaluate.mcq as mcq

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    path = real_model("qwen2")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    best, out = float("inf"), None
    if task in ("cloze", "letter"):
        data = anesthesia_items(items)
        if way == "before":
            mcq.continuation_logprobs = module_at(revision, "src/medlab/evaluate/loglik.py",
                                                  "loglik_before").continuation_logprobs
        run = lambda: mcq.score_loglik(model, tokenizer, data, scoring=task, layout="chat",  # noqa: E731
                                       domain="麻醉学", batch_size=batch)
        shape = lambda results: [r.picks for r in results]  # noqa: E731
    else:
        data = answers(64)
        if way == "before":
            judge_module = module_at(revision, "src/medlab/filter/likelihood_judge.py", "judge_before")
        else:
            import medlab.filter.likelihood_judge as judge_module
        judge = judge_module.LikelihoodJudge(model, tokenizer, [], score="mean_logprob", batch_size=batch,
                                             fmt="chat")
        run = lambda: judge.score(data)  # noqa: E731
        shape = lambda results: [round(r.mean_logprob, 4) for r in results]  # noqa: E731
    peaks = []
    for _ in range(repeat):
        with PeakRss() as watch:
            start = time.perf_counter()
            results = run()
            best = min(best, time.perf_counter() - start)
        peaks.append(watch.extra)
        out = shape(results)
    return {"way": way, "task": task, "n": len(data), "seconds": round(best, 3),
            "per_s": round(len(data) / best, 2), "peak_extra_rss_mib": round(max(peaks), 1), "result": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="927e255", help="git revision of the old scorer and judge")
    parser.add_argument("--items", type=int, default=280)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--worker", nargs=2, metavar=("WAY", "TASK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.before, args.items, args.batch, args.repeat)))
        return
    runs = {}
    for task in ("cloze", "letter", "judge"):
        for way in ("before", "after"):
            done = subprocess.run([sys.executable, __file__, "--worker", way, task, "--before", args.before,
                                   "--items", str(args.items), "--batch", str(args.batch), "--repeat",
                                   str(args.repeat)], check=True, capture_output=True, text=True)
            runs[(task, way)] = json.loads(done.stdout.strip().splitlines()[-1])
            r = runs[(task, way)]
            print(f"{task:>6} {way:>6}: {r['per_s']:8.1f} items/s  peak extra RSS {r['peak_extra_rss_mib']:7.1f} MiB",
                  flush=True)
    rows = []
    for task in ("cloze", "letter", "judge"):
        before, after = runs[(task, "before")], runs[(task, "after")]
        if task != "judge":
            same = before["result"] == after["result"]
        else:
            same = all(abs(a - b) <= 1e-3 for a, b in zip(before["result"], after["result"], strict=True))
        rows.append({"task": task, "items": after["n"], "same_results": same,
                     "items_per_s": {"before": before["per_s"], "after": after["per_s"]},
                     "speedup": round(after["per_s"] / before["per_s"], 2),
                     "peak_extra_rss_mib": {"before": before["peak_extra_rss_mib"],
                                            "after": after["peak_extra_rss_mib"]}})
        print(f"{task}: {rows[-1]['speedup']}x the items/s; peak extra RSS {before['peak_extra_rss_mib']} -> "
              f"{after['peak_extra_rss_mib']} MiB; same results: {same}")
    from medlab.records import write_json

    write_json(HERE / "results" / "scoring_memory.json",
               {"fixture": "qwen2 (real Qwen tokenizer, 151,936-row embedding; 2 layers, hidden 64)",
                "before": args.before, "batch_size": args.batch, "repeat": args.repeat, "runs": rows,
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}})


if __name__ == "__main__":
    main()
