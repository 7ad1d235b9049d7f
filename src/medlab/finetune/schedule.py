"""HuatuoGPT-II's one-stage priority sampling, as a sample order.

Each source gets a priority and a repeat count; every (sample, repeat) becomes an item
weighted by its source's priority, and one weighted draw *without replacement* fixes the
whole order. High-priority items (the domain corpus rewritten as instructions) therefore
tend to be drawn first and low-priority ones (SFT data) last: a smooth shift from
knowledge to behaviour within one run. Arithmetic: with 800 corpus items at priority 16
and 9,000 SFT items at priority 1, the first draw is a corpus item with probability
800*16 / (800*16 + 9000) = 0.59; as corpus items run out the SFT share rises to 1.

HuatuoGPT-II draws with ``torch.multinomial(weights, N, replacement=False)``; so do we,
with a seeded generator (bit-reproducible on CPU).
"""

from __future__ import annotations

import torch


def priority_order(sizes: dict[str, int], priority: dict[str, float], repeats: dict[str, int],
                   seed: int) -> list[tuple[str, int]]:
    """(source, index within the source) for every item, in training order.

    ``sizes``: samples per source; ``priority``: weight per source (a missing source gets 1);
    ``repeats``: how many times each sample appears (a missing source gets 1)."""
    items: list[tuple[str, int]] = []
    weights: list[float] = []
    for source, size in sizes.items():
        weight = float(priority.get(source, 1.0))
        if weight <= 0:
            raise ValueError(f"priority of {source!r} must be > 0, got {weight}")
        for _ in range(int(repeats.get(source, 1))):
            for i in range(size):
                items.append((source, i))
                weights.append(weight)
    if not items:
        return []
    generator = torch.Generator().manual_seed(seed)
    order = torch.multinomial(torch.tensor(weights, dtype=torch.float64), len(items), replacement=False,
                              generator=generator)
    return [items[i] for i in order.tolist()]


def share_along(order: list[tuple[str, int]], source: str, bins: int = 10) -> list[float]:
    """Share of ``source`` items in each of ``bins`` equal slices of the order (the schedule's shape)."""
    n = len(order)
    out = []
    for b in range(bins):
        chunk = order[b * n // bins:(b + 1) * n // bins]
        out.append(sum(s == source for s, _ in chunk) / max(len(chunk), 1))
    return out
