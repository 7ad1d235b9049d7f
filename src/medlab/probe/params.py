"""``probe`` section of params.yaml: which attitude scales, readouts and corrections."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from medlab.section import Section


class ProbeParams(Section):
    scales: list[str]
    scale_files: list[str]
    readouts: list[Literal["likert", "statement", "generation"]] = Field(min_length=1)
    reversal: bool
    calibrate: bool
    target_group: str
    batch_size: int = Field(ge=1)
    n_boot: int = Field(ge=0)

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        from medlab.patient_groups import load_groups
        from medlab.probe.scale import ScaleError, builtin_scales, load_scale

        out: list[tuple[tuple, str]] = []
        try:
            known = builtin_scales()
        except ScaleError as exc:  # a bundled file broken by an edit
            return [(("scales",), str(exc))]
        for name in self.scales:
            if name not in known:
                out.append((("scales",), f"unknown scale {name!r} (bundled: {', '.join(known)})"))
        for k, path in enumerate(self.scale_files):
            try:
                load_scale(root / path)
            except ScaleError as exc:
                out.append((("scale_files", k), str(exc)))
        if self.target_group not in load_groups():
            out.append((("target_group",), f"unknown patient group {self.target_group!r}"))
        return out

