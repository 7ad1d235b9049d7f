"""Hosted models as evaluation subjects: endpoint files, generation-mode tasks, the probe's
generation readout and the token/cost accounting, against a local fake OpenAI server that
answers the way chat models do (reasoning before the letter, markdown, refusals)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from medlab.config import validate_params
from medlab.evaluate import endpoint
from medlab.evaluate import run as ev
from medlab.llm.cache import CallCache, CallStats
from medlab.probe import score as probe
from medlab.probe.scale import builtin_scales
from medlab.records import McqItem
from medlab.section import ConfigError, read_yaml

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import fake_openai  # noqa: E402

DRUGS = ["丙泊酚", "阿托品", "新斯的明", "纳洛酮", "芬太尼", "咪达唑仑", "罗库溴铵", "舒更葡糖"]


@pytest.fixture()
def messy_server(tmp_path):
    log = tmp_path / "calls.jsonl"
    srv, url = fake_openai.start(log, key="hosted-key", messy=True)
    yield url, log
    srv.shutdown()


def endpoint_file(folder: Path, url: str, **extra) -> Path:
    spec = {"kind": "openai", "base_url": url, "model": "fake-chat", "revision": "2026-01", "api_key_env": "HOSTED_KEY",
            "max_concurrency": 4, "max_retries": 1, "seed": 7, "price_prompt_per_m": 2.0,
            "price_completion_per_m": 8.0, **extra}
    path = folder / "endpoint.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in spec.items()), encoding="utf-8")
    return path


def mcq_items(n: int) -> list[McqItem]:
    return [McqItem(id=f"q{k}", source="s", question=f"第{k}题：下列哪一种药物属于第{k % 4 + 1}类？",
                    options={L: DRUGS[(k + j) % len(DRUGS)] for j, L in enumerate("ABCD")}, answer="ABCD"[k % 4])
            for k in range(n)]


def test_endpoint_files_are_validated_like_params(tmp_path, monkeypatch, root):
    monkeypatch.setenv("HOSTED_KEY", "hosted-key")
    path = endpoint_file(tmp_path, "http://127.0.0.1:9/v1")
    assert endpoint.load_endpoint(path, tmp_path).model == "fake-chat"
    path.write_text(path.read_text(encoding="utf-8").replace("model:", "modle:"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"endpoint\.yaml:3: modle: unknown key \(did you mean model\?\)"):
        endpoint.load_endpoint(path, tmp_path)
    path = endpoint_file(tmp_path, "http://127.0.0.1:9/v1")
    monkeypatch.delenv("HOSTED_KEY")
    doc = read_yaml(root / "params.yaml")
    doc["evaluate"]["models"]["gpt"] = str(path)
    with pytest.raises(ConfigError) as err:
        validate_params(doc, root=root)
    assert "evaluate.models.gpt: " in str(err.value) and "endpoint.yaml:5: api_key_env: environment variable " \
        "HOSTED_KEY is not set" in str(err.value)
    monkeypatch.setenv("HOSTED_KEY", "hosted-key")
    doc["evaluate"]["plain_models"] = ["gpt"]
    doc["evaluate"]["mcq"]["generation_items"] = 0
    with pytest.raises(ConfigError) as err:
        validate_params(doc, root=root)
    assert "evaluate.plain_models: 'gpt' is an endpoint" in str(err.value)
    assert "evaluate.mcq.generation_items: 0, but gpt answer(s) in generation mode only" in str(err.value)


def test_a_hosted_subject_answers_mcq_qa_and_the_probe_in_generation_mode(messy_server, tmp_path, monkeypatch):
    url, log = messy_server
    monkeypatch.setenv("HOSTED_KEY", "hosted-key")
    subject = ev.load_subject("gpt", str(endpoint_file(tmp_path, url)), tmp_path, [])
    assert subject.hosted and subject.model is None and url in subject.fingerprint and "2026-01" in subject.fingerprint
    usage = CallStats()
    generate = ev.generator(subject, CallCache(tmp_path / "calls.sqlite"), 8, 24, "gpt:mcq", stats=usage)
    items = mcq_items(40)
    result = ev.mcq_generation_task(generate, items, [], "general_medicine", n_boot=200, seed=0)
    summary = result["summary"]
    # the answers reason before the letter or refuse: letters are read where given, refusals count as no answer
    assert summary["n"] == 40 and 0 < summary["no_answer_rate"] < 0.3
    answered = [a for a in result["answers"].values() if a]
    assert len(answered) == round(40 * (1 - summary["no_answer_rate"]))
    assert usage.calls == 40 and usage.prompt_tokens > 0 and usage.refusals > 0
    body = json.loads(log.read_text().splitlines()[0])
    assert body["seed"] == 7  # the endpoint file's seed is sent
    sent = len(log.read_text().splitlines())
    again = ev.mcq_generation_task(ev.generator(subject, CallCache(tmp_path / "calls.sqlite"), 8, 24, "gpt:mcq"),
                                   items, [], "general_medicine", n_boot=200, seed=0)
    assert again["summary"] == summary and len(log.read_text().splitlines()) == sent  # a rerun costs nothing
    assert endpoint.estimated_cost(subject.endpoint, usage.prompt_tokens, usage.completion_tokens) == pytest.approx(
        (usage.prompt_tokens * 2.0 + usage.completion_tokens * 8.0) / 1e6)

    scale = builtin_scales()["patient_discrimination"]
    gen = ev.generator(subject, CallCache(tmp_path / "calls.sqlite"), 8, 24, "gpt:probe")
    out = probe.readout_result(scale, "generation", None, None, [("rural", "urban")], False, True, 200, 0,
                               generate=gen)
    answers = out["summary"]["answers"]
    assert answers["asked"] == len(scale.items) * len(probe.orders(len(scale.options)))
    assert answers["refusals"] > 0 and out["summary"]["n_items"] == len(scale.items) - answers["items_without_answer"]
    assert 0 <= out["summary"]["position_bias_index"] <= 1
    gap = out["group_gaps"]["gaps"]["rural-urban"]
    assert gap["n"] > 0 and (gap["ci"] is None or gap["ci"][0] <= gap["diff"] <= gap["ci"][1])


def test_generation_readout_never_defaults_a_refused_item():
    scale = builtin_scales()["cami_like"]
    refuse_first = {scale.items[0].text}

    def generate(chats):
        return ["抱歉，我无法回答。" if any(t in c[-1]["content"] for t in refuse_first) else "答案：A" for c in chats]

    scores, counts = probe.score_generation(scale, generate)
    k = len(probe.orders(len(scale.options)))
    assert counts == {"asked": len(scale.items) * k, "refusals": k, "unparseable": 0, "items_without_answer": 1}
    assert [s.item.id for s in scores] == [it.id for it in scale.items[1:]]
    # always "A" under every order: each option chosen once per two orders -> the debiased score is the midpoint
    assert all(abs(s.expected - scale.neutral) < 1e-9 for s in scores)
    assert all(all(s.first_wins) for s in scores)


# ------------------------------------------------------- log-likelihood from a served model
@pytest.fixture()
def serving(tmp_path):
    """start(model_dir, max_context) -> base URL of a fake vLLM serving that model's prompt log-probs."""
    servers = []

    def start(directory: Path, max_context: int = 4096, fail_rate: float = 0.2):
        log = tmp_path / f"served{len(servers)}.jsonl"
        srv, url = fake_openai.start(log, fail_rate=fail_rate, key="hosted-key",
                                     served=fake_openai.ServedModel(str(directory)), max_context=max_context)
        servers.append(srv)
        return url, log

    yield start
    for srv in servers:
        srv.shutdown()


