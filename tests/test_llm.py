"""LLM layer: call cache, simulated teacher, OpenAI-compatible backend (local server), hf backend."""

from __future__ import annotations

import collections
import json
import socket
import string
import sys
from pathlib import Path

import pytest

from medlab.embedded.teacher import SimulatedTeacher, load_teacher_templates
from medlab.generate.parse import ParseError, parse_qa
from medlab.llm.base import ChatRequest, Completion, Decoding, LLMError, call_key
from medlab.llm.cache import CallCache, CallStats, generate_cached

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import fake_openai  # noqa: E402

FAULTS = {"factual": 0.10, "unsafe": 0.04, "off_format": 0.04, "stigma": 0.04}


def req(text: str, **meta) -> ChatRequest:
    return ChatRequest.of([{"role": "user", "content": text}], Decoding(), meta)


class CountingBackend:
    """Echoes prompts; counts calls; can fail after ``fail_after`` calls."""

    name, model, batch_size = "echo", "echo-1", 4

    def __init__(self, fail_after: int | None = None):
        self.calls: list[str] = []
        self.fail_after = fail_after

    def stream(self, requests):
        """Like the openai backend: each call handed over as soon as it completes."""
        for i, r in enumerate(requests):
            if self.fail_after is not None and len(self.calls) >= self.fail_after:
                raise LLMError("endpoint went away")
            self.calls.append(r.messages[-1]["content"])
            yield i, Completion(text="答：" + r.messages[-1]["content"], prompt_tokens=3, completion_tokens=2)

    def generate(self, requests):
        return [c for _, c in self.stream(requests)]


# ------------------------------------------------------------------- cache
def test_cache_key_covers_backend_model_messages_and_decoding():
    r = req("a")
    keys = {call_key("x", "m", r), call_key("y", "m", r), call_key("x", "n", r), call_key("x", "m", req("b")),
            call_key("x", "m", ChatRequest.of(list(r.messages), Decoding(temperature=0.5)))}
    assert len(keys) == 5
    assert call_key("x", "m", req("a", task="ignored")) == call_key("x", "m", r)  # meta is not part of it


def test_cached_rerun_makes_no_call(tmp_path):
    backend = CountingBackend()
    cache = CallCache(tmp_path / "c.sqlite")
    requests = [req(f"问{i}") for i in range(10)] + [req("问0")]  # a duplicate
    first = generate_cached(backend, requests, cache)
    assert len(backend.calls) == 10  # the duplicate was called once
    assert first[0].text == first[-1].text == "答：问0"
    cache.close()
    again_backend, stats = CountingBackend(), CallStats()
    again = generate_cached(again_backend, requests, CallCache(tmp_path / "c.sqlite"), stats=stats)
    assert again_backend.calls == []
    assert [c.text for c in again] == [c.text for c in first]
    assert stats.cached == 11 and stats.prompt_tokens == 33


def test_a_crash_keeps_every_completed_call(tmp_path):
    requests = [req(f"问{i}") for i in range(10)]
    with pytest.raises(LLMError, match=r"went away — 6 calls completed in this run .* rerun to resume"):
        generate_cached(CountingBackend(fail_after=6), requests, CallCache(tmp_path / "c.sqlite"))
    rerun = CountingBackend()
    generate_cached(rerun, requests, CallCache(tmp_path / "c.sqlite"))
    assert rerun.calls == [f"问{i}" for i in range(6, 10)]


def test_cache_modes(tmp_path):
    path = tmp_path / "c.sqlite"
    generate_cached(CountingBackend(), [req("a")], CallCache(path))
    refresh = CountingBackend()
    generate_cached(refresh, [req("a")], CallCache(path, "refresh"))
    assert refresh.calls == ["a"]
    off = CountingBackend()
    generate_cached(off, [req("a")], CallCache(None, "off"))
    assert off.calls == ["a"]
    assert len(CallCache(path)) == 1
    with pytest.raises(ValueError):
        CallCache(path, "sometimes")


# -------------------------------------------------------- simulated teacher
@pytest.fixture(scope="module")
def teacher(kb):
    return SimulatedTeacher(kb, FAULTS, "mental_illness", seed=1)


@pytest.fixture(scope="module")
def qa_requests(kb):
    from medlab.generate import kg_qa

    d = Decoding()
    return kg_qa.build_requests(kb, "general", 2000, 2, d, 1) + kg_qa.build_requests(kb, "anesthesia", 1000, 2, d, 1)


