"""Readers of public formats: the shipped samples load; malformed files name file and line."""

from __future__ import annotations

import json

import pytest

from medlab.config import load_params
from medlab.formats import FormatError
from medlab.formats.dialogues import load_dialogues
from medlab.formats.instructions import load_instructions
from medlab.formats.mcq import load_mcq


@pytest.fixture(scope="module")
def generate_params(root):
    return load_params(root / "params.yaml").generate


# ------------------------------------------------------------ shipped samples
def test_every_shipped_dialogue_file_loads(root, generate_params):
    for spec in generate_params.dialogue_rewrite.files:
        dialogues = load_dialogues(root / spec.path, spec.format)
        assert len(dialogues) >= 6, spec.path
        for d in dialogues:
            assert d.turns[0][0] == "patient" and any(s == "doctor" for s, _ in d.turns)
            assert all(text.strip() for _, text in d.turns)


def test_every_shipped_mcq_file_loads(root, generate_params):
    for spec in generate_params.mcq_to_qa.files:
        items = load_mcq(root / spec.path, spec.format)
        assert len(items) >= 10, spec.path
        for item in items:
            assert item.answer in item.options and len(item.options) >= 4


def test_every_shipped_general_file_loads(root, generate_params):
    total = 0
    for spec in generate_params.general_mix.files:
        chats = load_instructions(root / spec.path, spec.format)
        total += len(chats)
        for _, _, messages in chats:
            assert messages[0]["role"] == "user" and messages[-1]["role"] == "assistant"
            assert not any("<|Human|>" in m["content"] or "<eom>" in m["content"] for m in messages)
    assert total >= 100


def test_seed_tasks(root, generate_params):
    from medlab.generate.self_instruct import load_seed_tasks

    seeds = load_seed_tasks(root / generate_params.self_instruct.seed_file)
    assert len(seeds) >= 30
    assert {s.domain for s in seeds} == {"general_medicine", "anesthesia"}


