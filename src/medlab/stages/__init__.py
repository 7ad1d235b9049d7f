"""The stages as the notebooks call them: ``start`` (every notebook's set-up, one call) and,
where a stage runs many steps, its steps over the tested functions of its package
(``stages.evaluate``, ``stages.probe``, ``stages.compare``); and how DVC runs a stage's notebook
(``stages.execute``: params checked, papermill, HTML, one process). The top of the import graph: it may import any
package and reads params.yaml, like a ``__main__`` module; no library module imports it.

``ROOT, P, cfg, timer = start("evaluate", model)`` validates the whole params.yaml (a typo
anywhere stops here, naming file, line and key), checks that the stage's instance (a recipe, a model) is one params.yaml declares, seeds the
global generators where a stage runs torch, sets the figure style and starts the
stopwatch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from medlab.config import Params, dump, load_params
from medlab.paths import project_root
from medlab.report.timing import Stopwatch
from medlab.seeding import seed_everything

# Stages with an instance per DVC foreach entry: the stage, and where params.yaml lists the
# names it accepts (a probe runs on any model evaluate knows).
INSTANCES = {"finetune": ("finetune", "recipes"), "evaluate": ("evaluate", "models"),
             "probe": ("evaluate", "models")}

# Stages that run torch models: torch's results depend on its seed and thread count, so
# these seed python, numpy and torch and fix the threads (base.torch_threads). The others
# draw only from named streams (medlab.seeding.rng) and do not pay torch's import.
TORCH_STAGES = frozenset({"pretrain", "filter", "finetune", "evaluate", "probe"})


class Stage(NamedTuple):
    """The four names every notebook works with."""

    root: Path  # the repository root (paths are resolved from it, never from the cwd)
    params: Params  # the whole validated params.yaml
    cfg: Any  # this stage's section (params.<stage>)
    timer: Stopwatch  # started now; written with the stage's timing record at the end


def start(stage: str, instance: str | None = None, *, show: bool = True) -> Stage:
    """Load and validate params.yaml, check ``instance``, seed, style, start the stopwatch;
    print the stage's section unless ``show`` is false."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress is printed as lines, not bars, in rendered notebooks
    label = stage if instance is None else f"{stage}@{instance}"
    timer = Stopwatch(label)
    root = project_root()
    params = load_params()
    if stage not in type(params).model_fields:
        raise KeyError(f"no section {stage!r} in params.yaml (stage name = notebook verb = params section)")
    if stage in INSTANCES:
        section, key = INSTANCES[stage]
        names = getattr(getattr(params, section), key)
        if instance not in names:
            raise KeyError(f"{stage}: {instance!r} is not in params.yaml {section}.{key} ({', '.join(names)})")
    elif instance is not None:
        raise ValueError(f"stage {stage} has no instances (got {instance!r})")
    if stage in TORCH_STAGES:
        seed_everything(params.base.seed, params.base.torch_threads)
    from medlab.report.figures import use_style  # matplotlib: imported only by notebooks

    use_style()
    cfg = getattr(params, stage)
    if show:
        print(f"stage {label} · seed {params.base.seed}\n{dump(cfg)}")
    return Stage(root, params, cfg, timer)
