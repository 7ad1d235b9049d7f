"""A recipe's training curves: one DVCLive folder, every stage on one step axis.

Stage k's steps are offset by the steps of the stages before it, so the folder holds one
continuous curve per metric (``train/loss``, ``train/learning_rate``) plus, per stage, its
own ``<k>_<stage>/loss`` - what ``dvc plots show`` draws and the report overlays.
Written from the stages' saved log histories after training, so a resumed (or reused)
stage still contributes its full curve.
"""

from __future__ import annotations

from pathlib import Path


def curves(histories: list[dict]) -> list[dict]:
    """Rows (global step, stage label, loss, learning rate) over all stages in order."""
    rows, offset = [], 0
    for summary in histories:
        label = f"{summary['index']}_{summary['stage']}"
        for entry in summary["log_history"]:
            if "loss" in entry and "step" in entry:
                rows.append({"step": offset + int(entry["step"]), "stage": label, "loss": float(entry["loss"]),
                             "learning_rate": float(entry.get("learning_rate", float("nan")))})
        offset += int(summary["steps"])
    return rows


def write_dvclive(histories: list[dict], directory: Path) -> None:
    """The curves as DVCLive plot files under ``directory``/plots/metrics, and nothing else:
    dvc.yaml plots the whole folder, and DVC reads every file in it as a plot, so DVCLive's
    summary (metrics.json) is removed - the recipe's numbers are in reports/metrics/finetune/."""
    from dvclive import Live

    with Live(str(directory), dvcyaml=False, save_dvc_exp=False) as live:
        for row in curves(histories):
            live.step = row["step"]
            live.log_metric("train/loss", row["loss"], plot=True)
            live.log_metric(f"{row['stage']}/loss", row["loss"], plot=True)
            live.log_metric("train/learning_rate", row["learning_rate"], plot=True)
    Path(live.metrics_file).unlink(missing_ok=True)
