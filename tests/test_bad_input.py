"""The bad-input corpus: files and params a user gets wrong, each caught at validation.

Every case is a params.yaml edit plus the files it points at, written into a throwaway
project folder. Validation (what ``python -m medlab.config`` and every stage's set-up run)
must answer with exactly one line that names the file and line (or the params key) and says
what is wrong -- in well under 2 s, before any model loads or any output is written.
Positive cases (an encoding key, a BOM, CMMLU's real header) must pass.
"""

from __future__ import annotations

import codecs
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medlab.config import validate_params
from medlab.section import ConfigError, read_yaml

MCQ_KEY = "generate.mcq_to_qa.files.0"
ONE_MCQ = "    files:  # list of {path, format, domain, encoding}\n      - path: samples/mcq/cmb_exam.json"


def mcq_json(n: int, answer: str = "A", ident: str | None = None) -> str:
    rows = [{"id": ident or f"q{k}", "source": "x", "question": f"第{k}题：全麻诱导常用药是", "options":
             {"A": "丙泊酚", "B": "阿托品", "C": "新斯的明", "D": "纳洛酮"}, "answer": answer} for k in range(n)]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def medmcqa(cops: list[int]) -> str:
    return "".join(json.dumps({"id": f"m{k}", "question": f"第{k}题", "opa": "甲", "opb": "乙", "opc": "丙",
                               "opd": "丁", "cop": c}, ensure_ascii=False) + "\n" for k, c in enumerate(cops))


CEVAL = "id,question,A,B,C,D,answer\n0,诊断糖尿病的空腹血糖切点,6.1,7.0,7.8,11.1,B\n"
CMMLU = ",Question,A,B,C,D,Answer\n0,恶性高热的特效药,丹曲林,咪达唑仑,地塞米松,硝酸甘油,A\n"
DISC = ('{"_id": "d1", "source": "s", "conversation": [{"role": "user", "content": "头痛"}, '
        '{"role": "assistant", "content": "先测血压"}]}\n')


def mcq_case(path: str, fmt: str, content, extra: str = "") -> dict:
    """Replace the first mcq_to_qa file with ``path`` (written with ``content``) read as ``fmt``."""
    spec = f"    files:  # list of {{path, format, domain, encoding}}\n      - path: {path}{extra}"
    return {"edit": (ONE_MCQ, spec), "format": ("        format: cmb_exam\n", f"        format: {fmt}\n"),
            "files": {path: content}}


