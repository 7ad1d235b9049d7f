"""Generation methods: parsing, novelty filtering, department sampling, splitting, self-instruct."""

from __future__ import annotations

import collections
import json

import pytest
from rouge_score import rouge_scorer

from medlab.embedded.teacher import SimulatedTeacher
from medlab.generate import corpus_to_instruction, kg_dialogue, kg_qa, self_instruct
from medlab.generate.common import collect
from medlab.generate.novelty import NoveltyFilter, rouge_l
from medlab.generate.parse import ParseError, parse_dialogue, parse_qa, parse_tasks
from medlab.generate.prompts import load_prompts
from medlab.llm.base import Decoding
from medlab.llm.cache import CallCache, CallStats, generate_cached

D = Decoding()
FAULTS = {"factual": 0.10, "unsafe": 0.04, "off_format": 0.04, "stigma": 0.04}


# ----------------------------------------------------------------- parsing
def test_parse_qa():
    assert parse_qa("问题：丙泊酚有何不良反应？\n回答：注射痛和低血压。") == ("丙泊酚有何不良反应？", "注射痛和低血压。")
    assert parse_qa("好的。\n问题: 甲\n\n回答: 乙\n第二行") == ("甲", "乙\n第二行")
    for bad in ("丙泊酚有何不良反应？\n注射痛。", "问题：\n回答：答", "回答：先答\n问题：后问"):
        with pytest.raises(ParseError):
            parse_qa(bad)


def test_parse_dialogue():
    messages = parse_dialogue("患者：头痛三天了。\n医生：有没有发热？\n患者：没有\n医生：建议查血常规，\n多休息。\n患者：谢谢")
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]  # unanswered tail dropped
    assert messages[-1]["content"] == "建议查血常规，多休息。"
    for bad in ("医生：你好\n患者：我头痛", "随便说说", "患者：头痛"):
        with pytest.raises(ParseError):
            parse_dialogue(bad)


def test_parse_tasks_keeps_the_readable_ones():
    text = "任务1\n指令：列举恶性高热的表现。\n回答：体温升高。\n\n任务2\n乱写一通\n\n任务3\n指令：简述禁食。\n回答：清饮料2小时。"
    assert parse_tasks(text) == [("列举恶性高热的表现。", "体温升高。"), ("简述禁食。", "清饮料2小时。")]
    with pytest.raises(ParseError):
        parse_tasks("任务1\n没有格式")


# ----------------------------------------------------------------- novelty
def test_default_rouge_tokenizer_cannot_see_chinese_but_ours_can():
    default = rouge_scorer.RougeScorer(["rougeL"])
    same = "丙泊酚的常见不良反应有哪些"
    assert default.score(same, same)["rougeL"].fmeasure == 0.0  # the self-instruct/Alpaca pitfall
    assert rouge_l(same, same) == 1.0
    assert rouge_l("请列举丙泊酚的不良反应", "请列举依托咪酯的不良反应") > 0.6
    assert rouge_l("请列举丙泊酚的不良反应", "术前饮食需要注意什么") < 0.2


def test_novelty_filter_bound_never_skips_a_near_duplicate():
    pool = [f"请说明第{i}种药物的用法用量和注意事项" for i in range(30)] + ["简述恶性高热的处理"]
    novelty = NoveltyFilter(0.7, pool)
    score, similar = novelty.most_similar("请说明第7种药物的用法用量与注意事项")
    assert score == max(rouge_l("请说明第7种药物的用法用量与注意事项", p) for p in pool)
    assert not novelty.add("请说明第7种药物的用法用量与注意事项")
    assert novelty.add("儿童术前禁食时间如何安排")
    assert len(novelty.kept) == len(pool) + 1


