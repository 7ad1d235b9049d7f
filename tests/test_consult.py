"""Consultations: the simulated patient's rules, the doctor-patient loop (turn limit, stop
phrase, resume after a kill), the judge-free measures on hand-made transcripts, and the
paired comparison of two models' consultations."""

from __future__ import annotations

import pytest

from medlab.embedded.benchmark.build import build_vignettes
from medlab.embedded.patient import SimulatedPatient, asks_about
from medlab.evaluate import compare, consult, criteria
from medlab.evaluate.floor import floor_check
from medlab.filter.rules import RuleParams, check
from medlab.llm.base import ChatRequest, Completion, Decoding, LLMError
from medlab.llm.cache import CallCache, generate_cached

CASE = consult.ConsultCase(
    id="c1", description="患者【NAME】，全麻后出现体温急剧升高、肌强直和呼气末二氧化碳升高。",
    opening=consult.OPENING.format(finding="体温急剧升高"),
    findings=("体温急剧升高", "肌强直", "呼气末二氧化碳升高"), diagnosis="恶性高热",
    candidates=("恶性高热", "术后寒战", "过敏性休克"), advice=("丹曲林", "停用触发药物"))


def flag(text: str) -> str | None:  # the filter's rules, as the evaluate notebook passes them
    return check([{"role": "assistant", "content": text}], RuleParams())


def patient_reply(turns: list[dict]) -> str:
    return SimulatedPatient().reply(consult.patient_request(CASE, turns, Decoding()))


# ------------------------------------------------------------------ the simulated patient
def test_the_simulated_patient_reveals_a_finding_only_when_asked_and_ends_on_a_diagnosis():
    opening = [{"role": "patient", "text": CASE.opening}]
    assert asks_about("肌肉有没有发僵？", "肌强直") is False and asks_about("有没有肌强直？", "肌强直")
    assert not asks_about("体温升高吗？", "呼气末二氧化碳升高")  # "升高" alone is too generic
    assert patient_reply([*opening, {"role": "doctor", "text": "请多喝水。"}]) == "嗯，明白了。"
    assert patient_reply([*opening, {"role": "doctor", "text": "还有别的症状吗？"}]) == "别的没有什么不舒服的。"
    turns = [*opening, {"role": "doctor", "text": "有没有肌强直？呼气末二氧化碳高不高？"}]
    assert patient_reply(turns) == "有的，还有肌强直和呼气末二氧化碳升高。"
    turns += [{"role": "patient", "text": "有的，还有肌强直和呼气末二氧化碳升高。"},
              {"role": "doctor", "text": "肌强直还有吗？"}]
    assert patient_reply(turns) == "别的没有什么不舒服的。"  # told already: not repeated
    assert patient_reply([*opening, {"role": "doctor", "text": "考虑术后寒战。"}]) == consult.END_PHRASE


def test_the_patient_request_swaps_roles_and_keeps_the_case_in_the_system_prompt():
    turns = [{"role": "patient", "text": CASE.opening}, {"role": "doctor", "text": "发热多久了？"}]
    request = consult.patient_request(CASE, turns, Decoding(max_new_tokens=32))
    assert [m["role"] for m in request.messages] == ["system", "user"]
    system = request.messages[0]["content"]
    assert CASE.description in system and CASE.opening in system and consult.END_PHRASE in system
    assert "恶性高热" not in system  # the patient is never told the diagnosis
    assert request.messages[1]["content"] == "发热多久了？" and request.meta["prompt"] == consult.PATIENT_PROMPT_ID


