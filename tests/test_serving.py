"""generator/site/serving.py and the site as a static host serves it: the built site under a
sub-path (as GitHub project pages serve it) is crawled and every link and image resolves,
404.html included; `lens serve` never leaves the site folder and never lists a folder."""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from benchmarks.synthetic_store import DEFAULT_MODELS, write_synthetic_store
from generator import site
from generator.config import load_zoo

ROOT = Path(__file__).resolve().parent.parent


PREFIX = "/repo/"
SITE_URL = "https://user.github.io/repo/"  # where it would be published: only its path matters here
N_CLASSES = 8


class Refs(HTMLParser):
    """(tag, attribute, url) of every reference of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href") and v]


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(server base URL under PREFIX, site folder), a site built for SITE_URL."""
    store = write_synthetic_store(tmp_path_factory.mktemp("store"), N_CLASSES, DEFAULT_MODELS)
    out = tmp_path_factory.mktemp("pub") / "site"
    site.build_site(load_zoo(ROOT / "models.yaml"), store, out, progress=False, site_url=SITE_URL)
    httpd = site.make_server(out, port=0, quiet=True, prefix=PREFIX)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}{PREFIX}", out
    httpd.shutdown()
    httpd.server_close()


def crawl(start: list[str], base: str) -> dict[str, int]:
    """Follow every href/src from the start pages within `base`; assert each resolves. Returns counts."""
    host = urlsplit(base).netloc
    seen_pages, checked, queue = set(), {}, list(start)
    counts = {"pages": 0, "links": 0, "images": 0, "external": 0}
    while queue:
        url = queue.pop()
        if url in seen_pages:
            continue
        seen_pages.add(url)
        status, body, ctype = get(url)
        if not url.endswith("/does/not/exist.html"):
            assert status == 200, f"{url}: {status}"
        counts["pages"] += 1
        parser = Refs()
        parser.feed(body.decode("utf-8"))
        for tag, attr, ref in parser.refs:
            target = urljoin(url, ref).split("#")[0]
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https"):
                continue
            if parts.netloc != host:
                # Only the canonical link may name another host, and only the published URL.
                assert tag == "link" and target.startswith(SITE_URL), f"{url}: {tag} {ref}"
                counts["external"] += 1
                continue
            assert parts.path.startswith(PREFIX), f"{url} links outside {PREFIX}: {ref}"
            counts["images" if tag == "img" else "links"] += 1
            if target not in checked:
                checked[target], _, _ = get(target)
            assert checked[target] == 200, f"{url} -> {ref}: {checked[target]}"
            if target.endswith(".html") and target not in seen_pages:
                queue.append(target)
    return counts


def test_whole_site_and_404_resolve_under_a_sub_path(published):
    base, out = published
    counts = crawl([base + "index.html", base + "does/not/exist.html"], base)
    pages = len([p for p in out.rglob("*.html")])
    # every page reached (404.html is reached through a missing URL, the chrome page is not published)
    assert counts["pages"] == pages, (counts, pages)
    assert counts["images"] > N_CLASSES * len(DEFAULT_MODELS)
    print(f"\ncrawl under {PREFIX}: {counts['pages']} pages, {counts['links']} links and {counts['images']} images "
          f"checked, {counts['external']} canonical links")


def test_404_page_works_from_any_depth(published):
    base, _ = published
    for missing in ("nope.html", "classes/9999.html", "a/b/c/d/"):
        status, body, ctype = get(base + missing)
        assert status == 404 and ctype.startswith("text/html")
        refs = Refs()
        refs.feed(body.decode())
        local = [urljoin(base + missing, r) for t, _, r in refs.refs if t in ("a", "link", "img", "script") and "://" not in r]
        assert local and all(get(u.split("#")[0])[0] == 200 for u in local), missing


def test_grid_thumbnails_and_search_results_resolve(published):
    """URLs that pages make in JavaScript: the class grid's thumbnails (from classes.js) and the
    header search's results (from the search index)."""
    base, out = published
    script = (out / "classes.js").read_text()
    assert script.startswith("window.LENS_INDEX=") and script.rstrip().endswith(";")
    index = json.loads(script.strip()[len("window.LENS_INDEX="):-1])
    assert index == json.loads((out / "classes.json").read_text())
    thumbs = [f"classes/{row[0]:04d}/{m}/maco-t.{cell}.webp" for row in index["classes"]
              for m, cell in zip(index["models"], row[3]) if isinstance(cell, str) and cell != "!"]
    assert thumbs and all(get(base + t)[0] == 200 for t in thumbs)
    docs = json.loads((out / "search" / "search_index.json").read_text())["docs"]
    assert all(get(base + d["location"].split("#")[0])[0] == 200 for d in docs)


def test_sitemap_lists_every_page_at_the_site_url(published):
    base, out = published
    sitemap = (out / "sitemap.xml").read_text()
    locs = sorted(entry.split("</loc>")[0] for entry in sitemap.split("<loc>")[1:])
    pages = sorted(SITE_URL + p.relative_to(out).as_posix() for p in out.rglob("*.html") if p.name != "404.html")
    assert locs == pages
    assert f"Sitemap: {SITE_URL}sitemap.xml" in (out / "robots.txt").read_text()
    assert f'<link rel="canonical" href="{SITE_URL}classes/0003.html">' in (out / "classes" / "0003.html").read_text()


# ----------------------------------------------------------------------------- safety


@pytest.fixture()
def hostile(tmp_path):
    """A site folder with links out of it, and a server for it under PREFIX."""
    out = tmp_path / "site"
    (out / "sub").mkdir(parents=True)
    (out / "index.html").write_text("<p>home</p>")
    (out / "404.html").write_text("<p>custom not found</p>")
    (out / "sub" / "page.html").write_text("<p>inside</p>")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.txt").write_text("SECRET")
    os.symlink(secret / "key.txt", out / "leak.txt")
    os.symlink(secret, out / "leakdir")
    os.symlink(out / "sub" / "page.html", out / "alias.html")  # a link that stays inside is fine
    httpd = site.make_server(out, port=0, quiet=True, prefix=PREFIX)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_server_never_follows_links_out_of_the_site(hostile):
    for path in ("leak.txt", "leakdir/key.txt", "leakdir/", "..%2fsecret/key.txt", "%2e%2e/secret/key.txt", "sub/../../secret/key.txt"):
        status, body, _ = get(f"{hostile}{PREFIX}{path}")
        assert status == 404 and b"SECRET" not in body, path
    assert get(f"{hostile}{PREFIX}alias.html")[:2] == (200, b"<p>inside</p>")


def test_server_never_lists_a_folder_and_serves_only_under_its_prefix(hostile):
    status, body, _ = get(f"{hostile}{PREFIX}sub/")
    assert status == 404 and b"page.html" not in body and b"custom not found" in body
    assert get(f"{hostile}{PREFIX}sub/page.html")[0] == 200
    assert get(f"{hostile}/index.html")[0] == 404  # outside the prefix
    assert get(f"{hostile}{PREFIX}")[:2] == (200, b"<p>home</p>")
    with urllib.request.urlopen(f"{hostile}{PREFIX.rstrip('/')}") as r:  # /repo -> /repo/
        assert r.url.endswith(PREFIX) and r.read() == b"<p>home</p>"


def test_serve_refuses_a_port_in_use(published):
    base, out = published
    with pytest.raises(site.SiteError, match="choose another --port"):
        site.make_server(out, port=int(urlsplit(base).port))
