"""Multiple-choice scoring: log-likelihood of letters or option texts, option rotation,
generation with explicit answer extraction, and the accuracy family that comes out.

An item with n options is asked n times, once per cyclic shift of its option texts over
the letters (shift k puts the text that was under letter i under letter (i + k) mod n).
Per item and shift the scorer picks the option with the highest log-likelihood:

* ``letter``: the continuation is the option letter after the prompt (one forward pass
  per prompt: the letters' next-token log-probabilities);
* ``text``: the continuation is the option's text; ``acc_norm`` divides each option's
  log-likelihood by its length in characters, as lm-evaluation-harness does (with
  letters as continuations the two are the same).

and, with ``show_options=False`` (*cloze*, lm-eval's usual way to score full option
texts), the question is asked without its options and each option's text is scored as
the answer. No order is shown, so there is nothing to rotate: acc_rotation = acc.
Small models cannot yet bind answers to letters (our tiny models pick letters at
chance after fine-tuning while cloze scoring finds their knowledge), so the embedded
default reports cloze as its headline and the other two beside it.

From the per-shift picks (``McqResult``), ``summarise`` gives:

* ``acc``: original option order;  ``acc_rotation_mean``: mean over all shifts — a model
  that always picks position A gets exactly 1/n here (the answer sits under A in one
  shift of n);
* ``acc_rotation``: *rotation-consistent* accuracy, right under every shift — what a
  model knows regardless of where the answer sits (always-A gets 0; a uniform random
  guesser (1/n)^n);
* ``position_bias``: share of picks that are the first-listed option (1/n unbiased).

Generation mode (for API models): the answer is parsed from greedy text; "no answer"
and "ambiguous" are wrong and reported as rates, never replaced by a default letter.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medlab.evaluate.loglik import Scored, continuation_logprobs
from medlab.records import McqItem
from medlab.stats import bootstrap_ci

INSTRUCTION = "以下是{domain}单项选择题，请选出唯一正确的答案。"
ANSWER_CUE = "答案："
CHAT_CUE = "请只回答选项字母。"
CLOZE_INSTRUCTION = "以下是{domain}问题及其答案。"


@dataclass(frozen=True)
class Shown:
    """An item as asked: letters -> texts after a shift, and the correct letter."""

    item: McqItem
    shift: int
    options: dict[str, str]
    answer: str
    original: dict[str, str]  # letter shown -> the item's original letter


def rotate(item: McqItem, shift: int) -> Shown:
    """Cyclic shift of the option texts over the letters (0 = the item as written)."""
    letters = list(item.options)
    n = len(letters)
    shown, original = {}, {}
    for i, letter in enumerate(letters):
        source = letters[(i - shift) % n]  # text at i came from i - shift
        shown[letter] = item.options[source]
        original[letter] = source
    answer = next(k for k, v in original.items() if v == item.answer)
    return Shown(item, shift, shown, answer, original)


def question_block(question: str, options: dict[str, str], context: str | None = None) -> str:
    head = f"{context.strip()}\n" if context else ""
    return head + question.strip() + "\n" + "\n".join(f"{k}. {v}" for k, v in options.items())


def _cloze_block(item: McqItem) -> str:
    return (f"{item.context.strip()}\n" if item.context else "") + item.question.strip()


def render_plain(shown: Shown, shots: Sequence[McqItem], domain: str, show_options: bool = True) -> str:
    """Plain exam layout for base models: instruction, k solved examples, the question, cue."""
    parts = [INSTRUCTION.format(domain=domain) if show_options else CLOZE_INSTRUCTION.format(domain=domain)]
    for shot in shots:
        if show_options:
            parts.append(question_block(shot.question, shot.options, shot.context) + f"\n{ANSWER_CUE}{shot.answer}")
        else:
            parts.append(_cloze_block(shot) + f"\n{ANSWER_CUE}{shot.options[shot.answer]}")
    body = question_block(shown.item.question, shown.options, shown.item.context) if show_options \
        else _cloze_block(shown.item)
    parts.append(body + f"\n{ANSWER_CUE}")
    return "\n\n".join(parts)


def render_chat(tokenizer, shown: Shown, shots: Sequence[McqItem], domain: str, show_options: bool = True) -> str:
    """The same as a chat (shots as earlier turns); the answer starts the assistant turn."""
    return tokenizer.apply_chat_template(chat_messages(shown, shots, domain, show_options), tokenize=False,
                                         add_generation_prompt=True)


def chat_messages(shown: Shown, shots: Sequence[McqItem], domain: str, show_options: bool = True) -> list[dict]:
    """The chat an item is asked as (for chat templates and API models)."""
    if show_options:
        messages = [{"role": "system", "content": INSTRUCTION.format(domain=domain)}]
        for shot in shots:
            messages += [{"role": "user", "content": question_block(shot.question, shot.options, shot.context)
                          + "\n" + CHAT_CUE},
                         {"role": "assistant", "content": shot.answer}]
        messages.append({"role": "user", "content": question_block(shown.item.question, shown.options,
                                                                     shown.item.context) + "\n" + CHAT_CUE})
    else:  # cloze: a plain question, as in the fine-tuning data; the answer text follows
        messages = []
        for shot in shots:
            messages += [{"role": "user", "content": _cloze_block(shot)},
                         {"role": "assistant", "content": shot.options[shot.answer]}]
        messages.append({"role": "user", "content": _cloze_block(shown.item)})
    return messages


def render(tokenizer, shown: Shown, shots: Sequence[McqItem], domain: str, layout: str,
           show_options: bool = True) -> str:
    if layout == "plain":
        return render_plain(shown, shots, domain, show_options)
    return render_chat(tokenizer, shown, shots, domain, show_options)


@dataclass
class McqResult:
    """One item under every shift: per shift, the picked original letter and per-option scores."""

    item: McqItem
    picks: list[str] = field(default_factory=list)  # original letter picked, per shift
    picks_norm: list[str] = field(default_factory=list)  # the same by length-normalised score (text mode)
    first: list[bool] = field(default_factory=list)  # the pick was the first-listed option
    probs: list[dict[str, float]] = field(default_factory=list)  # original letter -> P among options
    extracted: list[str | None] = field(default_factory=list)  # generation mode: None = no answer

    def correct(self, norm: bool = False) -> list[bool]:
        picks = self.picks_norm if norm else self.picks
        return [p == self.item.answer for p in picks]


def single_answer(items: Sequence[McqItem]) -> tuple[list[McqItem], int]:
    """Items with one correct letter (log-likelihood scoring picks one), and how many were skipped."""
    keep = [i for i in items if len(i.answer) == 1]
    return keep, len(items) - len(keep)


SCORINGS = {  # name -> (continuation, options shown)
    "letter": ("letter", True),
    "option_text": ("text", True),
    "cloze": ("text", False),
}


class PairScores:
    """``continuation_logprobs`` of one local model, remembered by (context, continuation).

    ``prefetch(pairs)`` scores many pairs in one call, so pairs that different scorings ask
    of the same context share its forward pass (the letter and option-text scorings of an
    MCQ show the same prompt: asked apart, each runs it; 7 s of the 23 s a model's nine MCQ
    columns took on 2 cores). Calling it with pairs answers from what is known and scores
    the rest; it is the ``scorer`` that ``score_loglik`` takes."""

    def __init__(self, model, tokenizer, batch_size: int = 16):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.known: dict[tuple[str, str], Scored] = {}

    def prefetch(self, pairs: Sequence[tuple[str, str]], progress=None) -> None:
        new = list(dict.fromkeys(p for p in pairs if p not in self.known))
        if new:
            scored = continuation_logprobs(self.model, self.tokenizer, new, batch_size=self.batch_size,
                                           progress=progress)
            self.known.update(zip(new, scored, strict=True))

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[Scored]:
        self.prefetch(pairs)
        return [self.known[p] for p in pairs]


def loglik_requests(tokenizer, items: Sequence[McqItem], shots: Sequence[McqItem] = (), scoring: str = "letter",
                    layout: str = "plain", domain: str = "医学", rotations: bool = True,
                    ) -> tuple[list[tuple[str, str]], list[tuple[int, int, str]], list[list[Shown]]]:
    """What ``score_loglik`` asks the model: one (prompt, continuation) per item x shift x
    option, which (item, shift, letter) each is, and the shifts shown per item."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {sorted(SCORINGS)}, got {scoring!r}")
    if layout not in ("plain", "chat"):
        raise ValueError(f"layout must be plain or chat, got {layout!r}")
    mode, show_options = SCORINGS[scoring]
    rotations = rotations and show_options  # a cloze prompt shows no order to rotate
    requests, index = [], []  # one request per (item, shift, option)
    shown_all: list[list[Shown]] = []
    for i, item in enumerate(items):
        if len(item.answer) != 1:
            raise ValueError(f"{item.id}: multi-answer item {item.answer!r}; filter with single_answer() first")
        shifts = range(len(item.options)) if rotations else [0]
        shown_all.append([rotate(item, s) for s in shifts])
        for j, shown in enumerate(shown_all[-1]):
            prompt = render(tokenizer, shown, shots, domain, layout, show_options)
            for letter, text in shown.options.items():
                requests.append((prompt, letter if mode == "letter" else text))
                index.append((i, j, letter))
    return requests, index, shown_all