def test_vignettes_become_cases_deidentified_with_findings_from_the_knowledge_base(kb):
    items = build_vignettes(kb, 6, 3, 4, seed=8)
    cases = consult.vignette_cases(items, kb)
    assert len(cases) == 6 and len({c.id for c in cases}) == 6
    for case in cases:
        item = next(i for i in items if i.meta["case"] == case.id)
        assert case.diagnosis == item.meta["complication"] and case.diagnosis in case.candidates
        assert case.findings and all(f in kb.objects(case.diagnosis, "临床表现") for f in case.findings)
        assert case.findings[0] in case.opening
        assert all(span["text"] not in case.description for span in item.phi if len(span["text"]) > 3)
        assert "【NAME】" in case.description
    assert len(consult.vignette_cases(items, kb, limit=2)) == 2


# ------------------------------------------------------------------ the loop
class ScriptedDoctor:
    """Replies from a list per case (cycled); counts and can fail after ``fail_after`` calls."""

    name, model, batch_size = "scripted_doctor", "doctor-1", 8

    def __init__(self, replies: list[str], fail_after: int | None = None):
        self.replies, self.fail_after, self.calls = replies, fail_after, 0

    def generate(self, requests):
        out = []
        for r in requests:
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise LLMError("killed")
            self.calls += 1
            doctor_turns = sum(m["role"] == "assistant" for m in r.messages)
            out.append(Completion(text=self.replies[doctor_turns % len(self.replies)]))
        return out


def doctor_over(backend, cache):
    def generate(chats):
        requests = [ChatRequest.of(c, Decoding(max_new_tokens=16)) for c in chats]
        return [c.text for c in generate_cached(backend, requests, cache, label="doctor", truncated="keep")]
    return generate


def test_the_turn_limit_bounds_a_doctor_who_never_diagnoses(tmp_path):
    patient = consult.patient_answers(SimulatedPatient(), CallCache(tmp_path / "c.sqlite"))
    doctor = doctor_over(ScriptedDoctor(["请多喝水。"]), CallCache(tmp_path / "c.sqlite"))
    [transcript] = consult.consult([CASE], doctor, patient, max_turns=3)
    assert [t["role"] for t in transcript["turns"]] == ["patient", "doctor", "patient", "doctor", "patient", "doctor"]
    assert transcript["ended_by"] == "turn_limit"
    m = consult.measures(CASE, transcript, flag)
    assert m == {"elicited": 0.0, "diagnosis": 0, "advice": 0, "flagged": 0, "flag_reasons": [], "turns": 3,
                 "ended": 0, "criteria_score": None}


def test_the_stop_phrase_ends_a_consultation_and_what_was_asked_is_counted(tmp_path):
    patient = consult.patient_answers(SimulatedPatient(), CallCache(tmp_path / "c.sqlite"))
    doctor = doctor_over(ScriptedDoctor(["有没有肌强直？", "考虑恶性高热，立即停用触发药物并给予丹曲林。"]),
                         CallCache(tmp_path / "c.sqlite"))
    [transcript] = consult.consult([CASE], doctor, patient, max_turns=5)
    assert transcript["ended_by"] == "patient" and transcript["turns"][-1]["text"] == consult.END_PHRASE
    m = consult.measures(CASE, transcript, flag)
    assert m["elicited"] == 0.5 and m["diagnosis"] == 1 and m["advice"] == 1 and m["turns"] == 2 and m["ended"] == 1
    assert "患者：有的，还有肌强直。" in consult.render(transcript) and "患者结束了问诊" in consult.render(transcript)


def test_a_consultation_killed_mid_way_resumes_at_the_turn_it_reached(tmp_path):
    other = {**vars(CASE), "id": "c2", "findings": ("肌强直", "体温急剧升高", "呼气末二氧化碳升高"),
             "opening": consult.OPENING.format(finding="肌强直")}
    cases = [CASE, consult.ConsultCase(**other)]  # two different conversations (identical calls are made once)
    replies = ["有没有肌强直？", "还有别的吗？", "请观察。"]
    cache = CallCache(tmp_path / "calls.sqlite")
    patient = consult.patient_answers(SimulatedPatient(), cache)
    whole = consult.consult(cases, doctor_over(ScriptedDoctor(replies), CallCache(tmp_path / "other.sqlite")),
                            patient, max_turns=3)
    killed = ScriptedDoctor(replies, fail_after=4)  # turns 1 and 2 (two cases each), then killed in turn 3
    with pytest.raises(LLMError, match="killed"):
        consult.consult(cases, doctor_over(killed, cache), patient, max_turns=3)
    rerun = ScriptedDoctor(replies)
    assert consult.consult(cases, doctor_over(rerun, cache), patient, max_turns=3) == whole
    assert rerun.calls == 2  # turn 3 only: turns 1 and 2 come back from the call cache


