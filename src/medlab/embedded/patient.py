"""The simulated patient: answers a doctor from the case's known facts by fixed rules (not
an LLM; named ``simulated_patient`` wherever it appears).

What it says, given the doctor's last reply and the facts in the request's ``meta``:

1. the doctor names any disease (a diagnosis): the end phrase -- the consultation is over;
2. the reply asks about findings not yet told (it contains a two-character word of the
   finding, other than the generic ones in ``GENERIC``: "体温" asks about 体温急剧升高):
   "有的，还有<those findings>。";
3. a question about anything else: "别的没有什么不舒服的。"; otherwise "嗯，明白了。".

So the findings a doctor elicits are exactly the ones it asked about, and the transcript
shows them verbatim (what ``medlab.evaluate.consult.measures`` counts).
"""

from __future__ import annotations

from medlab.llm.base import ChatRequest, Completion
from medlab.zh import join_list

# two-character words too common to count as asking about a finding
GENERIC = frozenset({"出现", "明显", "急剧", "升高", "降低", "下降", "增加", "减少", "异常", "症状", "患者", "感觉",
                     "持续", "术后", "术中", "麻醉", "发生", "可能", "情况", "表现", "不适"})


def asks_about(reply: str, finding: str) -> bool:
    """Whether ``reply`` mentions ``finding`` by one of its specific two-character words."""
    return any(finding[k:k + 2] in reply for k in range(len(finding) - 1) if finding[k:k + 2] not in GENERIC)


class SimulatedPatient:
    """Rule-based patient (see the module docstring); the backend interface of medlab.llm."""

    name = "simulated_patient"
    batch_size = 256
    answers_from_meta = True  # never through the call cache (medlab.evaluate.consult.patient_answers)

    def __init__(self):
        from medlab.cachekey import code_hash

        # its identity in the call cache hashes its code: a changed rule is a new patient
        self.model = f"simulated-patient-{code_hash('medlab.embedded.patient')[:12]}"

    def reply(self, request: ChatRequest) -> str:
        meta = request.meta
        doctor = request.messages[-1]["content"]
        if any(d in doctor for d in meta.get("candidates", [])):
            return meta["end"]
        told = "".join(m["content"] for m in request.messages if m["role"] == "assistant")
        told += meta["findings"][0] if meta.get("findings") else ""
        new = [f for f in meta.get("findings", []) if f not in told and asks_about(doctor, f)]
        if new:
            return f"有的，还有{join_list(new)}。"
        if any(mark in doctor for mark in ("？", "?", "吗", "有没有", "是否")):
            return "别的没有什么不舒服的。"
        return "嗯，明白了。"

    def generate(self, requests: list[ChatRequest]) -> list[Completion]:
        return [Completion(text=self.reply(r)) for r in requests]
