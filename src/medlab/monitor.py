"""Training curves: the loss curve rows of a recipe's stages and their DVCLive logs
(the progress lines printed during training are medlab.progress).

DVCLive logs are written from ``trainer.state.log_history`` when training ends,
not streamed: the history is restored from the checkpoint on resume, so a run that
crashed and resumed still logs one complete curve (a streamed log would lose the
part before the crash, because DVC deletes a stage's outputs when it reruns it).
One writer serves pre-training (one run) and a fine-tuning recipe (several stages, each
stage's steps offset by the steps of the stages before it, so every metric is one
continuous curve, plus each stage's own ``<k>_<stage>/loss``).
"""

from __future__ import annotations

from pathlib import Path

# Trainer log key -> DVCLive metric name
LOGGED = (("loss", "train/loss"), ("learning_rate", "train/learning_rate"), ("grad_norm", "train/grad_norm"),
          ("eval_loss", "eval/loss"))


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
