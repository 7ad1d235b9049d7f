"""Instruction / chat sets -> chats (lists of {"role", "content"} messages).

Formats (name in params -> layout, field names as in each data card):

* ``alpaca``: a JSON list of ``{instruction, input, output}`` (alpaca-zh, BELLE ...);
  the user turn is the instruction, then the input on a new line when present.
* ``moss``: MOSS-SFT JSONL, ``{conversation_id, chat: {turn_1: {Human: "<|Human|>: ...<eoh>",
  MOSS: "<|MOSS|>: ...<eom>"}, ...}}``; the speaker tags are stripped.
* ``sharegpt``: a JSON list of ``{id, conversations: [{from: human|gpt|system, value}]}``.
* ``huatuo_sft``: HuatuoGPT-II's SFT and pre-training-instruction JSONL, one
  ``{idx | id, conversations: [{from: human|gpt, value}]}`` per line.
* ``disc_med_sft``: DISC-Med-SFT JSONL, ``{_id, source, conversation: [{role: user|assistant,
  content}]}``.

Every reader streams (``iter_instructions``: a 470k-line DISC-Med-SFT file is never a list
in memory until the caller makes one) and checks each chat: it starts with the user, has
an answer, no empty turn. ``load_instructions`` adds the whole-file check: no id twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from medlab.formats import FormatError, unique_ids
from medlab.formats.text import existing_file, iter_json_array, iter_json_lines

FORMATS = ("alpaca", "moss", "sharegpt", "huatuo_sft", "disc_med_sft")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}
Chat = tuple[str, str, list[dict[str, str]]]  # (id, "file:line", messages)


def _check(where: str, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    roles = [m["role"] for m in messages if m["role"] != "system"]
    if not roles or roles[0] != "user" or "assistant" not in roles:
        raise FormatError(f"{where}: a chat must start with the user and contain an answer")
    if any(not m["content"].strip() for m in messages):
        raise FormatError(f"{where}: empty message")
    return messages


def _alpaca(path: Path, encoding: str) -> Iterator[Chat]:
    for index, (where, item) in enumerate(iter_json_array(path, encoding)):
        if not isinstance(item, dict):
            raise FormatError(f"{where}: expected an object")
        for field in ("instruction", "output"):
            if not isinstance(item.get(field), str):
                raise FormatError(f"{where}: {field}: missing or not a string")
        prompt = item["instruction"].strip()
        if str(item.get("input") or "").strip():
            prompt += "\n" + item["input"].strip()
        yield str(index), where, _check(where, [
            {"role": "user", "content": prompt}, {"role": "assistant", "content": item["output"].strip()}])


def _strip_moss(text: str, speaker: str) -> str:
    text = re.sub(rf"^\s*<\|{speaker}\|>\s*[:：]?\s*", "", text)
    return re.sub(r"\s*<(eoh|eom|eoc|eot)>\s*$", "", text).strip()


def _moss(path: Path, encoding: str) -> Iterator[Chat]:
    for index, (where, record) in enumerate(iter_json_lines(path, encoding)):
        chat = record.get("chat")
        if not isinstance(chat, dict) or not chat:
            raise FormatError(f"{where}: chat: missing or empty")
        messages = []
        for turn in sorted(chat, key=lambda k: int(re.sub(r"\D", "", k) or 0)):
            parts = chat[turn]
            if not isinstance(parts, dict) or "Human" not in parts or "MOSS" not in parts:
                raise FormatError(f"{where}: chat.{turn}: needs Human and MOSS")
            messages.append({"role": "user", "content": _strip_moss(parts["Human"], "Human")})
            messages.append({"role": "assistant", "content": _strip_moss(parts["MOSS"], "MOSS")})
        yield str(record.get("conversation_id", index)), where, _check(where, messages)


def _from_value_turns(where: str, turns) -> list[dict[str, str]]:
    if not isinstance(turns, list):
        raise FormatError(f"{where}: conversations: missing or not a list")
    messages = []
    for k, turn in enumerate(turns):
        role = SHAREGPT_ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get("value"), str):
            raise FormatError(f"{where}: conversations[{k}]: expected {{from: human|gpt|system, value}}")
        messages.append({"role": role, "content": turn["value"].strip()})
    return _check(where, messages)


def _sharegpt(path: Path, encoding: str) -> Iterator[Chat]:
    for index, (where, item) in enumerate(iter_json_array(path, encoding)):
        turns = item.get("conversations") if isinstance(item, dict) else None
        yield str(item.get("id", index)), where, _from_value_turns(where, turns)


def _huatuo_sft(path: Path, encoding: str) -> Iterator[Chat]:
    for index, (where, record) in enumerate(iter_json_lines(path, encoding)):
        ident = record.get("idx", record.get("id", index))
        yield str(ident), where, _from_value_turns(where, record.get("conversations"))


def _disc_med_sft(path: Path, encoding: str) -> Iterator[Chat]:
    for index, (where, record) in enumerate(iter_json_lines(path, encoding)):
        conversation = record.get("conversation")
        if not isinstance(conversation, list):
            raise FormatError(f"{where}: conversation: missing or not a list")
        messages = []
        for k, turn in enumerate(conversation):
            if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant", "system") \
                    or not isinstance(turn.get("content"), str):
                raise FormatError(f"{where}: conversation[{k}]: expected {{role: user|assistant, content}}")
            messages.append({"role": turn["role"], "content": turn["content"].strip()})
        yield str(record.get("_id", index)), where, _check(where, messages)


READERS = {"alpaca": _alpaca, "moss": _moss, "sharegpt": _sharegpt, "huatuo_sft": _huatuo_sft,
           "disc_med_sft": _disc_med_sft}


def iter_instructions(path: Path | str, fmt: str, encoding: str = "utf-8") -> Iterator[Chat]:
    """(id, "file:line", messages) for each chat in a file of one of ``FORMATS``, streamed."""
    if fmt not in FORMATS:
        raise FormatError(f"unknown instruction format {fmt!r} (expected one of {', '.join(FORMATS)})")
    return READERS[fmt](existing_file(path), encoding)


def load_instructions(path: Path | str, fmt: str, encoding: str = "utf-8", limit: int | None = None) -> list[Chat]:
    """Every chat of the file (the first ``limit``); an id twice is an error naming both lines."""
    return unique_ids(islice(iter_instructions(path, fmt, encoding), limit), lambda c: c[0], lambda c: c[1])