def score_loglik(model, tokenizer, items: Sequence[McqItem], shots: Sequence[McqItem] = (),
                 scoring: str = "letter", layout: str = "plain", domain: str = "医学", rotations: bool = True,
                 batch_size: int = 16, progress=None, scorer=None) -> list[McqResult]:
    """Score items by log-likelihood under every cyclic shift (or only as written).
    ``scoring``: letter | option_text | cloze (see the module docstring). ``scorer(pairs)``
    replaces the local forward passes (``model`` unused): a served model's log-probabilities
    (``medlab.evaluate.endpoint_loglik``; ``tokenizer`` then renders chat prompts only) or a
    ``loglik.PairScores`` that scored several scorings' requests together."""
    requests, index, shown_all = loglik_requests(tokenizer, items, shots, scoring, layout, domain, rotations)
    mode, show_options = SCORINGS[scoring]
    scored = scorer(requests) if scorer is not None else continuation_logprobs(
        model, tokenizer, requests, batch_size=batch_size, progress=progress)
    table: dict[tuple[int, int], dict[str, float]] = {}
    for (i, j, letter), s in zip(index, scored, strict=True):
        table.setdefault((i, j), {})[letter] = s.logprob
    results = []
    for i, item in enumerate(items):
        result = McqResult(item)
        for j, shown in enumerate(shown_all[i]):
            scores = table[(i, j)]
            letters = list(shown.options)
            raw = np.array([scores[k] for k in letters])
            if not np.isfinite(raw).any():  # a served model scored no option (prompt refused): wrong, no pick
                result.picks.append(None)
                result.picks_norm.append(None)
                result.first += [False] if show_options else []
                result.probs.append({})
                continue
            norm = np.array([scores[k] / max(len(shown.options[k]), 1) for k in letters])
            pick = letters[int(raw.argmax())]
            pick_norm = letters[int(norm.argmax())] if mode == "text" else pick
            result.picks.append(shown.original[pick])
            result.picks_norm.append(shown.original[pick_norm])
            if show_options:
                result.first.append(pick == letters[0])
            p = np.exp(raw - raw.max())
            p /= p.sum()
            result.probs.append({shown.original[k]: float(v) for k, v in zip(letters, p, strict=True)})
        results.append(result)
    return results


