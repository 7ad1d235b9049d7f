"""A local OpenAI-compatible chat server for tests and benchmarks (not a model).

    python fake_openai.py --log calls.jsonl [--port 0] [--delay-ms 20] [--fail-rate 0.2] [--key test-key] [--messy]

Prints ``PORT <n>`` once listening. ``POST /v1/chat/completions`` answers in the format
the prompt asks for (medlab's prompts: QA, dialogue, numbered tasks, rubric JSON, pairwise
verdict) with text derived deterministically from the request body, so identical requests
get identical answers. It misbehaves on purpose: a ``--fail-rate`` share of request bodies
get HTTP 429 (with ``retry-after-ms``) on their first attempt and another share HTTP 500,
so clients must retry; a wrong API key gets 401. ``--messy`` answers the way real chat
models do rather than in our parsers' exact format: a preamble (好的，以下是……), markdown
emphasis and headings, list dashes, JSON in a code fence followed by commentary, full-width
digits, and for a share of judge prompts a refusal. Markers in a prompt force a case:
``[[400]]`` -> HTTP 400 (the request is refused), ``[[cut]]`` -> ``finish_reason: length``
with the text cut short, ``[[slow]]`` -> a 0.4 s answer. With ``--serve-model DIR`` (or
``serve(..., served=ServedModel(DIR))``), ``POST /v1/completions`` with ``echo`` and
``logprobs`` answers a prompt of token ids the way vLLM does: the log-probability of every
prompt token under that local model (the first has none), each position's top token, and
one generated token; a prompt longer than ``--max-context`` tokens gets HTTP 400. Every attempt is appended to the
``--log`` JSONL file (``{"body": sha256, "messages": sha256, "status": code, "seed",
"in_flight"}``) so a test can check what was requested twice, what was sent and how many
requests were in flight at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHARS = "疾病症状药物检查治疗诊断患者医生麻醉手术术前术后剂量反应风险评估护理康复饮食休息复诊监测指标功能感染炎症疼痛发热咳嗽血压心率呼吸肝肾脑心肺胃肠骨关节皮肤血液免疫代谢内分泌神经精神"


RUBRIC_NAMES = {"0到10分": ("coherence", "professionalism", "usefulness", "harmlessness", "friendliness"),
                "1到5": ("proactivity", "accuracy", "helpfulness", "linguistic_quality")}
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def answer_for(prompt: str, digest: str, messy: bool = False) -> str:
    rng = random.Random(digest)

    def phrase(n: int) -> str:
        return "".join(rng.choice(CHARS) for _ in range(n))

    preamble = rng.choice(["好的，以下是根据您的要求生成的内容：\n\n", "当然可以！\n\n", ""]) if messy else ""
    for scale, names in RUBRIC_NAMES.items():
        if scale in prompt and "只输出一个JSON对象" in prompt:  # rubric judges
            low, high = (0, 10) if scale == "0到10分" else (1, 5)
            scores = {n: rng.randint(max(low, high - 4), high) for n in names}
            if not messy:
                return json.dumps(scores)
            style = rng.random()
            if style < 0.15 and "上次的输出无法解析" not in prompt:
                return "抱歉，我无法对这段内容进行评价。"
            if style < 0.5:
                return f"```json\n{json.dumps(scores, indent=2)}\n```\n以上评分综合考虑了回答的准确性和表达。"
            return preamble + "\n".join(f"- **{n}**：{str(v).translate(FULL_WIDTH)}分" for n, v in scores.items())
    if "请只回答选项字母" in prompt:  # multiple choice / Likert item: a letter among those shown
        last_question = prompt.split("请只回答选项字母")[-2]  # few-shot examples come before it
        letters = re.findall(r"^([A-G])\. ", last_question, re.M) or ["A"]
        letter = rng.choice(letters)
        if not messy:
            return letter
        style = rng.random()
        if style < 0.1:
            return "抱歉，我无法对这个问题作出选择。"
        if style < 0.5:
            return f"选项{letters[0]}不够全面。综合分析，正确答案是**{letter}**。"
        return f"{letter}"
    if "是否满足这条标准" in prompt:  # a per-case rubric criterion, marked met or not
        met = rng.choice(["满足", "不满足"])
        return f"**{met}**。理由：对话中{phrase(6)}。" if messy else met
    if "更好：1" in prompt:  # pairwise verdict
        verdict = rng.choice(["1", "2", "平局"])
        return f"**更好：{verdict}**\n\n理由：两个回答都{phrase(8)}。" if messy else f"更好：{verdict}"
    if "任务1" in prompt:  # self-instruct: numbered tasks
        count = int(next((c for c in prompt.split("请再编写")[1][:3] if c.isdigit()), "2"))
        if messy:
            return preamble + "\n\n".join(f"### 任务{k + 1}\n**指令：** 请说明{phrase(10)}。\n**回答：** {phrase(24)}。"
                                            for k in range(count))
        return "\n\n".join(f"任务{k + 1}\n指令：请说明{phrase(10)}。\n回答：{phrase(24)}。" for k in range(count))
    if "患者：……" in prompt:  # dialogue
        if messy:
            return (preamble + f"- **患者**：{phrase(12)}？\n- **医生**：{phrase(30)}。\n"
                    f"- **患者**：{phrase(8)}？\n- **医生**：{phrase(20)}。")
        return f"患者：{phrase(12)}？\n医生：{phrase(30)}。\n患者：{phrase(8)}？\n医生：{phrase(20)}。"
    if messy:
        return preamble + f"**问题：** {phrase(12)}？\n\n**回答：** {phrase(40)}。\n\n希望对您有所帮助！"
    return f"问题：{phrase(12)}？\n回答：{phrase(40)}。"


def messages_hash(messages) -> str:
    """How tests identify a call on both sides (server log and client cache)."""
    return hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


class ServedModel:
    """A local causal LM's prompt log-probabilities, as vLLM's completions endpoint echoes
    them (loaded on the first request, so a pipeline can serve a model it has yet to train)."""

    def __init__(self, directory: str):
        self.directory = directory
        self.lock = threading.Lock()
        self.model = self.tokenizer = None

    def echo(self, ids: list[int]) -> dict:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with self.lock:  # one forward pass at a time (and one load)
            if self.model is None:
                torch.set_num_threads(1)  # a test server beside the pipeline it serves
                self.tokenizer = AutoTokenizer.from_pretrained(self.directory)
                self.model = AutoModelForCausalLM.from_pretrained(self.directory, torch_dtype=torch.float32).eval()
            with torch.no_grad():
                logits = self.model(torch.tensor([ids])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        nxt = int(logprobs[-1].argmax())
        ids = list(ids) + [nxt]
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        # position t - 1 predicts token t: the token's log-prob and the top one, all at once
        token_lp = logprobs.gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1).tolist()
        top_lp, top_id = (values.tolist() for values in logprobs.max(dim=-1))
        top_tokens = self.tokenizer.convert_ids_to_tokens(top_id)
        token_logprobs = [None, *token_lp]
        top = [None] + [{tokens[t]: token_lp[t - 1], top_tokens[t - 1]: top_lp[t - 1]}
                        for t in range(1, len(ids))]
        offsets, at = [], 0
        for token in tokens:
            offsets.append(at)
            at += len(token)
        return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-openai/1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        digest = hashlib.sha256(raw).hexdigest()
        cfg = self.server.cfg
        with cfg["lock"]:
            attempt = cfg["attempts"].get(digest, 0) + 1
            cfg["attempts"][digest] = attempt

        try:
            messages = json.loads(raw)["messages"]
        except (ValueError, KeyError):
            messages = None

        entered = 0  # requests in flight when this one arrived (itself included)
        try:
            seed = json.loads(raw).get("seed")
        except ValueError:
            seed = None

        def log(status: int) -> None:
            entry = {"body": digest, "messages": messages_hash(messages), "status": status, "attempt": attempt,
                     "seed": seed, "in_flight": entered}
            with cfg["lock"], open(cfg["log"], "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")

        completions = self.path.rstrip("/").endswith("/v1/completions") and cfg["served"] is not None
        if not self.path.rstrip("/").endswith("/chat/completions") and not completions:
            log(404)
            return self._send(404, {"error": {"message": "not found"}})
        if self.headers.get("Authorization") != f"Bearer {cfg['key']}":
            log(401)
            return self._send(401, {"error": {"message": "invalid api key", "type": "invalid_request_error",
                                              "code": "invalid_api_key"}})
        if completions:
            return self._echo(json.loads(raw), digest, attempt, log)
        request = json.loads(raw)
        prompt = "\n".join(m["content"] for m in request["messages"])
        with cfg["lock"]:
            cfg["in_flight"] += 1
            entered = cfg["in_flight"]
        try:
            time.sleep(0.4 if "[[slow]]" in prompt else cfg["delay"])
        finally:
            with cfg["lock"]:
                cfg["in_flight"] -= 1
        if "[[400]]" in prompt:
            log(400)
            return self._send(400, {"error": {"message": "This model's maximum context length is 4096 tokens",
                                              "type": "invalid_request_error", "code": "context_length_exceeded"}})
        bucket = int(digest[:8], 16) / 16**8
        if attempt == 1 and bucket < cfg["fail_rate"] / 2:
            log(429)
            return self._send(429, {"error": {"message": "rate limited"}}, {"retry-after-ms": "5"})
        if attempt == 1 and bucket < cfg["fail_rate"]:
            log(500)
            return self._send(500, {"error": {"message": "internal error"}})
        text = answer_for(prompt, digest, cfg["messy"])
        finish = "stop"
        if "[[cut]]" in prompt:
            text, finish = text[:len(text) // 3], "length"
        log(200)
        self._send(200, {
            "id": f"chatcmpl-{digest[:12]}", "object": "chat.completion", "created": 0,
            "model": request["model"],
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(text),
                      "total_tokens": len(prompt) + len(text)},
        })


    def _echo(self, request: dict, digest: str, attempt: int, log):
        """``/v1/completions`` with echo + logprobs over a prompt of token ids (vLLM's answer)."""
        cfg = self.server.cfg
        ids = request.get("prompt")
        if not (isinstance(ids, list) and ids and all(isinstance(i, int) for i in ids)):
            log(400)
            return self._send(400, {"error": {"message": "this fake scores prompts of token ids only"}})
        if len(ids) > cfg["max_context"]:
            log(400)
            return self._send(400, {"error": {"message": f"This model's maximum context length is "
                                                         f"{cfg['max_context']} tokens, the prompt has {len(ids)}"}})
        bucket = int(digest[:8], 16) / 16**8
        if attempt == 1 and bucket < cfg["fail_rate"]:
            log(429)
            return self._send(429, {"error": {"message": "rate limited"}}, {"retry-after-ms": "5"})
        echoed = cfg["served"].echo(ids)
        log(200)
        self._send(200, {
            "id": f"cmpl-{digest[:12]}", "object": "text_completion", "created": 0, "model": request["model"],
            "choices": [{"index": 0, "text": "".join(echoed["tokens"]), "finish_reason": "length",
                         "logprobs": echoed}],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1},
        })


