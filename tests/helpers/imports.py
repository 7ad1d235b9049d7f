"""medlab's import graph, read from the source (nothing imported): the modules, what each
imports (at module level or inside functions), what a notebook imports, the closure of
all that, and the package data files a module reads (named in its string constants)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module under src/medlab."""
    out = {}
    for file in sorted((SRC / "medlab").rglob("*.py")):
        name = ".".join(file.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        out[name] = file
    return out


def _imported(tree: ast.AST, known: dict[str, Path], nodes=None) -> set[str]:
    out = set()
    for node in nodes if nodes is not None else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medlab"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("medlab"))
    return {m for m in out if m in known}


def imports(file: Path, known: dict[str, Path], top_level_only: bool = False) -> set[str]:
    """medlab modules ``file`` imports (anywhere in it, or only at module level)."""
    tree = ast.parse(file.read_text(encoding="utf-8"))
    return _imported(tree, known, tree.body if top_level_only else None)


def notebook_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """medlab modules a notebook's code cells import (IPython magics skipped)."""
    out = set()
    for cell in json.loads(Path(path).read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "code":
            code = "\n".join(line for line in "".join(cell["source"]).splitlines()
                             if not line.lstrip().startswith(("%", "!")))
            out |= _imported(ast.parse(code), known)
    return out


def closure(start: set[str], known: dict[str, Path], skip: set[str] = frozenset()) -> set[str]:
    """``start`` and everything it imports, transitively, with every parent package (its
    ``__init__`` runs first); modules in ``skip`` are not entered."""
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name in seen or name in skip:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:k]) for k in range(1, len(parts)) if ".".join(parts[:k]) in known]
        todo += imports(known[name], known)
    return seen


def data_files(file: Path) -> list[Path]:
    """Package data next to a module that the module names in a string constant
    (``templates.yaml``, ``data``, ``scales``, ...): files and non-package folders."""
    strings = {node.value for node in ast.walk(ast.parse(file.read_text(encoding="utf-8")))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    out = []
    for entry in sorted(file.parent.iterdir()):
        if entry.suffix == ".py" or entry.name == "__pycache__" or (entry / "__init__.py").exists():
            continue
        if any(s == entry.name or s.startswith(entry.name + "/") for s in strings):
            out.append(entry)
    return out
