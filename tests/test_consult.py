"""Consultations: the simulated patient's rules, the doctor-patient loop (turn limit, stop
phrase, resume after a kill), the judge-free measures on hand-made transcripts, and the
paired comparison of two models' consultations."""

from __future__ import annotations

import pytest

from medlab.embedded.benchmark.build import build_vignettes
from medlab.embedded.patient import SimulatedPatient, asks_about
from medlab.evaluate import compare, consult
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
                 "ended": 0}


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