@pytest.mark.parametrize("name", ["toy", "qwen2", "llama", "mistral"])
def test_a_served_model_scores_mcq_by_log_likelihood_like_the_local_weights(name, family_dirs, serving, tmp_path,
                                                                            monkeypatch):
    """Parity: the same weights scored here and through a server that returns their prompt
    log-probs (vLLM's echo) give the same log-likelihoods, picks and outcomes, under the
    chat template and as plain text; a rerun makes no request."""
    from medlab.evaluate.endpoint_loglik import endpoint_logprobs
    from medlab.evaluate.loglik import continuation_logprobs

    monkeypatch.setenv("HOSTED_KEY", "hosted-key")
    directory = family_dirs(name)
    url, log = serving(directory)
    spec = endpoint_file(tmp_path, url, logprobs=True, tokenizer=str(directory), max_failed_fraction=0.0)
    local = ev.load_subject(name, str(directory), tmp_path, [])
    toy = name == "toy"  # real families: fewer requests (a 152k-token vocabulary per forward pass; CI time)
    items = mcq_items(6 if toy else 3)
    for plain in ([], [name]):
        served = ev.load_subject(name, str(spec), tmp_path, plain)
        assert served.hosted and served.loglik and served.layout == ("plain" if plain else "chat")
        assert "tokenizer:" in served.fingerprint  # the tokenizer makes the ids sent: part of every task key
        local.layout = served.layout
        for scoring in ("letter", "option_text", "cloze") if toy else ("letter", "cloze"):
            here = ev.mcq_task(local, items, items[:1], "anesthesia", scoring, 8, n_boot=0, seed=0)
            calls = CallCache(tmp_path / "calls.sqlite")
            there = ev.mcq_task(served, items, items[:1], "anesthesia", scoring, 8, n_boot=0, seed=0, calls=calls)
            assert there["outcomes"] == here["outcomes"] and there["outcomes_norm"] == here["outcomes_norm"], scoring
            assert there["summary"] == here["summary"]
    pairs = [("丙泊酚的常见不良反应是", "低血压"), ("丙泊酚的常见不良反应是", "注射痛"), ("答案：", "B")]
    stats = CallStats()
    got = endpoint_logprobs(served.backend, served.tokenizer, pairs, CallCache(tmp_path / "c2.sqlite"), stats=stats)
    want = continuation_logprobs(local.model, local.tokenizer, pairs)
    for g, w in zip(got, want, strict=True):
        assert g.n_tokens == w.n_tokens and g.greedy == w.greedy and g.logprob == pytest.approx(w.logprob, abs=1e-4)
    assert stats.calls == 3 and stats.prompt_tokens > 0
    sent = len(log.read_text().splitlines())
    again = endpoint_logprobs(served.backend, served.tokenizer, pairs, CallCache(tmp_path / "c2.sqlite"))
    assert again == got and len(log.read_text().splitlines()) == sent  # a rerun makes no request
    statuses = [json.loads(line)["status"] for line in log.read_text().splitlines()]
    assert 429 in statuses  # the server rate-limited some first attempts; the client retried


