"""``python -m medlab.config [params.yaml] [--overlay smoke.yaml | --write-specs | --explain KEY]``: validate params."""

from __future__ import annotations

import sys
from pathlib import Path

from medlab.config import ConfigError, Params, apply_overlay, load_params
from medlab.config import specs as key_specs
from medlab.paths import project_root


def main(argv: list[str] | None = None) -> int:
    """Validate params.yaml (after applying an overlay in place), or rewrite its key specs."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("params", nargs="?", default=None)
    parser.add_argument("--overlay", help="apply this overlay in place before validating")
    parser.add_argument("--write-specs", action="store_true",
                        help="rewrite every key's end-of-line type/range comment from its params model")
    parser.add_argument("--explain", metavar="KEY",
                        help="print KEY (dotted; a section prints all its keys): value, type and range, what it does")
    args = parser.parse_args(argv)
    try:
        path = Path(args.params) if args.params else project_root() / "params.yaml"
        if args.write_specs:
            text = path.read_text(encoding="utf-8")
            path.write_text(key_specs.write(text, Params), encoding="utf-8")
            load_params(path)
        elif args.explain is not None:
            print(key_specs.explain(path.read_text(encoding="utf-8"), Params, args.explain, path.name))
            return 0
        elif args.overlay:
            apply_overlay(path, Path(args.overlay))
        else:
            load_params(path)
    except (ConfigError, KeyError) as exc:
        print(exc.args[0] if isinstance(exc, KeyError) else exc, file=sys.stderr)
        return 2
    print(f"{path}: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
