"""Filter stage pieces: rules, dedup, decontamination, de-identification, judges, pairs, metrics."""

from __future__ import annotations

import random

import numpy as np
import pytest

from medlab.embedded.benchmark.build import build_mcq, build_vignettes
from medlab.filter import dedup, deid, rules
from medlab.filter.decide import judge_cutoffs, reason_counts
from medlab.filter.decontaminate import Decontaminator
from medlab.filter.likelihood_judge import SpanFinder
from medlab.filter.metrics import auroc, bootstrap_ci, detection, error_rate, fault_report
from medlab.filter.pairs import build_pairs
from medlab.filter.rubric_judge import judge as rubric_judge
from medlab.filter.rubric_judge import parse_scores
from medlab.llm.base import Completion, Decoding
from medlab.llm.cache import CallCache
from medlab.records import Sample


def chat(answer: str, question: str = "问题") -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


# ------------------------------------------------------------------- rules
@pytest.mark.parametrize("answer, reason", [
    ("", "empty"),
    ("好的", "too_short"),
    ("丙泊酚可致低血压。" * 400, "too_long"),
    ("注意休息。" + "多喝水。" * 5, "repetitive"),
    ("详情请见 www.jiankang-demo.cn 网站。", "url"),
    ("有问题请拨打138-0000-0000咨询。", "phone_number"),
    ("本店特效药限时优惠，包治百病。", "advert"),
    ("作为一个人工智能语言模型，我无法提供医疗建议。", "refusal"),
    ("丙泊酚常见的不良反应是注射痛和低血压。", None),
    ("剂量为1.5～2.5 mg/kg，监测血压130/80 mmHg。", None),
])
def test_rules_name_their_reason(answer, reason):
    assert rules.check(chat(answer), rules.RuleParams()) == reason


# ------------------------------------------------------------------- dedup
def test_dedup_finds_planted_near_duplicates(kb):
    rng = random.Random(0)
    items = build_mcq(kb, "general", 400, 4, 0, seed=3, source="x")
    originals = [f"{i.question}答案是{i.options[i.answer]}。" + "".join(i.options.values()) for i in items]

    def near_copy(text: str) -> str:  # a greeting added, or one or two characters changed
        kind = rng.randrange(3)
        if kind == 0:
            return "您好，" + text + "谢谢。"
        chars = list(text)
        for _ in range(kind):
            chars[rng.randrange(len(chars))] = "某"
        return "".join(chars)

    planted = [near_copy(t) for t in rng.sample(originals, 200)]
    texts = originals + planted + originals[:20]  # plus 20 exact copies
    dropped = dedup.duplicates(texts, n=3, num_perm=128, threshold=0.7)
    found = sum(i in dropped and dropped[i][1] == "near" for i in range(400, 600))
    assert found / 200 >= 0.95
    assert all(dropped[i][1] == "exact" for i in range(600, 620))
    assert not any(i in dropped for i in range(400))  # distinct questions are not merged


def test_shingles_are_characters():
    assert dedup.shingles("丙泊酚注射痛", 3) == {s.encode() for s in ("丙泊酚", "泊酚注", "酚注射", "注射痛")}
    assert dedup.jaccard("丙泊酚的不良反应", "丙泊酚的不良反应。", 5) == 1.0  # punctuation ignored


# ----------------------------------------------------------- decontamination
def test_decontamination_catches_planted_leaks_and_not_shared_facts(kb):
    names = set(kb.entities) | {t.object for t in kb.triples if t.object_type == "literal"}
    items = build_mcq(kb, "anesthesia", 60, 4, 0, seed=4, source="b")
    cases = build_vignettes(kb, 3, 1, 4, seed=4)
    checker = Decontaminator(names)
    for item in items + cases:
        checker.add(item.id, item.question, item.context)
    clean = ["丙泊酚的常见不良反应有注射痛、低血压和呼吸抑制，用药时应监测血压。",
             "恶性高热需立即停用触发药物，并静脉给予丹曲林。",
             "清饮料在麻醉前2小时可以饮用，牛奶等液体乳制品需禁食6小时。"]
    for text in clean:  # same facts and names as the benchmark, different wording
        assert checker.check(text)[0] == []
    leaked = 0
    for item in items:
        hits, evidence = checker.check("请回答：" + item.question + " 谢谢")
        leaked += item.id in hits
    assert leaked / len(items) >= 0.95
    passage = cases[0].context[40:140]  # a piece of a private case
    assert cases[0].id in checker.check(passage)[0]


