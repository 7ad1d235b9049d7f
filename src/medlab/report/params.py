"""``report`` section of params.yaml: the run's page and its browser check."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import Field

from medlab.section import Section


class ReportParams(Section):
    title: str = Field(min_length=1)
    browser: str
    width: int = Field(ge=600, le=4000)
    timeout_s: float = Field(gt=0)

    def problems(self, root: Path) -> list[tuple[tuple, str]]:
        if self.browser and not (shutil.which(self.browser) or Path(self.browser).is_file()):
            return [(("browser",), f"{self.browser!r} is neither a command on PATH nor a file; "
                                   "\"\" looks for chromium, chromium-browser or google-chrome")]
        return []

