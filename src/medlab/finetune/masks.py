"""Which tokens of a chat are the assistant's: the answer mask SFT trains on.

Two ways, picked per tokenizer:

* **Generation markers.** A template that wraps assistant turns in
  ``{% generation %}`` (medlab's own) lets transformers return the mask directly
  (``return_assistant_tokens_mask``).
* **Prefix rendering** (stock templates: ChatML, Llama-3 headers, ``[INST]`` — none
  has markers, and transformers then returns an all-zero mask). For each assistant
  turn ``i`` render ``messages[:i]`` with the generation prompt and ``messages[:i+1]``;
  the characters between the two renderings are what the turn adds. The whole
  conversation is tokenised once, with offsets, and a token belongs to the turn when
  its first character lies in that span. Template text after the turn's end-of-turn
  token (ChatML's trailing newline) is not trained: the model must learn to stop at
  ``<|im_end|>``, not to print the newline the template puts between turns.
  Arithmetic for ChatML: ``<|im_start|>assistant\\n`` closes the prompt; the turn adds
  ``低血压。<|im_end|>\\n``; labels = tokens of ``低血压。`` + ``<|im_end|>``.
  A template whose renderings are not prefixes of each other (one that rewrites earlier
  turns, e.g. strips reasoning from past answers) cannot be masked this way: an error
  names the model instead of training on a silent zero mask.
"""

from __future__ import annotations

import re

GENERATION_MARKER = re.compile(r"{%-?\s*generation\s*-?%}")


class TemplateError(ValueError):
    """A chat template the answer mask cannot be derived from; the message names the model."""


def has_generation_markers(tokenizer) -> bool:
    return bool(GENERATION_MARKER.search(getattr(tokenizer, "chat_template", None) or ""))


def _name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def assistant_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the (start, end) character span each assistant turn adds."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        upto = tokenizer.apply_chat_template(messages[:i + 1], tokenize=False)
        if not (upto.startswith(before) and text.startswith(upto)):
            raise TemplateError(
                f"{_name(tokenizer)}: the chat template's rendering of the first {i} messages (with the generation "
                f"prompt) is not a prefix of its rendering of the first {i + 1}, so the answer tokens of turn {i} "
                "cannot be found; give the model a template whose turns only append (or one with "
                "{% generation %} markers)")
        if message["content"] and message["content"].strip() not in upto[len(before):]:
            raise TemplateError(f"{_name(tokenizer)}: assistant turn {i}'s text is not where the chat template "
                                "puts that turn")
        spans.append((len(before), len(upto)))
    return text, spans


def _special_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False))
    return ids


def prefix_masks(tokenizer, chats: list[list[dict[str, str]]]) -> list[tuple[list[int], list[int]]]:
    """(input_ids, assistant mask) of each chat, by prefix rendering (see the module doc)."""
    rendered = [assistant_spans(tokenizer, messages) for messages in chats]
    enc = tokenizer([t for t, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
    special = _special_ids(tokenizer)
    out = []
    for (_, spans), ids, offsets in zip(rendered, enc["input_ids"], enc["offset_mapping"], strict=True):
        mask = [0] * len(ids)
        for start, end in spans:
            inside = [k for k, (s, _) in enumerate(offsets) if start <= s < end]
            ends = [k for k in inside if ids[k] in special]
            if ends:  # the turn's end-of-turn token closes it; template text after it is not trained
                inside = [k for k in inside if k <= ends[-1]]
            for k in inside:
                mask[k] = 1
        out.append((list(ids), mask))
    return out


def marker_masks(tokenizer, chats: list[list[dict[str, str]]]) -> list[tuple[list[int], list[int]]]:
    out = []
    for messages in chats:
        enc = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
        out.append((list(enc["input_ids"]), list(enc["assistant_masks"])))
    return out


def answer_masks(tokenizer, chats: list[list[dict[str, str]]]) -> list[tuple[list[int], list[int]]]:
    """(input_ids, mask: 1 on every assistant token incl. its end-of-turn token) per chat."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(f"{_name(tokenizer)}: the tokenizer has no chat template (pretrain.pretrained "
                            "adds medlab's when continue_training sets one up, or give the model one)")
    if has_generation_markers(tokenizer):
        return marker_masks(tokenizer, chats)
    return prefix_masks(tokenizer, chats)