# ---------------------------------------------------------------- sampling
def test_kg_qa_samples_round_robin_by_department_without_repeating_a_prompt(kb):
    requests = kg_qa.build_requests(kb, "general", 700, 2, D, seed=3)
    per_department = collections.Counter(r.meta["group"] for r in requests)
    assert len(per_department) == 14 and max(per_department.values()) - min(per_department.values()) <= 1
    prompts = [json.dumps(r.messages, ensure_ascii=False) for r in requests]
    assert len(set(prompts)) == len(prompts)
    pairs = [(r.meta["subject"], r.meta["predicate"]) for r in requests]
    assert len(set(pairs)) == len(pairs)  # 700 requests: every pair once before any twice
    anesthesia = kg_qa.build_requests(kb, "anesthesia", 200, 2, D, seed=3)
    assert {r.meta["group"] for r in anesthesia} == {"药物", "疾病", "分级", "评估项目", "食物"}
    assert all(r.meta["predicate"] != "所属科室" for r in anesthesia)
    assert all(r.meta["domain"] == "anesthesia" for r in anesthesia)


def test_kg_qa_prompt_states_the_facts(kb):
    request = kg_qa.build_requests(kb, "anesthesia", 1, 2, D, seed=1)[0]
    prompt = request.messages[-1]["content"]
    for obj in request.meta["objects"]:
        assert obj in prompt
    assert request.meta["prompt"] == load_prompts()["kg_qa"].provenance()


def test_kg_dialogues_are_distinct_and_use_personas(kb):
    requests = kg_dialogue.build_requests(kb, "general", 300, 0.5, D, seed=2)
    assert len({json.dumps(r.messages, ensure_ascii=False) for r in requests}) == 300
    with_persona = sum(r.meta["group"] is not None for r in requests)
    assert 100 < with_persona < 200
    anesthesia = kg_dialogue.build_requests(kb, "anesthesia", 60, 0.5, D, seed=2)
    assert {kb.entities[r.meta["subject"]].type for r in anesthesia} == {"药物", "疾病", "食物"}


def test_split_paragraphs():
    text = "第一句很短。第二句也不长。" + "长" * 50 + "。\n\n新段落开始。"
    chunks = corpus_to_instruction.split_paragraphs(text, 20)
    assert all(len(c) <= 20 for c in chunks)
    assert "".join(chunks).replace("\n", "") == text.replace("\n", "")
    assert chunks[0] == "第一句很短。第二句也不长。"
    assert chunks[-1] == "新段落开始。"


# -------------------------------------------------------- end to end, in memory
@pytest.fixture(scope="module")
def teacher(kb):
    return SimulatedTeacher(kb, FAULTS, "mental_illness", seed=5)


def test_collect_keeps_parsed_samples_and_rejects_the_rest_with_truth(kb, teacher):
    requests = kg_qa.build_requests(kb, "general", 400, 2, D, seed=5)
    completions = generate_cached(teacher, requests, CallCache(None, "off"))
    samples, rejected = collect("kg_qa", "simulated:x", requests, completions)
    assert len(samples) + len(rejected) == 400
    assert all(r.truth["variant"] == "missing_markers" for r in rejected)
    assert all(s.domain == "general_medicine" and s.messages[0]["role"] == "user" for s in samples)
    sample = samples[0]
    assert sample.provenance["method"] == "kg_qa" and sample.provenance["prompt_hash"]
    assert sample.provenance["source"]["triple_ids"]


def test_self_instruct_reaches_its_target_with_novel_tasks(kb, teacher, tmp_path):
    seeds = [self_instruct.SeedTask(id=f"s{i}", domain="anesthesia", instruction=f"示例指令{i}：说明麻醉要点",
                                    output="示例回答。") for i in range(5)]
    stats = CallStats()
    result = self_instruct.run(seeds, "anesthesia", 40, teacher, CallCache(tmp_path / "c.sqlite"), "sim", D,
                               examples_per_prompt=3, tasks_per_request=4, threshold=0.7, max_requests=100,
                               seed=5, stats=stats)
    assert len(result.samples) == 40
    instructions = [s.messages[0]["content"] for s in result.samples]
    for i, a in enumerate(instructions):
        for b in instructions[:i]:
            assert rouge_l(a, b) < 0.7
    assert result.proposed >= 40
    assert all(s.truth is not None and "fault" in s.truth for s in result.samples)
    # rerun from the cache: same samples, no new call
    again = self_instruct.run(seeds, "anesthesia", 40, teacher, CallCache(tmp_path / "c.sqlite"), "sim", D,
                              3, 4, 0.7, 100, 5, CallStats())
    assert [s.messages for s in again.samples] == [s.messages for s in result.samples]