def test_an_llm_patient_goes_through_the_call_cache_and_the_simulated_one_never_does(tmp_path):
    class Llm:
        name, model, batch_size = "llm_patient", "p-1", 4
        calls = 0

        def generate(self, requests):
            Llm.calls += len(requests)
            return [Completion(text="有点发冷。") for _ in requests]

    cache = CallCache(tmp_path / "c.sqlite")
    request = consult.patient_request(CASE, [{"role": "patient", "text": CASE.opening},
                                             {"role": "doctor", "text": "冷吗？"}], Decoding())
    answer = consult.patient_answers(Llm(), cache)
    assert answer([request]) == answer([request]) == ["有点发冷。"] and Llm.calls == 1
    consult.patient_answers(SimulatedPatient(), cache)([request])
    assert len(cache) == 1  # the rule-based patient's answers are not stored


# ------------------------------------------------------------------ measures and comparison
def test_measures_on_hand_made_transcripts():
    def transcript(*doctor_and_patient, ended="patient"):
        turns = [{"role": "patient", "text": CASE.opening}]
        for k, text in enumerate(doctor_and_patient):
            turns.append({"role": "doctor" if k % 2 == 0 else "patient", "text": text})
        return {"id": "c1", "turns": turns, "ended_by": ended}

    naming_all = consult.measures(CASE, transcript("恶性高热还是术后寒战？", consult.END_PHRASE), flag)
    assert naming_all["diagnosis"] == 0  # naming every candidate is not a diagnosis
    spam = consult.measures(CASE, transcript("加微信咨询，包治。", "嗯，明白了。", "恶性高热。", ended="turn_limit"), flag)
    assert spam["flagged"] == 1 and spam["flag_reasons"] == ["advert"] and spam["diagnosis"] == 1
    assert spam["ended"] == 0 and spam["turns"] == 2
    told_by_doctor = consult.measures(CASE, transcript("是不是肌强直？", "别的没有什么不舒服的。"), flag)
    assert told_by_doctor["elicited"] == 0.0  # the doctor naming a finding is not the patient stating it
    unknown = consult.ConsultCase(id="x", description="d", opening="o", findings=(), diagnosis=None, candidates=(),
                                  advice=())
    m = consult.measures(unknown, {"id": "x", "turns": [{"role": "patient", "text": "o"},
                                                        {"role": "doctor", "text": "好"}], "ended_by": "turn_limit"}, flag)
    assert m["elicited"] is None and m["diagnosis"] is None and m["advice"] is None
    s = consult.summarise({"a": naming_all, "b": spam, "c": m}, n_boot=0, seed=0)
    assert s["diagnosis"] == 0.5 and s["diagnosis_n"] == 2 and s["flag_reasons"] == {"advert": 1, "too_short": 1}


def test_two_models_consultations_compare_on_the_diagnosis_with_mcnemar():
    def outcome(diagnosis, elicited):
        return {"elicited": elicited, "diagnosis": diagnosis, "advice": 0, "flagged": 0, "flag_reasons": [],
                "turns": 1, "ended": 1}

    a = {f"c{i}": outcome(1 if i < 8 else 0, 0.5) for i in range(10)}
    b = {f"c{i}": outcome(1 if i < 2 else 0, 0.0) for i in range(10)}
    result = compare.compare_task("anesthesia_consult", a, b, n_boot=500, seed=0)
    assert result["metric"] == "diagnosis" and result["diff"] == pytest.approx(0.6)
    assert result["mcnemar"]["p"] == pytest.approx(2 * 0.5 ** 6)  # 6 discordant, all for a
    assert result["elicited"]["diff"] == pytest.approx(0.5)


