"""A scripted rater: opens a rating page (reports/blind/<rater>/rate.html) in headless
Chromium, clicks the ratings a function chooses, and saves the file the page downloads --
what a human rater does, with the choices made by code (tests only; never a rating)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medlab.report.browser import FLAGS, find_browser

# (unit id, {"A": answer text, "B": ...}, dimensions) -> ({"A": {dim: 1-5}, "B": {...}}, preference, comment)
Choice = Callable[[str, dict[str, str], list[str]], tuple[dict[str, dict[str, int]], str, str]]


def fill_rating_page(page: Path, out_dir: Path, choose: Choice, check=None) -> Path:
    """Rate every unit of ``page`` as ``choose`` says; ``check(tab)`` runs before saving.
    Returns the saved ratings file (in ``out_dir``, under the name the page gives it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(find_browser()), args=FLAGS)
        try:
            context = chromium.new_context(accept_downloads=True)
            tab = context.new_page()
            tab.goto(page.as_uri())
            spec = tab.evaluate("JSON.parse(document.getElementById('spec').textContent)")
            for unit in spec["units"]:
                texts = tab.locator(f"section#{unit} .answer .text")
                answers = {"A": texts.nth(0).inner_text(), "B": texts.nth(1).inner_text()}
                scores, preference, comment = choose(unit, answers, spec["dimensions"])
                for label, dims in scores.items():
                    for d, v in dims.items():
                        tab.check(f'input[name="{unit}/{label}/{d}"][value="{v}"]')
                tab.check(f'input[name="{unit}/preference"][value="{preference}"]')
                if comment:
                    tab.fill(f'textarea[name="{unit}/comment"]', comment)
            if check is not None:
                check(tab)
            with tab.expect_download() as download:
                tab.click("#save")
            saved = Path(out_dir) / download.value.suggested_filename
            download.value.save_as(saved)
        finally:
            chromium.close()
    return saved
