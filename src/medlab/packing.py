"""Packing: how tokenised samples become fixed-size training rows without wasting compute on padding.

Two strategies, because the two kinds of training want different things:

* ``pack_stream`` (pre-training): documents, each followed by EOS, concatenated and cut
  into ``block_size`` blocks; the tail that fills no block is dropped. Attention runs
  across document boundaries, as in GPT-style pre-training: the EOS tells the model a
  new document starts, and no sample is ever cut short of context it needed.
* ``pack_rows`` (fine-tuning): whole samples, never cut, placed best-fit-decreasing into
  rows of at most ``max_length`` tokens (``trl.data_utils.pack_dataset``, strategy
  ``bfd``), each keeping its own ``position_ids`` (``seq_lengths``) so that attention
  stays inside a sample: a question must not attend to another sample's answer. On the
  default recipe's data 1.8% of a packed batch's positions are padding, against 83%
  padded to ``max_length`` (benchmarks/results/packed_vs_padded.json).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from datasets import Dataset, concatenate_datasets
from trl.data_utils import pack_dataset


def pack_stream(token_lists: Iterable[Sequence[int]], block_size: int, eos_id: int) -> list[list[int]]:
    """Concatenate documents (each + EOS) and cut into full blocks; the tail is dropped."""
    stream: list[int] = []
    for tokens in token_lists:
        stream.extend(tokens)
        stream.append(eos_id)
    n = len(stream) // block_size
    return [stream[i * block_size:(i + 1) * block_size] for i in range(n)]


def pack_rows(dataset: Dataset, max_length: int, window: int | None = None) -> Dataset:
    """Best-fit-decreasing packing into rows of <= max_length tokens (adds ``seq_lengths``).
    ``window``: pack consecutive windows of that many samples separately, keeping order."""
    if window is None or window >= len(dataset):
        return pack_dataset(dataset, max_length, strategy="bfd", map_kwargs={"keep_in_memory": True})
    parts = [pack_dataset(dataset.select(range(i, min(i + window, len(dataset)))), max_length, strategy="bfd",
                          map_kwargs={"keep_in_memory": True})
             for i in range(0, len(dataset), window)]
    return concatenate_datasets(parts)
