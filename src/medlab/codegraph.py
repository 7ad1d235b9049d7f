"""medlab's import graph, read from the source with ``ast`` (nothing is imported): what
each module imports, the closure of a set of modules, and the package data a module reads.

Two users: the cache keys (``medlab.cachekey.code_hash``: a cached result is keyed by the
bytes of every module that computes it) and the contract tests (each DVC stage depends on
the code its notebook runs). Both must see the same graph, so it lives here once.

* A module's imports are every ``import medlab...`` / ``from medlab... import ...`` in it,
  at module level or inside functions (a function-level import runs when the function
  does; when in doubt, count it).
* The closure adds every parent package (its ``__init__`` runs first).
* Package data is a file or non-package folder next to a module whose name appears in one
  of the module's string constants (``"templates.yaml"``, ``"scales"``): how the modules
  here find their data, and so what a change to that data can change.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path


def package_dir() -> Path:
    """The medlab package this interpreter imports (src/medlab in a checkout)."""
    import medlab

    return Path(medlab.__file__).resolve().parent


def modules(package: Path | None = None) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (``medlab.evaluate.run``)."""
    package = package or package_dir()
    out = {}
    for file in sorted(package.rglob("*.py")):
        parts = (package.name, *file.relative_to(package).with_suffix("").parts)
        out[".".join(parts).removesuffix(".__init__")] = file
    return out


def _imported(nodes, known: dict[str, Path]) -> set[str]:
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medlab"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("medlab"))
    return {m for m in out if m in known}


def imports(file: Path, known: dict[str, Path], top_level_only: bool = False) -> set[str]:
    """medlab modules ``file`` imports (anywhere in it, or only at module level)."""
    tree = ast.parse(file.read_text(encoding="utf-8"))
    return _imported(tree.body if top_level_only else ast.walk(tree), known)


def notebook_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """medlab modules a notebook's code cells import (IPython magics skipped)."""
    out = set()
    for cell in json.loads(Path(path).read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "code":
            code = "\n".join(line for line in "".join(cell["source"]).splitlines()
                             if not line.lstrip().startswith(("%", "!")))
            out |= _imported(ast.walk(ast.parse(code)), known)
    return out


def closure(start: set[str], known: dict[str, Path], skip: set[str] = frozenset()) -> set[str]:
    """``start`` and everything it imports, transitively, with every parent package;
    modules in ``skip`` are not entered."""
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
