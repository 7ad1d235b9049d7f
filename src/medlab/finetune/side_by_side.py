"""A recipe's seeds trained side by side: one process per seed, each with a share of the cores.

Why: the embedded model is small (128 hidden, 2 layers), so one training process turns
a second thread into only 1.7x the speed of one (one SFT epoch on 2 cores: 9.3-9.9 s
with 2 threads, 16.4-17.2 s with 1); two 1-thread processes side by side each ran it
in 15.8-17.6 s, 8-9 s of wall time per epoch. Three seeds on two cores, every stage
of the recipe, the default data at two epochs (python benchmarks/side_by_side.py):
general_to_specific 175.3 s side by side against 195.1 s one after another (1.11x);
specific_only, one short stage, 74.1 / 74.2 s against 76.1 / 78.9 s (1.03-1.06x: each
process pays ~4 s to start). Same final losses either way.

Each process runs ``python -m medlab.finetune --recipe R --seed S --threads N`` -- every
stage of the recipe for that seed, in order, through the same ``run_stage`` as the
notebook (the stage cache makes it resumable: a crashed or interrupted seed resumes
from its last checkpoint on the next run, and finished stages are reused). Threads
per process: ``training_threads`` (fixed by params, not by how many seeds are left to
train, so a seed's floats do not depend on what was cached). Output lines are
prefixed with the seed; a failing seed stops the others and its last lines are shown.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path


def side_by_side(params, recipe: str) -> bool:
    """Whether ``recipe``'s seeds train in separate processes (``finetune.parallel_seeds``,
    more than one seed, trained in process rather than by the accelerate launcher)."""
    from medlab.finetune.run import recipe_seeds

    ft = params.finetune
    return ft.parallel_seeds and ft.launcher.kind == "in_process" and len(recipe_seeds(params, recipe)) > 1


def training_threads(params, recipe: str) -> int:
    """Torch threads one training process of ``recipe`` uses: ``base.torch_threads`` (0 =
    every core) shared by the processes that run at once -- the recipe's seeds side by
    side, or the accelerate launcher's processes. Part of every stage key: the float
    results depend on it (the order of the sums inside a matmul)."""
    from medlab.finetune.run import recipe_seeds

    ft = params.finetune
    total = params.base.torch_threads or os.cpu_count() or 1
    if side_by_side(params, recipe):
        return max(1, total // len(recipe_seeds(params, recipe)))
    if ft.launcher.kind == "accelerate":
        return max(1, total // ft.launcher.num_processes)
    return total


def _pump(stream, prefix: str, tail: deque, log) -> None:
    for line in stream:
        tail.append(line.rstrip("\n"))
        log(f"{prefix} {line.rstrip()}")


def train_seeds(params, recipe: str, seeds: list[int], root: Path, log=print) -> None:
    """Train every stage of ``recipe`` for each of ``seeds`` at once, one process per seed;
    returns when all have finished, raises RuntimeError naming the first seed that failed
    (after stopping the others). Ctrl-C stops them all; what they saved is kept."""
    threads = training_threads(params, recipe)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), DVC_ROOT=str(root),
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    procs: dict[int, subprocess.Popen] = {}
    tails: dict[int, deque] = {}
    pumps = []
    try:
        for seed in seeds:
            cmd = [sys.executable, "-m", "medlab.finetune", "--recipe", recipe, "--seed", str(seed),
                   "--threads", str(threads)]
            log(f"[s{seed}] {' '.join(cmd[1:])}")
            procs[seed] = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True, encoding="utf-8", errors="replace", preexec_fn=_die_with_parent)
            tails[seed] = deque(maxlen=30)
            pump = threading.Thread(target=_pump, args=(procs[seed].stdout, f"[s{seed}]", tails[seed], log),
                                    daemon=True)
            pump.start()
            pumps.append(pump)
        failed = None
        while failed is None and any(p.poll() is None for p in procs.values()):
            for seed, proc in procs.items():
                try:
                    if proc.wait(timeout=0.5) != 0:
                        failed = seed
                        break
                except subprocess.TimeoutExpired:
                    continue
        failed = failed if failed is not None else next((s for s, p in procs.items() if p.returncode != 0), None)
        if failed is not None:
            _stop(procs)
            for pump in pumps:
                pump.join(timeout=5)
            raise RuntimeError(f"finetune@{recipe}: seed {failed} failed (exit {procs[failed].returncode}); "
                               f"its last lines:\n" + "\n".join(tails[failed]))
        for pump in pumps:
            pump.join(timeout=5)
    except BaseException:
        _stop(procs)
        raise


# Looked up here, not in the forked child: a child of a threaded process may only call
# async-signal-safe code before exec (no imports, no locks).
_PRCTL = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, SIGTERM it when the notebook's kernel dies (even
    by SIGKILL), so no orphan keeps writing to the stage cache behind a rerun."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def _stop(procs: dict[int, subprocess.Popen]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
