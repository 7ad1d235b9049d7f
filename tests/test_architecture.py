"""The package's shape, checked from the source (static, no imports run): the import graph
between packages has no cycles, params.yaml's loader is imported only by command-line
entry points, each stage owns its params model, and every module says its job in one line."""

from __future__ import annotations

import ast

from helpers.imports import imports, modules

MAX_LINES = 400  # a longer module states why in its docstring ("long: ...")


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_import_cycles_between_packages():
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, file in known.items():
        if name.endswith("__main__"):
            continue  # entry points sit on top of the graph
        for target in imports(file, known):
            if package(target) != package(name):
                edges.setdefault(package(name), set()).add(package(target))

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted({tuple(sorted((a, b))) for a in edges for b in reachable(a) if a != b and a in reachable(b)})
    assert not cycles, f"packages importing each other: {cycles}"


def test_only_entry_points_import_the_params_loader():
    known = modules()
    entry = ("medlab.config", "medlab.stages")  # the CLIs' and the notebooks' entry points
    importers = sorted(name for name, file in known.items()
                       if not name.startswith(entry) and not name.endswith("__main__")
                       and any(m.startswith("medlab.config") for m in imports(file, known)))
    assert not importers, f"library modules reaching up into medlab.config (pass the section instead): {importers}"


def test_no_library_module_imports_the_stages():
    """medlab.stages is the top of the graph (the notebooks' steps); the library never calls up into it."""
    known = modules()
    importers = sorted(name for name, file in known.items() if not name.startswith("medlab.stages")
                       and any(m.startswith("medlab.stages") for m in imports(file, known)))
    assert not importers, f"library modules importing medlab.stages: {importers}"


def test_every_stage_owns_its_params_section():
    from medlab.config import Params

    owners = {"base": "medlab.config", "runtime": "medlab.config", "compare": "medlab.evaluate.params",
              "corpus": "medlab.embedded.corpus.params", "benchmark": "medlab.embedded.benchmark.params",
              "blind": "medlab.human.params", "unblind": "medlab.human.params"}
    for section, field in Params.model_fields.items():
        assert field.annotation.__module__ == owners.get(section, f"medlab.{section}.params"), section
    # a params module reads no stage code at import time (lazy imports inside checks only)
    known = modules()
    for name, file in known.items():
        if name.endswith(".params"):
            allowed = {m for m in imports(file, known, top_level_only=True)
                       if not (m.endswith(".params") or m == "medlab.section")}
            assert not allowed, f"{name} imports {sorted(allowed)} at module level"


def test_the_real_machinery_does_not_depend_on_the_embedded_world():
    """Real mode swaps the embedded world out: nothing but the backend chooser, the params
    assembly and the embedded packages themselves may import medlab.embedded."""
    known = modules()
    allowed = ("medlab.embedded", "medlab.backends", "medlab.config")
    users = sorted(name for name, file in known.items() if not name.startswith(allowed)
                   and any(m.startswith("medlab.embedded") for m in imports(file, known)))
    assert not users, f"real machinery importing the embedded world: {users}"


def test_every_module_says_its_job_and_stays_short():
    for name, file in modules().items():
        text = file.read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(text))
        assert doc and doc.splitlines()[0].strip(), f"{name}: no one-line docstring saying what it is for"
        lines = len(text.splitlines())
        assert lines <= MAX_LINES or "long:" in doc, f"{name}: {lines} lines and no reason in its docstring"
