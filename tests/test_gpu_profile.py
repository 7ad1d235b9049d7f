"""The `gpu` profile: params.gpu.yaml validates on top of params.yaml, its FLOPs-per-token
arithmetic, and benchmarks/gpu_profile.py run end to end at a CPU size (the same code the
GPU runs; no GPU is needed or assumed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def profile_module():
    spec = importlib.util.spec_from_file_location("gpu_profile", ROOT / "benchmarks" / "gpu_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_overlay_validates_and_its_flops_per_token_are_the_palm_count():
    from types import SimpleNamespace

    gpu = profile_module()
    params = gpu.merged_params(tiny=False)
    m = params.pretrain.model
    assert (m.hidden_size, m.num_hidden_layers, params.runtime.dtype, params.finetune.train.packing) == \
        (1024, 24, "bfloat16", "flat")
    config = SimpleNamespace(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, num_key_value_heads=8,
                             intermediate_size=2816, vocab_size=8000)
    # per layer: q,o 2 x 1024^2 = 2,097,152; k,v 2 x 1024 x 512 = 1,048,576; MLP 3 x 1024 x 2816 = 8,650,752
    # -> 11,796,480 x 24 = 283,115,520; + head 1024 x 8000 = 8,192,000 -> N = 291,307,520
    # 6N = 1,747,845,120; attention 12 x 24 x 1024 x 1024 = 301,989,888
    assert gpu.flops_per_token(config, 1024) == 1_747_845_120 + 301_989_888


@pytest.mark.slow
def test_the_profile_benchmark_runs_at_a_cpu_size(tmp_path):
    out = tmp_path / "profile.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_profile.py"), "--tiny", "--steps", "2",
                           "--warmup", "1", "--items", "4", "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["runtime"]["dtype"] == "float32"
    for name in ("pretrain", "sft"):
        assert result[name]["tokens_per_s"] > 0 and result[name]["mfu"] is None  # no peak known for a CPU
    assert result["mcq_scoring"]["items"] == 4 and result["mcq_scoring"]["items_per_s"] > 0
    assert "tokens/s" in done.stdout