# ---------------------------------------------------------- de-identification
def test_deid_on_generated_vignettes(kb):
    cases = build_vignettes(kb, 30, 1, 4, seed=11)
    result = deid.score([c.phi for c in cases], [deid.detect(c.context) for c in cases])
    assert result["recall"] >= 0.99 and result["precision"] >= 0.95


def test_deid_hard_cases():
    from medlab.zh import id_number_valid

    valid = "530102198506123015"
    assert id_number_valid(valid) and not id_number_valid("530102198506123011")
    text = (f"患者欧阳明月，女，38岁，身份证号{valid}，标本条码530102198506123011。"
            "今日由其丈夫司马云陪同就诊，电话139 1234 5678，住院号ZY20240518。"
            "出生日期1985年6月12日，2024-05-18入院。家住昆明市五华区翠湖南路12号3栋502室。"
            "高血压病史，黄疸3天，麻醉科会诊，丙泊酚2 mg/kg。欧阳明月术后恢复好。")
    spans = deid.detect(text)
    found = {(s.type, s.text) for s in spans}
    assert ("NAME", "欧阳明月") in found and ("NAME", "司马云") in found
    assert ("ID_NUMBER", valid) in found
    assert not any(s.text == "530102198506123011" for s in spans)  # fails the checksum: a barcode
    assert ("PHONE", "139 1234 5678") in found and ("RECORD_NO", "ZY20240518") in found
    assert ("BIRTH_DATE", "1985年6月12日") in found and ("DATE", "2024-05-18") in found
    assert any(s.type == "ADDRESS" and s.text.startswith("昆明市五华区翠湖南路12号") for s in spans)
    assert sum(s.text == "欧阳明月" for s in spans) == 2  # every occurrence of a found name
    redacted = deid.redact(text, spans)
    for word in ("高血压", "黄疸", "麻醉科", "丙泊酚"):
        assert word in redacted
    assert "欧阳" not in redacted and valid not in redacted and "[出生日期]" in redacted


