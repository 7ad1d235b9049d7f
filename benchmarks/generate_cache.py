"""Wall time of the generate stage: first run vs a fully cached rerun (`openai` backend).

    python benchmarks/generate_cache.py [--latency-ms 200] [--profile smoke|default]

Starts the local OpenAI-compatible test server (tests/helpers/fake_openai.py, fixed
latency per call, no failures), points the `generate` stage of a clean copy of the
repository at it, runs `dvc repro generate`, then `dvc repro --force --single-item generate`: the second
run finds every call in the cache (.cache/medlab/llm/) and must make none (checked in
the server log). Writes benchmarks/results/generate_cache_<profile>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers.workspace import clean_copy, run_dvc  # noqa: E402

from medlab.records import write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
SERVER = HERE.parent / "tests" / "helpers" / "fake_openai.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--profile", choices=["smoke", "default"], default="smoke")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    os.environ["MEDLAB_BENCH_KEY"] = "bench-key"
    with tempfile.TemporaryDirectory(prefix="medlab-cache-bench-") as tmp:
        log = Path(tmp) / "server.jsonl"
        server = subprocess.Popen([sys.executable, str(SERVER), "--log", str(log), "--delay-ms",
                                   str(args.latency_ms), "--fail-rate", "0", "--key", "bench-key"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            port = server.stdout.readline().split()[1]
            repo = clean_copy(Path(tmp) / "repo", overlay="params.smoke.yaml" if args.profile == "smoke" else None)
            params = repo / "params.yaml"
            text = params.read_text(encoding="utf-8")
            text = text.replace("    backend: simulated", "    backend: openai", 1)
            text = text.replace("      base_url: http://localhost:8000/v1", f"      base_url: http://127.0.0.1:{port}/v1")
            text = text.replace("      api_key_env: OPENAI_API_KEY", "      api_key_env: MEDLAB_BENCH_KEY")
            text = text.replace("      max_concurrency: 8", f"      max_concurrency: {args.concurrency}")
            params.write_text(text, encoding="utf-8")
            run_dvc(repo, "repro", "corpus")
            _, first = run_dvc(repo, "repro", "generate")
            calls_first = len(log.read_text().splitlines())
            _, second = run_dvc(repo, "repro", "--force", "--single-item", "generate")
            calls_second = len(log.read_text().splitlines()) - calls_first
            timing = json.loads((repo / "reports/timing/generate.json").read_text())
        finally:
            server.kill()
    print(f"first run {first:.1f} s ({calls_first} calls at {args.latency_ms} ms, concurrency {args.concurrency}); "
          f"cached rerun {second:.1f} s ({calls_second} calls, {timing['cached_calls']} from the cache); "
          f"{first / second:.1f}x")
    write_json(HERE / "results" / f"generate_cache_{args.profile}.json", {
        "profile": args.profile, "latency_ms": args.latency_ms, "concurrency": args.concurrency,
        "first_run_s": round(first, 1), "cached_rerun_s": round(second, 1), "speedup": round(first / second, 2),
        "calls_first_run": calls_first, "calls_cached_rerun": calls_second,
        "cached_calls_reported": timing["cached_calls"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}})


if __name__ == "__main__":
    main()
