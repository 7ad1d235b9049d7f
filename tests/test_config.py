"""params.yaml -> validated sections: every way a params file can be wrong gets one clear line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pytest

from medlab.config import (
    ConfigError,
    Params,
    apply_overlay,
    load_params,
    read_yaml,
    validate_params,
)
from medlab.config.__main__ import main


def write_variant(tmp_path: Path, root: Path, old: str, new: str, name="params.yaml") -> Path:
    text = (root / "params.yaml").read_text(encoding="utf-8")
    assert old in text, f"test setup: {old!r} not in params.yaml"
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def error_of(path: Path, root: Path) -> str:
    with pytest.raises(ConfigError) as info:
        validate_params(read_yaml(path), filename=path.name, root=root)
    return str(info.value)


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(needle)


def test_params_yaml_validates(root):
    params = validate_params(read_yaml(root / "params.yaml"), root=root)
    assert isinstance(params, Params)
    assert params.pretrain.train.learning_rate == pytest.approx(3.0e-3)


def test_smoke_overlay_validates_and_shrinks(root, tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text((root / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    default = load_params(root / "params.yaml")
    smoke = apply_overlay(target, root / "params.smoke.yaml", root=root)
    assert smoke.pretrain.train.max_steps < default.pretrain.train.max_steps
    assert smoke.pretrain.model.hidden_size < default.pretrain.model.hidden_size
    # The rewritten file keeps its comments and validates on its own.
    text = target.read_text(encoding="utf-8")
    assert "# One seed drives every random choice" in text
    assert "    path: null  # str or null\n" in text  # nulls stay explicit
    assert validate_params(read_yaml(target), root=root) == smoke


def test_typo_names_file_line_key_and_suggestion(root, tmp_path):
    path = write_variant(tmp_path, root, "    hidden_size: 128", "    hiden_size: 128")
    message = error_of(path, root)
    line = line_of(path, "hiden_size")
    # One mistake, one line (the key it replaced is not also reported as missing).
    assert message == f"params.yaml:{line}: pretrain.model.hiden_size: unknown key (did you mean hidden_size?)"


def test_a_really_missing_key_is_reported(root, tmp_path):
    path = write_variant(tmp_path, root, "    hidden_size: 128  # int >= 8\n", "")
    assert "pretrain.model.hidden_size: missing key" in error_of(path, root)


def test_wrong_type_is_not_coerced(root, tmp_path):
    path = write_variant(tmp_path, root, "    max_steps: 1600", '    max_steps: "1600"')
    message = error_of(path, root)
    assert re.search(r"params\.yaml:\d+: pretrain\.train\.max_steps: input should be a valid integer", message)


def test_bool_is_not_an_int(root, tmp_path):
    path = write_variant(tmp_path, root, "  seed: 1234", "  seed: true")
    assert "base.seed: input should be a valid integer" in error_of(path, root)


def test_out_of_range_value(root, tmp_path):
    path = write_variant(tmp_path, root, "  anesthesia_coverage: 0.5", "  anesthesia_coverage: 1.5")
    assert "corpus.anesthesia_coverage: input should be less than or equal to 1" in error_of(path, root)


def test_unknown_choice(root, tmp_path):
    path = write_variant(tmp_path, root, "  init: scratch", "  init: scrach")
    assert "pretrain.init: input should be 'scratch' or 'pretrained'" in error_of(path, root)


def test_unknown_section(root, tmp_path):
    path = write_variant(tmp_path, root, "base:\n", "bsae:\n")
    message = error_of(path, root)
    assert "bsae: unknown key (did you mean base?)" in message


def test_yaml_12_floats(root, tmp_path):
    # PyYAML (YAML 1.1) reads 3e-3 as a string; DVC and medlab read it as a float.
    path = write_variant(tmp_path, root, "  learning_rate: 3.0e-3", "  learning_rate: 3e-3")
    params = validate_params(read_yaml(path), root=root)
    assert params.pretrain.train.learning_rate == pytest.approx(3e-3)


def test_missing_model_path_is_caught_before_work(root, tmp_path):
    path = write_variant(tmp_path, root, "  init: scratch", "  init: pretrained")
    path.write_text(path.read_text(encoding="utf-8").replace(
        "    name_or_path: null", "    name_or_path: ./models/no-such-model"), encoding="utf-8")
    message = error_of(path, root)
    line = line_of(path, "name_or_path:")
    assert f"params.yaml:{line}: pretrain.pretrained.name_or_path: model directory not found" in message
    assert "no-such-model" in message


def test_pretrained_needs_a_name(root, tmp_path):
    path = write_variant(tmp_path, root, "  init: scratch", "  init: pretrained")
    assert "pretrain.pretrained.name_or_path: required when init is 'pretrained'" in error_of(path, root)


def test_directory_without_config_is_not_a_model(root, tmp_path):
    (tmp_path / "empty_model").mkdir()
    path = write_variant(tmp_path, root, "  init: scratch", "  init: pretrained")
    path.write_text(path.read_text(encoding="utf-8").replace(
        "    name_or_path: null", f"    name_or_path: {tmp_path / 'empty_model'}"), encoding="utf-8")
    assert "has no config.json" in error_of(path, root)


def test_hub_id_passes_online_and_offline_only_when_cached(root, tmp_path, monkeypatch):
    import huggingface_hub.constants

    path = write_variant(tmp_path, root, "  init: scratch", "  init: pretrained")
    path.write_text(path.read_text(encoding="utf-8").replace(
        "    name_or_path: null", "    name_or_path: Qwen/Qwen2.5-0.5B"), encoding="utf-8")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert validate_params(read_yaml(path), root=root).pretrain.pretrained.name_or_path == "Qwen/Qwen2.5-0.5B"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert ("pretrain.pretrained.name_or_path: 'Qwen/Qwen2.5-0.5B' is neither a local directory"
            in error_of(path, root)) and "HF_HUB_OFFLINE is set" in error_of(path, root)
    snapshot = cache / "models--Qwen--Qwen2.5-0.5B" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}", encoding="utf-8")
    (cache / "models--Qwen--Qwen2.5-0.5B" / "refs").mkdir()
    (cache / "models--Qwen--Qwen2.5-0.5B" / "refs" / "main").write_text("0" * 40, encoding="utf-8")
    assert validate_params(read_yaml(path), root=root).pretrain.pretrained.name_or_path == "Qwen/Qwen2.5-0.5B"


def test_a_relative_model_path_with_one_slash_is_a_path_and_models_names_its_stage(root, tmp_path):
    path = write_variant(tmp_path, root, "  init: scratch", "  init: pretrained")
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("    name_or_path: null", "    name_or_path: external/qwen"), encoding="utf-8")
    assert f"pretrain.pretrained.name_or_path: model directory not found: {root / 'external/qwen'}" \
        in error_of(path, root)
    path.write_text(text.replace("    name_or_path: null", "    name_or_path: models/finetune/x"), encoding="utf-8")
    assert "does not exist yet: stage finetune@<recipe> writes it" in error_of(path, root)


def test_cross_field_checks(root, tmp_path):
    path = write_variant(tmp_path, root, "    num_attention_heads: 4", "    num_attention_heads: 3")
    assert "pretrain.model.num_attention_heads: must divide hidden_size (128)" in error_of(path, root)
    path = write_variant(tmp_path, root, "    block_size: 256", "    block_size: 1024")
    assert "pretrain.train.block_size: exceeds model.max_position_embeddings (512)" in error_of(path, root)


def test_external_knowledge_path_must_exist(root, tmp_path):
    path = write_variant(tmp_path, root, "  source: embedded", "  source: external")
    assert "knowledge.external.path: required when source is 'external'" in error_of(path, root)
    path.write_text(path.read_text(encoding="utf-8").replace(
        "    path: null", "    path: external/missing.jsonl"), encoding="utf-8")
    assert "knowledge.external.path: file not found" in error_of(path, root)


def test_overlay_may_not_add_keys(root, tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text((root / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    overlay = tmp_path / "bad.yaml"
    overlay.write_text("pretrain:\n  train:\n    max_step: 10\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml:3: pretrain\.train\.max_step: not a key of params\.yaml"):
        apply_overlay(target, overlay, root=root)


def test_invalid_yaml_is_reported(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="params.yaml: not valid YAML"):
        read_yaml(path)


def test_cli_exit_codes(root, tmp_path, capsys):
    assert main([str(root / "params.yaml")]) == 0
    bad = write_variant(tmp_path, root, "    hidden_size: 128", "    hiden_size: 128")
    assert main([str(bad)]) == 2
    assert "hiden_size: unknown key" in capsys.readouterr().err


def test_every_key_in_params_yaml_says_what_it_does(root):
    """Every key of the params models has prose in the comment block right above it (its
    end-of-line comment is the generated type and range, which says nothing of what it does).
    Exception: the ``anesthesia`` count right after a ``general_medicine`` count (one comment
    documents the pair)."""
    from medlab.config import Params
    from medlab.config.specs import descriptions

    text = (root / "params.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    found = descriptions(text, Params)
    undocumented = [f"params.yaml:{d['line']}: {'.'.join(p)}" for p, d in found.items() if not d["prose"]
                    and not (p[-1] == "anesthesia" and lines[d["line"] - 2].strip().startswith("general_medicine:"))]
    assert len(found) > 200 and not undocumented, "\n".join(undocumented)


def test_explain_prints_a_keys_value_spec_and_prose(root, capsys):
    from medlab.config.__main__ import main

    assert main([str(root / "params.yaml"), "--explain", "base.seed"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("params.yaml:") and out[0].endswith("base.seed = 1234  (int >= 0)")
    assert "seed" in out[1] and out[1].startswith("    ")
    assert main([str(root / "params.yaml"), "--explain", "base"]) == 0
    assert len([line for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]) == 2
    assert main([str(root / "params.yaml"), "--explain", "base.sed"]) == 2
    assert "no key 'base.sed'" in capsys.readouterr().err


def test_floats_are_written_with_a_dot(root):
    text = (root / "params.yaml").read_text(encoding="utf-8")
    values = re.findall(r"^\s+\w+: ([^\s#]+)\s*(?:#.*)?$", text, flags=re.M)
    assert len(values) > 150  # every scalar key is read (end-of-line specs included)
    bad = [v for v in values if re.fullmatch(r"-?\d+e-?\d+", v)]
    assert not bad, f"floats without a dot (read as strings by PyYAML): {bad}"


def test_evaluate_and_compare_name_only_known_models(root, tmp_path):
    path = write_variant(tmp_path, root, "    specific_only: models/finetune/specific_only ",
                         "    specific_only: models/finetune/no_such_recipe ")
    message = error_of(path, root)
    assert "evaluate.models.specific_only: models/finetune/no_such_recipe: no such recipe" in message
    assert message.count("\n") == 0  # the name is still evaluated: one error, not one per compare pair
    path = write_variant(tmp_path, root, "  baseline: base", "  baseline: gpt4")
    message = error_of(path, root)
    assert f"params.yaml:{line_of(path, 'baseline: gpt4')}: compare.baseline: 'gpt4' is not in evaluate.models" \
        in message
    path = write_variant(tmp_path, root, "    - [general_to_specific, specific_only]  # Hypnos: general",
                         "    - [general_to_specific, general_to_specific]  # Hypnos: general")
    assert "compare.pairs.0: a pair is two model names" in error_of(path, root)
    path = write_variant(tmp_path, root, "    headline: cloze", "    headline: letterz")
    assert "evaluate.mcq.headline" in error_of(path, root)
    path = write_variant(tmp_path, root, "    scorings: [cloze, option_text, letter]", "    scorings: [letter]")
    assert "evaluate.mcq.headline: 'cloze' is not one of mcq.scorings" in error_of(path, root)
    path = write_variant(tmp_path, root, "  plain_models: [base]", "  plain_models: [bas]")
    assert "evaluate.plain_models: 'bas' is not in evaluate.models" in error_of(path, root)
    path = write_variant(tmp_path, root, "  tasks: [anesthesia_mcq, general_mcq,", "  tasks: [anesthesia_mcqq, general_mcq,")
    assert f"params.yaml:{line_of(path, 'anesthesia_mcqq')}: evaluate.tasks: unknown task 'anesthesia_mcqq' (known: " \
        in error_of(path, root)


def test_a_task_file_with_a_typo_is_named_by_file_line_and_key(root, tmp_path):
    """A user's task folder: a typo or a wrong format stops validation, naming the task file."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    good = "description: CMB-Exam sample\nkind: mcq\ndata: samples/mcq/cmb_exam.json\nformat: cmb_exam\n" \
           "domain: auto\nprompt: mcq_zh\n"
    (folder / "cmb_exam.yaml").write_text(good, encoding="utf-8")
    (folder / "typo.yaml").write_text(good.replace("domain:", "domian:"), encoding="utf-8")
    (folder / "wrong.yaml").write_text(good.replace("format: cmb_exam", "format: cmeee"), encoding="utf-8")
    base = "  task_dirs: []"
    for name, expected in (("typo", f"{folder}/typo.yaml:5: domian: unknown key (did you mean domain?)"),
                           ("wrong", f"{folder}/wrong.yaml:4: format: 'cmeee' is not a mcq format (known: medlab")):
        path = write_variant(tmp_path, root, base, f"  task_dirs: [{folder}]")
        text = path.read_text(encoding="utf-8").replace("  tasks: [anesthesia_mcq,", f"  tasks: [{name}, anesthesia_mcq,")
        path.write_text(text, encoding="utf-8")
        message = error_of(path, root)
        assert message.count("\n") == 0 and f"evaluate.tasks: {expected}" in message, message
    path.write_text(text.replace("[wrong, ", "[cmb_exam, "), encoding="utf-8")
    assert validate_params(read_yaml(path), root=root).evaluate.tasks[0] == "cmb_exam"