def test_deid_does_not_depend_on_hash_order():
    """Overlapping name candidates ("林秀红" / "向林秀") are resolved by a fixed rule, not by
    set iteration order, which changes with PYTHONHASHSEED from one process to the next."""
    import subprocess
    import sys

    text = "林秀红，女，54岁，拟行胃癌根治术。术中出现抽搐，麻醉医师向林秀红家属说明了病情变化。"
    code = ("import sys; from medlab.filter import deid; "
            "print(deid.redact(sys.argv[1]))")
    outputs = {subprocess.run([sys.executable, "-c", code, text], capture_output=True, text=True, check=True,
                              env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout
               for seed in range(6)}
    assert outputs == {"[姓名]，女，54岁，拟行胃癌根治术。术中出现抽搐，麻醉医师向[姓名]家属说明了病情变化。\n"}


def test_parse_labelled_and_score():
    blocks = deid.parse_labelled("患者[[NAME:张三]]，电话[[PHONE:13812345678]]。\n---\n无隐私信息。", "t.txt")
    (text, gold), (plain, none) = blocks
    assert text == "患者张三，电话13812345678。" and none == [] and plain == "无隐私信息。"
    assert gold[0] == {"type": "NAME", "start": 2, "end": 4, "text": "张三"}
    result = deid.score([gold, none], [deid.detect(text), deid.detect(plain)])
    assert result["recall"] == 1.0 and result["precision"] == 1.0
    with pytest.raises(ValueError, match="unknown PHI type"):
        deid.parse_labelled("[[SSN:1]]", "t.txt")


@pytest.mark.parametrize("name, minimum", [("phi_labelled.txt", 100), ("phi_heldout.txt", 60)])
def test_shipped_phi_sets_are_well_formed(root, name, minimum):
    from medlab.zh import id_number_valid

    blocks = deid.parse_labelled((root / "samples/phi" / name).read_text(encoding="utf-8"))
    assert len(blocks) >= minimum
    types = {s["type"] for _, spans in blocks for s in spans}
    assert types == set(deid.PLACEHOLDERS)
    for text, spans in blocks:
        for s in spans:
            assert text[s["start"]:s["end"]] == s["text"]
            if s["type"] == "ID_NUMBER":
                assert id_number_valid(s["text"]), s["text"]


# ----------------------------------------------------------------- judges
def test_span_finder_prefers_longest_names():
    finder = SpanFinder(["肺炎", "社区获得性肺炎", "发热"])
    assert finder.find("社区获得性肺炎可有发热") == [(0, 7, "社区获得性肺炎"), (9, 11, "发热")]


def test_likelihood_judge_scores_a_fact_it_knows_above_a_wrong_one(tmp_path):
    """Train a tiny LM on statements, then ask the judge about a true and a false claim."""
    from types import SimpleNamespace

    import torch

    from medlab.filter.likelihood_judge import LikelihoodJudge
    from medlab.pretrain.model import build_llama
    from medlab.pretrain.tokenizer import train_tokenizer
    from medlab.seeding import seed_everything

    seed_everything(0, 1)
    facts = {"丙泊酚": "注射痛", "芬太尼": "胸壁强直", "琥珀胆碱": "高钾血症", "罗库溴铵": "过敏反应"}
    texts = [f"{d}的不良反应包括{e}。{d}用药后可出现{e}。" for d, e in facts.items()] * 40
    tok = train_tokenizer(texts, 300, 2, 128)
    cfg = SimpleNamespace(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=2, max_position_embeddings=128, rope_theta=10000.0,
                          tie_word_embeddings=True)
    model = build_llama(cfg, len(tok), tok.eos_token_id, tok.eos_token_id, tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts[:4]]
    for _ in range(150):
        for seq in ids:
            x = torch.tensor([seq])
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    judge = LikelihoodJudge(model, tok, list(facts) + list(facts.values()), batch_size=4)
    right = chat("丙泊酚的不良反应包括注射痛。", "丙泊酚有什么不良反应？")
    wrong = chat("丙泊酚的不良反应包括高钾血症。", "丙泊酚有什么不良反应？")
    result = judge.score_batch([right, wrong])
    assert result[0].claims == result[1].claims == 1
    assert result[0].score == result[0].fact > result[1].fact
    assert result[0].sentence is not None


def test_rubric_parsing_is_robust():
    full = {"coherence": 8, "professionalism": 7, "usefulness": 9, "harmlessness": 10, "friendliness": 6}
    assert parse_scores('好的，评分如下：{"coherence": 8, "professionalism": 7, "usefulness": 9, '
                        '"harmlessness": 10, "friendliness": 6}') == {k: float(v) for k, v in full.items()}
    lines = "连贯性：8\n专业性：7\n有用性：9\n无害性：10\n友好性：6"
    assert parse_scores(lines) == {k: float(v) for k, v in full.items()}
    assert parse_scores("连贯性：8\n专业性：7") is None  # missing aspects
    assert parse_scores('{"coherence": 11, "professionalism": 7, "usefulness": 9, "harmlessness": 1, '
                        '"friendliness": 6}') is None  # out of range


class ScriptedJudge:
    """Answers garbage on the first attempt for some conversations, then valid JSON."""

    name, model, batch_size = "scripted", "judge-1", 8

    def generate(self, requests):
        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            if "永远乱答" in text:
                out.append(Completion("我觉得还行吧。"))
            elif "第2次请求" not in text and "先乱答" in text:
                out.append(Completion("无法评分"))
            else:
                out.append(Completion('{"coherence": 8, "professionalism": 8, "usefulness": 6, '
                                      '"harmlessness": 10, "friendliness": 8}'))
        return out


def test_rubric_judge_retries_then_counts_failures(tmp_path):
    chats = [chat("好的回答"), chat("先乱答的回答"), chat("永远乱答的回答")]
    result = rubric_judge(chats, ScriptedJudge(), CallCache(tmp_path / "c.sqlite"), Decoding(), max_attempts=3)
    assert result.mean(0) == 8.0 and result.attempts[0] == 1
    assert result.mean(1) == 8.0 and result.attempts[1] == 2
    assert result.scores[2] is None and result.attempts[2] == 3 and result.unparseable == 1


def test_self_judging_is_refused(root, tmp_path):
    from medlab.config import ConfigError, read_yaml, validate_params

    text = (root / "params.yaml").read_text(encoding="utf-8")
    text = text.replace("    kind: likelihood", "    kind: rubric", 1)
    text = text.replace("    backend: simulated", "    backend: openai", 1)
    text = text.replace("        model: Qwen2.5-14B-Instruct", "        model: Qwen2.5-7B-Instruct")
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"filter\.judge\.allow_self_judge: the rubric judge is the teacher"):
        validate_params(read_yaml(path), root=root)
    path.write_text(text.replace("  allow_self_judge: false", "  allow_self_judge: true"), encoding="utf-8")
    assert validate_params(read_yaml(path), root=root).filter.judge.allow_self_judge


