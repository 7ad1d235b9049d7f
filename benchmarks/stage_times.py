"""Wall time of every pipeline stage, as a user sees it (DVC and the stage runner included).

    python benchmarks/stage_times.py --profile default   # params.yaml as is
    python benchmarks/stage_times.py --profile smoke     # params.smoke.yaml applied

Runs in a clean copy of the repository (tests/helpers/workspace.py), one `dvc repro -s STAGE`
per stage in pipeline order, so each time includes the fixed cost of DVC, the stage runner
(medlab.stages.execute), a kernel and the HTML (the "overhead" column: the stage's own notebook time is
read from reports/timing/<stage>.json). Writes benchmarks/results/stage_times_<profile>.json.
A measurement, not a test: numbers depend on the machine (recorded with them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers.workspace import clean_copy, run_dvc  # noqa: E402

from medlab.records import write_json  # noqa: E402
from medlab.report.repro_time import timing_file  # noqa: E402

HERE = Path(__file__).resolve().parent


def stage_order(repo: Path) -> list[str]:
    """Stages in pipeline order, fan-outs expanded (``evaluate@base``, ...).

    dvc.yaml lists stages upstream-first in this project, and `dvc stage list` keeps
    that order with each ``foreach`` expanded in place.
    """
    output, _ = run_dvc(repo, "stage", "list", "--name-only")
    return [line.strip() for line in output.splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["default", "smoke"], default="smoke")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medlab-bench-") as tmp:
        repo = clean_copy(Path(tmp), overlay="params.smoke.yaml" if args.profile == "smoke" else None)
        rows, total = [], 0.0
        for stage in stage_order(repo):
            _, seconds = run_dvc(repo, "repro", "--single-item", stage)
            inside = json.loads(timing_file(repo, stage).read_text())["wall_s"]
            rows.append({"stage": stage, "wall_s": round(seconds, 1), "notebook_s": inside,
                         "overhead_s": round(seconds - inside, 1)})
            total += seconds
            print(f"{stage:<36} {seconds:7.1f} s  (notebook {inside:.1f} s)", flush=True)
        print(f"{'total':<36} {total:7.1f} s")
    result = {"profile": args.profile, "stages": rows, "total_s": round(total, 1),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()}}
    write_json(HERE / "results" / f"stage_times_{args.profile}.json", result)


if __name__ == "__main__":
    main()
