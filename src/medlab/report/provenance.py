"""What a page describes was run from: git revision and changed files, the dvc.lock hash
of every stage's inputs and outputs, package versions, date and hardware."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from ruamel.yaml import YAML

REPORT_STAGE = "report"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.rstrip("\n") if done.returncode == 0 else None  # porcelain lines start with a space


def lock_hash(root: Path) -> str:
    """sha256 (first 12 hex) of dvc.lock's entries for every stage but the report: the
    exact inputs and outputs (md5s) this page describes. Stable across reruns of the
    report itself, which rewrites its own entry."""
    lock = YAML(typ="safe").load((root / "dvc.lock").read_text(encoding="utf-8")) \
        if (root / "dvc.lock").is_file() else {}
    stages = {k: v for k, v in (lock or {}).get("stages", {}).items() if k != REPORT_STAGE}
    if not stages:
        return "none (no dvc.lock yet)"
    return hashlib.sha256(json.dumps(stages, sort_keys=True).encode()).hexdigest()[:12]


def hardware() -> dict:
    info = {"cpus": os.cpu_count(), "machine": platform.machine(), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                            if line.startswith("model name")), platform.processor() or "unknown")
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
        info["memory_gib"] = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        info.setdefault("cpu", platform.processor() or "unknown")
    try:
        import torch

        info["accelerators"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - torch without CUDA support, or no driver
        info["accelerators"] = []
    return info


RUN_OUTPUTS = ("dvc.lock", "reports/README.md")  # tracked files a run itself rewrites
PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "dvc", "papermill")


def run_info(root: Path) -> dict:
    """What was run, where and when."""
    rev = _git(root, "rev-parse", "HEAD")
    changed = _git(root, "status", "--porcelain", "--untracked-files=no")
    # dvc.lock and this stage's own results table change with every run; anything else
    # changed since the commit is worth saying
    dirty = [line[3:] for line in (changed or "").splitlines() if line[3:] not in RUN_OUTPUTS]
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "git_revision": rev or "not a git checkout",
        "git_subject": _git(root, "log", "-1", "--format=%s") if rev else None,
        "git_changed_files": dirty,
        "lock_hash": lock_hash(root),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": hardware(),
        "packages": versions,
    }
