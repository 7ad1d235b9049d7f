"""Open the results page in a real headless Chromium: every image loaded, every link
reachable, every section there; save a full-page screenshot.

The page is served from its own folder on a loopback port (what a reviewer's browser
would fetch, relative links included) and driven by Playwright with the system's
Chromium (Debian's ``chromium`` package; ``make setup`` installs it where missing), so
no browser is downloaded. Chromium runs with the flags a closed network needs (no
background networking, no component updates), and in a fresh profile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


# Draw two different Chinese characters in the page's own font: with no CJK font both
# come out as the same "missing glyph" box, so identical pixels mean boxes on screen.
CJK_PROBE = """() => {
  const canvas = document.createElement('canvas');
  canvas.width = 48; canvas.height = 48;
  const g = canvas.getContext('2d');
  g.font = '36px ' + getComputedStyle(document.body).fontFamily;
  const draw = (ch) => { g.clearRect(0, 0, 48, 48); g.fillText(ch, 4, 40);
                         return g.getImageData(0, 0, 48, 48).data.join(','); };
  return draw('麻') !== draw('醉');
}"""


class BrowserError(RuntimeError):
    """No browser, or the page failed a check."""


def find_browser(configured: str = "") -> Path:
    """The Chromium to drive: ``configured`` (a path or a command name) or the first of
    CANDIDATES on PATH."""
    names = [configured] if configured else list(CANDIDATES)
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return Path(found)
    raise BrowserError(
        f"no Chromium found (looked for {', '.join(names)}); install Debian's chromium "
        "(`make setup` does, or `apt-get install chromium`) or set report.browser in params.yaml "
        "to a Chromium/Chrome executable")


@dataclass
class PageCheck:
    url: str
    sections: list[str] = field(default_factory=list)  # section ids found (non-empty)
    missing_sections: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    images: int = 0
    links: int = 0
    has_cjk: bool = False  # the page's text holds Chinese characters
    cjk_glyphs_differ: bool = True  # two Chinese characters draw differently (False: boxes, no CJK font)
    screenshot: Path | None = None

    @property
    def problems(self) -> list[str]:
        return ([f"section #{s} missing or empty" for s in self.missing_sections]
                + [f"image does not load: {s}" for s in self.broken_images]
                + [f"broken link: {s}" for s in self.broken_links]
                + [f"request failed: {s}" for s in self.failed_requests]
                + [f"console error: {s}" for s in self.console_errors]
                + ([] if self.cjk_glyphs_differ or not self.has_cjk else
                   ["Chinese characters render as identical boxes: no CJK font for Chromium "
                    "(`make browser` installs fonts-noto-cjk)"]))

    def raise_for_problems(self, page: Path) -> None:
        if self.problems:
            raise BrowserError(f"{page}: {len(self.problems)} problem(s) in a headless browser:\n  "
                               + "\n  ".join(self.problems))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 (a free port) for the duration; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def check_page(page: Path, sections: Sequence[str] = (), screenshot: Path | None = None, browser: str = "",
               width: int = 1400, timeout_s: float = 60.0) -> PageCheck:
    """Load ``page`` over HTTP in headless Chromium and check it (see the module docstring).
    Links inside the page's folder must answer 200; links leaving it are reported broken
    (the report is read offline). Returns a PageCheck; call ``raise_for_problems``."""
    args = (page, sections, screenshot, browser, width, timeout_s)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no event loop here: drive the browser directly
        return _check_page(*args)
    # a Jupyter kernel runs an asyncio loop, where Playwright's sync API refuses to run
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_check_page, *args).result()


def _check_page(page: Path, sections: Sequence[str], screenshot: Path | None, browser: str, width: int,
                timeout_s: float) -> PageCheck:
    from playwright.sync_api import sync_playwright

    page = Path(page).resolve()
    if not page.is_file():
        raise BrowserError(f"{page}: no such page")
    executable = find_browser(browser)
    with serve(page.parent) as base, sync_playwright() as pw:
        url = urljoin(base, page.name)
        result = PageCheck(url)
        chromium = pw.chromium.launch(executable_path=str(executable), args=FLAGS, timeout=timeout_s * 1000)
        try:
            tab = chromium.new_page(viewport={"width": width, "height": 900})
            tab.on("requestfailed", lambda r: result.failed_requests.append(f"{r.url} ({r.failure})"))
            tab.on("response", lambda r: r.status >= 400 and result.failed_requests.append(f"{r.url} ({r.status})"))
            tab.on("console", lambda m: m.type == "error" and result.console_errors.append(m.text))
            tab.goto(url, wait_until="load", timeout=timeout_s * 1000)
            images = tab.eval_on_selector_all(
                "img", "els => els.map(e => [e.getAttribute('src'), e.complete && e.naturalWidth > 0])")
            result.images = len(images)
            result.broken_images = [src for src, ok in images if not ok]
            found = tab.eval_on_selector_all(
                "section[id]", "els => els.filter(e => e.innerText.trim().length > 0).map(e => e.id)")
            result.sections = found
            result.missing_sections = [s for s in sections if s not in found]
            result.has_cjk = tab.evaluate(r"() => /[\u4e00-\u9fff]/.test(document.body.innerText)")
            result.cjk_glyphs_differ = tab.evaluate(CJK_PROBE)
            hrefs = tab.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
            result.links = len(hrefs)
            ids = set(tab.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
            for href in hrefs:
                target = urljoin(url, href)
                if href.startswith("#"):
                    if unquote(href[1:]) not in ids:
                        result.broken_links.append(href)
                elif urlparse(target).netloc != urlparse(base).netloc:
                    result.broken_links.append(f"{href} (leaves the report; it is read offline)")
                else:
                    status = tab.request.get(target.split("#")[0], timeout=timeout_s * 1000).status
                    if status != 200:
                        result.broken_links.append(f"{href} ({status})")
            if screenshot is not None:
                screenshot = Path(screenshot)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                tmp = screenshot.with_name(screenshot.stem + ".tmp.png")
                tab.screenshot(path=str(tmp), full_page=True)
                tmp.replace(screenshot)
                result.screenshot = screenshot
        finally:
            chromium.close()
    return result