# ------------------------------------------------------------------ per-case rubric criteria
def transcript_of(*texts: str, ended: str = "patient") -> dict:
    turns = [{"role": "patient", "text": CASE.opening}]
    turns += [{"role": "doctor" if k % 2 == 0 else "patient", "text": t} for k, t in enumerate(texts)]
    return {"id": CASE.id, "turns": turns, "ended_by": ended}


def test_criteria_from_the_facts_and_their_exact_marks_give_the_documented_scores():
    rules = criteria.case_criteria(CASE)
    assert [(c.kind, c.points) for c in rules] == [("elicit", 2), ("elicit", 2), ("diagnosis", 5),
                                                   ("wrong_diagnosis", -3), ("premature", -2), ("advice", 3)]
    good = transcript_of("有没有肌强直？", "有的，还有肌强直。", "考虑恶性高热，给予丹曲林。", consult.END_PHRASE)
    marks = [criteria.exact_met(c, CASE, good) for c in rules]
    assert marks == [True, False, True, False, False, True]
    assert criteria.score(rules, marks) == pytest.approx((2 + 5 + 3) / 12)  # the docstring's example
    wrong = transcript_of("有没有肌强直？", "有的，还有肌强直。", "考虑术后寒战。", consult.END_PHRASE)
    assert criteria.score(rules, [criteria.exact_met(c, CASE, wrong) for c in rules]) == 0.0  # (2 - 3) clipped
    hasty = transcript_of("是恶性高热。", consult.END_PHRASE)
    assert [criteria.exact_met(c, CASE, hasty) for c in rules][4] is True  # a diagnosis before any question
    with_criteria = consult.ConsultCase(**{**vars(CASE), "criteria": tuple(rules)})
    assert consult.measures(with_criteria, good)["criteria_score"] == pytest.approx(10 / 12)
    assert criteria.score(rules, [None, *marks[1:]]) is None  # an ungraded criterion: no score


class MarkingJudge:
    """Marks a criterion as its exact answer, except elicit criteria, which it always calls met;
    answers garbage on the first try for diagnosis criteria (retried, then parsed)."""

    name, model, batch_size = "marking", "grader-1", 8

    def __init__(self, truth: dict[str, bool]):
        self.truth = truth

    def generate(self, requests):
        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            criterion = text.split("评分标准：")[1].split("\n")[0]
            if "明确给出诊断" in criterion and "上次的输出无法解析" not in text:
                out.append(Completion(text="嗯……"))
                continue
            met = True if "了解到" in criterion else self.truth[criterion]
            out.append(Completion(text="满足" if met else "不满足。理由：没有提到。"))
        return out


def test_the_judge_grader_is_checked_against_the_exact_marks(tmp_path):
    rules = criteria.case_criteria(CASE)
    good = transcript_of("有没有肌强直？", "有的，还有肌强直。", "考虑恶性高热，给予丹曲林。", consult.END_PHRASE)
    exact = [criteria.exact_met(c, CASE, good) for c in rules]
    judge = MarkingJudge({c.text: m for c, m in zip(rules, exact, strict=True)})
    graded = criteria.grade_with_judge([(good, c) for c in rules], judge, CallCache(tmp_path / "c.sqlite"),
                                       Decoding(max_new_tokens=16), max_attempts=2)
    assert graded["unparseable"] == 0 and graded["marks"] == [True, True, True, False, False, True]
    agreement = criteria.grader_agreement([c.kind for c in rules], exact, graded["marks"])
    assert agreement["all"]["n"] == 6 and agreement["all"]["accuracy"] == pytest.approx(5 / 6)
    assert agreement["elicit"]["accuracy"] == 0.5 and agreement["diagnosis"]["accuracy"] == 1.0
    # macro F1 over met / not met: met F1 = 2*3/(2*3+1) = 6/7, not met F1 = 2*2/(2*2+1) = 4/5
    assert agreement["all"]["macro_f1"] == pytest.approx((6 / 7 + 4 / 5) / 2)
    assert criteria.parse_mark("**不满足**") is False and criteria.parse_mark("满足。") is True
    assert criteria.parse_mark("也许") is None


