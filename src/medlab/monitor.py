"""Watching training: one progress line per N% (not a tqdm bar), and the DVCLive curves.

Under papermill ``--log-output`` a tqdm bar prints every refresh as a new line, and
transformers swaps in an HTML widget that vanishes from saved notebooks; so stages
turn bars off (``TQDM_DISABLE=1``, ``disable_tqdm=True``) and print these lines.

DVCLive logs are written from ``trainer.state.log_history`` when training ends,
not streamed: the history is restored from the checkpoint on resume, so a run that
crashed and resumed still logs one complete curve (a streamed log would lose the
part before the crash, because DVC deletes a stage's outputs when it reruns it).
One writer serves pre-training (one run) and a fine-tuning recipe (several stages, each
stage's steps offset by the steps of the stages before it, so every metric is one
continuous curve, plus each stage's own ``<k>_<stage>/loss``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from transformers import TrainerCallback

# Trainer log key -> DVCLive metric name
LOGGED = (("loss", "train/loss"), ("learning_rate", "train/learning_rate"), ("grad_norm", "train/grad_norm"),
          ("eval_loss", "eval/loss"))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ProgressCallback(TrainerCallback):
    """Print ``step 120/1200 (10%) loss 3.21 lr 1.2e-03 9,800 tok/s eta 1m50s`` lines."""

    def __init__(self, tokens_per_step: int, every_percent: int = 10, label: str = "train"):
        self.tokens_per_step = tokens_per_step
        self.every = every_percent
        self.label = label
        self.next_mark = every_percent
        self.start_time = 0.0
        self.start_step = 0
        self.last_loss = math.nan

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_time, self.start_step = time.perf_counter(), state.global_step
        done = 100 * state.global_step / max(state.max_steps, 1)
        self.next_mark = (int(done) // self.every + 1) * self.every
        if state.global_step:
            print(f"[{self.label}] resumed at step {state.global_step}/{state.max_steps}", flush=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.last_loss = logs["loss"]

    def on_step_end(self, args, state, control, **kwargs):
        percent = 100 * state.global_step / max(state.max_steps, 1)
        if percent + 1e-9 < self.next_mark and state.global_step != state.max_steps:
            return
        self.next_mark = (int(percent) // self.every + 1) * self.every
        elapsed = time.perf_counter() - self.start_time
        steps = state.global_step - self.start_step
        rate = steps * self.tokens_per_step / elapsed if elapsed > 0 else 0.0
        eta = elapsed / steps * (state.max_steps - state.global_step) if steps else 0.0
        lr = next((h["learning_rate"] for h in reversed(state.log_history)
                   if "learning_rate" in h), math.nan)
        print(f"[{self.label}] step {state.global_step}/{state.max_steps} ({percent:.0f}%) "
              f"loss {self.last_loss:.3f} lr {lr:.1e} {rate:,.0f} tok/s "
              f"eta {_duration(eta)}", flush=True)


def _label(stage: dict) -> str | None:
    return f"{stage['index']}_{stage['stage']}" if "stage" in stage else None


def curves(stages: list[dict]) -> list[dict]:
    """Rows (global step, stage label, loss, learning rate) over all stages in order; a
    stage is ``{"log_history", "steps"[, "index", "stage"]}`` (a fine-tuning stage's summary)."""
    rows, offset = [], 0
    for stage in stages:
        for entry in stage["log_history"]:
            if "loss" in entry and "step" in entry:
                rows.append({"step": offset + int(entry["step"]), "stage": _label(stage), "loss": float(entry["loss"]),
                             "learning_rate": float(entry.get("learning_rate", float("nan")))})
        offset += int(stage["steps"])
    return rows


def write_dvclive(directory: Path, stages: list[dict], summary: dict | None = None) -> None:
    """The stages' log histories as DVCLive plot files under ``directory``/plots/metrics
    (``LOGGED`` metrics on one step axis; ``<k>_<stage>/loss`` per labelled stage) and
    ``summary`` as its metrics.json. Without a summary the metrics file is removed: dvc.yaml
    plots a recipe's whole folder and DVC would read it as a plot (a recipe's numbers are
    in reports/metrics/finetune/)."""
    from dvclive import Live

    with Live(str(directory), dvcyaml=False, save_dvc_exp=False) as live:
        offset = 0
        for stage in stages:
            label = _label(stage)
            for entry in sorted(stage["log_history"], key=lambda h: h.get("step", 0)):
                live.step = offset + int(entry.get("step", 0))
                for key, name in LOGGED:
                    if entry.get(key) is not None:
                        live.log_metric(name, float(entry[key]), plot=True)
                if label and entry.get("loss") is not None:
                    live.log_metric(f"{label}/loss", float(entry["loss"]), plot=True)
            offset += int(stage["steps"])
        for key, value in (summary or {}).items():
            live.summary[key] = value
    if summary is None:
        Path(live.metrics_file).unlink(missing_ok=True)
