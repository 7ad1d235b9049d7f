"""A stage's fixed cost: three commands (the dvc.yaml of stop 28) against one process
(``python -m medlab.stages.execute``), side by side on the same machine.

    python benchmarks/stage_runner.py [--repeats 3]

Runs the first three stages (knowledge, corpus, benchmark: notebooks of 1-3 s, so the
fixed cost dominates) in a clean copy of the repository, each stage by both commands in
turn, ``--repeats`` times, outside DVC (DVC's own cost is the same for both). Writes
benchmarks/results/stage_runner.json: per stage the median wall time of each command
and their ratio. A measurement, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers.workspace import clean_copy, pipeline_env  # noqa: E402

from medlab.records import write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
STAGES = ("01_knowledge", "02_corpus", "03_benchmark")
# the two commands each stage ran before (dvc.yaml vars pm and html of stop 28)
THREE_COMMANDS = ("python -m medlab.config && mkdir -p reports/notebooks reports/html && papermill -k python3 "
                  "--cwd notebooks --log-output --no-progress-bar notebooks/{nb}.ipynb reports/notebooks/{nb}.ipynb"
                  " && jupyter nbconvert --log-level WARN --to html --no-input --output-dir reports/html "
                  "reports/notebooks/{nb}.ipynb")
ONE_PROCESS = "python -m medlab.stages.execute notebooks/{nb}.ipynb reports/notebooks/{nb}.ipynb"


def timed(command: str, repo: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, shell=True, cwd=repo, env=pipeline_env(repo), check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="medlab-bench-") as tmp:
        repo = clean_copy(Path(tmp))
        for nb in STAGES:
            times = {"three_commands_s": [], "one_process_s": []}
            for _ in range(args.repeats):  # interleaved, so drift of the machine hits both alike
                times["three_commands_s"].append(timed(THREE_COMMANDS.format(nb=nb), repo))
                times["one_process_s"].append(timed(ONE_PROCESS.format(nb=nb), repo))
            row = {"stage": nb, **{k: round(statistics.median(v), 2) for k, v in times.items()}}
            row["ratio"] = round(row["one_process_s"] / row["three_commands_s"], 3)
            row["saved_s"] = round(row["three_commands_s"] - row["one_process_s"], 2)
            rows.append(row)
            print(f"{nb:<14} three commands {row['three_commands_s']:5.2f} s   one process "
                  f"{row['one_process_s']:5.2f} s   ratio {row['ratio']:.3f}", flush=True)
    result = {"repeats": args.repeats, "stages": rows,
              "median_saved_s": round(statistics.median(r["saved_s"] for r in rows), 2),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()}}
    write_json(HERE / "results" / "stage_runner.json", result)
    print(f"saved per stage (median): {result['median_saved_s']} s")


if __name__ == "__main__":
    main()
