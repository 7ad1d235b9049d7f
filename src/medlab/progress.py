"""Watching training as it runs: one progress line per N% of the steps (not a tqdm bar).

Under papermill ``--log-output`` a tqdm bar prints every refresh as a new line, and
transformers swaps in an HTML widget that vanishes from saved notebooks; so stages
turn bars off (``TQDM_DISABLE=1``, ``disable_tqdm=True``) and print these lines.
Its own module because a TrainerCallback imports transformers' trainer machinery (~4 s
on 2 cores), which the curves in medlab.monitor do not need.
"""

from __future__ import annotations

import math
import time

from transformers import TrainerCallback


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
