"""Where a recipe's further seeds are: the copies ``finetune.seeded_recipes`` trained again.

``finetune.seeded_recipes`` are trained again with each further seed of
``finetune.seeds`` into ``models/finetune/<recipe>/seeds/s<seed>/``; the evaluate stage
scores each copy on the claim columns (``medlab.stages.evaluate.Evaluation.run_seeds``),
the probe stage probes it, and the compare stage pools them
(``medlab.evaluate.compare.compare_seeds``).
"""

from __future__ import annotations

import re
from pathlib import Path


def seed_replicates(path: Path) -> list[tuple[int, Path]]:
    """A recipe's copies trained with further seeds (``<model>/seeds/s<seed>/``, written by
    the finetune stage for ``finetune.seeded_recipes``), by seed; none for other models."""
    folder = Path(path) / "seeds"
    if not folder.is_dir():
        return []
    found = [(int(d.name[1:]), d) for d in folder.iterdir() if d.is_dir() and re.fullmatch(r"s\d+", d.name)]
    return sorted(found)
