"""Multi-turn consultation: the model under evaluation plays the doctor, a patient (an LLM
backend, or the embedded simulated patient) answers from a case, and the transcript is
scored against the case's known facts -- measures a judge is not needed for.

The loop, for every case at once (each turn one batch of doctor replies, then one of
patient replies)::

    patient: opening (one complaint)          doctor: reply 1
    patient: answer to reply 1                doctor: reply 2   ... up to ``max_turns``

The patient ends the consultation by saying ``END_PHRASE`` (our patient prompt asks for
it once the doctor has given a diagnosis and advice; the simulated patient says it when
the doctor names any diagnosis); otherwise ``max_turns`` doctor replies end it. The
doctor sees the whole conversation in its chat template (patient = user, doctor =
assistant); the patient sees it the other way round, after our system prompt with the
case. Every doctor reply and every LLM patient's answer goes through the call cache (the
rule-based simulated patient answers instantly and is never cached: see
``patient_answers``), so a consultation killed at turn k replays turns 1..k from the
cache and goes on from there.

Judge-free measures per case (``measures``), from the transcript and the case:

* ``elicited``: share of the case's key findings, other than the one in the opening,
  that the patient stated after the doctor's replies (found verbatim in patient turns:
  what the simulated patient says; an LLM patient's paraphrase is not counted) -- the
  doctor's proactivity, counted instead of rated;
* ``diagnosis``: the doctor's replies name the case's diagnosis and no other disease
  (``text_metrics.grounded_correct``: naming every candidate is not a diagnosis);
* ``advice``: they name at least one treatment or measure the knowledge base gives for it;
* ``flagged``: a doctor reply breaks one of the filter's rules (empty, repetitive, an
  advert, a phone number, a refusal ...; ``medlab.filter.rules``, passed in as ``flag``:
  the filter already imports evaluate, so evaluate does not import it back);
* ``turns``: doctor replies given; ``ended``: the patient closed the consultation;
* ``criteria_score``: the case's rubric criteria (``medlab.evaluate.criteria``) marked by
  their exact answers, points earned over points possible (None for file criteria, which
  only the judge can mark).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

from medlab.evaluate import criteria as rubric
from medlab.evaluate.text_metrics import grounded_correct
from medlab.llm.base import ChatRequest, Decoding
from medlab.llm.cache import CallCache, generate_cached
from medlab.stats import mean_ci

END_PHRASE = "好的，谢谢医生，我没有别的问题了。"
PATIENT_PROMPT_ID = "patient_zh_v1"  # a changed prompt gets a new id (it is also in every call's key)
PATIENT_SYSTEM = (
    "请你扮演一位前来咨询的患者家属，和医生进行对话。下面是你家人的病情，只有你知道，医生不知道：\n"
    "{description}\n\n"
    "你已经对医生说了第一句话：“{opening}”\n"
    "对话规则：\n"
    "1. 只回答医生问到的内容；医生没问到的症状或情况，不要主动说出来。\n"
    "2. 用普通人的口语回答，不使用医学术语，不要自己猜测诊断或提出治疗方案。\n"
    "3. 每次回答简短，一到两句话。\n"
    "4. 当医生已经给出诊断和处理建议，或者你已经没有别的要说的时候，只回答：“{end}”")
PATIENT_DECODING = Decoding(temperature=0.0, max_new_tokens=64)  # greedy, one or two sentences
# the verbatim opening the simulated patient and the prompt share
OPENING = "医生您好，我家里人前几天做了手术，麻醉以后出现了{finding}，想请您看看是怎么回事。"


@dataclass(frozen=True)
class ConsultCase:
    id: str
    description: str  # what the patient knows (de-identified)
    opening: str  # the patient's first message
    findings: tuple[str, ...]  # key findings; the first is the opening complaint
    diagnosis: str | None  # the case's diagnosis (None: not known, e.g. a CMB-Clin case)
    candidates: tuple[str, ...]  # every disease name the doctor could give (the diagnosis included)
    advice: tuple[str, ...]  # treatments and measures that answer the case
    criteria: tuple = ()  # its rubric criteria (medlab.evaluate.criteria.Criterion)


def redact_spans(text: str, spans: Sequence[Mapping]) -> str:
    """``text`` with every labelled PHI span replaced by its type in brackets (【NAME】)."""
    for span in sorted(spans, key=lambda s: -s["start"]):
        text = text[:span["start"]] + f"【{span['type']}】" + text[span["end"]:]
    return text


def diseases(kb) -> list[str]:
    """Every disease the knowledge base names (what a doctor's diagnosis can be)."""
    return sorted(name for name, e in kb.entities.items() if e.type == "疾病")


def vignette_cases(items: Sequence, kb, limit: int = 0) -> list[ConsultCase]:
    """One consultation per case of the benchmark's vignettes (``anesthesia_rc``: several
    MCQ items share a case): the narrative de-identified with its labelled PHI spans, the
    findings = the diagnosis's clinical signs (knowledge base) the narrative states, in
    narrative order; the advice = its drug treatments and measures."""
    cases: dict[str, ConsultCase] = {}
    names = diseases(kb)
    for item in items:
        meta = item.meta or {}
        case_id, diagnosis = meta.get("case"), meta.get("complication")
        if not case_id or not diagnosis or case_id in cases or not item.context:
            continue
        found = sorted((s for s in kb.objects(diagnosis, "临床表现") if s in item.context), key=item.context.index)
        if not found:
            continue
        case = ConsultCase(
            id=case_id, description=redact_spans(item.context, item.phi or []),
            opening=OPENING.format(finding=found[0]), findings=tuple(found), diagnosis=diagnosis,
            candidates=tuple(names),
            advice=tuple(dict.fromkeys([*kb.objects(diagnosis, "药物治疗"), *kb.objects(diagnosis, "处理措施")])))
        cases[case_id] = replace(case, criteria=tuple(rubric.case_criteria(case)))
    out = list(cases.values())
    return out[:limit] if limit else out


def clin_cases(cases: Sequence, limit: int = 0, criteria: Mapping[str, Sequence] | None = None) -> list[ConsultCase]:
    """CMB-Clin cases as consultations: the patient knows the case description; no findings
    or diagnosis are known, so only turns, flags, a judge and file criteria (by case id,
    ``medlab.evaluate.criteria.load_criteria``) can grade them."""
    criteria = criteria or {}
    out = [ConsultCase(id=c.id, description=c.description, opening=f"医生您好，{c.title}，想请您看看。",
                       findings=(), diagnosis=None, candidates=(), advice=(),
                       criteria=tuple(criteria.get(c.id, ()))) for c in cases]
    return out[:limit] if limit else out


def doctor_chat(turns: Sequence[dict]) -> list[dict[str, str]]:
    """The conversation as the doctor's model sees it: patient = user, doctor = assistant."""
    return [{"role": "user" if t["role"] == "patient" else "assistant", "content": t["text"]} for t in turns]


def patient_request(case: ConsultCase, turns: Sequence[dict], decoding: Decoding) -> ChatRequest:
    """The next patient turn as a request: our system prompt with the case, then the
    conversation after the opening with the roles swapped (doctor = user). ``meta`` carries
    the facts the simulated patient answers from (real backends ignore it)."""
    system = PATIENT_SYSTEM.format(description=case.description, opening=case.opening, end=END_PHRASE)
    messages = [{"role": "system", "content": system}]
    messages += [{"role": "user" if t["role"] == "doctor" else "assistant", "content": t["text"]} for t in turns[1:]]
    return ChatRequest.of(messages, decoding, meta={"task": "patient", "prompt": PATIENT_PROMPT_ID,
                                                    "findings": list(case.findings),
                                                    "candidates": list(case.candidates), "end": END_PHRASE})


def patient_answers(backend, cache: CallCache, label: str = "patient") -> Callable[[list[ChatRequest]], list[str]]:
    """``answer(requests) -> texts`` for a patient backend: an LLM patient through the call
    cache; a patient that answers from the requests' ``meta`` (the simulated one: rules,
    instant) called directly -- ``meta`` is not part of a call's key, so caching it could
    replay an answer to other facts."""
    def answer(requests: list[ChatRequest]) -> list[str]:
        if getattr(backend, "answers_from_meta", False):
            return [c.text for c in backend.generate(requests)]
        return [c.text for c in generate_cached(backend, requests, cache, label=label, truncated="keep")]
    return answer


def consult(cases: Sequence[ConsultCase], doctor: Callable[[list[list[dict]]], list[str]],
            patient: Callable[[list[ChatRequest]], list[str]], max_turns: int,
            decoding: Decoding = PATIENT_DECODING, log=None) -> list[dict]:
    """Run every case's consultation; transcripts ``{"id", "turns": [{"role", "text"}],
    "ended_by": "patient" | "turn_limit"}``. ``doctor`` answers chats in a batch;
    ``patient`` answers patient requests in a batch (both cached by the caller)."""
    turns = {c.id: [{"role": "patient", "text": c.opening}] for c in cases}
    ended = {c.id: None for c in cases}
    for turn in range(max_turns):
        active = [c for c in cases if ended[c.id] is None]
        if not active:
            break
        for c, text in zip(active, doctor([doctor_chat(turns[c.id]) for c in active]), strict=True):
            turns[c.id].append({"role": "doctor", "text": text})
        if turn == max_turns - 1:
            break
        replies = patient([patient_request(c, turns[c.id], decoding) for c in active])
        for c, text in zip(active, replies, strict=True):
            turns[c.id].append({"role": "patient", "text": text})
            if END_PHRASE in text:
                ended[c.id] = "patient"
        if log:
            log(f"turn {turn + 1}: {len(active)} consultations went on, "
                f"{sum(v == 'patient' for v in ended.values())} ended by the patient so far")
    return [{"id": c.id, "turns": turns[c.id], "ended_by": ended[c.id] or "turn_limit"} for c in cases]


def measures(case: ConsultCase, transcript: Mapping, flag: Callable[[str], str | None] | None = None) -> dict:
    """The judge-free measures of one consultation (module docstring); None where the case
    does not know the answer (``flagged`` None without a ``flag`` rule: text -> reason or None)."""
    doctor = [t["text"] for t in transcript["turns"] if t["role"] == "doctor"]
    later = "".join(t["text"] for t in transcript["turns"][1:] if t["role"] == "patient")
    said = "\n".join(doctor)
    to_elicit = case.findings[1:]
    reasons = [flag(text) for text in doctor] if flag else []
    others = [d for d in case.candidates if d != case.diagnosis]
    return {"elicited": sum(f in later for f in to_elicit) / len(to_elicit) if to_elicit else None,
            "diagnosis": int(grounded_correct(said, [case.diagnosis], others)) if case.diagnosis else None,
            "advice": int(any(a in said for a in case.advice)) if case.advice else None,
            "flagged": int(any(reasons)) if flag else None, "flag_reasons": [r for r in reasons if r],
            "turns": len(doctor), "ended": int(transcript["ended_by"] == "patient"),
            "criteria_score": rubric.score(case.criteria, [rubric.exact_met(c, case, transcript) for c in case.criteria])
            if case.criteria else None}


def summarise(per_case: Mapping[str, Mapping], n_boot: int, seed: int) -> dict:
    """Mean and 95% CI of each measure over the cases that have it; the flag reasons counted."""
    out: dict = {"cases": len(per_case)}
    for name in ("elicited", "diagnosis", "advice", "criteria_score", "flagged", "turns", "ended"):
        values = [m[name] for m in per_case.values() if m[name] is not None]
        stats = mean_ci(values, n_boot=n_boot, seed=seed) if values else {"mean": None, "ci": None, "n": 0}
        out[name], out[f"{name}_ci"], out[f"{name}_n"] = stats["mean"], stats["ci"], stats["n"]
    reasons: dict[str, int] = {}
    for m in per_case.values():
        for r in m["flag_reasons"]:
            reasons[r] = reasons.get(r, 0) + 1
    out["flag_reasons"] = dict(sorted(reasons.items()))
    return out


def consult_task(cases: Sequence[ConsultCase], doctor, patient, max_turns: int, n_boot: int, seed: int,
                 decoding: Decoding = PATIENT_DECODING, flag=None, log=None) -> dict:
    """Consultations, their measures per case (the outcomes of paired comparisons) and summary."""
    transcripts = consult(cases, doctor, patient, max_turns, decoding, log)
    per_case = {c.id: measures(c, t, flag) for c, t in zip(cases, transcripts, strict=True)}
    return {"summary": summarise(per_case, n_boot, seed), "outcomes": per_case,
            "answers": [{**t, "case": asdict(c)} for c, t in zip(cases, transcripts, strict=True)]}


def render(transcript: Mapping) -> str:
    """A transcript as readable text: 患者 / 医生 lines, and how it ended."""
    lines = [f"{'患者' if t['role'] == 'patient' else '医生'}：{t['text']}" for t in transcript["turns"]]
    return "\n".join(lines) + f"\n（{'患者结束了问诊' if transcript['ended_by'] == 'patient' else '达到轮数上限'}）"


def reference_of(case: Mapping) -> str:
    """The case's diagnosis and advice as the rubric judge's reference ('' when unknown)."""
    parts = ([f"诊断：{case['diagnosis']}"] if case.get("diagnosis") else []) + \
        ([f"处理：{'、'.join(case['advice'])}"] if case.get("advice") else [])
    return "；".join(parts)


def judge_consultations(answers: Sequence[Mapping], backend, cache: CallCache, decoding: Decoding, max_attempts: int,
                        max_unparseable_fraction: float, n_boot: int, seed: int) -> dict:
    """The judge on saved consultations (``consult_task``'s ``answers``): the four-dimension
    rubric of each dialogue, and every per-case criterion marked, scored and compared with
    the exact marks where the criterion has one (``criteria.grader_agreement``)."""
    from medlab.evaluate import judges

    graded = judges.judge_consult_rubric([(render(a), reference_of(a["case"])) for a in answers], backend, cache,
                                         decoding, max_attempts, max_unparseable_fraction)
    scored = [s for s in graded["scores"] if s is not None]
    out: dict = {"n": len(answers), "unparseable": graded["unparseable"],
                 "rubric": {d: mean_ci([s[d] for s in scored], n_boot=n_boot, seed=seed) for d in
                            (scored[0] if scored else {})}}
    items, owners = [], []
    for a in answers:
        case = ConsultCase(**{**a["case"], "criteria": ()})
        for c in a["case"].get("criteria") or []:
            criterion = rubric.Criterion(c["text"], c["points"], c["kind"], tuple(c["target"]))
            items.append((a, criterion))
            owners.append((a["id"], criterion, rubric.exact_met(criterion, case, a)))
    if items:
        marks = rubric.grade_with_judge(items, backend, cache, decoding, max_attempts, max_unparseable_fraction)
        per_case: dict[str, list] = {}
        for (case_id, criterion, _), mark in zip(owners, marks["marks"], strict=True):
            per_case.setdefault(case_id, []).append((criterion, mark))
        scores = [rubric.score([c for c, _ in v], [m for _, m in v]) for v in per_case.values()]
        known = [s for s in scores if s is not None]
        out["criteria"] = {"score": mean_ci(known, n_boot=n_boot, seed=seed), "unparseable": marks["unparseable"],
                           "agreement_with_exact": rubric.grader_agreement(
                               [c.kind for _, c, _ in owners], [e for _, _, e in owners], marks["marks"])}
    return out