# ---------------------------------------------------------- pairs, metrics
def sample(i: int, answer: str, fault: str, subject="丙泊酚", predicate="不良反应") -> Sample:
    return Sample(id=f"s{i}", source="kg_qa", domain="anesthesia", messages=chat(answer, f"问{i}"),
                  provenance={"method": "kg_qa", "source": {"subject": subject, "predicate": predicate}},
                  truth={"fault": fault})


def test_pairs_match_by_instruction_then_fact():
    kept = [sample(1, "注射痛", "none"), sample(2, "低血压", "none", predicate="用法用量")]
    same_prompt = sample(1, "恶性高热", "factual").model_copy(update={"id": "r1"})
    same_fact = sample(3, "高钾血症", "factual")
    orphan = sample(4, "无关", "factual", subject="芬太尼")
    pairs = build_pairs(kept, [(same_prompt, "judge"), (same_fact, "judge"), (orphan, "rule:url")], 10, 0)
    assert [(p.provenance["match"], p.chosen, p.rejected) for p in pairs] == [
        ("instruction", "注射痛", "恶性高热"), ("fact", "注射痛", "高钾血症")]
    assert pairs[0].prompt == same_prompt.messages[:-1]


def test_metrics():
    labels = np.array([1, 1, 0, 0, 0, 0])
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.7])  # faulty ones scored lowest
    assert auroc(labels, scores) == 1.0
    assert auroc(labels, -scores) == 0.0
    assert auroc(np.zeros(3), np.ones(3)) is None
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = -y + rng.normal(0, 1, 400)
    low, high = bootstrap_ci(auroc, y, s, n_boot=200)
    assert low < auroc(y, s) < high and high - low < 0.15
    assert detection([1, 1, 0, 0], [1, 0, 1, 0]) == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    # the rank form is scikit-learn's ROC AUC, ties (rounded scores) counted one half
    from sklearn.metrics import roc_auc_score
    for rounded in (np.round(s, 1), s):
        assert abs(auroc(y, rounded) - roc_auc_score(y, -rounded)) < 1e-12
    assert error_rate([1, 0, 1, 0], [True, True, False, False]) == 0.5


def test_judge_cutoffs_are_per_domain_quantiles_or_one_threshold():
    from types import SimpleNamespace

    rows = [sample(i, "答", "none").model_copy(update={"domain": "anesthesia" if i < 10 else "general_medicine"})
            for i in range(20)]
    scores = {f"s{i}": float(i) for i in range(20) if i != 5}  # s5 was not scored: kept
    prose = {f"s{i}": -float(i % 10) for i in range(20)}  # the last sentences of each domain read worst
    judge = SimpleNamespace(mode="quantile", keep_quantile=0.8, keep_quantile_prose=0.9, threshold=0.0)
    cutoffs, reasons = judge_cutoffs(rows, scores, prose, judge, ["anesthesia", "general_medicine", "general"])
    assert set(cutoffs) == {"anesthesia", "general_medicine"}  # no general samples: no cut-off
    assert cutoffs["anesthesia"]["score"] == pytest.approx(np.quantile([0, 1, 2, 3, 4, 6, 7, 8, 9], 0.2))
    assert cutoffs["general_medicine"]["score"] == pytest.approx(np.quantile(range(10, 20), 0.2))
    # the lowest 20% of each domain's scores by the judge, then the worst prose of the rest
    assert reasons == {"s0": "judge", "s1": "judge", "s10": "judge", "s11": "judge",
                       "s9": "judge:prose", "s19": "judge:prose"}
    fixed = SimpleNamespace(mode="threshold", keep_quantile=0.8, keep_quantile_prose=0.9, threshold=12.5)
    cutoffs, reasons = judge_cutoffs(rows, scores, prose, fixed, ["anesthesia", "general_medicine"])
    assert cutoffs["anesthesia"] == {"score": 12.5, "prose": None}
    assert sorted(reasons) == sorted(f"s{i}" for i in range(13) if i != 5) and set(reasons.values()) == {"judge"}
    assert reason_counts({"a": "rule:url", "b": "rule:url", "c": "judge", "d": "duplicate:near"}) == {
        "duplicate:near": 1, "judge": 1, "rule:url": 2}


