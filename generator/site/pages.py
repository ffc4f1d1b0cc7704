"""Pages: the context of the MkDocs shell pages, the class filter index, and the class pages
that Jinja writes into the shell's chrome (written only when their bytes change)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from markupsafe import escape

from ..classes import ImageNetClass
from ..config import Zoo
from ..records import Meta
from ..reference import WORD_DEFAULTS
from ..store import Store
from .pagecache import PageCache
from .paths import INDEX_SCRIPT, site_path, write_if_changed
from .reading import Unreadable, model_card
from .relations import SIMILARITY_THRESHOLD
from .report import SiteReport
from .shell import EXAMPLE_ENTRY, TITLE_MARK, field_reference
from .templating import jinja_env
from .views import ModelClassView, figures_table, model_summary, photo_credits, short_name, view_problems

Views = dict[int, list[ModelClassView]]  # class index -> one view per model, in model order


def shell_context(zoo: Zoo, store: Store, model_names: list[str], metas: dict[tuple[str, int], Meta | Unreadable | None],
                  infos: dict[int, ImageNetClass], views: Views, dictionaries: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    """`dictionaries`: the models whose shared concept dictionary has pages (their model page links its map)."""
    summaries = []
    for pos, m in enumerate(model_names):
        ms = [meta for (mm, _), meta in sorted(metas.items()) if mm == m and isinstance(meta, Meta)]
        summary = model_summary(m, model_card(zoo, store, m), ms)
        summary.dictionary_map = f"dictionary/{m}.html" if m in dictionaries else None
        summary.problem_classes = [infos[i].slug for i, vs in views.items() if view_problems(vs[pos])]
        summaries.append(summary)
    credits = sorted({c for meta in metas.values() if isinstance(meta, Meta) for c in photo_credits(meta)})
    return {
        "title": zoo.data.title,
        "models": summaries,
        "n_classes": len(infos),
        "example": example_figure(infos, views),
        "reference": field_reference(),
        "word_defaults": WORD_DEFAULTS,
        "example_entry": EXAMPLE_ENTRY,
        "credits": credits,
        "index_file": INDEX_SCRIPT,
        "similarity_threshold": SIMILARITY_THRESHOLD,
    }


def example_figure(infos: dict[int, ImageNetClass], views: Views) -> dict[str, Any] | None:
    """The first class MACO with an overlay, for the home page's "how to read" section."""
    for i, model_views in views.items():
        for v in model_views:
            if v.maco.overlay:
                c = infos[i]
                return {"slug": c.slug, "name": c.name, "model": v.name,
                        "plain": f"classes/{v.maco.full}", "overlay": f"classes/{v.maco.overlay}", "size": v.maco.size}
    return None


def class_index_json(model_names: list[str], infos: dict[int, ImageNetClass], views: Views) -> str:
    """[index, wnid, name, per model: thumbnail hash, "!" (failed or missing image) or 0 (not rendered)]."""
    rows = []
    for i, info in infos.items():
        cells: list[Any] = []
        for v in views[i]:
            if not v.rendered:
                cells.append(0)
            elif v.maco.thumb:
                cells.append(v.maco.thumb.rsplit(".", 2)[1])
            else:
                cells.append("!")
        rows.append([i, info.wnid, info.name, cells])
    return json.dumps({"models": model_names, "classes": rows}, separators=(",", ":"), ensure_ascii=False)


def index_script(index_json: str) -> bytes:
    """classes.js: the filter index as a script that sets window.LENS_INDEX (ASCII-only JSON: valid JS everywhere)."""
    return b"window.LENS_INDEX=" + json.dumps(json.loads(index_json), separators=(",", ":")).encode() + b";\n"


def class_search_docs(infos: dict[int, ImageNetClass]) -> list[dict[str, str]]:
    """Entries of the header search's index for the class pages: found by name, WordNet id and index."""
    return [{"location": f"classes/{c.slug}.html", "title": f"{c.slug} {short_name(c.name)}",
             "text": f"{c.name} · {c.wnid} · ImageNet class {i} ({c.slug})"} for i, c in infos.items()]


def _valid(meta: Meta | Unreadable | None) -> Meta | None:
    return meta if isinstance(meta, Meta) else None


def page_html(head: str, tail: str, title: str, body: str) -> bytes:
    """A Jinja body placed into the shell's chrome, with its title."""
    safe_title = str(escape(title))
    return (head.replace(TITLE_MARK, safe_title) + body + tail.replace(TITLE_MARK, safe_title)).encode()


def write_class_pages(out_dir: Path, head: str, tail: str, model_names: list[str],
                      metas: dict[tuple[str, int], Meta | Unreadable | None], infos: dict[int, ImageNetClass],
                      views: Views, report: SiteReport, cache: PageCache) -> set[str]:
    template = jinja_env().get_template("class.html")
    order = list(infos)
    names = set()
    for pos, i in enumerate(order):
        info = infos[i]
        context = {
            "cls": info, "models": views[i],
            "prev": infos[order[pos - 1]] if pos > 0 else None,
            "next": infos[order[pos + 1]] if pos + 1 < len(order) else None,
            "figures": figures_table(model_names, [_valid(metas.get((m, i))) for m in model_names]),
        }
        name = f"{info.slug}.html"
        rel = f"classes/{name}"
        key = cache.key(rel, context)
        if cache.fresh(rel, key):
            report.pages_unchanged += 1
            size = cache.size(rel)
        else:
            # The chrome's canonical link (set with site_url) names the chrome page: make it this page's.
            data = page_html(head.replace('/classes/_chrome.html"', f'/classes/{name}"'), tail,
                             f"{info.slug} · {short_name(info.name)}", template.render(**context))
            if write_if_changed(site_path(out_dir, rel), data):
                report.pages_written += 1
            else:
                report.pages_unchanged += 1
            cache.wrote(rel, key)
            size = len(data)
        if size > report.largest_page_bytes:
            report.largest_page_bytes, report.largest_page = size, rel
        names.add(name)
    return names