# ------------------------------------------------------------------ generation mode
# "答案：B", "正确答案是 (B)", "answer: b" -- the last such cue counts: a chat model that
# reasons first ("选项A……，选项B……，因此答案是C") commits at the end
_CUE = re.compile(r"(?:正确答案|最终答案|答案|answer)\s*(?:是|为|应为|应该是|选)?\s*[:：]?\s*[（(【\[]?\s*"
                  r"([A-Ga-g]+)(?![A-Za-z])", re.I)
_LEAD = re.compile(r"^\s*[（(]?([A-G])(?:[\s.．、。:：)）]|$)")
_OPTION = re.compile(r"(?:选项|选)\s*[（(]?([A-G])(?![A-Za-z])")


def extract_answer(text: str, options: dict[str, str]) -> str | None:
    """The letter(s) a generated answer commits to, or None (no answer / ambiguous).

    Tried in order: the last explicit cue ("答案：B", "正确答案是 B", markdown and full-width
    forms folded), a leading letter ("B. ...", "（B）"), one option named as such ("选项B"),
    then exactly one option text quoted in the answer. Letters not among the options, or two
    different options, give None — never a default."""
    text = re.sub(r"[*`]", "", unicodedata.normalize("NFKC", text)).strip()
    cues = _CUE.findall(text)
    if cues:
        letters = "".join(sorted(set(cues[-1].upper())))
        return letters if all(x in options for x in letters) else None
    match = _LEAD.match(text)
    if match and match.group(1) in options:
        return match.group(1)
    named = set(_OPTION.findall(text))
    if len(named) == 1 and next(iter(named)) in options:
        return next(iter(named))
    found = [k for k, v in options.items() if v and v in text]
    # a text inside another option's text ("高血压" in "严重高血压") is not a second answer
    found = [k for k in found if not any(k != o and options[k] in options[o] for o in found)]
    return found[0] if len(found) == 1 else None


