"""General-domain chats mixed into the training data (DISC-MedLLM kept general ability
with general instruction data; HuatuoGPT-II mixed general SFT data in as well).

Loaded as they are from local files (alpaca, MOSS, ShareGPT, HuatuoGPT-II or DISC-Med-SFT
format): no teacher call, no ground truth (``truth`` None). Each file names its domain:
general chats by default, ``general_medicine`` for a medical SFT set sent through the filter.
"""

from __future__ import annotations

from medlab.formats.instructions import load_instructions
from medlab.records import Sample


def load_samples(files: list[tuple[str, str, str, str]], root) -> list[Sample]:
    """``files``: (path relative to root, format, encoding, domain) of each file."""
    samples = []
    for path, fmt, encoding, domain in files:
        for ident, where, messages in load_instructions(root / path, fmt, encoding):
            samples.append(Sample(
                id=f"general_mix-{len(samples):05d}", source="general_mix", domain=domain,
                messages=messages, truth=None,
                provenance={"method": "general_mix", "teacher": None, "source_id": f"{path}#{ident}",
                            "source": {"file": path, "where": where.rsplit("/", 1)[-1]}}))
    return samples