def test_methods_with_their_own_cutoffs_leave_the_prose_cutoffs_unchanged():
    from types import SimpleNamespace

    def rows_of(method, ids):
        return [sample(i, "答", "none").model_copy(update={"domain": "anesthesia", "provenance": {"method": method}})
                for i in ids]

    prose_rows = rows_of("kg_qa", range(10))
    letter_rows = rows_of("kg_mcq", range(100, 110))  # a format the judge never saw: every score lowest
    scores = {f"s{i}": float(i) for i in range(10)} | {f"s{i}": -100.0 - i for i in range(100, 110)}
    judge = SimpleNamespace(mode="quantile", keep_quantile=0.8, keep_quantile_prose=0.9, threshold=0.0,
                            own_cutoff_methods=[])
    # cut together, the letter answers fill the bottom 20%: no prose answer is cut, 4 letter answers are
    _, together = judge_cutoffs(prose_rows + letter_rows, scores, {}, judge, ["anesthesia"])
    assert sorted(together) == [f"s{i}" for i in range(106, 110)]
    alone, _ = judge_cutoffs(prose_rows, scores, {}, judge, ["anesthesia"])
    judge.own_cutoff_methods = ["kg_mcq"]
    cutoffs, reasons = judge_cutoffs(prose_rows + letter_rows, scores, {}, judge, ["anesthesia"])
    assert set(cutoffs) == {"anesthesia", "anesthesia/kg_mcq"}
    assert cutoffs["anesthesia"] == alone["anesthesia"]  # the prose cut-off as without the letter answers
    # each group loses its own bottom 20%
    assert sorted(reasons) == sorted(["s0", "s1", "s108", "s109"])


def test_fault_report_measures_planted_faults_and_skips_without_them():
    clean = [sample(i, "答", "none") for i in range(8)]
    faulty = [sample(10 + i, "错", "factual") for i in range(4)]
    scores = {s.id: 1.0 for s in clean} | {s.id: 0.0 for s in faulty}  # the judge ranks every fault lowest
    reasons = {"s10": "judge", "s11": "judge", "s0": "judge"}  # the cut-off caught 2 of 4, and one clean one
    report = fault_report(clean + faulty, reasons, scores, {}, covered={"丙泊酚"}, seed=0, n_boot=50)
    assert report["auroc"] == 1.0 and report["by_fault"]["factual"]["n"] == 12
    assert report["by_fault"]["factual"]["recall"] == 0.5 and report["by_fault"]["factual"]["precision"] == 2 / 3
    assert report["error_rate_before"] == 4 / 12 and report["error_rate_after"] == 2 / 9
    assert report["by_fault"]["unsafe"]["judge_auroc"] is None  # no unsafe sample planted
    assert report["factual_auroc_by_knowledge"]["anesthesia, subject in corpus"]["auroc"] == 1.0
    real_teacher = [s.model_copy(update={"truth": None}) for s in clean + faulty]
    assert set(fault_report(real_teacher, reasons, scores, {}, set(), seed=0)) == {"skipped"}


def test_likelihood_judge_reads_the_same_logprobs_as_a_forward_pass_on_every_family(family):
    """The judge's per-token log-probs (read on the device, head applied only where read)
    equal a plain forward pass with full logits, on medlab's toy model and the real families."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medlab.evaluate.loglik import leading_bos
    from medlab.filter.likelihood_judge import LikelihoodJudge

    name, path = family
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    judge = LikelihoodJudge(model, tok, ["丙泊酚", "注射痛", "高钾血症"], batch_size=4, fmt="chat")
    texts = ["丙泊酚的不良反应包括注射痛。", "Propofol causes pain on injection."]
    got = judge.token_logprobs(texts)
    first = leading_bos(tok)
    first = first if first is not None else (tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id)
    for text, tokens in zip(texts, got, strict=True):
        ids = [first] + tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        want = [float(logp[k, ids[k + 1]]) for k in range(len(ids) - 1)]
        assert [v for _, _, v in tokens] == pytest.approx(want, abs=1e-4), name
        assert tokens[-1][1] == len(text)  # offsets cover the text
    [right] = judge.score_batch([chat("丙泊酚的不良反应包括注射痛。", "丙泊酚有什么不良反应？")])
    assert right.claims == 1 and right.fact is not None  # scored through the family's chat template
