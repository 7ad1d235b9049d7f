"""Resuming training: checkpoints outside DVC's outputs, the last complete one found and used.

Checkpoints go to ``.cache/medlab/checkpoints/<stage>/<run key>`` (medlab.cachekey), not
under the stage's outputs, because DVC deletes a stage's outputs before rerunning it. A
rerun after a crash or Ctrl-C with the same key resumes; a changed run has a new key and
starts afresh. Pre-training and every fine-tuning stage use this.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from transformers import Trainer


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` whose save finished; half-written newer ones are removed.

    The Trainer writes a checkpoint as weights -> optimizer/scheduler -> RNG ->
    ``trainer_state.json``, and deletes the older checkpoint (save_total_limit) only
    after that. A kill during the save therefore leaves checkpoint-N without a
    readable trainer_state.json next to a complete checkpoint-(N - save_steps):
    resume from the complete one and drop the torn one, which the Trainer would
    otherwise pick (transformers' get_last_checkpoint only looks at the name).
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    steps = sorted((int(m.group(1)), d) for d in output_dir.iterdir()
                   if d.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", d.name)))
    for _, ckpt in reversed(steps):
        try:
            json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
            return ckpt
        except (OSError, ValueError):
            print(f"[resume] {ckpt} is incomplete (killed while saving); removing it", flush=True)
            shutil.rmtree(ckpt, ignore_errors=True)
    return None


def train_resumable(trainer: Trainer) -> bool:
    """Train, resuming from the last complete checkpoint in the output dir; True if it resumed."""
    last = last_complete_checkpoint(Path(trainer.args.output_dir))
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    return last is not None


def clear_checkpoints(output_dir: Path) -> None:
    shutil.rmtree(output_dir, ignore_errors=True)