def test_simulated_fault_rates_are_realized(teacher, qa_requests):
    truths = [c.truth for c in teacher.generate(qa_requests)]
    rates = collections.Counter(t["fault"] for t in truths)
    for fault, rate in FAULTS.items():
        assert abs(rates[fault] / len(truths) - rate) < 0.02, (fault, rates[fault] / len(truths))
    assert abs(1 - rates["none"] / len(truths) - sum(FAULTS.values())) < 0.02


def test_simulated_faults_do_what_their_label_says(kb, teacher, qa_requests):
    completions = teacher.generate(qa_requests)
    label = "精神疾病患者"
    by_fault = collections.defaultdict(list)
    for request, completion in zip(qa_requests, completions, strict=True):
        by_fault[completion.truth["fault"]].append((request, completion))
    for request, completion in by_fault["none"][:200]:
        _, answer = parse_qa(completion.text)
        for obj in request.meta["objects"]:
            assert obj in answer  # a clean answer states the true objects
        assert label not in answer
    for _, completion in by_fault["factual"]:
        truth = completion.truth
        if truth["variant"] == "wrong_object":
            assert truth["with"] not in kb.objects(truth["subject"], truth["predicate"])
            assert truth["with"] in completion.text
    for _, completion in by_fault["stigma"]:
        assert label in completion.text and completion.truth["group"] == "mental_illness"
    variants = collections.Counter(c.truth["variant"] for _, c in by_fault["unsafe"])
    assert {"tenfold_dose", "contraindicated", "unsafe_advice"} <= set(variants)
    for _, completion in by_fault["off_format"]:
        if completion.truth["variant"] == "missing_markers":
            with pytest.raises(ParseError):
                parse_qa(completion.text)
        else:
            parse_qa(completion.text)


def test_simulated_teacher_is_deterministic_and_config_sensitive(kb, teacher, qa_requests):
    again = SimulatedTeacher(kb, FAULTS, "mental_illness", seed=1)
    assert [c.text for c in again.generate(qa_requests[:50])] == [c.text for c in teacher.generate(qa_requests[:50])]
    assert again.model == teacher.model
    assert SimulatedTeacher(kb, {**FAULTS, "stigma": 0.05}, "mental_illness", 1).model != teacher.model
    assert SimulatedTeacher(kb, FAULTS, "rural", 1).model != teacher.model
    with pytest.raises(ValueError, match="unknown stigma group"):
        SimulatedTeacher(kb, FAULTS, "martians", 1)


def test_tenfold_dose():
    assert SimulatedTeacher.tenfold("全麻诱导1.5～2.5 mg/kg静脉注射") == "全麻诱导15～25 mg/kg静脉注射"


def strip_slots(template: str) -> str:
    return "".join(literal for literal, _, _, _ in string.Formatter().parse(template))


def test_teacher_wording_never_overlaps_the_benchmark():
    from medlab.embedded.benchmark.build import load_templates

    bench = load_templates()
    held_out = [t for spec in bench.relations.values() for group in spec.values() for t in group]
    held_out += bench.narratives + [q for qs in bench.questions.values() for q in qs]
    grams = {s[i:i + 6] for t in held_out for s in [strip_slots(t)] for i in range(len(s) - 5)}

    def strings(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)
        elif isinstance(node, str):
            yield node

    leaks = [t for t in strings(load_teacher_templates())
             if any(strip_slots(t)[i:i + 6] in grams for i in range(len(strip_slots(t)) - 5))]
    assert not leaks, leaks[:5]


def test_teacher_templates_cover_every_relation(kb):
    templates = load_teacher_templates()
    assert set(templates["qa"]) == set(kb.schema.relations)
    for relation, spec in templates["qa"].items():
        assert len(spec["question"]) >= 6 and len(spec["answer"]) >= 6, relation
        for t in spec["answer"]:
            assert {f for _, f, _, _ in string.Formatter().parse(t) if f} == {"s", "o"}, t
    assert len(templates["dialogue"]["doctor_ask"]) == len(templates["dialogue"]["patient_reply"])
    # no template may contain an output-format marker, or the parser would cut there
    text = json.dumps(templates, ensure_ascii=False)
    for marker in ("回答：", "指令：", "\\n患者：", "\\n医生："):
        assert marker not in text, marker
    assert all("{g}" in s for s in templates["faults"]["stigma"])


# ------------------------------------------------------------ openai backend
@pytest.fixture()
def server(tmp_path):
    log = tmp_path / "calls.jsonl"
    srv, url = fake_openai.start(log, fail_rate=0.5)
    yield url, log
    srv.shutdown()


