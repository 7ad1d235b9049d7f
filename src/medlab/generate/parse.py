"""Parsing the teacher's output formats (the ones prompts.yaml asks for).

An output that does not parse raises ``ParseError``; the generate stage counts it
and keeps it in the rejects file with the reason, never silently.
"""

from __future__ import annotations

import re


class ParseError(ValueError):
    """Teacher output not in the requested format."""


# Real chat models dress the requested markers in markdown ("**问题：**", "### 任务1",
# "- 患者：") and open with a preamble ("好的，以下是……"): the markers below allow the
# emphasis, heading, list and quote characters around them; text before the first marker
# is not part of any field. Full-width and ASCII colons are both accepted.
_MD = r"[*_#>\-\s]*"  # markdown decoration around a marker
QA = re.compile(rf"问题{_MD}[：:]{_MD}(?P<q>.+?){_MD}回答{_MD}[：:][*_\s]*(?P<a>.+)", re.S)
TURN = re.compile(rf"^{_MD}(患者|医生){_MD}[：:][*_\s]*(.*)$")
TASK_HEADER = re.compile(r"^[*_#>\s]*任务\s*\d+[*_\s]*[：:]?[*_\s]*$", re.M)
ANSWER = re.compile(rf"(?:^|\n){_MD}回答{_MD}[：:][*_\s]*(?P<a>.+)", re.S)
TASK = re.compile(rf"指令{_MD}[：:]{_MD}(?P<i>.+?){_MD}回答{_MD}[：:][*_\s]*(?P<a>.+)", re.S)


def parse_qa(text: str) -> tuple[str, str]:
    """'问题：…\\n回答：…' -> (question, answer)."""
    match = QA.search(text)
    if not match:
        raise ParseError("no '问题：' followed by '回答：'")
    question, answer = match.group("q").strip(), match.group("a").strip()
    if not question or not answer:
        raise ParseError("empty question or answer")
    return question, answer


def parse_answer(text: str) -> str:
    """'回答：…' -> the answer (the question was written by medlab, not by the teacher)."""
    match = ANSWER.search(text)
    if not match or not match.group("a").strip():
        raise ParseError("no '回答：' followed by an answer")
    return match.group("a").strip()


def parse_dialogue(text: str) -> list[dict[str, str]]:
    """'患者：…\\n医生：…' lines -> chat messages (patient = user, doctor = assistant)."""
    messages: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = TURN.match(line)
        if match:
            role = "user" if match.group(1) == "患者" else "assistant"
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"] += match.group(2).strip()
            else:
                messages.append({"role": role, "content": match.group(2).strip()})
        elif messages:  # a wrapped line continues the current turn
            messages[-1]["content"] += line.strip()
        # else: a preamble line before the first turn ("好的，以下是改写后的对话：") is dropped
    if not messages:
        raise ParseError("no line starts with '患者：' or '医生：'")
    if messages[0]["role"] != "user":
        raise ParseError("dialogue does not start with the patient")
    if not any(m["role"] == "assistant" for m in messages):
        raise ParseError("dialogue has no doctor turn")
    if any(not m["content"] for m in messages):
        raise ParseError("empty turn")
    while messages[-1]["role"] != "assistant":  # a trailing patient turn has no answer to learn
        messages.pop()
    return messages


def parse_tasks(text: str) -> list[tuple[str, str]]:
    """'任务1\\n指令：…\\n回答：…' blocks -> [(instruction, answer)]; bad blocks are skipped
    only if at least one block parses (a teacher listing several tasks may botch one)."""
    blocks = [b for b in TASK_HEADER.split(text) if b.strip()]
    tasks = []
    for block in blocks:
        match = TASK.search(block)
        if match and match.group("i").strip() and match.group("a").strip():
            tasks.append((match.group("i").strip(), match.group("a").strip()))
    if not tasks:
        raise ParseError("no '指令：…回答：…' task found")
    return tasks
