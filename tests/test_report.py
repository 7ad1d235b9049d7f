"""The report stage: inputs checked before rendering, page content, the headless-browser
check (real Chromium), and Chinese text that renders in figures and in the page."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from ruamel.yaml import YAML

from medlab.config import read_plain
from medlab.report import browser, provenance, site
from medlab.report.figures import save, use_style

ROOT = Path(__file__).resolve().parents[1]
PARAMS = read_plain(ROOT / "params.yaml")


def test_every_missing_input_is_named_with_its_stage_before_anything_is_written(tmp_path):
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / "reports/metrics").mkdir(parents=True)
    (tmp_path / "reports/metrics/knowledge.json").write_text("{}")  # one present: not listed
    with pytest.raises(site.ReportError) as err:
        site.collect(tmp_path, PARAMS)
    message = str(err.value)
    assert "reports/metrics/knowledge.json" not in message
    assert "reports/metrics/corpus.json: missing (written by stage corpus)" in message
    assert "reports/figures/finetune/specific_only/loss.png: missing (written by stage finetune@specific_only)" \
        in message
    assert "reports/html/09_probe_base.html: missing (written by stage probe@base)" in message
    assert "`dvc repro knowledge corpus benchmark pretrain" in message
    assert not (tmp_path / "reports/index.html").exists() and not (tmp_path / "reports/README.md").exists()


def test_an_empty_file_counts_as_missing(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(site.ReportError, match="a.png: missing"):
        site.check_present(tmp_path, [site.Needed("a.png", "x")])


def test_the_page_lists_every_stage_page_of_dvc_yaml():
    pages = site.stage_pages(ROOT, PARAMS)
    models, recipes = PARAMS["evaluate"]["models"], PARAMS["finetune"]["recipes"]
    assert len(pages) == 9 + len(recipes) + 2 * len(models)  # 9 single stages (not the report itself)
    assert ("finetune@two_stage_disc", "reports/html/07_finetune_two_stage_disc.html") in pages
    assert ("compare", "reports/html/12_compare.html") in pages
    assert all(stage != "report" for stage, _ in pages)
    single, verbs, rows = site.page_grid(pages, order=list(models))
    assert [p["stage"] for p in single][:2] == ["knowledge", "corpus"] and verbs == ["finetune", "evaluate", "probe"]
    assert rows[0] == {"key": "base", "evaluate": "html/08_evaluate_base.html", "probe": "html/09_probe_base.html"}


def test_lock_hash_ignores_the_report_entry(tmp_path):
    lock = {"schema": "2.0", "stages": {"a": {"cmd": "x", "outs": [{"path": "p", "md5": "1"}]}}}
    yaml = YAML(typ="safe")
    with (tmp_path / "dvc.lock").open("w") as f:
        yaml.dump(lock, f)
    before = provenance.lock_hash(tmp_path)
    lock["stages"]["report"] = {"cmd": "y"}
    with (tmp_path / "dvc.lock").open("w") as f:
        yaml.dump(lock, f)
    assert provenance.lock_hash(tmp_path) == before
    lock["stages"]["a"]["outs"][0]["md5"] = "2"
    with (tmp_path / "dvc.lock").open("w") as f:
        yaml.dump(lock, f)
    assert provenance.lock_hash(tmp_path) != before


def test_formatting_and_tables():
    assert site.est(0.6, [0.5428, 0.6536]) == "0.600 [0.543, 0.654]"
    assert site.num(None) == "–" and site.num(12575) == "12,575" and site.pvalue(0.0001) == "< 0.001"
    domains, rows = site.mix_table({"anesthesia/kg_qa": 3, "general_medicine/kg_qa": 5, "general/general_mix": 2})
    assert domains == ["anesthesia", "general_medicine", "general"]
    assert rows == [{"method": "kg_qa", "anesthesia": 3, "general_medicine": 5},
                    {"method": "general_mix", "general": 2}]
    line = site.recipe_stage({"name": "behaviour", "kind": "sft", "data": ["preferred"], "epochs": 1.0})
    assert line == "behaviour: sft on preferred; epochs 1.0"


def _png(path: Path, text: str = "麻醉") -> Path:
    use_style()
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.set_title(text)
    save(fig, path)
    plt.close(fig)
    return path


def test_figures_render_chinese_glyphs_not_boxes():
    use_style()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" for boxes

        def pixels(char: str) -> np.ndarray:
            fig = plt.figure(figsize=(0.6, 0.6), dpi=50)
            fig.text(0.1, 0.1, char, fontsize=20)
            fig.canvas.draw()
            out = np.asarray(fig.canvas.buffer_rgba()).copy()
            plt.close(fig)
            return out

        a, b = pixels("麻"), pixels("醉")
    assert (a != 255).any() and not np.array_equal(a, b)  # two characters, two different glyphs


def _page(folder: Path, body: str) -> Path:
    page = folder / "index.html"
    page.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
                    f'<title>t</title></head><body>{body}</body></html>', encoding="utf-8")
    return page


def test_browser_check_passes_a_sound_page_and_saves_a_screenshot(tmp_path):
    _png(tmp_path / "figures/a.png")
    (tmp_path / "html").mkdir()
    (tmp_path / "html/stage.html").write_text("<html><body>stage</body></html>")
    page = _page(tmp_path, '<section id="run"><h2>麻醉学 结果</h2><img src="figures/a.png" alt="a">'
                           '<a href="html/stage.html">stage</a> <a href="#run">top</a></section>')
    check = browser.check_page(page, sections=["run"], screenshot=tmp_path / "shot.png", width=800)
    assert check.problems == [] and check.images == 1 and check.links == 2 and check.sections == ["run"]
    assert check.cjk_glyphs_differ, "Chinese text in the page renders as identical boxes: no CJK font"
    assert check.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(check.screenshot).size[0] == 800


def test_browser_check_names_broken_images_links_and_missing_sections(tmp_path):
    _png(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    page = _page(tmp_path, '<section id="run">text <img src="ok.png"> <img src="gone.png"> <img src="broken.png">'
                           '<a href="missing.html">x</a> <a href="#nowhere">y</a> '
                           '<a href="https://example.org/">z</a></section><section id="empty"></section>')
    check = browser.check_page(page, sections=["run", "empty", "bias"])
    assert sorted(check.broken_images) == ["broken.png", "gone.png"]
    assert check.broken_links[:2] == ["missing.html (404)", "#nowhere"]
    assert "leaves the report" in check.broken_links[2]
    assert check.missing_sections == ["empty", "bias"]
    with pytest.raises(browser.BrowserError, match="gone.png"):
        check.raise_for_problems(page)


def test_browser_check_runs_inside_an_event_loop_as_in_a_jupyter_kernel(tmp_path):
    import asyncio

    page = _page(tmp_path, '<section id="run">ok</section>')

    async def in_kernel():  # Playwright's sync API refuses to run on a thread with a running loop
        return browser.check_page(page, sections=["run"])

    assert asyncio.run(in_kernel()).problems == []


def test_a_missing_browser_is_a_clear_error():
    with pytest.raises(browser.BrowserError, match="report.browser"):
        browser.find_browser("/nonexistent/chromium")


def test_report_params_are_validated(tmp_path):
    from medlab.config import ConfigError, read_yaml, validate_params

    doc = read_yaml(ROOT / "params.yaml")
    doc["report"]["width"] = 100
    with pytest.raises(ConfigError, match=r"params.yaml:\d+: report.width: .*600"):
        validate_params(doc, filename="params.yaml", root=ROOT)
    doc = read_yaml(ROOT / "params.yaml")
    doc["report"]["browser"] = "/nonexistent/chromium"
    with pytest.raises(ConfigError, match=r"report.browser: '/nonexistent/chromium' is neither a command"):
        validate_params(doc, filename="params.yaml", root=ROOT)


@pytest.mark.slow
def test_a_source_notebook_run_as_jupyterlab_runs_it_shows_its_figures(tmp_path):
    """Outside DVC and papermill: nbclient executes notebooks/01_knowledge.ipynb from
    notebooks/ (as JupyterLab's kernel would); the figure it saves is also a cell output."""
    import nbformat
    from nbclient import NotebookClient

    for name in ("dvc.yaml", "params.yaml", "notebooks/01_knowledge.ipynb", "external/README.md", "ratings/README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "samples", tmp_path / "samples")  # params.yaml names files in it
    notebook = nbformat.read(tmp_path / "notebooks/01_knowledge.ipynb", as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=300,
                   resources={"metadata": {"path": str(tmp_path / "notebooks")}}).execute()
    images = [out for cell in notebook.cells for out in cell.get("outputs", [])
              if "image/png" in out.get("data", {})]
    saved = list((tmp_path / "reports/figures/knowledge").glob("*.png"))
    assert saved and len(images) == len(saved)
    assert all(len(out["data"]["image/png"]) > 10_000 for out in images)  # base64 of a real plot


def test_plain_scripts_draw_headless(monkeypatch):
    from medlab.report import figures

    for name in ("MPLBACKEND", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(__import__("sys").modules, "ipykernel", raising=False)
    assert figures.headless() is (__import__("sys").platform.startswith("linux"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # what ipykernel sets
    assert figures.headless() is False
