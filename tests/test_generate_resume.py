"""Crash safety of the generate stage with the `openai` backend against a local server.

Run `dvc repro generate` to completion in one copy of the repository (the reference).
In a second copy, SIGKILL the whole process group mid-way through the teacher calls,
then rerun: the output must be byte-identical to the reference, and the server must
never see again a request whose answer the killed run had already cached.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.workspace import clean_copy, pipeline_env, run_dvc

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from fake_openai import messages_hash  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HELPER = Path(__file__).parent / "helpers" / "fake_openai.py"
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def start_server(log: Path, delay_ms: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(HELPER), "--log", str(log), "--delay-ms", str(delay_ms),
                             "--fail-rate", "0.2", "--key", "test-key"], stdout=subprocess.PIPE, text=True)
    port = proc.stdout.readline().split()[1]
    return proc, f"http://127.0.0.1:{port}/v1"


def configure(repo: Path, base_url: str) -> None:
    params = repo / "params.yaml"
    text = params.read_text(encoding="utf-8")
    text = text.replace("    backend: simulated", "    backend: openai", 1)
    text = text.replace("      base_url: http://localhost:8000/v1", f"      base_url: {base_url}")
    text = text.replace("      api_key_env: OPENAI_API_KEY", "      api_key_env: MEDLAB_TEST_KEY")
    text = text.replace("      max_concurrency: 8", "      max_concurrency: 4")
    params.write_text(text, encoding="utf-8")


def log_entries(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def cached_calls(repo: Path) -> set[str]:
    db = sqlite3.connect(repo / ".cache/medlab/llm/calls.sqlite")
    rows = db.execute("SELECT request FROM calls").fetchall()
    db.close()
    return {messages_hash(json.loads(r[0])["messages"]) for r in rows}


def kill_everything_in(repo: Path, pid: int) -> None:
    """SIGKILL the run as a crash would: its process group and every process working in the
    copy (the Jupyter kernel runs in its own session, with its cwd in notebooks/)."""
    os.killpg(pid, signal.SIGKILL)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd").startswith(str(repo)):
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass


def outputs(repo: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((repo / "data/generate").glob("*.jsonl"))}


def test_sigkill_then_rerun_is_byte_identical_and_repeats_no_completed_call(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_TEST_KEY", "test-key")
    servers = []
    try:
        server_a, url_a = start_server(tmp_path / "a.jsonl", delay_ms=5)
        servers.append(server_a)
        reference = clean_copy(tmp_path / "a", overlay="params.smoke.yaml", source=ROOT)
        configure(reference, url_a)
        run_dvc(reference, "repro", "generate")
        expected = outputs(reference)
        total = sum(e["status"] == 200 for e in log_entries(tmp_path / "a.jsonl"))
        assert expected and total > 200

        log_b = tmp_path / "b.jsonl"
        server_b, url_b = start_server(log_b, delay_ms=25)
        servers.append(server_b)
        crashed = clean_copy(tmp_path / "b", overlay="params.smoke.yaml", source=ROOT)
        configure(crashed, url_b)
        run_dvc(crashed, "repro", "corpus")  # upstream stages first: the kill lands in generate
        proc = subprocess.Popen([str(Path(sys.executable).parent / "dvc"), "repro", "generate"], cwd=crashed,
                                env=pipeline_env(crashed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 300
        while sum(e["status"] == 200 for e in log_entries(log_b)) < total // 3:
            assert proc.poll() is None, "the run finished before it could be killed"
            assert time.time() < deadline
            time.sleep(0.05)
        kill_everything_in(crashed, proc.pid)
        proc.wait()
        time.sleep(1.0)  # let in-flight HTTP requests land in the server log
        done_before_kill = cached_calls(crashed)
        seen_before_kill = len(log_entries(log_b))
        assert 0 < len(done_before_kill) < total

        run_dvc(crashed, "repro", "generate")
        after = log_entries(log_b)[seen_before_kill:]
        repeated = [e for e in after if e["messages"] in done_before_kill]
        assert not repeated, f"{len(repeated)} completed calls were requested again"
        assert outputs(crashed) == expected
    finally:
        for server in servers:
            server.kill()