def test_every_key_states_its_models_type_and_range(root):
    from medlab.config.specs import check

    assert check((root / "params.yaml").read_text(encoding="utf-8"), Params) == []


def test_a_key_whose_comment_differs_from_its_model_is_named_and_rewritten():
    from pydantic import Field

    from medlab.config.specs import check, field_spec, write
    from medlab.section import Section

    class Inner(Section):
        share: float = Field(gt=0.0, le=1.0)
        path: str | None
        kinds: list[Literal["a", "b"]] = Field(min_length=1)

    class Tiny(Section):
        steps: int = Field(ge=1)
        inner: Inner
        files: list[Inner]

    text = ("steps: 10  # int >= 0\n"            # the range the model no longer has
            "inner:\n"
            "  # prose stays\n"
            "  share: 0.5\n"                   # no spec at all
            "  path: \"a # b\"  # str or null\n"  # a '#' inside quotes is not a comment
            "  kinds: [a]  # list of a | b, non-empty\n"
            "files:\n"
            "  - share: 0.1\n"                 # list items carry no spec
            "    path: null\n")
    assert check(text, Tiny, "tiny.yaml") == [
        "tiny.yaml:1: steps: comment 'int >= 0', its model says 'int >= 1' (python -m medlab.config --write-specs)",
        "tiny.yaml:4: inner.share: comment None, its model says 'float, 0 < x <= 1' "
        "(python -m medlab.config --write-specs)",
        "tiny.yaml:7: files: comment None, its model says 'list of {share, path, kinds}' "
        "(python -m medlab.config --write-specs)"]
    fixed = write(text, Tiny)
    assert check(fixed, Tiny) == []
    assert fixed.splitlines()[0] == "steps: 10  # int >= 1"
    assert fixed.splitlines()[3] == "  share: 0.5  # float, 0 < x <= 1"
    assert "  # prose stays" in fixed
    assert fixed.splitlines()[7:] == text.splitlines()[7:]  # list items untouched
    assert field_spec(Inner.model_fields["path"]) == "str or null"
    with pytest.raises(ValueError, match="line 1: steps: a flow list"):
        write("steps: [1,\n  2]\n", Tiny)


