"""``knowledge`` section of params.yaml: which knowledge base the world is built from."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from medlab.section import Section


class ExternalKG(Section):
    path: str | None
    format: Literal["triples_jsonl", "cmekg_json"]
    on_error: Literal["raise", "skip"]
    domain: Literal["general", "anesthesia"]


class KnowledgeParams(Section):
    source: Literal["embedded", "external", "both"]
    external: ExternalKG

    def problems(self, root: Path) -> list[tuple[tuple[str, ...], str]]:
        if self.source == "embedded":
            return []
        if self.external.path is None:
            return [(("external", "path"), f"required when source is {self.source!r}")]
        path = root / self.external.path
        if not path.is_file():
            return [(("external", "path"), f"file not found: {path}")]
        return []

