"""The base of every params section (strict, frozen pydantic models), the error every bad
params file raises, and the one check of a model reference shared by several stages.

Each stage package owns its section in ``<stage>/params.py``; ``medlab.config`` reads
params.yaml and validates it against all of them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A params file that does not validate; the message has one line per problem."""


class Section(BaseModel):
    """Base of every params section: unknown keys and type coercion are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        """Cross-field and filesystem checks pydantic cannot express: (key path, message)."""
        return []


def looks_like_local_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else is meant as a local path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.endswith("/")


def model_path_problem(name: str, root: Path) -> str | None:
    """Why ``name`` cannot be a model (local dir or hub id), or None if it may be one."""
    path = (root / Path(name).expanduser()) if not Path(name).is_absolute() else Path(name)
    if path.exists():
        if not (path / "config.json").is_file():
            return f"{path} has no config.json: not a Hugging Face model directory"
        return None
    if looks_like_local_path(name):
        return f"model directory not found: {path}"
    return None  # a hub id: resolved (or refused, when offline) at load time