def test_a_served_model_that_refuses_prompts_or_gives_no_logprobs_is_named(family_dirs, serving, messy_server,
                                                                          tmp_path, monkeypatch):
    from medlab.evaluate.endpoint_loglik import endpoint_logprobs
    from medlab.llm.base import LLMError

    monkeypatch.setenv("HOSTED_KEY", "hosted-key")
    directory = family_dirs("toy")
    url, _ = serving(directory, max_context=40, fail_rate=0.0)
    spec = endpoint_file(tmp_path, url, logprobs=True, tokenizer=str(directory), max_failed_fraction=0.5)
    served = ev.load_subject("toy", str(spec), tmp_path, [])
    long_context = "麻醉前成人禁食固体食物6小时，清饮料2小时。" * 4
    pairs = [("答案：", "A"), ("答案：", "B"), (long_context, "A")]
    stats = CallStats()
    got = endpoint_logprobs(served.backend, served.tokenizer, pairs, CallCache(tmp_path / "c.sqlite"), stats=stats)
    assert got[2].logprob == float("-inf") and stats.failed_http == 1  # refused (too long): counted, scores -inf
    assert all(s.logprob > float("-inf") for s in got[:2])
    items = [McqItem(id="long", source="s", question=long_context, options={"A": "甲", "B": "乙"}, answer="A")]
    spec = endpoint_file(tmp_path, url, logprobs=True, tokenizer=str(directory), max_failed_fraction=1.0)
    result = ev.mcq_task(ev.load_subject("toy", str(spec), tmp_path, []), items, [], "anesthesia", "letter", 8,
                         n_boot=0, seed=0, calls=CallCache(tmp_path / "c.sqlite"))
    assert result["outcomes"] == {"long": [0, 0]}  # no option scored: wrong, never a default letter
    spec = endpoint_file(tmp_path, url, logprobs=True, tokenizer=str(directory), max_failed_fraction=0.0)
    with pytest.raises(LLMError, match=r"1 of 3 prompts, more than evaluate\.models\.toy\.max_failed_fraction"):
        endpoint_logprobs(ev.load_subject("toy", str(spec), tmp_path, []).backend, served.tokenizer, pairs,
                          CallCache(tmp_path / "c.sqlite"))
    chat_only, _ = messy_server  # a chat API without a completions endpoint
    spec = endpoint_file(tmp_path, chat_only, logprobs=True, tokenizer=str(directory))
    with pytest.raises(LLMError, match=r"completions endpoint was not found \(HTTP 404\): check "
                                       r"evaluate\.models\.toy\.model"):
        endpoint_logprobs(ev.load_subject("toy", str(spec), tmp_path, []).backend, served.tokenizer, pairs[:1],
                          CallCache(tmp_path / "c3.sqlite"))
    spec.write_text(spec.read_text(encoding="utf-8").replace(f"tokenizer: {json.dumps(str(directory))}\n", ""),
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=r"endpoint\.yaml: tokenizer: logprobs: true needs the served model's "
                                          r"tokenizer folder"):
        endpoint.load_endpoint(spec, tmp_path)