def test_file_criteria_in_healthbench_layout_load_and_bad_ones_name_the_line(tmp_path):
    path = tmp_path / "rubrics.jsonl"
    path.write_text('{"id": "case-1", "rubrics": [{"criterion": "询问过敏史", "points": 3, "tags": ["axis:completeness"]},'
                    ' {"criterion": "建议大剂量用药", "points": -5, "tags": []}]}\n', encoding="utf-8")
    loaded = criteria.load_criteria(path)
    assert [(c.text, c.points, c.kind) for c in loaded["case-1"]] == [("询问过敏史", 3, "file"),
                                                                       ("建议大剂量用药", -5, "file")]
    assert criteria.exact_met(loaded["case-1"][0], CASE, transcript_of("好")) is None
    path.write_text('{"id": "case-1", "rubrics": [{"criterion": "询问过敏史", "points": "3"}]}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"rubrics.jsonl:1: rubrics\[0\]: needs criterion \(text\) and points"):
        criteria.load_criteria(path)


class ConsultJudge:
    """Rubric of a whole consultation: 4 on every dimension; criteria: always met."""

    name, model, batch_size = "consult_judge", "judge-2", 8

    def generate(self, requests):
        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            if "医患问诊对话" in text:
                assert "参考诊断与处理：诊断：恶性高热；处理：丹曲林、停用触发药物" in text
                out.append(Completion(text='{"proactivity": 4, "accuracy": 4, "helpfulness": 4, '
                                           '"linguistic_quality": 4}'))
            else:
                out.append(Completion(text="满足"))
        return out


def test_the_judge_grades_saved_consultations_by_rubric_and_by_criteria(tmp_path):
    case = consult.ConsultCase(**{**vars(CASE), "criteria": tuple(criteria.case_criteria(CASE))})
    doctor = doctor_over(ScriptedDoctor(["有没有肌强直？", "考虑恶性高热，给予丹曲林。"]), CallCache(tmp_path / "d.sqlite"))
    patient = consult.patient_answers(SimulatedPatient(), CallCache(tmp_path / "d.sqlite"))
    result = consult.consult_task([case], doctor, patient, 4, n_boot=0, seed=0, flag=flag)
    assert result["summary"]["criteria_score"] == pytest.approx(10 / 12)
    judged = consult.judge_consultations(result["answers"], ConsultJudge(), CallCache(tmp_path / "j.sqlite"),
                                         Decoding(max_new_tokens=64), 2, 0.5, n_boot=0, seed=0)
    assert judged["unparseable"] == 0 and judged["rubric"]["proactivity"]["mean"] == 4
    # a judge that calls every criterion met: negative ones cost points -> (2+2+5+3-3-2)/12
    assert judged["criteria"]["score"]["mean"] == pytest.approx(7 / 12)
    assert judged["criteria"]["agreement_with_exact"]["all"]["accuracy"] == pytest.approx(3 / 6)


def test_separation_says_when_a_measure_cannot_tell_models_apart():
    assert compare.separation({"a": (0.1, [0.0, 0.2]), "b": (0.15, [0.05, 0.3])})["separates"] is False
    apart = compare.separation({"a": (0.1, [0.0, 0.2]), "b": (0.5, [0.3, 0.7]), "c": (0.2, [0.1, 0.35])})
    assert apart["separates"] is True and apart["spread"] == pytest.approx(0.4)
    assert compare.separation({"a": (0.0, None), "b": (0.0, None)}) == {"models": 2, "spread": 0.0, "separates": None}

    def row(elicited, ci, proactivity):
        return {"anesthesia_consult": {"elicited": elicited, "elicited_ci": ci, "diagnosis": 0.0,
                                       "diagnosis_ci": [0.0, 0.0],
                                       "judge": {"rubric": {"proactivity": {"mean": proactivity,
                                                                            "ci": [proactivity - 0.1,
                                                                                   proactivity + 0.1]}}}}}

    metrics = {"a": row(0.1, [0.0, 0.2], 4.5), "b": row(0.5, [0.4, 0.6], 4.7), "c": row(0.9, [0.8, 1.0], 4.9)}
    out = compare.consult_separation(metrics, "anesthesia_consult")
    assert out["measures"]["elicited"]["separates"] is True and out["measures"]["diagnosis"]["separates"] is False
    assert out["measures"]["advice"] == {"models": 0, "spread": None, "separates": None}
    assert out["rubric"]["proactivity"]["separates"] is True  # a [4.4, 4.6] and c [4.8, 5.0] are disjoint
    assert out["correlation"]["proactivity~elicited"] == pytest.approx(1.0)


def test_the_floor_check_names_tasks_no_model_lifts_and_why():
    def model(acc_ci, f1_ci, tp_fp, elicited_ci):
        return {"anesthesia_mcq": {"acc": sum(acc_ci) / 2, "acc_ci": acc_ci, "chance": 0.25,
                                   "scorings": {"generation": {"acc": 0.0, "acc_ci": [0.0, 0.0], "chance": 0.25,
                                                               "no_answer_rate": 0.97}}},
                "kb_ner": {"f1": sum(f1_ci) / 2, "f1_ci": f1_ci, "tp": tp_fp[0], "fp": tp_fp[1]},
                "anesthesia_consult": {"elicited": sum(elicited_ci) / 2, "elicited_ci": elicited_ci, "turns": 1.0,
                                       "ended": 1.0, "diagnosis": None}}

    metrics = {"a": model([0.5, 0.7], [0.0, 0.0], (0, 0), [0.0, 0.0]),
               "b": model([0.2, 0.3], [0.0, 0.0], (0, 0), [0.0, 0.0])}
    floor = floor_check(metrics)
    assert floor["anesthesia MCQ"] == {"floor": 0.25, "above": ["a"], "reason": None}
    assert floor["MCQ by generation"]["reason"] == "97% of the answers hold no parseable letter"
    assert floor["NER F1"]["reason"] == "no model's answers parse into entities (0 predicted in all)"
    assert floor["consult: elicited"]["reason"].startswith("elicited 0.00 for every model; the doctors gave 1.0")
    assert "consult: diagnosis" not in floor  # no case knows a diagnosis here: nothing to check
    lifted = floor_check({"a": model([0.5, 0.7], [0.1, 0.3], (5, 2), [0.2, 0.4])})
    assert lifted["NER F1"]["above"] == ["a"] and lifted["consult: elicited"]["reason"] is None
    # letters that parse but land at chance: the reason counts only the models that give a letter
    metrics["a"]["anesthesia_mcq"]["scorings"] |= {
        "generation": {"acc": 0.24, "acc_ci": [0.16, 0.33], "chance": 0.25, "no_answer_rate": 0.0},
        "letter": {"acc": 0.26}, "cloze": {"acc": 0.6}}
    reason = floor_check(metrics)["MCQ by generation"]["reason"]
    assert reason == ("the 1 model whose answers hold a letter (no answer 0%) picks the right one 0.24 of the time, "
                      "every CI includes chance 0.25; their letter scoring (log-likelihood of each letter after the "
                      "options) gives 0.26, their cloze scoring (each option's text, no letters) 0.60: they know "
                      "answers they cannot point to by letter")
