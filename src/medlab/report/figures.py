"""One figure style for every stage, with Chinese labels that render (no empty boxes).

matplotlib's default fonts have no CJK glyphs. The Noto Sans CJK SC font shipped by
the ``mplfonts`` package (a pip dependency, so no system font is needed) is
registered and put first in the sans-serif list.

The backend is left to matplotlib wherever a kernel runs: ipykernel (JupyterLab,
papermill, nbconvert, nbclient) sets ``MPLBACKEND`` to the inline backend, so
``plt.show()`` puts the figure in the cell's output (and so in the executed notebook
and its HTML page). Only a plain script with no kernel and no display gets ``Agg``
(matplotlib would fall back to it too; saying so keeps a stray Tk/Qt from opening).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib


def headless() -> bool:
    """No kernel, no display and no backend asked for: draw to files only."""
    if os.environ.get("MPLBACKEND") or "ipykernel" in sys.modules:
        return False
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or
                                                     os.environ.get("WAYLAND_DISPLAY"))


if headless():
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager  # noqa: E402

CJK_FONT = "Noto Sans CJK SC"
PALETTE = ["#3b6ea8", "#d9822b", "#3d9970", "#b03a48", "#7d5ba6", "#8c6d31", "#5f7f8f"]


def cjk_font_path() -> Path:
    import mplfonts

    path = Path(mplfonts.__file__).parent / "fonts" / "NotoSansCJKsc-Regular.otf"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CJK font missing; reinstall mplfonts")
    return path


def use_style() -> None:
    """Register the CJK font and set the shared style (call once per notebook)."""
    font_manager.fontManager.addfont(str(cjk_font_path()))
    plt.rcParams.update({
        "font.family": "sans-serif",
        "font.sans-serif": [CJK_FONT, "DejaVu Sans"],
        "axes.unicode_minus": False,  # the CJK font lacks U+2212; use '-'
        "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "figure.dpi": 100,
        "savefig.dpi": 120,
        "savefig.bbox": "tight",
        "font.size": 10,
        "svg.hashsalt": "medlab",  # stable ids if anyone saves SVG
    })


def save(fig, path: Path) -> Path:
    """Save a figure as PNG (metadata stripped so reruns give identical bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path