def score_generation(generate, items: Sequence[McqItem], shots: Sequence[McqItem] = (), domain: str = "医学",
                     rotations: bool = False) -> list[McqResult]:
    """Ask each item (per shift) as a chat with ``generate(list of messages) -> texts``
    (greedy, any backend) and parse the answers; unparseable = wrong, counted."""
    shown_all = [[rotate(item, s) for s in (range(len(item.options)) if rotations else [0])] for item in items]
    chats = [chat_messages(s, shots, domain) for shown in shown_all for s in shown]
    texts = list(generate(chats))
    if len(texts) != len(chats):
        raise ValueError(f"generate() returned {len(texts)} answers for {len(chats)} questions")
    texts = iter(texts)
    results = []
    for item, shown in zip(items, shown_all, strict=True):
        result = McqResult(item)
        for s in shown:
            letter = extract_answer(next(texts), s.options)
            result.extracted.append(letter)
            original = "".join(sorted(s.original[x] for x in letter)) if letter else None
            result.picks.append(original or "")  # "" never equals an answer: no answer is wrong
            result.picks_norm.append(original or "")
            result.first.append(letter == next(iter(s.options)))
        results.append(result)
    return results


# ------------------------------------------------------------------ accuracy family
def summarise(results: Sequence[McqResult], chance: float, norm: bool = False, n_boot: int = 1000,
              seed: int = 0) -> dict:
    """acc (as written), rotation mean / consistent accuracy, position bias, with CIs."""
    if not results:
        raise ValueError("no MCQ results to summarise")
    correct = [r.correct(norm) for r in results]
    as_written = np.array([c[0] for c in correct], dtype=float)
    mean_shift = np.array([np.mean(c) for c in correct])
    consistent = np.array([all(c) for c in correct], dtype=float)
    out = {"n": len(results), "chance": chance,
           "acc": float(as_written.mean()), "acc_ci": _ci(as_written, n_boot, seed),
           "acc_rotation_mean": float(mean_shift.mean()), "acc_rotation_mean_ci": _ci(mean_shift, n_boot, seed),
           "acc_rotation": float(consistent.mean()), "acc_rotation_ci": _ci(consistent, n_boot, seed),
           # share of picks that were the first-listed option (None: no order was shown)
           "position_bias": float(np.mean([f for r in results for f in r.first])) if results[0].first else None}
    if results[0].extracted:
        asked = [x for r in results for x in r.extracted]
        out["no_answer_rate"] = float(np.mean([x is None for x in asked]))
    return out


def _ci(values: np.ndarray, n_boot: int, seed: int) -> list[float] | None:
    ci = bootstrap_ci(np.mean, values, n_boot=n_boot, seed=seed)
    return list(ci) if ci else None


def by_category(results: Sequence[McqResult], norm: bool = False) -> dict[str, dict]:
    """Accuracy (as written) and rotation-consistent accuracy per item category."""
    groups: dict[str, list[McqResult]] = {}
    for r in results:
        groups.setdefault(r.item.category or "(none)", []).append(r)
    return {k: {"n": len(v), "acc": float(np.mean([r.correct(norm)[0] for r in v])),
                "acc_rotation": float(np.mean([all(r.correct(norm)) for r in v]))}
            for k, v in sorted(groups.items())}


def item_outcomes(results: Sequence[McqResult], norm: bool = False) -> dict[str, list]:
    """Per-item 0/1 columns keyed by item id, for paired comparisons between models."""
    return {r.item.id: [int(r.correct(norm)[0]), int(all(r.correct(norm)))] for r in results}