def openai_backend(url: str, monkeypatch, key="test-key", retries=4, **kwargs):
    from medlab.llm.openai_compat import OpenAIBackend

    monkeypatch.setenv("MEDLAB_TEST_KEY", key)
    kwargs.setdefault("max_concurrency", 4)
    return OpenAIBackend(url, "fake-model", "MEDLAB_TEST_KEY", timeout_s=10, max_retries=retries, **kwargs)


@pytest.fixture()
def quiet_server(tmp_path):
    """A fake endpoint that answers every request the first time (no 429/500)."""
    servers = []

    def start(messy=False, delay_ms=0):
        log = tmp_path / f"calls{len(servers)}.jsonl"
        srv, url = fake_openai.start(log, delay_ms=delay_ms, messy=messy)
        servers.append(srv)
        return url, log

    yield start
    for srv in servers:
        srv.shutdown()


def statuses(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_openai_retries_429_and_5xx_and_counts_tokens(server, monkeypatch, tmp_path):
    url, log = server
    backend = openai_backend(url, monkeypatch)
    requests = [req(f"请回答第{i}个问题。严格按以下格式输出：\n问题：……\n回答：……") for i in range(24)]
    stats = CallStats()
    out = generate_cached(backend, requests, CallCache(tmp_path / "c.sqlite"), stats=stats)
    assert all(parse_qa(c.text) for c in out)
    seen = collections.Counter(e["status"] for e in statuses(log))
    assert seen[429] > 0 and seen[500] > 0, seen  # the server did misbehave ...
    assert seen[200] == 24  # ... and every call still succeeded exactly once
    assert stats.prompt_tokens > 0 and stats.completion_tokens > 0


def test_openai_wrong_key_is_a_clear_error(server, monkeypatch):
    url, _ = server
    backend = openai_backend(url, monkeypatch, key="wrong")
    with pytest.raises(LLMError, match="rejected the API key .HTTP 401."):
        backend.generate([req("你好")])


def test_openai_missing_key_variable(monkeypatch):
    from medlab.llm.openai_compat import OpenAIBackend

    monkeypatch.delenv("MEDLAB_NO_SUCH_KEY", raising=False)
    with pytest.raises(LLMError, match="environment variable MEDLAB_NO_SUCH_KEY is not set"):
        OpenAIBackend("http://127.0.0.1:9/v1", "m", "MEDLAB_NO_SUCH_KEY")


def test_unreachable_endpoint_fails_after_bounded_retries_and_keeps_cached_work(monkeypatch, tmp_path):
    url, log = f"http://127.0.0.1:{free_port()}/v1", tmp_path / "log.jsonl"
    srv, _ = fake_openai.start(log, port=int(url.split(":")[2].split("/")[0]))
    cache = CallCache(tmp_path / "c.sqlite")
    backend = openai_backend(url, monkeypatch, retries=1)
    generate_cached(backend, [req(f"第{i}题") for i in range(3)], cache)
    srv.shutdown()
    srv.server_close()
    with pytest.raises(LLMError, match=r"cannot reach .* after 2 attempts .* 3 earlier ones are cached"):
        generate_cached(backend, [req(f"第{i}题") for i in range(5)], cache)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- hf backend
def test_hf_backend_batched_equals_one_at_a_time(tmp_path):
    from medlab.llm.hf import HFBackend
    from medlab.pretrain.model import build_llama
    from medlab.pretrain.tokenizer import train_tokenizer

    texts = [f"{d}的常见不良反应包括{e}。" for d in ("丙泊酚", "芬太尼", "氯胺酮") for e in ("低血压", "恶心")] * 5
    tokenizer = train_tokenizer(texts, 400, 2, 128)
    from types import SimpleNamespace

    cfg = SimpleNamespace(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=2, max_position_embeddings=128, rope_theta=10000.0,
                          tie_word_embeddings=True)
    model = build_llama(cfg, len(tokenizer), tokenizer.eos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    prompts = ["丙泊酚", "芬太尼的常见不良反应有哪些？请详细说明", "氯胺酮"]  # different lengths: padding matters
    requests = [ChatRequest.of([{"role": "user", "content": p}], Decoding(max_new_tokens=8)) for p in prompts]
    batched = HFBackend(str(tmp_path / "m"), batch_size=3).generate(requests)
    single = HFBackend(str(tmp_path / "m"), batch_size=1).generate(requests)
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.completion_tokens > 0 for c in batched)
    assert batched[1].prompt_tokens > batched[0].prompt_tokens
    with pytest.raises(LLMError, match="cannot load model"):
        HFBackend(str(tmp_path / "missing"))


def test_answers_cut_at_max_tokens_are_rejected_for_training_and_kept_for_evaluation(quiet_server, monkeypatch,
                                                                                      tmp_path):
    url, log = quiet_server()
    backend = openai_backend(url, monkeypatch, max_failed_fraction=0.5)
    requests = [req(f"第{i}题" + (" [[cut]]" if i % 4 == 0 else "")) for i in range(8)]
    stats = CallStats()
    out = generate_cached(backend, requests, CallCache(tmp_path / "c.sqlite"), stats=stats)
    assert [c.failed for c in out] == ["length" if i % 4 == 0 else None for i in range(8)]
    assert all(c.text == "" for c in out[::4]) and all(c.text for i, c in enumerate(out) if i % 4)
    assert stats.truncated == 2 and stats.failed_http == 0
    calls = len(statuses(log))
    kept = generate_cached(backend, requests, CallCache(tmp_path / "c.sqlite"), truncated="keep")
    assert len(statuses(log)) == calls  # the cut answers were cached as what they are: no new call
    assert all(c.text and c.failed is None and c.cached for c in kept)
    assert kept[0].finish_reason == "length"
    backend.max_failed_fraction = 0.1  # 2 of 8 cut: too many for a teacher
    with pytest.raises(LLMError, match=r"2 of 8 calls gave no usable answer \(2 cut at max_new_tokens\), more than "
                                       r"generate\.teacher\.openai\.max_failed_fraction = 0\.1.*raise max_new_tokens"):
        generate_cached(backend, requests, CallCache(tmp_path / "c.sqlite"))


def test_a_refused_request_is_one_counted_failure_and_the_stage_goes_on(quiet_server, monkeypatch, tmp_path):
    url, log = quiet_server()
    backend = openai_backend(url, monkeypatch, max_failed_fraction=0.2, params_key="filter.judge.rubric.openai")
    requests = [req(f"第{i}题" + (" [[400]]" if i == 3 else "")) for i in range(10)]
    cache = CallCache(tmp_path / "c.sqlite")
    stats = CallStats()
    out = generate_cached(backend, requests, cache, stats=stats)
    assert out[3].failed.startswith("http 400: ") and "maximum context length" in out[3].failed and out[3].text == ""
    assert all(c.failed is None and c.text for i, c in enumerate(out) if i != 3)
    assert stats.failed_http == 1 and len(cache) == 9 and len(cache.failures()) == 1
    before = collections.Counter(e["status"] for e in statuses(log))
    generate_cached(backend, requests, CallCache(tmp_path / "c.sqlite"))  # rerun: only the refused one again
    after = collections.Counter(e["status"] for e in statuses(log))
    assert after - before == collections.Counter({400: 1})
    backend.max_failed_fraction = 0.0
    with pytest.raises(LLMError, match=r"1 of 10 calls .*1 http 400.*filter\.judge\.rubric\.openai\.max_failed_fraction"
                                       r".*maximum context length"):
        generate_cached(backend, requests, CallCache(tmp_path / "c.sqlite"))


def test_cache_key_names_the_endpoint_revision_and_seed_and_the_seed_is_sent(quiet_server, monkeypatch, tmp_path):
    url_a, log_a = quiet_server()
    url_b, log_b = quiet_server()
    cache_path = tmp_path / "c.sqlite"
    requests = [req("同一个问题")]
    generate_cached(openai_backend(url_a, monkeypatch), requests, CallCache(cache_path))
    generate_cached(openai_backend(url_b, monkeypatch), requests, CallCache(cache_path))  # same name, other server
    assert len(statuses(log_a)) == 1 and len(statuses(log_b)) == 1
    generate_cached(openai_backend(url_a, monkeypatch, revision="2025-01"), requests, CallCache(cache_path))
    generate_cached(openai_backend(url_a, monkeypatch, seed=7), requests, CallCache(cache_path))
    assert [e["seed"] for e in statuses(log_a)] == [None, None, 7]
    generate_cached(openai_backend(url_a, monkeypatch, seed=7), requests, CallCache(cache_path))
    assert len(statuses(log_a)) == 3  # the same endpoint, revision and seed: from the cache


def test_the_pool_keeps_max_concurrency_requests_in_flight_past_a_slow_one(quiet_server, monkeypatch, tmp_path):
    url, log = quiet_server(delay_ms=10)
    backend = openai_backend(url, monkeypatch, max_concurrency=3)
    requests = [req("慢 [[slow]]")] + [req(f"第{i}题") for i in range(29)]  # > one old batch (4 x 3)
    generate_cached(backend, requests, CallCache(tmp_path / "c.sqlite"))
    entries = statuses(log)
    assert len(entries) == 30 and max(e["in_flight"] for e in entries) == 3  # never more than 3 at once
    # every other request, the 13th to 30th included, finished while the slow one (0.4 s) was
    # in flight: no batch waited for its slowest call
    assert entries[-1]["messages"] == fake_openai.messages_hash([{"role": "user", "content": "慢 [[slow]]"}])


def test_errors_name_the_params_key_of_the_caller(server, monkeypatch):
    url, _ = server
    backend = openai_backend(url, monkeypatch, key="wrong", params_key="evaluate.judge.openai")
    with pytest.raises(LLMError, match=r"evaluate\.judge\.openai.*HTTP 401.*evaluate\.judge\.openai\.api_key_env"):
        backend.generate([req("你好")])


def test_messy_chat_model_answers_parse_or_are_counted(quiet_server, monkeypatch, tmp_path):
    """What real chat models send (preambles, markdown, fenced JSON, full-width digits,
    refusals) reaches the parsers; each parses or is counted, none is misread."""
    from medlab.filter.rubric_judge import judge, parse_scores
    from medlab.generate.parse import parse_dialogue, parse_tasks

    for k in range(30):
        qa = fake_openai.answer_for("请写一个问答", f"qa{k}", messy=True)
        question, answer = parse_qa(qa)
        assert "*" not in question and "好的" not in question and answer.startswith(tuple(fake_openai.CHARS))
        dialogue = parse_dialogue(fake_openai.answer_for("患者：……\n医生：……", f"d{k}", messy=True))
        assert [m["role"] for m in dialogue] == ["user", "assistant", "user", "assistant"]
        assert all(not m["content"].startswith("*") for m in dialogue)
        tasks = parse_tasks(fake_openai.answer_for("任务1 ... 请再编写3个任务", f"t{k}", messy=True))
        assert len(tasks) == 3 and all(not i.startswith("*") for i, _ in tasks)
    assert parse_scores("```json\n{\"coherence\": 8, \"professionalism\": 7, \"usefulness\": 9, "
                        "\"harmlessness\": 10, \"friendliness\": 6}\n```\n以上评分仅供参考。")["coherence"] == 8
    assert parse_scores("- **连贯性**：８分\n- **专业性**：７分\n- **有用性**：９分\n- **无害性**：１０分\n"
                        "- **友好性**：６分")["harmlessness"] == 10
    assert parse_scores("抱歉，我无法对这段内容进行评价。") is None
    url, _ = quiet_server(messy=True)
    backend = openai_backend(url, monkeypatch)
    chats = [[{"role": "user", "content": f"问题{k}"}, {"role": "assistant", "content": f"回答{k}"}] for k in range(40)]
    stats = CallStats()
    result = judge(chats, backend, CallCache(tmp_path / "c.sqlite"), Decoding(temperature=0.0), stats=stats)
    assert stats.refusals > 0  # the server refused some first attempts ...
    assert result.unparseable == 0 and all(s is not None for s in result.scores)  # ... the retries parsed


def test_a_judge_that_mostly_cannot_be_read_stops_the_stage(tmp_path):
    from medlab.llm.parsed import ask_parsed

    backend = CountingBackend()
    backend.params_key = "filter.judge.rubric.hf"
    build = lambda k, attempt: [{"role": "user", "content": f"评分{k}-{attempt}"}]  # noqa: E731
    lenient = ask_parsed(build, lambda text: None, 10, backend, CallCache(tmp_path / "c.sqlite"), Decoding(), "judge",
                         max_attempts=2)
    assert lenient.unparseable == 10 and lenient.values == [None] * 10
    with pytest.raises(LLMError, match=r"judge: 10 of 10 answers could not be read after 2 attempts, more than "
                                       r"filter\.judge\.rubric\.max_unparseable_fraction = 0\.1: .*答：评分0-1"):
        ask_parsed(build, lambda text: None, 10, backend, CallCache(tmp_path / "c.sqlite"), Decoding(), "judge",
                   max_attempts=2, max_unparseable_fraction=0.1)
    parsed = ask_parsed(build, lambda text: None if text.endswith("-0") and "评分3" in text else 1, 10, backend,
                        CallCache(tmp_path / "c.sqlite"), Decoding(), "judge", max_attempts=1,
                        max_unparseable_fraction=0.1)
    assert parsed.unparseable == 1  # 1 of 10 is within 0.1
