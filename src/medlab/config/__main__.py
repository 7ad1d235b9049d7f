"""``python -m medlab.config [params.yaml] [--overlay smoke.yaml]``: validate params, print ok."""

from __future__ import annotations

import sys
from pathlib import Path

from medlab.config import ConfigError, apply_overlay, load_params
from medlab.paths import project_root


def main(argv: list[str] | None = None) -> int:
    """``python -m medlab.config [params.yaml] [--overlay smoke.yaml]``: validate, print ok."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("params", nargs="?", default=None)
    parser.add_argument("--overlay", help="apply this overlay in place before validating")
    args = parser.parse_args(argv)
    try:
        path = Path(args.params) if args.params else project_root() / "params.yaml"
        if args.overlay:
            apply_overlay(path, Path(args.overlay))
        else:
            load_params(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{path}: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
