"""medlab's import graph for the tests, on this checkout's src/medlab (the graph itself is
medlab.codegraph, which the cache keys use too)."""

from __future__ import annotations

from pathlib import Path

from medlab import codegraph
from medlab.codegraph import closure, data_files, imports, notebook_imports

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module under this checkout's src/medlab."""
    return codegraph.modules(SRC / "medlab")


__all__ = ["ROOT", "SRC", "closure", "data_files", "imports", "modules", "notebook_imports"]