def serve(port: int, log: str, delay_ms: float, fail_rate: float, key: str, messy: bool = False,
          served: ServedModel | None = None, max_context: int = 4096) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.cfg = {"log": log, "delay": delay_ms / 1000, "fail_rate": fail_rate, "key": key, "messy": messy,
                  "attempts": {}, "lock": threading.Lock(), "in_flight": 0, "served": served,
                  "max_context": max_context}
    return server


def start(log, port: int = 0, delay_ms: float = 0.0, fail_rate: float = 0.0, key: str = "test-key",
          **options) -> tuple[ThreadingHTTPServer, str]:
    """``serve`` in a daemon thread of this process (tests): the server and its base URL."""
    server = serve(port, str(log), delay_ms, fail_rate, key, **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.2)
    parser.add_argument("--key", default="test-key")
    parser.add_argument("--messy", action="store_true", help="answer like a real chat model, not in our format")
    parser.add_argument("--serve-model", help="a local model folder whose prompt log-probs /v1/completions returns")
    parser.add_argument("--max-context", type=int, default=4096)
    args = parser.parse_args()
    served = ServedModel(args.serve_model) if args.serve_model else None
    server = serve(args.port, args.log, args.delay_ms, args.fail_rate, args.key, args.messy, served, args.max_context)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