def test_self_instruct_stops_at_max_requests(kb, teacher):
    seeds = [self_instruct.SeedTask(id=f"s{i}", domain="general_medicine", instruction=f"指令{i}", output="答")
             for i in range(3)]
    result = self_instruct.run(seeds, "general_medicine", 10_000, teacher, CallCache(None, "off"), "sim", D,
                               3, 4, 0.7, max_requests=5, seed=1, stats=CallStats())
    assert result.requests == 5 and len(result.samples) <= 20


def test_self_instruct_needs_enough_seeds(teacher):
    with pytest.raises(ValueError, match="need at least 3"):
        self_instruct.run([], "anesthesia", 1, teacher, CallCache(None, "off"), "sim", D, 3, 4, 0.7, 5, 1, CallStats())


# ------------------------------------------------------ exam-format methods
def corpus_docs(kb):
    from medlab.embedded.corpus.render import render_corpus

    docs, _ = render_corpus(kb, 4, 0.4, 1.0, 0.25, seed=5)
    return docs


def test_corpus_ner_uses_training_sentences_and_the_teacher_answers_with_the_kb_annotation(kb):
    from medlab.evaluate.ner import parse_entities
    from medlab.generate import corpus_ner

    docs = [d for d in corpus_docs(kb) if d.domain == "general"]
    held_out = {s for d in docs if d.split == "valid" for s in corpus_ner.sentences(d)}
    requests = corpus_ner.build_requests(kb, docs, 200, D, seed=1)
    assert len(requests) == 200 and all(r.meta["domain"] == "general_medicine" for r in requests)
    assert not {r.meta["sentence"] for r in requests} & (held_out - {s for d in docs if d.split == "train"
                                                                     for s in corpus_ner.sentences(d)})
    assert len({r.meta["sentence"] for r in requests}) == 200  # distinct sentences
    assert max(collections.Counter(r.meta["subject"] for r in requests).values()) <= 2  # round-robin
    teacher = SimulatedTeacher(kb, {"factual": 0.3}, "mental_illness", seed=0)
    samples, rejected = collect("corpus_ner", "t", requests, teacher.generate(requests))
    assert not rejected
    by_truth = collections.Counter()
    for request, s in zip(requests, samples, strict=True):
        assert s.messages[0]["content"] == request.meta["question"] and request.meta["sentence"] in request.meta["question"]
        gold = kb.mentions(request.meta["sentence"], corpus_ner.TYPES)
        got = parse_entities(s.messages[1]["content"])
        if s.truth["fault"] == "none":
            assert got == gold
        else:  # exactly one entity carries a wrong type
            assert {name for name, _ in got} == {name for name, _ in gold} and len(got - gold) == 1
            assert s.truth["variant"] == "wrong_type"
        by_truth[s.truth["fault"]] += 1
    assert 30 < by_truth["factual"] < 90


def test_kg_mcq_letters_point_to_a_true_option_unless_faulty(kb):
    from medlab.evaluate.mcq import extract_answer
    from medlab.generate import kg_mcq

    requests = kg_mcq.build_requests(kb, "anesthesia", 200, D, seed=2)
    assert len(requests) == 200
    assert len({(r.meta["subject"], r.meta["predicate"]) for r in requests}) == 200
    assert collections.Counter(r.meta["answer"] for r in requests).keys() == set(kg_mcq.LETTERS)
    teacher = SimulatedTeacher(kb, {"factual": 0.2, "off_format": 0.1}, "mental_illness", seed=0)
    samples, rejected = collect("kg_mcq", "t", requests, teacher.generate(requests))
    assert rejected and all(r.truth["variant"] == "missing_markers" for r in rejected)  # no 回答： marker
    by_id = {r.meta["source_id"]: r for r in requests}
    for s in samples:
        request = by_id[s.provenance["source_id"]]
        options = request.meta["options"]
        assert len(set(options.values())) == 4
        truths = kb.objects(request.meta["subject"], request.meta["predicate"])
        assert [x for x, text in options.items() if text in truths] == [request.meta["answer"]]
        letter = extract_answer(s.messages[1]["content"], options)
        if s.truth["fault"] == "factual":
            assert letter != request.meta["answer"] and options[letter] in s.messages[1]["content"]
        elif s.truth["fault"] == "none":
            assert letter == request.meta["answer"] and options[letter] in s.messages[1]["content"]


