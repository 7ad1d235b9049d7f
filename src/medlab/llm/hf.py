"""Any local transformers causal LM as a chat backend: batched generation, left padding,
the tokenizer's chat template (or, for a base model without one, a plain-text layout).

Loaded through ``medlab.runtime`` (device, dtype; a published LoRA recipe as base +
adapters); cached completions are keyed by the model's content fingerprint.

Prompts of a batch are padded on the left so that every row's last prompt token is
adjacent to its first generated token (right padding would put pad tokens between
them). Requests are grouped by decoding parameters so each batch shares one setting.
Sampling (temperature > 0) is seeded per batch from the requests, so a batch of the
same requests gives the same texts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from medlab.llm.base import ChatRequest, Completion, LLMError

PLAIN_USER, PLAIN_ASSISTANT = "问：", "答："  # the plain-text dialogue layout for base models
END_OF_TURN = ("<|end|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>")


def plain_prompt(messages) -> str:
    """A conversation as plain text for a base model without a chat template:
    the system text, then ``问：...`` / ``答：...`` lines, ending with ``答：`` to answer."""
    lines = [m["content"] + "\n" for m in messages if m["role"] == "system"]
    for m in messages:
        if m["role"] == "user":
            lines.append(f"{PLAIN_USER}{m['content']}\n")
        elif m["role"] == "assistant":
            lines.append(f"{PLAIN_ASSISTANT}{m['content']}\n")
    return "".join(lines) + PLAIN_ASSISTANT


class HFBackend:
    name = "hf"

    def __init__(self, name_or_path: str, batch_size: int = 8, revision: str = "main",
                 trust_remote_code: bool = False, model=None, tokenizer=None, runtime=None,
                 layout: str = "auto"):
        """``layout``: chat (the tokenizer's template), plain (``plain_prompt``, for base
        models) or auto (chat if the tokenizer has a template)."""
        from medlab.runtime import (
            ModelLoadError,
            fingerprint,
            load_model_and_tokenizer,
            load_published,
        )

        if model is None or tokenizer is None:
            try:
                if Path(name_or_path).is_dir():
                    model, tokenizer = load_published(name_or_path, runtime)
                else:
                    model, tokenizer = load_model_and_tokenizer(name_or_path, runtime, revision,
                                                                trust_remote_code=trust_remote_code)
            except ModelLoadError as exc:
                raise LLMError(str(exc)) from exc
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if layout == "chat" and not has_template:
            raise LLMError(f"{name_or_path}: the tokenizer has no chat template (use layout plain)")
        self.layout = ("chat" if has_template else "plain") if layout == "auto" else layout
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.hf_model, self.tokenizer = model.eval(), tokenizer
        # Stop at the model's EOS id(s) (generation_config may list several) and at the
        # end-of-turn token of the family's template, if the vocabulary has one.
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        vocab = tokenizer.get_vocab()
        self.stop_ids = list(dict.fromkeys([tokenizer.eos_token_id, *eos] + [vocab[t] for t in END_OF_TURN
                                                                            if t in vocab]))
        self.stop_ids = [t for t in self.stop_ids if t is not None]
        self.model = self.identity(fingerprint(name_or_path, revision), self.layout)
        self.batch_size = batch_size

    @staticmethod
    def identity(fingerprint: str, layout: str) -> str:
        """What this backend's cached answers are keyed by besides the request: the model's
        content, how prompts are laid out, and the code that generates them (this module
        and all it imports, ``medlab.cachekey.code_hash``): a change to decoding here is
        never answered from an older cache."""
        from medlab.cachekey import code_hash

        return f"{fingerprint}/{layout}+code:{code_hash('medlab.llm.hf')}"

    @torch.no_grad()
    def generate(self, requests: list[ChatRequest]) -> list[Completion]:
        out: list[Completion | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(tuple(sorted(r.decoding.as_dict().items())), []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start:start + self.batch_size]
                for i, completion in zip(batch, self._generate_batch([requests[i] for i in batch]),
                                         strict=True):
                    out[i] = completion
        return out  # type: ignore[return-value]

    def _generate_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        tok = self.tokenizer
        if self.layout == "chat":  # the template writes any BOS itself
            prompts = [tok.apply_chat_template(list(r.messages), tokenize=False, add_generation_prompt=True)
                       for r in requests]
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        else:  # plain text starts as the model's training text did (its BOS, if it has one)
            prompts = [plain_prompt(r.messages) for r in requests]
            enc = tok(prompts, return_tensors="pt", padding=True)
        enc = {k: v.to(self.hf_model.device) for k, v in enc.items()}
        d = requests[0].decoding
        sample = d.temperature > 0
        if sample:
            seed = int(hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:8], 16)
            torch.manual_seed(seed)
        kwargs = dict(max_new_tokens=d.max_new_tokens, do_sample=sample,
                      pad_token_id=tok.pad_token_id, eos_token_id=self.stop_ids)
        if self.layout == "plain":  # a base model goes on to write the next question itself
            kwargs.update(stop_strings=["\n" + PLAIN_USER], tokenizer=tok)
        if sample:
            kwargs.update(temperature=d.temperature, top_p=d.top_p)
        generated = self.hf_model.generate(**enc, **kwargs)
        new = generated[:, enc["input_ids"].shape[1]:]
        completions = []
        for row, mask in zip(new, enc["attention_mask"], strict=True):
            ids = row.tolist()
            stops = [k for k, t in enumerate(ids) if t in self.stop_ids]
            if stops:  # count up to and including the stop token, not the padding after it
                ids = ids[:stops[0] + 1]
            text = tok.decode(ids, skip_special_tokens=True)
            stopped = bool(stops)
            if self.layout == "plain":
                stopped = stopped or ("\n" + PLAIN_USER) in text
                text = text.split("\n" + PLAIN_USER)[0]
            finish = "stop" if stopped or len(ids) < d.max_new_tokens else "length"
            completions.append(Completion(text=text.strip(), prompt_tokens=int(mask.sum()),
                                          completion_tokens=len(ids), finish_reason=finish))
        return completions
