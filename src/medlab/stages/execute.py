"""How DVC runs a stage: ``python -m medlab.stages.execute NOTEBOOK OUTPUT [-p NAME VALUE]...``.

One Python process does what the three commands of earlier dvc.yaml files did:

    python -m medlab.config                       # 1. validate the whole params.yaml
    papermill -k python3 --cwd notebooks --log-output --no-progress-bar NOTEBOOK OUTPUT
    jupyter nbconvert --to html --no-input --output-dir reports/html OUTPUT

with the same fixed settings (kernel ``python3``, working directory ``notebooks/``, cell
output streamed to the log line by line, HTML without code and prompts). Each command
paid its own interpreter start and imports: ~0.5 s, ~2.0 s and ~2.3 s on 2 cores, and
a stage's fixed cost was 9-20 s (benchmarks/results/stage_times_smoke.json). Here they
are paid once, and papermill's import without its 1.1 s IRI grammar (below): 3.6 s less
per stage, ratio 0.50-0.56 on 2 cores (``python benchmarks/stage_runner.py`` measures both
side by side). The notebook still runs in its own fresh kernel, as under the papermill CLI.

Hyper-parameters never come through ``-p``: the parameters cell holds selectors only
(``recipe``, ``model``); notebooks read params.yaml themselves (DESIGN.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

KERNEL = "python3"
CWD = "notebooks"
HTML_DIR = Path("reports/html")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m medlab.stages.execute", description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path, help="the source notebook, e.g. notebooks/01_knowledge.ipynb")
    parser.add_argument("output", type=Path, help="the executed copy, e.g. reports/notebooks/01_knowledge.ipynb")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a selector for the parameters cell (a string), e.g. -p recipe specific_only")
    return parser.parse_args(argv)


def html_path(output: Path) -> Path:
    """reports/notebooks/<stem>.ipynb -> reports/html/<stem>.html (nbconvert's --output-dir naming)."""
    return HTML_DIR / f"{output.stem}.html"


def render_html(output: Path) -> Path:
    """The executed notebook as HTML without code or prompts (nbconvert ``--no-input``)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    resources = {"metadata": {"name": output.stem, "path": str(output.parent)}}  # the page title, as the CLI sets it
    body, _ = exporter.from_notebook_node(nbformat.read(output, as_version=4), resources=resources)
    target = html_path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body, encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from medlab.config.__main__ import main as validate

    if validate([]) != 0:  # a typo anywhere in params.yaml: one line naming it, before any work
        return 2
    if not args.notebook.is_file():
        print(f"{args.notebook}: no such notebook", file=sys.stderr)
        return 2

    # nbformat validates notebooks with jsonschema, whose format checkers import
    # rfc3987_syntax if installed (jupyter-events wants it); that module compiles ~35 Lark
    # parsers at import: 1.1 of papermill's 1.45 s import on 2 cores, every stage. No
    # notebook schema uses the `iri` formats it checks, so this process goes without it
    # (upstream: python-jsonschema/jsonschema#1428, jupyter/nbformat#420).
    sys.modules.setdefault("rfc3987_syntax", None)  # `import rfc3987_syntax` -> ImportError, skipped
    import papermill
    from papermill.exceptions import PapermillExecutionError

    # the CLI's --log-output: every line a cell prints goes to stderr as it is printed
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(args.notebook), str(args.output), parameters=dict(args.p),
                                   kernel_name=KERNEL, cwd=CWD, log_output=True, progress_bar=False)
    except PapermillExecutionError as exc:
        # the failing cell's traceback, then one line naming it; the executed copy keeps the
        # cells that ran and the error, as the papermill CLI leaves it
        print(exc, file=sys.stderr)
        print(f"{args.notebook}: cell {exc.exec_count} failed: {exc.ename}: {exc.evalue}\n"
              f"  (the executed copy with the traceback: {args.output})", file=sys.stderr)
        return 1
    print(f"{args.output} -> {render_html(args.output)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