def test_exam_format_questions_share_no_wording_with_the_benchmark(kb):
    """The filter's decontamination would remove them otherwise (it removed 209 of 296 case
    questions whose stems shared 8 characters with the benchmark's)."""
    from medlab.embedded.benchmark.build import build_mcq, build_vignettes
    from medlab.filter.decontaminate import Decontaminator
    from medlab.generate import corpus_ner, kg_mcq

    names = set(kb.entities) | {t.object for t in kb.triples if t.object_type == "literal"}
    checker = Decontaminator(names)
    for domain in ("general", "anesthesia"):
        for item in build_mcq(kb, domain, 300, 4, 0, seed=4, source="b"):
            checker.add(item.id, item.question, item.context)
    for case in build_vignettes(kb, 20, 1, 4, seed=4):
        checker.add(case.id, case.question, case.context)
    questions = [r.meta["question"] for d in ("general", "anesthesia")
                 for r in kg_mcq.build_requests(kb, d, 300, D, seed=1)]
    questions += [r.meta["question"] for r in corpus_ner.build_requests(kb, corpus_docs(kb), 300, D, seed=1)]
    hits = [(q, checker.check(q)[1]) for q in questions if checker.check(q)[0]]
    assert not hits, hits[:3]


def test_kg_consult_doctors_ask_about_signs_by_name_before_naming_the_complication(kb):
    from medlab.embedded.patient import asks_about
    from medlab.evaluate.consult import diseases
    from medlab.generate import kg_consult

    requests = kg_consult.build_requests(kb, 190, D, seed=4)
    subjects = collections.Counter(r.meta["subject"] for r in requests)
    assert len(subjects) == 19 and set(subjects.values()) == {10}  # round-robin over the complications
    assert len({json.dumps(r.messages, ensure_ascii=False) for r in requests}) == 190
    teacher = SimulatedTeacher(kb, {"factual": 0.2}, "mental_illness", seed=0)
    samples, rejected = collect("kg_consult", "t", requests, teacher.generate(requests))
    assert not rejected
    names = diseases(kb)
    for request, s in zip(requests, samples, strict=True):
        meta = request.meta
        roles = [m["role"] for m in s.messages]
        assert roles == ["user", "assistant", "user", "assistant"]
        opening, ask, reply, conclusion = (m["content"] for m in s.messages)
        # no disease is named before the conclusion (the simulated patient would end there),
        # except inside a sign's own name (室性心律失常 holds the disease 心律失常)
        signs = [meta["opening"], *meta["asked"]]
        assert meta["opening"] in opening
        assert not [d for d in names if d in opening and d not in meta["opening"]]
        assert all(asks_about(ask, sign) for sign in meta["asked"])  # by name: the patient will answer
        assert not [d for d in names if d in ask and not any(d in sign for sign in signs)]
        yes = [x for x in meta["asked"] if x in meta["present"]]
        no = [x for x in meta["asked"] if x not in meta["present"]]
        if yes and no:  # "<yes> 有，<no> 没有": the present signs before the last comma, the absent after it
            head, tail = reply.rsplit("，", 1)
            assert all(x in head and x not in tail for x in yes) and all(x in tail and x not in head for x in no)
        else:
            assert all(x in reply for x in yes)
        assert meta["subject"] in conclusion
        drugs_named = {name for name, _ in kb.mentions(conclusion, ["药物"])}
        in_measures = {d for d in drugs_named if any(d in m for m in meta["measures"])}
        if s.truth["fault"] == "none":
            assert drugs_named - in_measures <= set(meta["drugs"])
        elif s.truth.get("variant") == "wrong_object":
            assert s.truth["with"] in drugs_named and s.truth["with"] not in meta["drugs"]
