"""The MkDocs shell: home, class index, model pages, method, adding a model, credits, the theme's
assets and the search index. MkDocs runs only when its inputs change (a digest of the Markdown,
our assets, the config and the MkDocs versions). It also renders the chrome that Jinja pages are
placed into (`classes/_chrome.html`), cut at its body mark."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml
from markupsafe import escape

from ..errors import SiteError
from ..reference import field_reference  # noqa: F401  (the site's "Adding a model" page; re-exported)
from .paths import TEMPLATES, site_path, write_if_changed
from .report import SiteReport
from .templating import render

CHROME_PAGE = "classes/_chrome.md"
# The same chrome two folders deep, for the dictionary's atom pages (`dictionary/<model>/<NNNN>.html`): MkDocs
# makes every relative URL of it right for that depth, as it does for the class pages' chrome.
DEEP_CHROME_PAGE = "dictionary/_chrome/_chrome.md"
CHROME_PAGES = (CHROME_PAGE, DEEP_CHROME_PAGE)
TITLE_MARK = "LENSTITLEMARK"
BODY_MARK = "<!--LENSBODYMARK-->"
SHELL_VERSION = "2"  # bump when the shell templates change shape, to force a MkDocs rebuild

# An entry for the "Adding a model" page; tests check that it validates against the schema.
EXAMPLE_ENTRY = """\
models:
  - name: resnet50-a1
    arch: resnet50
    description: ResNet-50, timm's A1 training recipe.
    weights: {timm: a1_in1k}
    concept_layer: features
    maco: {steps: 512}
    craft: {rank: 8}
"""


# ----------------------------------------------------------------------------- MkDocs


def mkdocs_config(title: str, models: list[str], docs_dir: Path, site_dir: Path, site_url: str | None = None) -> dict[str, Any]:
    """`site_url` (where the site is published) gives canonical links and a 404 page whose links
    work under that URL's path (MkDocs makes 404.html links absolute: it is served at any depth)."""
    nav: list[Any] = [{"Home": "index.md"}, {"Classes": "classes.md"}]
    if models:
        nav.append({"Models": [{m: f"models/{m}.md"} for m in models]})
    # "Adding a model" is operator documentation: built (linked from the method page), not in the visitors' menu.
    nav += [{"Method": "method.md"}, {"Credits": "credits.md"}]
    return {
        # Material prints site_name unescaped in places: escape it here (it is never Markdown).
        "site_name": str(escape(title)),
        "docs_dir": str(docs_dir),
        "site_dir": str(site_dir),
        **({"site_url": site_url} if site_url else {}),
        "use_directory_urls": False,  # plain .html links: work from any static host and from disk
        "theme": {
            "name": "material",
            "font": False,  # no Google Fonts: every asset is local
            "features": ["navigation.top", "search.highlight"],
            "palette": [
                {"media": "(prefers-color-scheme: light)", "scheme": "default", "primary": "indigo",
                 "toggle": {"icon": "material/brightness-7", "name": "Switch to dark mode"}},
                {"media": "(prefers-color-scheme: dark)", "scheme": "slate", "primary": "indigo",
                 "toggle": {"icon": "material/brightness-4", "name": "Switch to light mode"}},
            ],
        },
        "plugins": ["search"],
        "markdown_extensions": ["tables", "attr_list", "admonition", {"toc": {"permalink": False}}],
        "extra": {"generator": False},  # drops the footer link to an external site
        "extra_css": ["lens/lens.css"],
        "extra_javascript": ["lens/lens.js"],
        "nav": nav,
        "not_in_nav": "\n".join("/" + p for p in CHROME_PAGES),
        "validation": {"nav": {"omitted_files": "ignore"}, "links": {"unrecognized_links": "ignore"}},
    }


def write_shell_docs(docs_dir: Path, context: dict[str, Any]) -> dict[str, bytes]:
    """The shell's Markdown pages and our assets, as {relative path: bytes}."""
    files: dict[str, bytes] = {
        "index.md": render("docs/home.md", **context).encode(),
        "classes.md": render("docs/classes.md", **context).encode(),
        "method.md": render("docs/method.md", **context).encode(),
        "adding-a-model.md": render("docs/adding-a-model.md", **context).encode(),
        "credits.md": render("docs/credits.md", **context).encode(),
    }
    for page in CHROME_PAGES:
        files[page] = render("docs/chrome.md", title_mark=TITLE_MARK, body_mark=BODY_MARK).encode()
    for m in context["models"]:
        files[f"models/{m.name}.md"] = render("docs/model.md", model=m, **context).encode()
    for asset in sorted((TEMPLATES / "assets").iterdir()):
        if asset.is_file():
            files[f"lens/{asset.name}"] = asset.read_bytes()
    return files