# ------------------------------------------------------------------ dialogues
def test_meddialog_txt(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("id=7\nhttps://x/7.html\nDescription\n疾病：\n感冒\n病情描述：\n咳嗽两天。\n\n"
                    "Dialogue\n病人:\n医生你好，我咳嗽。\n病人:\n还有点发热。\n医生:\n多喝水，注意休息。\n\n"
                    "id=8\nDialogue\n病人:\n头痛。\n医生:\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"d\.txt:21: 医生: is not followed by an utterance"):
        load_dialogues(path, "meddialog_txt")
    path.write_text(path.read_text(encoding="utf-8") + "建议测血压。\n", encoding="utf-8")
    first, second = load_dialogues(path, "meddialog_txt")
    assert first.id == "7" and first.meta["description"] == "咳嗽两天。"
    assert first.turns == [("patient", "医生你好，我咳嗽。还有点发热。"), ("doctor", "多喝水，注意休息。")]
    assert second.turns[-1] == ("doctor", "建议测血压。")


def test_meddialog_json_and_disc(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([["病人：头痛", "医生：测血压"], ["医生：你好"]], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(FormatError, match="does not start with the patient"):
        load_dialogues(path, "meddialog_json")
    disc = tmp_path / "disc.jsonl"
    disc.write_text('{"_id": "a", "conversation": [{"role": "user", "content": "头痛"}, '
                    '{"role": "assistant", "content": "测血压"}]}\n{"_id": "b", "conversation": [{"role": "doctor"}]}\n',
                    encoding="utf-8")
    with pytest.raises(FormatError, match=r"disc\.jsonl:2: conversation\[0\]: expected"):
        load_dialogues(disc, "disc_med_sft")


def test_cmedqa2_checks_its_join(tmp_path):
    folder = tmp_path / "cmedqa2"
    folder.mkdir()
    (folder / "question.csv").write_text("question_id,content\n1,头痛怎么办\n2,没人回答的问题\n", encoding="utf-8")
    (folder / "answer.csv").write_text("ans_id,question_id,content\n10,1,先测血压\n11,1,第二个回答\n",
                                       encoding="utf-8")
    (dialogue,) = load_dialogues(folder, "cmedqa2")
    assert dialogue.turns == [("patient", "头痛怎么办"), ("doctor", "先测血压")]
    (folder / "answer.csv").write_text("ans_id,question_id,content\n10,1,先测血压\n12,9,孤儿回答\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"answer\.csv:3: question_id '9' is not in question\.csv"):
        load_dialogues(folder, "cmedqa2")
    (folder / "question.csv").write_text("qid,text\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"question\.csv:1: missing column\(s\) question_id, content"):
        load_dialogues(folder, "cmedqa2")


# ------------------------------------------------------------------------ MCQ
def test_mcq_formats_agree(tmp_path):
    question, options, answer = "全麻诱导首选？", {"A": "丙泊酚", "B": "阿托品", "C": "新斯的明", "D": "纳洛酮"}, "A"
    (tmp_path / "cmb.json").write_text(json.dumps([{"exam_type": "x", "exam_class": "y", "exam_subject": "麻醉学",
                                                    "question": question, "answer": answer,
                                                    "question_type": "单项选择题", "option": options}],
                                                  ensure_ascii=False), encoding="utf-8")
    (tmp_path / "cmexam.csv").write_text('Question,Options,Answer,Explanation\n' + question + ',"A 丙泊酚\nB 阿托品\n'
                                         'C 新斯的明\nD 纳洛酮",A,因为\n', encoding="utf-8")
    (tmp_path / "medqa.jsonl").write_text(json.dumps({"question": question, "options": options, "answer": "丙泊酚",
                                                      "answer_idx": "A"}, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp_path / "medmcqa.jsonl").write_text(json.dumps({"question": question, "opa": "丙泊酚", "opb": "阿托品",
                                                        "opc": "新斯的明", "opd": "纳洛酮", "cop": 1},
                                                       ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp_path / "ceval.csv").write_text("id,question,A,B,C,D,answer,explanation\n0," + question +
                                        ",丙泊酚,阿托品,新斯的明,纳洛酮,A,\n", encoding="utf-8")
    for name, fmt in (("cmb.json", "cmb_exam"), ("cmexam.csv", "cmexam"), ("medqa.jsonl", "medqa"),
                      ("medmcqa.jsonl", "medmcqa"), ("ceval.csv", "ceval")):
        (item,) = load_mcq(tmp_path / name, fmt)
        assert (item.question, item.options, item.answer) == (question, options, answer), fmt


def test_mcq_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "medqa.jsonl"
    path.write_text('{"question": "q", "options": {"A": "a", "B": "b"}, "answer_idx": "A"}\n'
                    '{"question": "q", "options": {"A": "a", "B": "b"}, "answer_idx": "C"}\n', encoding="utf-8")
    with pytest.raises(FormatError, match=r"medqa\.jsonl:2: answer: 'C' is not one of the options"):
        load_mcq(path, "medqa")
    path.write_text('{"question": "q", "options": {"A": "a", "B": "b"}, "answer": "b", "answer_idx": "A"}\n',
                    encoding="utf-8")
    with pytest.raises(FormatError, match="answer_idx 'A' does not point at answer 'b'"):
        load_mcq(path, "medqa")
    mm = tmp_path / "m.jsonl"
    mm.write_text('{"question": "q", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 0}\n', encoding="utf-8")
    with pytest.raises(FormatError, match=r"m\.jsonl:1: cop: 0 is not an option index 1-4"):
        load_mcq(mm, "medmcqa")
    assert load_mcq(mm, "medmcqa_hf")[0].answer == "A"
    with pytest.raises(FormatError, match="unknown MCQ format"):
        load_mcq(mm, "mmlu")


# -------------------------------------------------------------- instructions
def test_instruction_formats(tmp_path):
    alpaca = tmp_path / "a.json"
    alpaca.write_text(json.dumps([{"instruction": "翻译", "input": "你好", "output": "Hello"},
                                  {"instruction": "x"}], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(FormatError, match=r"a\.json:\d+: output: missing"):
        load_instructions(alpaca, "alpaca")
    moss = tmp_path / "m.jsonl"
    moss.write_text(json.dumps({"conversation_id": 3, "chat": {
        "turn_2": {"Human": "<|Human|>: 再来一个<eoh>\n", "MOSS": "<|MOSS|>: 好的<eom>\n"},
        "turn_1": {"Human": "<|Human|>: 讲个笑话<eoh>\n", "MOSS": "<|MOSS|>: 从前有座山<eom>\n"}}},
        ensure_ascii=False) + "\n", encoding="utf-8")
    ((ident, _, messages),) = load_instructions(moss, "moss")
    assert ident == "3" and [m["content"] for m in messages] == ["讲个笑话", "从前有座山", "再来一个", "好的"]
    share = tmp_path / "s.json"
    share.write_text(json.dumps([{"id": "x", "conversations": [{"from": "human", "value": "嗨"},
                                                               {"from": "bot", "value": "?"}]}]), encoding="utf-8")
    with pytest.raises(FormatError, match=r"s\.json:1: conversations\[1\]: expected"):
        load_instructions(share, "sharegpt")


# ------------------------------------------------- public layouts as they are
def test_answers_are_read_the_way_exam_files_write_them(tmp_path):
    from medlab.formats.mcq import normalise_answer

    assert [normalise_answer(a) for a in ("A", "a", "Ａ", "A．", "A、C", "A,C", "ＡＢＤ", " b ")] == \
        ["A", "A", "A", "A", "AC", "AC", "ABD", "B"]
    cmb = tmp_path / "cmb.json"
    cmb.write_text(json.dumps([{"question": "全麻后常见的并发症有", "answer": "A、C", "question_type": "多项选择题",
                                "option": {"A": "咽痛", "B": "骨折", "C": "恶心呕吐", "D": "脱发"}}],
                              ensure_ascii=False), encoding="utf-8")
    assert load_mcq(cmb, "cmb_exam")[0].answer == "AC"
    cmexam = tmp_path / "cmexam.csv"
    cmexam.write_text('Question,Options,Answer\n首选药,"Ａ．丙泊酚\nＢ．阿托品",Ａ\n', encoding="utf-8")
    item = load_mcq(cmexam, "cmexam")[0]
    assert item.options == {"A": "丙泊酚", "B": "阿托品"} and item.answer == "A"


def test_cmmlu_and_huatuo_samples_read_in_their_real_layouts(root):
    from medlab.formats.instructions import load_instructions

    items = load_mcq(root / "samples/mcq/cmmlu_medicine.csv", "cmmlu")
    assert len(items) == 12 and items[0].question.startswith("关于局部麻醉药中毒") and items[0].answer == "A"
    chats = load_instructions(root / "samples/general/huatuo_sft.jsonl", "huatuo_sft")
    assert chats[0][0] == "h-0001" and [m["role"] for m in chats[0][2]] == ["user", "assistant"]
    disc = load_instructions(root / "samples/dialogues/disc_med_sft.jsonl", "disc_med_sft")
    assert len(disc) >= 6 and disc[0][0] == "01-00001"


def test_cmb_clin_cases_read_in_order_and_errors_name_the_line(root, tmp_path):
    from medlab.formats.cases import load_cases

    cases = load_cases(root / "samples/cases/cmb_clin.json")
    assert [c.id for c in cases] == ["0", "1", "2"]
    assert cases[1].qa[0][0] == "最可能的诊断是什么？" and "丹曲林" in cases[1].qa[1][1]
    jsonl = tmp_path / "clin.jsonl"  # the same records as JSON Lines read too
    jsonl.write_text("".join(json.dumps({"id": c.id, "title": c.title, "description": c.description,
                                         "QA_pairs": [{"question": q, "solution": a} for q, a in c.qa]},
                                        ensure_ascii=False) + "\n" for c in cases), encoding="utf-8")
    assert load_cases(jsonl) == [c.__class__(c.id, c.title, c.description, c.qa, f"{jsonl}:{k + 1}")
                                 for k, c in enumerate(cases)]
    bad = tmp_path / "bad.json"
    bad.write_text('[\n {"id": 1, "description": "病史", "QA_pairs": [{"question": "诊断？"}]}\n]', encoding="utf-8")
    with pytest.raises(FormatError, match=r"bad\.json:2: QA_pairs\[0\]\.solution: missing or empty"):
        load_cases(bad)


def test_a_gbk_file_reads_with_its_encoding_key_and_names_its_line_without(tmp_path):
    path = tmp_path / "gbk.jsonl"
    path.write_bytes(("\n".join(json.dumps({"question": f"问题{k}", "options": {"A": "甲", "B": "乙"},
                                            "answer_idx": "A"}, ensure_ascii=False) for k in range(3))
                      + "\n").encode("gb18030"))
    assert len(load_mcq(path, "medqa", encoding="gb18030")) == 3
    with pytest.raises(FormatError, match=r"gbk\.jsonl:1: not UTF-8 \(looks like GB18030/GBK\?\)"):
        load_mcq(path, "medqa")


def test_no_bootstrap_means_no_interval_not_a_crash():
    from medlab.stats import bootstrap_ci, mean_ci, paired_bootstrap

    assert bootstrap_ci(lambda x: x.mean(), [1, 0, 1], n_boot=0) is None
    assert mean_ci([1, 0, 1], n_boot=0) == {"mean": 2 / 3, "ci": None, "n": 3}
    assert paired_bootstrap([1, 1, 0], [0, 1, 0], n_boot=0) == {"diff": 1 / 3, "ci": None, "p": None, "n": 3}


def test_preflight_reads_every_record_and_reads_a_clean_file_once(tmp_path, monkeypatch):
    """A bad record or a repeated id far past the first records is named at pre-flight
    (file:line); a clean file's verdict is cached until the file changes."""
    from medlab.formats import peek

    def chat(k: int) -> str:
        return json.dumps({"_id": f"c{k}", "conversation": [{"role": "user", "content": f"问题{k}"},
                                                            {"role": "assistant", "content": f"回答{k}"}]},
                          ensure_ascii=False)

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # the verdict cache goes under this project
    path = tmp_path / "disc.jsonl"
    lines = [chat(k) for k in range(3000)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert peek.peek_problem(path, "instructions", "disc_med_sft") is None
    read = []
    monkeypatch.setattr(peek, "scan", lambda *a, **k: read.append(a) or 0)
    assert peek.peek_problem(path, "instructions", "disc_med_sft") is None and read == []  # cached: not read again
    monkeypatch.undo()
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    lines[2500] = '{"_id": "bad", "conversation": [{"role": "doctor"}]}'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")  # changed: read again, the bad line named
    assert peek.peek(path, "instructions", "disc_med_sft") == peek.PEEK_RECORDS  # the first pass alone misses it
    assert peek.peek_problem(path, "instructions", "disc_med_sft").startswith(f"{path}:2501: conversation[0]")
    lines[2500] = chat(7)  # an id seen on line 8
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert peek.peek_problem(path, "instructions", "disc_med_sft") == f"{path}:2501: id 'c7' repeats the one at {path}:8"
    mcq = tmp_path / "medmcqa.jsonl"  # never a 4 (a 0-based file without 0s): the base check counts every item
    mcq.write_text("".join(json.dumps({"id": f"m{k}", "question": f"问题{k}", "opa": "甲", "opb": "乙", "opc": "丙",
                                       "opd": "丁", "cop": k % 3 + 1}) + "\n" for k in range(200)), encoding="utf-8")
    assert "cop never takes the value 4 in 200 items" in peek.peek_problem(mcq, "mcq", "medmcqa")
