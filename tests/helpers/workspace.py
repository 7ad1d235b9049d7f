"""A throwaway copy of the repository to run the pipeline in (end-to-end tests, benchmarks).

The copy holds what a fresh clone would (tracked files plus new, not-ignored ones),
no DVC lock, cache or outputs, and is its own git repository, so `dvc repro` in it
runs every stage from scratch without touching the working tree it came from.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from medlab.config import apply_overlay
from medlab.paths import project_root

# Progress bars off (one line per refresh under papermill); never reach the hub.
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
             "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


# Pipeline outputs committed with dvc.lock (cache: false): like the lock, left out of a
# copy, which runs every stage from scratch.
COMMITTED_OUTPUTS = ("reports/metrics/",)


def clean_copy(dest: Path, overlay: str | None = None, source: Path | None = None) -> Path:
    """Copy the repository to ``dest`` (git-tracked and new files only), apply an overlay."""
    source = source or project_root()
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=source, check=True, capture_output=True).stdout.decode()
    for name in filter(None, listing.split("\0")):
        if name == "dvc.lock" or name.startswith(COMMITTED_OUTPUTS) or not (source / name).is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target)
    env = pipeline_env()
    git = ["git", "-c", "user.name=medlab", "-c", "user.email=medlab@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True, env=env)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True, env=env)
    subprocess.run([*git, "commit", "-qm", "clean copy"], cwd=dest, check=True, env=env)
    if overlay:
        apply_overlay(dest / "params.yaml", dest / overlay)
    return dest


def pipeline_env(repo: Path | None = None) -> dict[str, str]:
    """The environment stages run in: this interpreter's tools first on PATH, no DVC_ vars,
    and the copy's own ``src`` first on PYTHONPATH (the venv's editable install points at
    the checkout the copy came from: a copy runs its own code, as a clone would)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if repo is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(repo) / "src"), env.get("PYTHONPATH")]))
    env.update(QUIET_ENV)
    return env


def run_dvc(repo: Path, *args: str) -> tuple[str, float]:
    """Run ``dvc ARGS`` in ``repo``; return (combined output, seconds). Raises on failure."""
    start = time.perf_counter()
    result = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=repo,
                            env=pipeline_env(repo), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {repo}:\n{output[-6000:]}")
    return output, seconds


def edit_function_body(file: Path, function: str, statement: str = "_edited = True") -> None:
    """Add ``statement`` to ``function``'s body, before its first statement after the
    docstring: by default a code change as far as any cache or DVC can tell, behaviour
    kept; ``return ...`` changes the behaviour too."""
    source = file.read_text(encoding="utf-8")
    node = next(n for n in ast.walk(ast.parse(source))
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function)
    first = node.body[1] if isinstance(node.body[0], ast.Expr) and len(node.body) > 1 else node.body[0]
    lines = source.splitlines(keepends=True)
    lines.insert(first.lineno - 1, " " * first.col_offset + statement + "\n")
    file.write_text("".join(lines), encoding="utf-8")
