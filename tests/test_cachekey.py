"""Cache keys follow the code (issue 16 §1): every resumable result -- a fine-tuning stage,
an evaluation or probe task, pre-training checkpoints, a cached LLM answer of a local
model or of the simulated teacher -- is keyed by the source of the modules that compute
it and all they import. Checked on a copy of the package, edited as a developer would."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers.workspace import edit_function_body

from medlab import codegraph
from medlab.cachekey import code_files, code_hash, result_key

SRC = Path(__file__).resolve().parents[1] / "src" / "medlab"


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A copy of src/medlab that ``code_hash()`` without ``package=`` reads."""
    copy = tmp_path / "src" / "medlab"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codegraph, "package_dir", lambda: copy)
    return copy


def test_an_edit_to_an_imported_module_changes_the_key_and_an_unrelated_one_does_not(package):
    before = code_hash("medlab.evaluate.run")
    edit_function_body(package / "filter" / "dedup.py", "normalize")  # evaluate never runs it
    assert code_hash("medlab.evaluate.run") == before
    edit_function_body(package / "evaluate" / "text_metrics.py", "rouge_l")  # imported by evaluate.run
    assert code_hash("medlab.evaluate.run") != before


def test_package_data_a_module_reads_is_part_of_its_code(package):
    before = code_hash("medlab.embedded.teacher")
    templates = package / "embedded" / "teacher_templates.yaml"
    templates.write_text(templates.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    assert code_hash("medlab.embedded.teacher") != before


def test_the_hash_is_the_same_in_any_clone_of_the_same_code(tmp_path):
    other = tmp_path / "elsewhere" / "medlab"
    shutil.copytree(SRC, other, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_hash("medlab.finetune.run", package=other) == code_hash("medlab.finetune.run", package=SRC)


def test_params_loader_is_left_out_and_an_unknown_module_is_an_error():
    names = {str(f.relative_to(SRC)) for f in code_files("medlab.evaluate.run", package=SRC)}
    assert not any(n.startswith("config/") for n in names)
    with pytest.raises(KeyError, match="medlab.evaluate.nope"):
        code_hash("medlab.evaluate.nope", package=SRC)


@pytest.mark.parametrize(("owner", "attribute", "must_cover"), [
    ("medlab.finetune.run", "CODE", ["finetune/sft.py", "finetune/masks.py", "finetune/dpo.py", "packing.py",
                                     "runtime.py", "finetune/data.py", "formats/instructions.py"]),
    ("medlab.evaluate.run", "CODE", ["evaluate/mcq.py", "evaluate/loglik.py", "evaluate/judges.py",
                                     "evaluate/tasks.py", "llm/hf.py", "formats/mcq.py", "stats.py"]),
    ("medlab.probe.score", "CODE", ["probe/score.py", "probe/scale.py", "probe/scales", "evaluate/loglik.py",
                                    "patient_groups.yaml"]),
    ("medlab.pretrain.trainer", "CODE", ["pretrain/trainer.py", "pretrain/model.py", "packing.py",
                                         "checkpoints.py"]),
])
def test_each_cached_result_is_keyed_by_the_code_that_computes_it(owner, attribute, must_cover):
    import importlib

    code = getattr(importlib.import_module(owner), attribute)
    names = [str(f.relative_to(SRC)) for f in code_files(*code, package=SRC)]
    missing = [m for m in must_cover if not any(n == m or n.startswith(m + "/") for n in names)]
    assert not missing, f"{owner}.{attribute} misses {missing}"


def test_an_evaluation_task_key_changes_with_its_code(package, tmp_path):
    from medlab.evaluate.run import TaskStore

    store = TaskStore(tmp_path / "store")
    what = {"model": "fp", "task": "mcq", "ids": ["a", "b"]}
    before = store.key(**what)
    assert store.key(**what) == before  # stable
    assert TaskStore(tmp_path / "probe", stage="probe", code=("medlab.probe.score",)).key(**what) != before
    edit_function_body(package / "evaluate" / "mcq.py", "score_loglik")
    assert store.key(**what) != before


def test_fine_tuning_and_pretraining_keys_change_with_their_code(package):
    from medlab.finetune.run import CODE as FINETUNE
    from medlab.pretrain.trainer import CODE as PRETRAIN

    finetune, pretrain = result_key("finetune", FINETUNE, {"p": 1}), result_key("pretrain", PRETRAIN, {"p": 1})
    edit_function_body(package / "finetune" / "masks.py", "answer_masks")
    assert result_key("finetune", FINETUNE, {"p": 1}) != finetune
    assert result_key("pretrain", PRETRAIN, {"p": 1}) == pretrain  # pre-training never masks
    edit_function_body(package / "packing.py", "pack_stream")
    assert result_key("pretrain", PRETRAIN, {"p": 1}) != pretrain


def test_cached_answers_of_a_local_model_and_of_the_simulated_teacher_follow_their_code(package):
    from medlab.embedded.teacher import SimulatedTeacher
    from medlab.knowledge.kb import load_embedded
    from medlab.llm.hf import HFBackend

    hf = HFBackend.identity("fp", "chat")
    assert HFBackend.identity("fp", "plain") != hf  # the layout changes the prompt the model sees
    kb = load_embedded()
    teacher = SimulatedTeacher(kb, {}, "mental_illness", seed=0).model
    edit_function_body(package / "llm" / "hf.py", "plain_prompt")
    edit_function_body(package / "embedded" / "teacher.py", "draw_fault")
    assert HFBackend.identity("fp", "chat") != hf
    assert SimulatedTeacher(kb, {}, "mental_illness", seed=0).model != teacher
