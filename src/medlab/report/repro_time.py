"""How long the whole pipeline takes: ``make repro`` times ``dvc repro`` and keeps the last run
that computed every stage, so README.md states a measured time, never a typed one.

    python -m medlab.report.repro_time dvc repro     # what `make repro` runs

After the command, the stages that ran in it are found by their timing files
(``reports/timing/<stage>.json``, written by each notebook, newer than the start). If every
stage of ``dvc.yaml`` ran and none took finished work of an earlier run from medlab's own
caches (``reused_from_earlier``: an all-stages-changed run after a notebook edit reuses
trained models and scored tasks), the
total wall time and each stage's notebook time go to ``benchmarks/results/repro_default.json``
(with the machine, the date and ``params_digest``: what params.yaml says, not how -- a
comment edit leaves it as it was); any other run is printed, not
recorded, because its total says nothing about the pipeline's cost. The gap
between the total and the sum of notebook times is DVC, kernel start-up and HTML rendering.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from medlab.paths import project_root
from medlab.records import write_json


def params_digest(root: Path) -> str:
    """sha256 (16 hex digits) of params.yaml's values as DVC and the stages read them (YAML
    1.2, keys sorted): a comment or layout edit changes no run, so it keeps the digest."""
    from ruamel.yaml import YAML

    values = YAML(typ="safe").load((Path(root) / "params.yaml").read_text(encoding="utf-8"))
    return hashlib.sha256(json.dumps(values, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]

RECORD = Path("benchmarks") / "results" / "repro_default.json"


def stage_names(root: Path) -> list[str]:
    """Every stage of dvc.yaml in pipeline order, fan-outs expanded (``finetune@specific_only``)."""
    done = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=root,
                          capture_output=True, text=True, check=True)
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def timing_file(root: Path, stage: str) -> Path:
    """reports/timing/<stage>.json, or reports/timing/<group>/<item>.json for a fan-out."""
    group, _, item = stage.partition("@")
    return root / "reports" / "timing" / (f"{group}/{item}.json" if item else f"{stage}.json")


def ran_since(root: Path, stages: list[str], since: float) -> dict[str, dict]:
    """The timing records of the stages whose timing file was written after ``since``."""
    out = {}
    for stage in stages:
        path = timing_file(root, stage)
        if path.is_file() and path.stat().st_mtime >= since:
            out[stage] = json.loads(path.read_text())
    return out


def reused_from_earlier(timings: dict[str, dict]) -> list[str]:
    """The stages that took finished work from an earlier run: a reused task that no stage of
    the same group computed in this run (the DPO recipe reuses the Hypnos stages that
    ``finetune@general_to_specific`` trains in the same run: that is not earlier work), a
    resumed pre-training, teacher calls answered from the cache."""
    computed: dict[str, set] = {}
    for stage, t in timings.items():
        computed.setdefault(stage.partition("@")[0], set()).update(t.get("tasks_computed") or [])
    return sorted(stage for stage, t in timings.items()
                  if set(t.get("tasks_reused") or []) - computed[stage.partition("@")[0]]
                  or t.get("resumed") or t.get("cached_calls"))


def record(root: Path, since: float, wall: float, command: str = "dvc repro") -> dict | None:
    """Write the record when every stage ran since ``since``; returns it (None for a partial run)."""
    stages = stage_names(root)
    timings = ran_since(root, stages, since)
    reusing = reused_from_earlier(timings)
    print(f"dvc repro: {wall / 60:.1f} min wall, {len(timings)} of {len(stages)} stages ran"
          + (f", {len(reusing)} reusing cached work ({', '.join(reusing)})" if reusing else ""))
    if len(timings) < len(stages) or reusing:
        print("not every stage computed everything: the time is not recorded (benchmarks/results/"
              "repro_default.json keeps the last run that did)")
        return None
    ran = {stage: float(t["wall_s"]) for stage, t in timings.items()}
    result = {"command": command, "wall_s": round(wall, 1), "notebooks_s": round(sum(ran.values()), 1), "stages": ran,
              "cpus": os.cpu_count(), "platform": platform.platform(),
              "date": datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d"),
              "params_sha256": params_digest(root)}
    write_json(root / RECORD, result)
    print(f"recorded in {RECORD}")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.exit("usage: python -m medlab.report.repro_time COMMAND ... (e.g. dvc repro)")
    root = project_root()
    start = time.time()
    code = subprocess.call(argv, cwd=root)
    if code == 0:
        record(root, start, time.time() - start, " ".join(Path(a).name if k == 0 else a for k, a in enumerate(argv)))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
