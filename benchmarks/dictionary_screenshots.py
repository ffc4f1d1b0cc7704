"""Screenshots of the shared concept dictionary's pages (issue 19 §4): a shared concept's page, a class
page's "Shared concepts" section and the dictionary map filtered by a class, in headless Chromium (as
the browser tests drive it), saved as small palette PNGs in docs/screenshots/issue19-*.png.

    python benchmarks/dictionary_screenshots.py [--store STORE]   # default: a synthetic store with dictionaries

With --store, the site is built from that store (e.g. a demo store rendered with `--what dictionary`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.synthetic_store import write_synthetic_store  # noqa: E402
from generator import site  # noqa: E402
from generator.config import load_zoo  # noqa: E402
from generator.store import Store, atlas_record  # noqa: E402

SHOTS = HERE.parent / "docs" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _save(target, name: str) -> Path:  # noqa: ANN001 - a page (its viewport) or a locator (that element)
    raw = SHOTS / f"{name}.raw.png"
    target.screenshot(path=str(raw))
    with Image.open(raw) as im:  # a palette keeps a screenshot of flat UI ~100-200 KB
        im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(SHOTS / f"{name}.png", optimize=True)
    raw.unlink()
    return SHOTS / f"{name}.png"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, default=None)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="lens-dict-shots-"))
    try:
        store = args.store or write_synthetic_store(work / "store", 6, dictionary=True)
        out = work / "site"
        report = site.build_site(load_zoo(HERE.parent / "models.yaml"), store, out, progress=False, cache_dir=work / "cache")
        model = report.dictionaries[0]
        atlas = atlas_record(Store(store), model)
        index = int(next(iter(atlas.classes)))
        httpd = site.make_server(out, port=0, quiet=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{httpd.server_address[1]}/"
        SHOTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(base + f"classes/{index:04d}.html#model={model}")
            box = page.locator(f'.lens-shared[data-model="{model}"]')
            box.locator("a.lens-shared-link").first.wait_for()
            box.scroll_into_view_if_needed()
            page.wait_for_function(f"[...document.querySelectorAll('.lens-shared[data-model=\"{model}\"] img')].every(i => i.complete)")
            print(_save(box, "issue19-class-shared"))
            box.locator("a.lens-shared-link").first.click()
            page.wait_for_load_state("load")
            page.locator(".lens-opacity-slider").first.fill("60")
            print(_save(page, "issue19-shared-concept"))
            page.goto(base + f"dictionary/{model}.html#c={index}")
            page.wait_for_selector(".lens-map .lens-pt")
            print(_save(page, "issue19-dictionary-map"))
            browser.close()
        httpd.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
