"""README.md's result numbers come from the committed metrics (issue 16 §3): the block between
the markers is what medlab.report.readme renders from reports/metrics/, params.yaml and
benchmarks/results/, and a changed metric changes it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medlab.report import readme
from medlab.report.site import ReportError

ROOT = Path(__file__).resolve().parents[1]


def run_files(dest: Path) -> Path:
    """The files the block is rendered from, copied (so a test can change one)."""
    for rel in ("README.md", "params.yaml", "benchmarks/results/filter_scaling.json",
                "benchmarks/results/repro_default.json", "benchmarks/results/stage_times_smoke.json",
                "benchmarks/results/make_test.json"):
        if not (ROOT / rel).is_file():
            continue  # make_test.json: written by .ci/run, absent until a recorded run
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    shutil.copytree(ROOT / "reports" / "metrics", dest / "reports" / "metrics")
    return dest


def test_readme_results_are_the_committed_metrics():
    diff = readme.update(ROOT, check=True)
    assert not diff, "README.md's results differ from reports/metrics/ (run `make readme`):\n" + diff


def test_a_changed_metric_changes_the_readme(tmp_path):
    root = run_files(tmp_path)
    path = root / "reports/metrics/pretrain.json"
    metrics = json.loads(path.read_text())
    metrics["valid_perplexity"] = 123.456
    path.write_text(json.dumps(metrics))
    diff = readme.update(root, check=True)
    assert "perplexity **123.46**" in diff
    readme.update(root)
    assert not readme.update(root, check=True)
    assert (root / "README.md").read_text(encoding="utf-8").count(readme.BEGIN) == 1


def test_wording_follows_the_numbers(tmp_path):
    root = run_files(tmp_path)
    path = root / "reports/metrics/probe_validity.json"
    validity = json.loads(path.read_text())
    for holds, words in ((True, "validity check holds.**"), (False, "validity check does not hold.**")):
        path.write_text(json.dumps({**validity, "holds": holds}))
        assert words in readme.render_block(root)
    assert readme.holm(0.2) == "n.s., p = 0.20" and readme.holm(0.01) == "p = 0.010" and readme.holm(3e-7) == "p < 1e-6"
    assert readme.signed(-0.0931) == "−0.093" and readme.signed(0.0001) == "0.000"


def test_a_missing_metrics_file_or_marker_is_named(tmp_path):
    root = run_files(tmp_path)
    (root / "reports/metrics/filter.json").unlink()
    with pytest.raises(ReportError, match="reports/metrics/filter.json"):
        readme.render_block(root)
    with pytest.raises(ReportError, match="exactly one results block"):
        readme.replace_block("# no markers\n", "block")


def test_the_repro_time_is_recorded_only_for_a_run_that_computed_every_stage(tmp_path, monkeypatch):
    import time

    from medlab.report import repro_time

    stages = ["knowledge", "finetune@a", "finetune@b", "report"]
    monkeypatch.setattr(repro_time, "stage_names", lambda root: stages)
    (tmp_path / "params.yaml").write_text("base: {}\n")
    start = time.time() - 1
    for stage, seconds in (("knowledge", 1.0), ("finetune@a", 50.0), ("report", 7.0)):
        path = repro_time.timing_file(tmp_path, stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"wall_s": seconds}))
    assert repro_time.record(tmp_path, start, 100.0) is None  # finetune@b did not run: not recorded
    assert not (tmp_path / repro_time.RECORD).exists()
    repro_time.timing_file(tmp_path, "finetune@b").write_text(json.dumps({"wall_s": 70.0}))
    repro_time.timing_file(tmp_path, "finetune@b").write_text(json.dumps({"wall_s": 70.0, "tasks_reused": ["0_x"]}))
    assert repro_time.record(tmp_path, start, 140.0) is None  # finetune@b took a stage an earlier run trained
    # ... unless finetune@a trained it in this run (a recipe sharing another's first stages)
    repro_time.timing_file(tmp_path, "finetune@a").write_text(json.dumps({"wall_s": 50.0, "tasks_computed": ["0_x"]}))
    record = repro_time.record(tmp_path, start, 140.0)
    assert record["wall_s"] == 140.0 and record["notebooks_s"] == 128.0 and record["stages"]["finetune@b"] == 70.0
    assert json.loads((tmp_path / repro_time.RECORD).read_text()) == record


def test_the_stage_table_and_the_repro_time_come_from_the_recorded_run(tmp_path):
    root = run_files(tmp_path)
    path = root / "benchmarks/results/repro_default.json"
    record = json.loads(path.read_text())
    record["wall_s"] = 1234 * 60.0
    record["stages"]["pretrain"] = 4321.0
    path.write_text(json.dumps(record))
    diff = readme.update(root, check=True)
    assert "takes 1,234.0 minutes" in diff or "takes 1234.0 minutes" in diff
    assert "| 72.0 min |" in diff  # pretrain's row
    # the record says which params.yaml it timed: the README says so when today's differs
    from medlab.report.repro_time import params_digest

    record["params_sha256"] = params_digest(root)
    path.write_text(json.dumps(record))
    assert "has not been timed from empty caches" not in readme.render_block(root, "times")
    params = root / "params.yaml"  # a comment edit times the same pipeline; a value edit another one
    params.write_text(params.read_text(encoding="utf-8").replace("\n", "  # edited\n", 1), encoding="utf-8")
    assert "has not been timed from empty caches" not in readme.render_block(root, "times")
    params.write_text(params.read_text(encoding="utf-8").replace("seed: 1234", "seed: 1235", 1), encoding="utf-8")
    assert "has not been timed from empty caches yet" in readme.render_block(root, "times")
    params.write_text(params.read_text(encoding="utf-8").replace("seed: 1235", "seed: 1234", 1), encoding="utf-8")
    record["params_sha256"] = "0" * 16
    path.write_text(json.dumps(record))
    assert "has not been timed from empty caches yet" in readme.render_block(root, "times")
    # make test's time comes from the record .ci/run writes (conftest.pytest_terminal_summary)
    tests = root / "benchmarks/results/make_test.json"
    tests.unlink(missing_ok=True)
    assert "not recorded yet" in readme.render_block(root, "times")
    tests.write_text(json.dumps({"date": "2026-01-02", "cpus": 2, "tests_s": 1230.0, "wall_s": 1400.0, "passed": 510,
                                 "skipped": 1, "failed": 0, "error": 0, "workers": 2}))
    block = readme.render_block(root, "times")
    assert "`make test` takes 23.3 minutes on a fresh clone with the install (510 tests passed," in block
    assert "20.5 minutes of tests on 2 CPU cores, measured 2026-01-02" in block
    path.unlink()
    with pytest.raises(ReportError, match="repro_default.json"):
        readme.update(root, check=True)