def test_human_evaluation_names_known_models_a_known_task_and_a_sane_overlap(root, tmp_path):
    path = write_variant(tmp_path, root, "    - [general_to_specific, specific_only]  # Hypnos' claim",
                         "    - [general_to_specific, gpt4]  # Hypnos' claim")
    line = line_of(path, "[general_to_specific, gpt4]")
    assert f"params.yaml:{line}: blind.pairs.0: 'gpt4' is not in evaluate.models" in error_of(path, root)
    path = write_variant(tmp_path, root, "  task: anesthesia_qa  # str", "  task: cmb_clin  # str")
    assert "blind.task: 'cmb_clin' is not in evaluate.tasks" in error_of(path, root)
    path = write_variant(tmp_path, root, "  overlap: 10  # int", "  overlap: 30  # int")
    assert "blind.overlap: 30 shared items per pair, but only 20 items per pair" in error_of(path, root)
    path = write_variant(tmp_path, root, "  raters: [r1, r2, r3]", "  raters: [r1, dr smith]")
    assert "blind.raters.1: 'dr smith': rater ids are letters, digits, _ and -" in error_of(path, root)
    path = write_variant(tmp_path, root, "  ratings_dir: ratings", "  ratings_dir: returned")
    assert "unblind.ratings_dir:" in error_of(path, root) and "returned is not a folder" in error_of(path, root)


def test_a_misspelt_generation_method_is_named_with_its_line(root, tmp_path):
    """A method name that is not one would select nothing (a training set without its part)
    or fall back silently (the judge's pooled cut-off): an error naming file, line and key."""
    path = write_variant(tmp_path, root, "own_cutoff_methods: [corpus_ner, kg_mcq, kg_consult]",
                         "own_cutoff_methods: [corpus_ner, kg_mcq, kg_consul]")
    error = error_of(path, root)
    assert f"params.yaml:{line_of(path, 'own_cutoff_methods:')}: filter.judge.own_cutoff_methods.2: " \
           "unknown generation method 'kg_consul'" in error and "kg_consult" in error
    path = write_variant(tmp_path, root, "methods: [corpus_to_instruction]", "methods: [corpus_to_instructions]")
    assert "finetune.datasets.corpus_instructions.0.methods.0: unknown generation method" in error_of(path, root)
