"""Shared fixtures: the repository root and a loaded params file."""

from __future__ import annotations

import json
import os
import time
from datetime import date
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Under pytest-xdist each worker owns one core: one torch thread per worker (two workers
# with two threads each on two cores run slower than one worker alone). The pipelines the
# end-to-end tests run read base.torch_threads: 1 from params.smoke.yaml.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

# Tests never read a DVC_ROOT inherited from an outer `dvc repro`.
os.environ.pop("DVC_ROOT", None)
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def kb():
    from medlab.knowledge import load_embedded

    return load_embedded()


# ------------------------------------------------ the toy model and three real families
# Stage-level tests that load a model run on medlab's own toy model (trained tokenizer,
# template with generation markers) *and* on tiny random-weight Qwen2 / Llama-3 / Mistral
# models with their real tokenizers and stock-style templates (tests/helpers/real_models.py).
FAMILY_NAMES = ("toy", "qwen2", "llama", "mistral")
TOY_TEXTS = ["丙泊酚的常见不良反应包括低血压和注射痛。", "罗库溴铵是非去极化肌松药，可用舒更葡糖拮抗。",
             "麻醉前成人禁食固体食物6小时，清饮料2小时。", "ASA分级III级指有严重系统性疾病的患者。"]


def build_toy_model(path: Path) -> Path:
    """medlab's own kind of base model: a byte-level BPE trained here + a tiny Llama."""
    from types import SimpleNamespace

    import torch

    from medlab.pretrain.model import build_llama
    from medlab.pretrain.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(TOY_TEXTS * 8, vocab_size=400, min_frequency=2, model_max_length=512)
    cfg = SimpleNamespace(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0,
                          tie_word_embeddings=True)
    torch.manual_seed(0)
    model = build_llama(cfg, len(tokenizer), tokenizer.eos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    """name -> directory of a model with a chat template, built (or taken from the cache) on use."""
    from helpers.real_models import real_model

    cache: dict[str, Path] = {}

    def get(name: str, plain: bool = False) -> Path:
        key = f"{name}{'-plain' if plain else ''}"
        if key not in cache:
            if name == "toy":
                path = build_toy_model(tmp_path_factory.mktemp("toy"))
                if plain:
                    import json

                    config = json.loads((path / "tokenizer_config.json").read_text())
                    config.pop("chat_template", None)
                    (path / "tokenizer_config.json").write_text(json.dumps(config))
                    (path / "chat_template.jinja").unlink(missing_ok=True)
                cache[key] = path
            else:
                cache[key] = real_model(name, plain=plain)
        return cache[key]

    return get


@pytest.fixture(params=FAMILY_NAMES)
def family(request, family_dirs):
    """(name, directory) of each family's model in turn."""
    return request.param, family_dirs(request.param)


# `make test` runs on every core (pytest-xdist, --dist loadfile: a module stays on one
# worker, so its module-scoped pipeline run is shared by its tests). Modules are handed
# out in collection order, two to each worker first: the two longest end-to-end modules
# go first so they run side by side on different workers, the rest fill in around them.
LONGEST_FIRST = ("test_e2e.py", "test_e2e_real.py")


# `.ci/run` sets MEDLAB_TEST_RECORD to benchmarks/results/make_test.json: a passing run writes
# its counts and test time there, and README's `make test` sentence is rendered from it.
RECORD = os.environ.get("MEDLAB_TEST_RECORD")
STARTED = time.monotonic()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RECORD or hasattr(config, "workerinput") or exitstatus != 0:
        return
    counts = {k: len(terminalreporter.stats.get(k, [])) for k in ("passed", "skipped", "failed", "error")}
    record = {"date": date.today().isoformat(), "cpus": os.cpu_count(), "tests_s": round(time.monotonic() - STARTED, 1),
              "workers": config.getoption("numprocesses", None) or 1, **counts}
    Path(RECORD).parent.mkdir(parents=True, exist_ok=True)
    Path(RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
