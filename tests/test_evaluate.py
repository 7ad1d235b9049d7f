"""Evaluation harness: log-likelihood scorer, MCQ rotation and extraction, paired statistics."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medlab.evaluate.loglik import continuation_logprobs, split_tokens
from medlab.evaluate.mcq import (
    PairScores,
    extract_answer,
    loglik_requests,
    render,
    rotate,
    score_loglik,
    single_answer,
    summarise,
)
from medlab.pretrain.model import build_llama
from medlab.pretrain.tokenizer import train_tokenizer
from medlab.records import McqItem
from medlab.stats import mcnemar, paired_bootstrap, permutation_paired

TEXTS = ["丙泊酚的常见不良反应包括低血压和注射痛。", "芬太尼是一种阿片类镇痛药，可引起呼吸抑制。",
         "罗库溴铵是非去极化肌松药，舒更葡糖可拮抗。", "以下是麻醉学单项选择题，请选出唯一正确的答案。答案：A B C D"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=400, min_frequency=2, model_max_length=256)


@pytest.fixture(scope="module")
def model(tokenizer):
    cfg = SimpleNamespace(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=2, max_position_embeddings=256, rope_theta=10000.0,
                          tie_word_embeddings=True)
    torch.manual_seed(0)
    return build_llama(cfg, len(tokenizer), tokenizer.eos_token_id, tokenizer.eos_token_id,
                       tokenizer.pad_token_id).eval()


def items(n: int = 6) -> list[McqItem]:
    drugs = ["丙泊酚", "芬太尼", "罗库溴铵", "舒更葡糖"]
    return [McqItem(id=f"q{i}", source="t", question=f"第{i}题：哪一种是肌松药？",
                    options={k: drugs[(i + j) % 4] for j, k in enumerate("ABCD")}, answer="ABCD"[i % 4],
                    category="药物类别" if i % 2 else "不良反应") for i in range(n)]


PAIRS = [("丙泊酚的常见不良反应", "包括低血压"), ("芬太尼", "是一种阿片类镇痛药"), ("答案：", "A"), ("答案：", "B"),
         ("以下是麻醉学单项选择题", "，请选出"), ("罗库溴铵是非去极化肌松药，舒更葡糖", "可拮抗。"),
         # options of one cloze question: multi-token continuations sharing a context (one row)
         ("哪一种是肌松药？答案：", "罗库溴铵"), ("哪一种是肌松药？答案：", "芬太尼"),
         ("哪一种是肌松药？答案：", "丙泊酚的常见不良反应包括低血压")]


def direct(model, tokenizer, context: str, continuation: str) -> float:
    """log P(continuation | context) by one unbatched forward pass, by hand."""
    head, tail = split_tokens(tokenizer, context, continuation)
    ids = torch.tensor([head + tail])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return sum(float(logp[len(head) - 1 + t, tok]) for t, tok in enumerate(tail))


def test_scores_equal_a_direct_forward_pass(model, tokenizer):
    scored = continuation_logprobs(model, tokenizer, PAIRS, batch_size=4)
    for (context, continuation), s in zip(PAIRS, scored, strict=True):
        assert s.logprob == pytest.approx(direct(model, tokenizer, context, continuation), abs=1e-4)
        assert s.n_tokens == len(split_tokens(tokenizer, context, continuation)[1])
        assert s.logprob < 0


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_shared_context_row_scores_like_separate_rows(model, tokenizer, attention):
    model.set_attn_implementation(attention)
    try:
        shared = continuation_logprobs(model, tokenizer, PAIRS, batch_size=3)
    finally:
        model.set_attn_implementation("sdpa")
    alone = continuation_logprobs(model, tokenizer, PAIRS, batch_size=3, share_context=False)
    for a, b in zip(shared, alone, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5) and (a.n_tokens, a.greedy) == (b.n_tokens, b.greedy)
    # the shared row really is one row: count the forward passes and the positions they cover
    # (the head check ran in the calls above: once per model, not per call)
    widths = []
    decoder = model.get_decoder()  # the scorer runs the decoder, then the head where it reads
    hook = decoder.register_forward_pre_hook(lambda _m, args, kwargs: widths.append(kwargs["input_ids"].shape),
                                             with_kwargs=True)
    try:
        continuation_logprobs(model, tokenizer, PAIRS[6:], batch_size=16)
    finally:
        hook.remove()
    assert [w[0] for w in widths] == [1]  # the one scoring row
    head = split_tokens(tokenizer, *PAIRS[6])[0]
    assert widths[0][1] == len(head) + sum(len(split_tokens(tokenizer, *p)[1]) for p in PAIRS[6:])


def test_letters_of_a_context_with_longer_options_ride_in_its_row(model, tokenizer):
    """Letter and option-text scoring of one prompt asked together (``PairScores``): the
    context runs once, the letters read at its last position, scores as if asked apart."""
    context = PAIRS[6][0]
    letters = [(context, k) for k in "AB"]
    assert all(len(split_tokens(tokenizer, *p)[1]) == 1 for p in letters)  # single tokens
    joint = PAIRS[6:] + letters
    continuation_logprobs(model, tokenizer, PAIRS[:1])  # the model's one-time head check, done
    widths = []
    decoder = model.get_decoder()
    hook = decoder.register_forward_pre_hook(lambda _m, args, kwargs: widths.append(kwargs["input_ids"].shape),
                                             with_kwargs=True)
    try:
        together = PairScores(model, tokenizer, batch_size=16)(joint)
    finally:
        hook.remove()
    assert [w[0] for w in widths] == [1]  # one row: no pass of the context alone
    apart = continuation_logprobs(model, tokenizer, letters, batch_size=16)
    for a, b in zip(together[-2:], apart, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5) and (a.n_tokens, a.greedy) == (b.n_tokens, b.greedy)
    for (c, x), s in zip(joint, together, strict=True):
        assert s.logprob == pytest.approx(direct(model, tokenizer, c, x), abs=1e-4)
    # and in an MCQ: letter and option-text results are the same asked together or apart
    scorer = PairScores(model, tokenizer, batch_size=7)
    scorer.prefetch([p for sc in ("letter", "option_text") for p in loglik_requests(tokenizer, items(), (), sc)[0]])
    for sc in ("letter", "option_text"):
        shared = score_loglik(model, tokenizer, items(), scoring=sc, scorer=scorer)
        alone = score_loglik(model, tokenizer, items(), scoring=sc, batch_size=7)
        for x, y in zip(shared, alone, strict=True):
            assert x.picks == y.picks
            for p, q in zip(x.probs, y.probs, strict=True):
                assert p == pytest.approx(q, abs=1e-5)


def test_scores_do_not_depend_on_batch_size(model, tokenizer):
    runs = [[s.logprob for s in continuation_logprobs(model, tokenizer, PAIRS, batch_size=b)] for b in (1, 2, 16)]
    assert np.allclose(runs[0], runs[1], atol=1e-5) and np.allclose(runs[0], runs[2], atol=1e-5)
    mcq = [[r.probs for r in score_loglik(model, tokenizer, items(), batch_size=b)] for b in (1, 7)]
    for a, b in zip(*mcq, strict=True):
        for x, y in zip(a, b, strict=True):
            assert x == pytest.approx(y, abs=1e-5)


def test_rotation_moves_texts_and_tracks_the_answer():
    item = items(1)[0]
    for shift in range(4):
        shown = rotate(item, shift)
        assert sorted(shown.options.values()) == sorted(item.options.values())
        assert shown.options[shown.answer] == item.options[item.answer]
        assert all(item.options[shown.original[k]] == v for k, v in shown.options.items())
    assert rotate(item, 1).options["B"] == item.options["A"]
    assert {rotate(item, s).answer for s in range(4)} == set("ABCD")  # the answer visits every position


class AlwaysA(torch.nn.Module):
    """A 'model' whose next token is the letter A whatever it reads."""

    def __init__(self, vocab: int, token_a: int):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab))
        with torch.no_grad():
            self.bias[token_a] = 5.0
        self.config = SimpleNamespace(max_position_embeddings=512)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.bias.expand(*input_ids.shape, -1))


def test_position_bias_alone_gets_chance_under_rotation(tokenizer):
    token_a = tokenizer("A", add_special_tokens=False)["input_ids"]
    assert len(token_a) == 1
    always_a = AlwaysA(len(tokenizer), token_a[0])
    results = score_loglik(always_a, tokenizer, items(8))
    summary = summarise(results, chance=0.25, n_boot=100)
    assert summary["position_bias"] == 1.0
    assert summary["acc"] == pytest.approx(sum(i.answer == "A" for i in items(8)) / 8)  # as written: luck
    assert summary["acc_rotation_mean"] == pytest.approx(0.25)  # exactly chance
    assert summary["acc_rotation"] == 0.0  # never right under every order


def test_text_mode_and_categories(model, tokenizer):
    results = score_loglik(model, tokenizer, items(4), scoring="option_text", layout="chat", rotations=False)
    assert all(len(r.picks) == 1 and r.picks[0] in "ABCD" for r in results)
    assert all(abs(sum(r.probs[0].values()) - 1) < 1e-6 for r in results)
    cloze = score_loglik(model, tokenizer, items(4), scoring="cloze", layout="plain")
    assert all(len(r.picks) == 1 for r in cloze)  # no order shown: nothing to rotate
    summary = summarise(cloze, chance=0.25, n_boot=50)
    assert summary["position_bias"] is None and summary["acc_rotation"] == summary["acc"]
    shown = rotate(items(1)[0], 0)
    prompt = render(tokenizer, shown, items(3)[1:], "麻醉学", "chat", show_options=False)
    assert "A. " not in prompt and prompt.count("哪一种是肌松药") == 3  # two solved shots + the question
    assert items(3)[1].options[items(3)[1].answer] in prompt  # a shot's answer is its text
    with pytest.raises(ValueError, match="multi-answer"):
        score_loglik(model, tokenizer, [items(1)[0].model_copy(update={"answer": "AB"})])
    kept, skipped = single_answer([*items(2), items(1)[0].model_copy(update={"answer": "AB"})])
    assert len(kept) == 2 and skipped == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("答案：B", "B"), ("正确答案是 C。", "C"), ("B. 芬太尼", "B"), ("（D）舒更葡糖", "D"),
    ("我认为应选芬太尼，因为它是阿片类。", "B"), ("不清楚。", None), ("答案：E", None),
    ("丙泊酚和芬太尼都对", None), ("答案：AC", "AC"), ("严重高血压", "C"),
    # chat models reason first and commit last, in markdown and full-width forms
    ("选项A是静脉麻醉药，选项B是阿片类镇痛药。因此正确答案是B。", "B"), ("**答案：Ｄ**", "D"),
    ("分析如下……\n\n最终答案：【C】", "C"), ("我选选项B", "B"), ("选项A和选项C都不对", None),
    ("答案B是对的", "B"),
])
def test_answer_extraction_never_defaults(text, expected):
    options = {"A": "丙泊酚", "B": "芬太尼", "C": "严重高血压", "D": "舒更葡糖"}
    if expected == "C" and text == "严重高血压":
        options["A"] = "高血压"  # a text inside another option's text is not a second answer
    assert extract_answer(text, options) == expected


def test_paired_statistics_on_known_cases():
    a = np.array([1] * 30 + [1] * 10 + [0] * 2 + [0] * 8)  # a right alone on 10, b right alone on 2
    b = np.array([1] * 30 + [0] * 10 + [1] * 2 + [0] * 8)
    test = mcnemar(a, b)
    assert (test["only_a"], test["only_b"]) == (10, 2)
    assert test["p"] == pytest.approx(0.0386, abs=1e-3)  # 2 * P(X <= 2), X ~ Bin(12, 1/2)
    boot = paired_bootstrap(a, b, n_boot=500)
    assert boot["diff"] == pytest.approx(8 / 50) and boot["ci"][0] > 0
    assert permutation_paired([1.0, 1.0, 1.0, 1.0]) == pytest.approx(2 / 16)  # exact: all-+ or all-- signs
    assert permutation_paired([1.0, -1.0, 1.0, -1.0]) == 1.0


def test_vectorised_bootstrap_draws_what_one_draw_per_resample_draws():
    """bootstrap_ci(np.mean) and paired_bootstrap take their resamples as blocks of rows:
    the same draws and the same interval as a Python loop of one resample at a time."""
    from medlab.stats import bootstrap_ci

    x = np.random.default_rng(3).integers(0, 2, 301).astype(float)
    rng = np.random.default_rng(9)
    looped = np.array([x[rng.integers(0, len(x), len(x))].mean() for _ in range(700)])
    want = (float(np.quantile(looped, 0.025)), float(np.quantile(looped, 0.975)))
    assert bootstrap_ci(np.mean, x, n_boot=700, seed=9) == want
    assert bootstrap_ci(lambda v: v.mean(), x, n_boot=700, seed=9) == want  # the general path agrees
    assert paired_bootstrap(x, np.zeros_like(x), n_boot=700, seed=9)["ci"] == list(want)


def test_text_metrics_tokenise_chinese():
    from medlab.evaluate.text_metrics import bleu, distinct_n, grounded_correct, rouge_l

    ref = "丙泊酚的常见不良反应包括低血压和注射痛。"
    assert bleu([ref], [ref]) == pytest.approx(100.0)
    assert 0 < bleu(["丙泊酚常见的不良反应有低血压。"], [ref]) < 100  # 13a would give 0 here
    assert rouge_l(ref, ref) == 1.0 and rouge_l(ref, ref, unit="word") == 1.0
    assert rouge_l("丙泊酚可致低血压", ref) > rouge_l("芬太尼可致呼吸抑制", ref)
    with pytest.raises(ValueError, match="unit"):
        rouge_l(ref, ref, unit="byte")
    assert distinct_n(["ABAB"], 2) == pytest.approx(2 / 3) and distinct_n([""], 2) == 0.0
    assert grounded_correct("可见低血压和注射痛", ["低血压", "注射痛"], ["呼吸抑制"])
    assert not grounded_correct("可见低血压", ["低血压", "注射痛"], [])
    assert not grounded_correct("低血压、注射痛和呼吸抑制", ["低血压", "注射痛"], ["呼吸抑制"])
    assert grounded_correct("严重高血压", ["严重高血压"], ["高血压"])  # inside the gold: no conflict


def test_generation_mode_counts_unparseable_answers_as_wrong():
    from medlab.evaluate.mcq import score_generation

    questions = items(4)  # answers A, B, C, D; the scripted model answers A, the right text, nonsense, "E"
    replies = iter(["答案：A", None, "嗯……让我想想", "答案：E"])

    def scripted(chats):
        out = []
        for chat, item in zip(chats, questions, strict=True):
            assert chat[-1]["role"] == "user" and item.question in chat[-1]["content"]
            reply = next(replies)
            out.append(reply if reply is not None else f"应选{item.options[item.answer]}。")
        return out

    results = score_generation(scripted, questions)
    summary = summarise(results, chance=0.25, n_boot=50)
    assert [r.correct()[0] for r in results] == [True, True, False, False]
    assert summary["acc"] == 0.5 and summary["no_answer_rate"] == 0.5


def test_ner_parsing_and_micro_f1():
    from medlab.evaluate.ner import micro_f1, parse_entities
    from medlab.knowledge.kb import longest_matches

    answer = "丙泊酚|药物\n2. 低血压（症状）\n疾病：恶性高热，肺炎\n芬太尼|食物\n无"
    assert parse_entities(answer) == {("丙泊酚", "药物"), ("低血压", "症状"), ("恶性高热", "疾病"), ("肺炎", "疾病")}
    gold = [{("丙泊酚", "药物"), ("低血压", "症状")}, {("肺炎", "疾病")}]
    pred = [{("丙泊酚", "药物"), ("低血压", "疾病")}, set()]  # a wrong type is a FP and a FN
    score = micro_f1(gold, pred)
    assert (score["tp"], score["fp"], score["fn"]) == (1, 1, 2)
    assert score["precision"] == 0.5 and score["recall"] == pytest.approx(1 / 3)
    assert score["f1"] == pytest.approx(0.4)
    names = {"高血压": "疾病", "严重高血压": "症状", "丙泊酚": "药物"}
    assert longest_matches("丙泊酚禁用于严重高血压", names) == {("丙泊酚", "药物"), ("严重高血压", "症状")}
    assert longest_matches("高血压，丙泊酚", names) == {("高血压", "疾病"), ("丙泊酚", "药物")}


def test_ner_loaders_read_cmeee_and_promptcblue(tmp_path):
    import json as _json

    from medlab.evaluate.ner import load_ner
    from medlab.formats import FormatError

    cmeee = tmp_path / "CMeEE_dev.json"
    cmeee.write_text(_json.dumps([
        {"text": "患者术后出现恶心呕吐，给予昂丹司琼。", "entities": [
            {"start_idx": 6, "end_idx": 9, "type": "sym", "entity": "恶心呕吐"},
            {"start_idx": 13, "end_idx": 16, "type": "dru", "entity": "昂丹司琼"}]}], ensure_ascii=False, indent=1))
    [item] = load_ner(cmeee, "cmeee")
    assert item.gold == {("恶心呕吐", "症状"), ("昂丹司琼", "药物")}
    bad = tmp_path / "bad.json"
    bad.write_text('[\n{"text": "肺炎", "entities": [{"start_idx": 0, "end_idx": 1, "type": "xyz", "entity": "肺炎"}]}\n]')
    with pytest.raises(FormatError, match=r"bad.json:2: unknown entity type 'xyz'"):
        load_ner(bad, "cmeee")
    pcb = tmp_path / "dev.json"
    rows = [{"input": "找出句子中的疾病、药物实体：\n糖尿病患者口服二甲双胍。", "target": "上述句子中的疾病实体：糖尿病\n上述句子中的药物实体：二甲双胍",
             "task_type": "ner", "sample_id": "s1"},
            {"input": "x", "target": "y", "task_type": "cls"}]
    pcb.write_text("\n".join(_json.dumps(r, ensure_ascii=False) for r in rows))
    [item] = load_ner(pcb, "promptcblue")
    assert item.gold == {("糖尿病", "疾病"), ("二甲双胍", "药物")} and item.types == ("疾病", "药物")
    assert item.text == "糖尿病患者口服二甲双胍。"
    with pytest.raises(FormatError, match="unknown NER format"):
        load_ner(pcb, "conll")


class ScriptedJudge:
    """A judge 'model' with scripted behaviour: prefers the answer containing 好, retries well."""

    name, model, batch_size = "scripted", "scripted-judge", 8

    def generate(self, requests):
        from medlab.llm.base import Completion

        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            retry = "无法解析" in text
            if "回答1：" in text:
                first = text.split("回答1：")[1].split("回答2：")[0]
                second = text.split("回答2：")[1]
                if "乱" in text and not retry:
                    verdict = "我觉得都行"
                elif "总选1" in text:
                    verdict = "更好：1"
                else:
                    verdict = "更好：1" if "好" in first and "好" not in second.split("只输出")[0] else "更好：2"
                out.append(Completion(text=verdict))
            elif "永远乱答" in text or ("先乱答" in text and not retry):
                out.append(Completion(text="accuracy 很高"))
            else:
                out.append(Completion(text='{"proactivity": 3, "accuracy": 4, "helpfulness": 4, "语言质量": 5}'))
        return out


def test_rubric_judge_counts_unparseable_and_pairwise_swaps_positions(tmp_path):
    from medlab.evaluate.judges import (
        combine,
        judge_pairwise,
        judge_rubric,
        parse_rubric,
        parse_verdict,
    )
    from medlab.llm.base import Decoding
    from medlab.llm.cache import CallCache

    cache = CallCache(tmp_path / "judge.sqlite")
    rubric = judge_rubric([("问", "参考", "好的回答"), ("问", "参考", "先乱答"), ("问", "参考", "永远乱答")],
                          ScriptedJudge(), cache, Decoding(), max_attempts=2)
    assert rubric["scores"][0] == {"proactivity": 3, "accuracy": 4, "helpfulness": 4, "linguistic_quality": 5}
    assert rubric["attempts"][1] == 2 and rubric["scores"][1] is not None
    assert rubric["scores"][2] is None and rubric["unparseable"] == 1
    assert parse_rubric('{"proactivity": 6, "accuracy": 4, "helpfulness": 4, "linguistic_quality": 5}') is None
    assert parse_verdict("更好：平局") == "tie" and parse_verdict("不好说") is None
    assert combine("1", "2") == "a" and combine("1", "1") == "tie" and combine("2", "tie") == "b"
    pairs = [("问", "好答案", "差答案"), ("问", "差答案", "好答案"), ("问", "乱", "好")]
    result = judge_pairwise(pairs, ScriptedJudge(), cache, Decoding(), max_attempts=2)
    assert result["outcomes"] == ["a", "b", "b"] and result["unparseable"] == 0
    biased = judge_pairwise([("总选1", "甲", "乙")] * 2, ScriptedJudge(), cache, Decoding())
    assert biased["outcomes"] == ["tie", "tie"] and biased["first_position_share"] == 1.0  # exposed by the swap


# ------------------------------------------------------------------ comparison
def test_holm_adjusts_a_family_of_p_values():
    from medlab.evaluate.compare import holm

    # sorted 0.01, 0.02, 0.04 with m = 3: 0.03, max(0.03, 0.04) = 0.04, max(0.04, 0.04) = 0.04
    assert holm([0.04, 0.01, None, 0.02]) == pytest.approx([0.04, 0.03, None, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_hierarchical_bootstrap_resamples_seeds_then_items_and_checks_the_sign():
    from medlab.stats import hierarchical_bootstrap

    # no item variance within a seed (every item differs by the seed's value): a resample's
    # estimate is the mean of 3 seeds drawn with replacement from {0, 0, 0.3}, so
    # P(0) = (2/3)^3 = 0.30 > 2.5% and P(0.3) = (1/3)^3 = 0.037 > 2.5%: the CI is [0, 0.3]
    flat = {1: (np.zeros(50),), 2: (np.zeros(50),), 3: (np.full(50, 0.3),)}
    out = hierarchical_bootstrap(flat, np.mean, n_boot=4000, seed=0)
    assert out["diff"] == pytest.approx(0.1) and out["ci"] == pytest.approx([0.0, 0.3])
    assert out["per_seed"] == {"1": 0.0, "2": 0.0, "3": pytest.approx(0.3)} and not out["sign_agreement"]
    assert out["p"] == pytest.approx(2 * (2 / 3) ** 3, abs=0.03)  # twice the share of resamples at <= 0
    # the same items on every seed, seeds agreeing: an item-level CI, every seed with the sign
    rng = np.random.default_rng(1)
    items = [(rng.random(200) < 0.6).astype(float) - (rng.random(200) < 0.4) for _ in range(3)]
    agree = hierarchical_bootstrap({s: (d,) for s, d in enumerate(items)}, np.mean, n_boot=1000, seed=0)
    assert agree["sign_agreement"] and agree["ci"][0] > 0 and agree["p"] < 0.01 and agree["n"] == 200
    # seeds that disagree widen the interval beyond what the items alone give
    spread = hierarchical_bootstrap({0: (items[0] + 0.3,), 1: (items[1] - 0.3,), 2: (items[2],)}, np.mean,
                                    n_boot=1000, seed=0)
    assert spread["ci"][1] - spread["ci"][0] > 2 * (agree["ci"][1] - agree["ci"][0])
    assert hierarchical_bootstrap(flat, np.mean, n_boot=0)["ci"] is None


def test_claims_between_seeded_recipes_are_pooled_over_seeds_and_others_stay_item_level():
    from medlab.evaluate.compare import compare_models, outcome_score

    def mcq(correct):  # outcome per item: [as written, under every rotation]
        return {f"q{i}": [int(c), int(c)] for i, c in enumerate(correct)}

    def ner(tp):  # per sentence: [true positives, predicted, gold]
        return {f"s{i}": [t, 2, 2] for i, t in enumerate(tp)}

    n = 60
    a = {1234: {"m/cloze": mcq([1] * 40 + [0] * 20), "kb_ner": ner([2] * n)},
         1235: {"m/cloze": mcq([1] * 45 + [0] * 15), "kb_ner": ner([1] * n)},
         1236: {"m/cloze": mcq([1] * 20 + [0] * 40), "kb_ner": ner([2] * n)}}
    b = {s: {"m/cloze": mcq([1] * 30 + [0] * 30), "kb_ner": ner([1] * n)} for s in a}
    c = {"m/cloze": mcq([1] * 30 + [0] * 30), "kb_ner": ner([0] * n)}  # trained once
    outcomes = {"a": a[1234], "b": b[1234], "c": c}
    rows = compare_models(outcomes, [("a", "b"), ("a", "c")], ["m/cloze", "kb_ner"], n_boot=500,
                          replicates={"a": a, "b": b})
    pooled = {r["task"]: r for r in rows if r["b"] == "b"}
    mcq_row = pooled["m/cloze"]
    assert mcq_row["n_seeds"] == 3 and mcq_row["per_seed"] == {"1234": pytest.approx(10 / 60), "1235": pytest.approx(
        15 / 60), "1236": pytest.approx(-10 / 60)}
    assert mcq_row["diff"] == pytest.approx(15 / 180) and not mcq_row["sign_agreement"]  # seed 1236 flips it
    assert mcq_row["item_level"]["diff"] == pytest.approx(10 / 60) and "mcnemar" not in mcq_row
    assert mcq_row["mean_a"] == pytest.approx(105 / 180) and mcq_row["p_test"] == mcq_row["p"]
    assert mcq_row["ci"][0] < 0 < mcq_row["ci"][1]  # one seed the other way: no claim over seeds
    ner_row = pooled["kb_ner"]  # micro-F1 per seed: a is 1.0, 0.5, 1.0 against b's 0.5
    assert ner_row["metric"] == "micro_f1" and ner_row["diff"] == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert not ner_row["sign_agreement"]  # seed 1235 ties: not a sign the pooled one has
    single = [r for r in rows if r["b"] == "c"]
    assert all(r["n_seeds"] == 1 and "per_seed" not in r for r in single) and "mcnemar" in single[0]
    assert outcome_score("kb_ner", c["kb_ner"]) == 0.0 and outcome_score("m/cloze", c["m/cloze"]) == 0.5


def test_paired_comparison_uses_only_shared_items_and_keeps_model_names():
    from medlab.evaluate.compare import compare_models, compare_task, paired_f1

    a = {f"q{i}": [1, 1] for i in range(30)} | {"only_a": [0, 0]}
    b = {f"q{i}": [int(i < 10), 0] for i in range(30)}  # b right on 10 of the 30 shared
    result = compare_task("anesthesia_mcq/cloze", a, b, n_boot=500)
    assert result["n"] == 30 and result["diff"] == pytest.approx(20 / 30)
    assert result["mcnemar"] == {"only_a": 20, "only_b": 0, "p": pytest.approx(2 * 0.5 ** 20)}
    assert result["ci"][0] > 0
    rows = compare_models({"x": {"t/cloze": a}, "y": {"t/cloze": b}}, [("x", "y")], ["t/cloze", "absent"])
    assert len(rows) == 1 and rows[0]["a"] == "x" and rows[0]["b"] == "y"
    assert rows[0]["mean_a"] == 1.0 and rows[0]["p_holm"] == rows[0]["p_test"]  # a family of one
    # NER: the same counts give a zero difference; a model with no true positives loses
    counts = np.array([[1, 2, 2], [0, 1, 1], [2, 2, 3]], dtype=float)
    assert paired_f1(counts, counts, 200, 0)["diff"] == 0.0
    worse = counts.copy()
    worse[:, 0] = 0
    assert paired_f1(counts, worse, 200, 0)["diff"] == pytest.approx(2 * 3 / (5 + 6))
    with pytest.raises(ValueError, match="share no items"):
        compare_task("anesthesia_mcq/cloze", {"a": [1, 1]}, {"b": [1, 1]})


def test_qa_comparison_skips_items_without_gold_entities():
    from medlab.evaluate.compare import compare_task

    a = {"1": {"grounded": 1, "rouge_l_char": 0.5}, "2": {"grounded": None, "rouge_l_char": 0.2},
         "3": {"grounded": 0, "rouge_l_char": 0.1}}
    b = {"1": {"grounded": 0, "rouge_l_char": 0.4}, "2": {"grounded": None, "rouge_l_char": 0.2},
         "3": {"grounded": 0, "rouge_l_char": 0.1}}
    result = compare_task("anesthesia_qa", a, b, n_boot=200)
    assert result["n"] == 2 and result["diff"] == 0.5 and result["mcnemar"]["only_a"] == 1
    assert result["rouge_l_char"]["n"] == 3 and result["rouge_l_char"]["diff"] == pytest.approx(0.1 / 3)


def test_metric_table_marks_what_a_model_lacks():
    from medlab.evaluate.compare import markdown_table, metric_table

    metrics = {"m1": {"anesthesia_mcq": {"acc": 0.6, "acc_ci": [0.5, 0.7]}},
               "m2": {"anesthesia_mcq": {"acc": 0.25, "acc_ci": None}, "kb_ner": {"f1": 0.1, "f1_ci": [0.0, 0.2]}}}
    rows = metric_table(metrics)
    assert rows[0]["NER F1"] is None and rows[1]["NER F1"] == {"value": 0.1, "ci": [0.0, 0.2]}
    text = markdown_table(rows)
    assert "| m1 | 0.600 [0.500, 0.700] | – |" in text and "general MCQ" not in text  # nobody has it
    metrics["api"] = {"anesthesia_mcq": {"acc": 0.7, "acc_ci": [0.6, 0.8], "scoring": "generation"}}
    text = markdown_table(metric_table(metrics))  # a hosted model's headline says how it was scored
    assert "| MCQ scoring |" in text and "| api | generation | 0.700 [0.600, 0.800] | – |" in text


# ------------------------------------------------------------------ one model's tasks
def test_task_store_resumes_finished_tasks_and_never_reuses_stale_ones(tmp_path):
    from medlab.evaluate.run import TaskStore

    store, calls = TaskStore(tmp_path), []

    def compute():
        calls.append(1)
        return {"acc": 0.5}

    key = store.key(model="m#1", ids=["a", "b"], scoring="cloze")
    assert store.run("mcq", key, compute, log=lambda *_: None) == {"acc": 0.5}
    assert store.run("mcq", key, compute, log=lambda *_: None) == {"acc": 0.5} and len(calls) == 1
    assert store.computed == ["mcq"] and store.reused == ["mcq"]  # the stage's timing says which
    for changed in (dict(model="m#2", ids=["a", "b"], scoring="cloze"), dict(model="m#1", ids=["a"], scoring="cloze"),
                    dict(model="m#1", ids=["a", "b"], scoring="letter")):
        assert store.key(**changed) != key


def test_mcq_task_items_split_dev_and_test_and_know_their_domain(tmp_path, root):
    from medlab.evaluate.run import chance_of, mcq_items
    from medlab.evaluate.tasks import Task, TaskSpec, resolve
    from medlab.records import write_jsonl

    rows = [McqItem(id=f"r{i}", source="rc", question="？", options={"A": "甲", "B": "乙", "C": "丙"},
                    answer="AB" if i == 0 else "A", split="dev" if i == 1 else "test") for i in range(5)]
    write_jsonl(tmp_path / "rc.jsonl", rows)
    spec = TaskSpec(description="rc", kind="mcq", data="rc.jsonl", format="medlab", domain="anesthesia",
                    prompt="mcq_zh")
    test, dev, domain, skipped = mcq_items(Task("rc", tmp_path / "rc.yaml", spec), tmp_path)
    assert [i.id for i in test] == ["r2", "r3", "r4"] and [i.id for i in dev] == ["r1"] and skipped == 1
    assert domain == "anesthesia" and chance_of(test) == pytest.approx(1 / 3)
    # the built-in task files all validate, in params order; a public-format file is one task file away
    names = ["anesthesia_mcq", "general_mcq", "anesthesia_rc", "anesthesia_qa", "kb_ner"]
    assert [t.name for t in resolve(names, [], root)] == names
    # the example task files of the public formats (samples/tasks) validate and read their files
    examples = ["cmb_exam", "cmexam", "medqa_mcmle", "medmcqa", "ceval_medicine", "cmmlu_medicine"]
    for task in resolve(examples, ["samples/tasks"], root):
        test, _, domain, _ = mcq_items(task, root)
        assert test and all(i.source == task.name for i in test) and domain in ("general_medicine", "anesthesia")


def test_cmb_clin_cases_are_one_conversation_each_and_compare_by_rouge(root):
    from medlab.evaluate.compare import compare_task
    from medlab.evaluate.run import clin_items, clin_task
    from medlab.evaluate.tasks import resolve

    (task,) = resolve(["cmb_clin"], ["samples/tasks"], root)
    cases = clin_items(task, root)
    seen = []

    def generate(chats):
        seen.append([len(c) for c in chats])
        for chat in chats:  # every earlier answer is carried, the description opens the case
            assert [m["role"] for m in chat] == ["user", "assistant"] * (len(chat) // 2) + ["user"]
            assert chat[0]["content"].startswith(("现病史", "主诉"))
        return [f"第{len(c) // 2 + 1}问：" + c[-1]["content"][-12:] for c in chats]

    result = clin_task(generate, cases, n_boot=100, seed=0)
    assert seen == [[1, 1, 1], [3, 3, 3], [5]]  # turn by turn, in one batch per turn
    assert result["summary"]["n"] == sum(len(c.qa) for c in cases) == 7 and result["summary"]["cases"] == 3
    assert set(result["outcomes"]) == {f"{c.id}/{k + 1}" for c in cases for k in range(len(c.qa))}
    assert result["answers"][0]["case"] == cases[0].description
    other = {k: {"grounded": None, "rouge_l_char": 0.0} for k in result["outcomes"]}
    paired = compare_task("cmb_clin", result["outcomes"], other, n_boot=200)
    assert paired["metric"] == "rouge_l_char" and paired["mean_b"] == 0.0 and paired["n"] == 7


def test_qa_and_ner_tasks_score_scripted_answers():
    from medlab.evaluate.ner import NerItem
    from medlab.evaluate.run import conflicting_objects, ner_sentences, ner_task, qa_task
    from medlab.records import QaItem

    kb = SimpleNamespace(triples=[SimpleNamespace(predicate="禁食时间", object=o) for o in ("2小时", "4小时", "6小时")])
    assert conflicting_objects(kb, "禁食时间", ["4小时"]) == ["2小时", "6小时"]
    qa = [QaItem(id=f"q{i}", source="t", question=f"问题{i}", reference="母乳需提前4小时禁食。",
                 meta={"predicate": "禁食时间", "objects": ["4小时"]}) for i in range(3)]
    answers = {"问题0": "提前4小时。", "问题1": "提前4小时或6小时。", "问题2": "不知道。"}
    out = qa_task(lambda chats: [answers[c[0]["content"]] for c in chats], qa, kb, n_boot=100, seed=0)
    assert [out["outcomes"][f"q{i}"]["grounded"] for i in range(3)] == [1, 0, 0]  # a conflicting 6小时 is wrong
    assert out["summary"]["grounded_acc"] == pytest.approx(1 / 3) and out["summary"]["n"] == 3
    items = [NerItem("s1", "丙泊酚可致低血压。", frozenset({("丙泊酚", "药物"), ("低血压", "症状")})),
             NerItem("s2", "芬太尼。", frozenset({("芬太尼", "药物")}))]
    replies = ["丙泊酚|药物\n低血压|疾病", "无"]
    result = ner_task(lambda chats: replies, items, n_boot=100, seed=0)
    # 1 true positive, 2 predicted, 3 gold: P 0.5, R 1/3, F1 0.4
    assert result["summary"]["f1"] == pytest.approx(0.4) and result["outcomes"]["s1"] == [1, 2, 2]
    docs = [{"id": "d1", "split": "valid", "text": "甲药可致低血压。乙药可致恶心。"},
            {"id": "d2", "split": "train", "text": "训练用的句子。"}]
    sentences = ner_sentences(qa[:1], docs)
    assert sentences == [("q0", "母乳需提前4小时禁食。"), ("d1-s0", "甲药可致低血压。"), ("d1-s1", "乙药可致恶心。")]


# --------------------------------------------------- the scorer on real tokenizers
SEAMS = [("答案：", "A"), ("答案： ", "A"), ("答案：", " A"), ("丙泊酚的常见不良反应", "包括低血压和注射痛。"),
         ("The dose is hel", "lo world"), ("剂量为1", "0 mg/kg"), ("问题：罗库溴铵的拮抗药是什么？\n答案：", "舒更葡糖"),
         ("问题：罗库溴铵的拮抗药是什么？\n答案：", "新斯的明")]


def reference_logprob(model, tok, context: str, continuation: str) -> tuple[float, int]:
    """Independent of split_tokens: tokenise the whole text as the tokenizer does for plain
    text (its own BOS included), one forward pass, sum the log-probs of every token that
    reaches past the context's last character."""
    enc = tok(context + continuation, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    first = min(k for k, (s, e) in enumerate(offsets) if e > len(context) and e > s)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return sum(float(logp[k - 1, ids[k]]) for k in range(first, len(ids))), len(ids) - first


def test_scores_equal_an_independent_forward_pass_on_every_family(family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medlab.evaluate.loglik import leading_bos

    name, path = family
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    scored = continuation_logprobs(model, tok, SEAMS, batch_size=3)
    for (context, continuation), s in zip(SEAMS, scored, strict=True):
        want, n = reference_logprob(model, tok, context, continuation)
        assert s.logprob == pytest.approx(want, abs=1e-4), (name, context, continuation)
        assert s.n_tokens == n
    bos = leading_bos(tok)
    assert (bos is not None) == (name in ("llama", "mistral"))  # Qwen and the toy BPE add none
    if bos is not None:
        head, _ = split_tokens(tok, "答案：", "A")
        assert head[0] == bos and head[1] != bos
        # a chat prompt that writes the BOS itself does not get a second one
        prompt = tok.apply_chat_template([{"role": "user", "content": "答案是？"}], tokenize=False,
                                         add_generation_prompt=True)
        head, _ = split_tokens(tok, prompt, "A")
        assert head[0] == bos and head[1] != bos
    # SentencePiece: the letter after "答案：" is the in-word piece, not the "▁A" of "A" alone
    if name == "mistral":
        _, tail = split_tokens(tok, "答案：", "A")
        assert tok.convert_ids_to_tokens(tail) == ["A"] and tok("A", add_special_tokens=False)["input_ids"] != tail


def test_long_contexts_lose_their_start_and_keep_the_bos(family_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = family_dirs("llama")
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    context = "丙泊酚的常见不良反应包括低血压。" * 40
    limit = 64
    [s] = continuation_logprobs(model, tok, [(context, "注射痛")], max_length=limit)
    head, tail = split_tokens(tok, context, "注射痛")
    row = [head[0]] + (head + tail)[-(limit - 1):]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([row])).logits[0].float(), -1)
    want = sum(float(logp[len(row) - len(tail) - 1 + k, t]) for k, t in enumerate(tail))
    assert s.logprob == pytest.approx(want, abs=1e-4)