# (id, case, expected fragment of the one line); expected None = must validate
CASES = [
    ("gbk_file", mcq_case("external/gbk.csv", "ceval", CEVAL.encode("gb18030")),
     "external/gbk.csv:2: not UTF-8 (looks like GB18030/GBK?) -- convert it with `iconv -f GB18030 -t UTF-8"),
    ("gbk_file_declared", mcq_case("external/gbk.csv", "ceval", CEVAL.encode("gb18030"), "\n        encoding: gb18030"),
     None),
    ("utf8_bom_csv", mcq_case("external/bom.csv", "ceval", codecs.BOM_UTF8 + CEVAL.encode()), None),
    ("utf8_bom_jsonl", mcq_case("external/bom.jsonl", "medlab", codecs.BOM_UTF8 + mcq_json(3).encode()), None),
    ("utf16_file", mcq_case("external/u16.csv", "ceval", CEVAL.encode("utf-16")),
     "external/u16.csv:1: not UTF-8 (looks like UTF-16?)"),
    ("empty_file", mcq_case("external/empty.jsonl", "medqa", b""), "external/empty.jsonl: empty file"),
    ("blank_file", mcq_case("external/blank.jsonl", "medqa", b"\n  \n\n"), "external/blank.jsonl: empty file"),
    ("missing_file", mcq_case("external/nowhere.json", "cmb_exam", None), "external/nowhere.json: file not found"),
    ("answer_not_an_option", mcq_case("external/own.jsonl", "medlab", mcq_json(3, answer="E")),
     "external/own.jsonl:1: answer: 'E' is not one of the options ['A', 'B', 'C', 'D']"),
    ("duplicate_ids", mcq_case("external/dup.jsonl", "medlab", mcq_json(3, ident="same")),
     "external/dup.jsonl:2: id 'same' repeats the one at"),
    ("cmmlu_header", mcq_case("external/cmmlu.csv", "cmmlu", CMMLU), None),
    ("cmmlu_header_as_ceval", mcq_case("external/cmmlu.csv", "ceval", CMMLU), None),
    ("csv_missing_column", mcq_case("external/noanswer.csv", "ceval", "id,question,A,B,C,D\n0,q,a,b,c,d\n"),
     "external/noanswer.csv:1: missing column(s) answer"),
    ("medmcqa_zero_based_read_as_one_based", mcq_case("external/mm.jsonl", "medmcqa", medmcqa([1, 0, 2])),
     "external/mm.jsonl:2: cop: 0 is not an option index 1-4 (this format is 1-4; is the file medmcqa_hf (0-3)?)"),
    ("medmcqa_base_over_the_file", mcq_case("external/mm.jsonl", "medmcqa", medmcqa([1, 2, 3] * 6)),
     "external/mm.jsonl: cop never takes the value 4 in 18 items"),
    ("jsonl_given_a_json_array", mcq_case("external/arr.jsonl", "medqa", "[\n" + json.dumps({"question": "q"}) + "\n]"),
     "external/arr.jsonl:1: not valid JSON"),
    ("csv_given_as_json", mcq_case("external/exam.csv", "cmb_exam", CEVAL),
     "external/exam.csv:1: expected a JSON array"),
    ("full_width_answer", mcq_case("external/fw.csv", "ceval", CEVAL.replace(",B\n", ",Ｂ\n")), None),
    ("bad_encoding_key", mcq_case("external/bom.csv", "ceval", CEVAL, "\n        encoding: latin-1"),
     f"{MCQ_KEY}.encoding: input should be 'utf-8', 'gb18030' or 'utf-16'"),
    ("unknown_format", mcq_case("external/x.csv", "mmlu", CEVAL), f"{MCQ_KEY}.format: input should be"),
    ("dialogue_ids_twice", {"edit": ("      - path: samples/dialogues/meddialog_zh.txt\n        format: meddialog_txt",
                                     "      - path: external/disc.jsonl\n        format: disc_med_sft"),
                            "files": {"external/disc.jsonl": DISC + DISC}},
     "external/disc.jsonl:2: id 'd1' repeats the one at"),
    ("chat_starting_with_the_assistant",
     {"edit": ("      - path: samples/general/alpaca_zh.json\n        format: alpaca",
               "      - path: external/hua.jsonl\n        format: huatuo_sft"),
      "files": {"external/hua.jsonl": json.dumps({"idx": "1", "conversations": [{"from": "gpt", "value": "你好"}]})}},
     "external/hua.jsonl:1: a chat must start with the user and contain an answer"),
    ("alpaca_without_output",
     {"edit": ("      - path: samples/general/alpaca_zh.json\n        format: alpaca",
               "      - path: external/a.json\n        format: alpaca"),
      "files": {"external/a.json": '[\n  {"instruction": "x"}\n]'}},
     "external/a.json:2: output: missing or not a string"),
    ("decontamination_benchmark_in_gbk",
     {"edit": ("    external: []  # list of {path, format, encoding}",
               "    external:  # list of {path, format, encoding}\n      - path: external/b.csv\n        format: ceval"),
      "files": {"external/b.csv": CEVAL.encode("gbk")}},
     "external/b.csv:2: not UTF-8 (looks like GB18030/GBK?)"),
    ("model_path_with_one_slash", {"edit": ("    base: models/base  #", "    mine: external/qwen\n    base: models/base  #")},
     "evaluate.models.mine: model directory not found"),
    ("teacher_model_under_models", {"edit": ("  backend: simulated  #", "  backend: hf  #"),
                                    "format": ("      name_or_path: null  # str or null\n      # Hub revision",
                                               "      name_or_path: models/finetune/x  # str or null\n      # Hub revision")},
     "models/finetune/x does not exist yet: stage finetune@<recipe> writes it"),
    ("typo_in_a_key", {"edit": ("  n_boot: 1000  # int >= 0\n  mcq:", "  n_bot: 1000  # int >= 0\n  mcq:")},
     "evaluate.n_bot: unknown key (did you mean n_boot?)"),
    ("wrong_type", {"edit": ("  batch_size: 32  # int >= 1\n  # Bootstrap resamples for every",
                             "  batch_size: many  # int >= 1\n  # Bootstrap resamples for every")},
     "evaluate.batch_size: input should be a valid integer"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory, root):
    """A throwaway project: the repository's folders linked, params.yaml copied per case."""
    folder = tmp_path_factory.mktemp("project")
    for entry in root.iterdir():
        if entry.name not in ("external", "params.yaml", ".git", ".venv", "data", "models", "reports", ".cache"):
            (folder / entry.name).symlink_to(entry)
    (folder / "external").mkdir()
    return folder


def apply(case: dict, project: Path, root: Path) -> Path:
    text = (root / "params.yaml").read_text(encoding="utf-8")
    for key in ("edit", "format"):
        if key in case:
            old, new = case[key]
            assert old in text, f"test setup: {old!r} not in params.yaml"
            text = text.replace(old, new, 1)
    for rel, content in case.get("files", {}).items():
        path = project / rel
        path.unlink(missing_ok=True)
        if content is not None:
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    params = project / "params.yaml"
    params.write_text(text, encoding="utf-8")
    return params


@pytest.mark.parametrize("name,case,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_naming_file_line_or_key(name, case, expected, project, root):
    params = apply(case, project, root)
    start = time.perf_counter()
    try:
        validate_params(read_yaml(params), filename="params.yaml", root=project)
        error = None
    except ConfigError as exc:
        error = str(exc)
    seconds = time.perf_counter() - start
    assert seconds < 2.0, f"{name}: validation took {seconds:.2f} s"
    if expected is None:
        assert error is None, error
        return
    assert error is not None, f"{name}: accepted"
    assert len(error.splitlines()) == 1, error
    assert error.startswith("params.yaml:"), error  # the params line that names the file
    assert expected.lower() in error.lower(), error


def test_corpus_is_large_enough():
    assert sum(1 for _, _, expected in CASES if expected) >= 20


def test_the_command_line_stops_before_any_work_and_touches_no_output(project, root):
    """``python -m medlab.config`` (what `make repro` runs first): exit 2, the one line on
    stderr, an earlier output left as it was."""
    name, case, expected = CASES[0]
    apply(case, project, root)
    earlier = project / "external" / "earlier_output.json"
    earlier.write_text('{"acc": 0.5}', encoding="utf-8")
    before = earlier.stat().st_mtime_ns
    env = {**os.environ, "DVC_ROOT": str(project)}
    done = subprocess.run([sys.executable, "-m", "medlab.config", str(project / "params.yaml")],
                          capture_output=True, text=True, env=env, cwd=project, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and expected in done.stderr
    assert earlier.read_text(encoding="utf-8") == '{"acc": 0.5}' and earlier.stat().st_mtime_ns == before