def versions_tag() -> str:
    versions = []
    for dist in ("mkdocs", "mkdocs-material", "pymdown-extensions"):
        try:
            versions.append(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            versions.append("?")
    return ",".join(versions)


def build_shell(shell_dir: Path, context: dict[str, Any], title: str, models: list[str], report: SiteReport,
                site_url: str | None = None) -> Path:
    """Run MkDocs into `shell_dir/site` unless its inputs are unchanged; returns that folder."""
    docs_dir, site_dir = shell_dir / "docs", shell_dir / "site"
    files = write_shell_docs(docs_dir, context)
    config = mkdocs_config(title, models, docs_dir, site_dir, site_url)
    digest = hashlib.sha256()
    digest.update(f"{SHELL_VERSION}|{versions_tag()}|{json.dumps(config, sort_keys=True)}".encode())
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + files[rel] + b"\0")
    stamp = shell_dir / "inputs.sha256"
    # The stamp also signs MkDocs' output by content: a cached chrome or page edited since is rebuilt.
    if stamp.is_file() and stamp.read_text() == f"{digest.hexdigest()} {_output_digest(site_dir)}":
        return site_dir
    shutil.rmtree(docs_dir, ignore_errors=True)
    for rel, data in files.items():
        write_if_changed(site_path(docs_dir, rel), data)
    config_path = shell_dir / "mkdocs.yml"
    write_if_changed(config_path, yaml.safe_dump(config, sort_keys=False).encode())
    _run_mkdocs(config_path, report)
    write_if_changed(stamp, f"{digest.hexdigest()} {_output_digest(site_dir)}".encode())
    report.shell_built = True
    return site_dir


def _output_digest(site_dir: Path) -> str:
    """Every file MkDocs wrote, by path and content ("" when the chrome page is missing)."""
    if not all((site_dir / p.replace(".md", ".html")).is_file() for p in CHROME_PAGES):
        return ""
    h = hashlib.sha256()
    for path in sorted(p for p in site_dir.rglob("*") if p.is_file()):
        h.update(path.relative_to(site_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


class _CollectWarnings(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(f"mkdocs: {record.getMessage()}")


def _run_mkdocs(config_path: Path, report: SiteReport) -> None:
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    mk_log = logging.getLogger("mkdocs")
    handler = _CollectWarnings(report.warnings)
    old_level, old_propagate = mk_log.level, mk_log.propagate
    mk_log.addHandler(handler)
    mk_log.setLevel(logging.WARNING)
    mk_log.propagate = False  # MkDocs' INFO chatter is not ours to print; warnings go to the report
    try:
        build(load_config(str(config_path)))
    finally:
        mk_log.removeHandler(handler)
        mk_log.setLevel(old_level)
        mk_log.propagate = old_propagate


def split_chrome(shell_site: Path, page: str = CHROME_PAGE) -> tuple[str, str]:
    """The chrome of the page MkDocs rendered for class pages (or `page`: DEEP_CHROME_PAGE), cut around its body mark."""
    html = (shell_site / page.replace(".md", ".html")).read_text(encoding="utf-8")
    if html.count(BODY_MARK) != 1:
        raise SiteError("the class page chrome lost its body mark; check templates/docs/chrome.md")
    head, tail = html.split(BODY_MARK)
    return head, tail


SEARCH_INDEX = "search/search_index.json"


def sync_shell(shell_site: Path, out_dir: Path, search_docs: list[dict[str, str]] | None = None) -> set[str]:
    """Copy the MkDocs output into the site, writing only files whose bytes changed. `search_docs`
    (the class pages, which MkDocs never sees) are added to the header search's index."""
    # MkDocs' sitemap lists shell pages only: the build writes one with every page (`publish`).
    skip = {p.replace(".md", ".html") for p in CHROME_PAGES} | {"sitemap.xml", "sitemap.xml.gz"}
    copied = set()
    for path in shell_site.rglob("*"):
        rel = path.relative_to(shell_site).as_posix()
        if not path.is_file() or rel in skip:
            continue
        data = path.read_bytes()
        if rel == SEARCH_INDEX and search_docs:
            index = json.loads(data)
            index["docs"] = [d for d in index.get("docs", [])
                             if not d.get("location", "").startswith(tuple(p[:-3] for p in CHROME_PAGES))]
            index["docs"] += search_docs
            data = json.dumps(index, separators=(",", ":"), ensure_ascii=False).encode()
        write_if_changed(site_path(out_dir, rel), data)
        copied.add(rel)
    return copied
