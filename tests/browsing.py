"""Helpers of the browser tests: Debian's Chromium driven by playwright (never a browser playwright
downloads), a site built and served over HTTP, and checks of what a page loaded."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from generator import site
from generator.config import load_zoo

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = ROOT / "test-outputs" / "browser"


def serve(out: Path):
    httpd = site.make_server(out, port=0, quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


def build_and_serve(store, tmp_path_factory, name: str):
    """(base URL, site folder) of a site built from `store` and served until the module ends."""
    out = tmp_path_factory.mktemp(name) / "site"
    site.build_site(load_zoo(ROOT / "models.yaml"), store, out, progress=False,
                    cache_dir=tmp_path_factory.mktemp(f"{name}-cache"))
    httpd, base = serve(out)
    yield base, out
    httpd.shutdown()
    httpd.server_close()


class Watch:
    """Everything that went wrong while a page was open: script errors, failed or foreign requests."""

    def __init__(self, page, base: str):  # noqa: ANN001
        self.problems: list[str] = []
        page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        # ERR_ABORTED: a load cut short by leaving the page, not a fault of the site
        page.on("requestfailed", lambda r: "ERR_ABORTED" in (r.failure or "") or self.problems.append(f"failed: {r.url} {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        page.on("request", lambda r: r.url.startswith((base, "data:", "blob:")) or self.problems.append(f"left the site: {r.url}"))


def load_all_images(page) -> list[str]:  # noqa: ANN001
    """Scroll every image into view (lazy loading), then force the hidden ones (other models,
    overlays) to load too; returns the images that did not load."""
    page.evaluate("""async () => {
        for (const img of document.querySelectorAll('img')) {
            if (img.offsetParent !== null) { img.scrollIntoView(); await new Promise(r => setTimeout(r, 5)); }
        }
        for (const img of document.querySelectorAll('img')) img.loading = 'eager';
        window.scrollTo(0, 0);
    }""")
    page.wait_for_function("[...document.querySelectorAll('img')].every(i => i.complete)", timeout=20_000)
    return page.evaluate("[...document.querySelectorAll('img')].filter(i => !(i.naturalWidth > 0)).map(i => i.src)")


def search_until_results(page, query: str, seconds: float = 60) -> None:  # noqa: ANN001
    """Type into Material's search until results show: its worker loads the index asynchronously,
    and a query typed before it is ready is dropped."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        page.fill(".md-search__input", "")
        page.focus(".md-search__input")  # Material searches on focused keyboard input, not on a bare fill
        page.keyboard.type(query, delay=20)
        try:
            page.wait_for_selector(".md-search-result__item", timeout=3_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"Material search showed no result for {query!r} within {seconds:.0f} s")


def shot(page, name: str) -> None:  # noqa: ANN001
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
