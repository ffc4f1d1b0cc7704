"""`lens site`: the orchestration of a build, from the artifact store to a static site.

How the work is split (measured: MkDocs spends ~12 ms a page, so 1000 class pages through it
would cost 12 s on every build, changed or not):
- MkDocs with the Material theme builds the shell (`shell`): home, class index, model pages,
  method, adding a model, credits, the theme's assets and the search index (shell pages only).
- Jinja writes the class pages (`pages`) into the chrome of one page that MkDocs rendered at the
  same depth (`classes/_chrome.html`), so they share the theme, header, dark mode and search box,
  and every relative URL in the chrome stays right.
- Images are WebP, content-addressed (`images`, `generator.webp`): unchanged sources are never
  re-encoded.
- The class filter (class index, model pages, random class) reads one small JSON index.

Output layout, all URLs relative so the site works from any static host and under a sub-path:
    index.html, classes.html, models/<model>.html, method.html, ...   MkDocs
    classes.json, classes.js                                           the filter index (JSON; as a script for file://)
    sitemap.xml, robots.txt (with site_url), .nojekyll                 for public hosts (`publish`)
    classes/<NNNN>.html                                                Jinja
    classes/<NNNN>/<model>/<role>.<hash>.webp                          images

No torch here (class names are read from timm's bundled text files, not through timm).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from .. import webp
from ..config import Zoo
from ..errors import SiteError, StoreError
from ..records import Meta
from ..store import Store
from ..version import __version__
from .atlas import write_atlas
from .dictionary_pages import attach_shared, dictionary_views, write_dictionary_pages
from .images import ImagePlan, place_images
from .manifest import Manifest, code_digest, inputs_digest, tree_signature
from .pagecache import PageCache, templates_digest
from .pages import Views, class_index_json, class_search_docs, index_script, shell_context, write_class_pages
from .paths import (
    CACHE_MARKER,
    INDEX_FILE,
    INDEX_SCRIPT,
    MARKER_FILE,
    cache_lock,
    check_cache_dir,
    check_out_dir,
    default_cache_dir,
    prune,
    remove_links,
    write_if_changed,
)
from .publish import normalize_site_url, write_host_files
from .reading import Unreadable, cap_concepts, class_info, read_metas, select_models
from .relations import ClassRelations, ModelRelations, class_relations, model_relations
from .report import SiteReport
from .shell import DEEP_CHROME_PAGE, build_shell, split_chrome, sync_shell, versions_tag
from .views import count_placeholders, model_class_view, view_problems


def build_site(zoo: Zoo, store_root: Path, out_dir: Path, *, models: list[str] | None = None,
               classes: list[int] | None = None, progress: bool = True, cache_dir: Path | None = None,
               workers: int | None = None, site_url: str | None = None, full_res: bool | None = None,
               verify: bool = False) -> SiteReport:
    """Build (or bring up to date) the static site in `out_dir` from the renders in `store_root`.

    `models`/`classes` restrict the site to those. `site_url` (default: models.yaml `site_url:`)
    is where it will be published (canonical links, sitemap, 404 page; see `publish`). `full_res`
    (default: `site_full_res:`) also publishes every visualization as a lossless PNG. The cache of
    encoded images defaults to a folder beside the site (`.site-cache` for `site`), never inside
    the store: nothing is written into the store, which may be read-only. Nothing is written
    outside `out_dir` and the cache: links found under either are removed, never followed (`paths`).

    What a rebuild trusts: store and site files whose size and modification time are those of the
    last build are not read again (`manifest`, `pagecache`, `images`). `verify` trusts nothing:
    every source is hashed again, every page rendered and compared, every image compared with the
    cache's. Raises SiteError when `out_dir` or `cache_dir` is not safe to write, or cannot be
    written (a full disk, a read-only folder), in one line.
    """
    store_root, out_dir = Path(store_root).resolve(), Path(out_dir).resolve()
    check_out_dir(out_dir, store_root)
    cache_dir = Path(cache_dir).resolve() if cache_dir else default_cache_dir(out_dir)
    check_cache_dir(cache_dir, store_root, out_dir)
    options = Options(normalize_site_url(site_url if site_url is not None else getattr(zoo.data, "site_url", None)),
                      bool(full_res if full_res is not None else getattr(zoo.data, "site_full_res", False)), verify)
    report = SiteReport(out_dir)
    with _write_errors(out_dir, cache_dir):
        cache_dir.mkdir(parents=True, exist_ok=True)
        with cache_lock(cache_dir / ".lock"):  # two builds from one store share the cache's staging folder
            write_if_changed(cache_dir / CACHE_MARKER, b"made by `lens site`: encoded images, pages and the shell\n")
            _build(zoo, Store(store_root), out_dir, cache_dir, models, classes, progress, workers or os.cpu_count() or 1,
                   report, options)
    return report


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


@contextlib.contextmanager
def _write_errors(out_dir: Path, cache_dir: Path) -> Iterator[None]:
    """A full disk or a folder that cannot be written is one line, not a traceback (any other
    OSError is a bug and keeps its traceback). What was written stays: the next build goes on."""
    try:
        yield
    except OSError as e:
        if isinstance(e, StoreError) and isinstance(e.__context__, OSError):
            e = e.__context__  # the store's atomic writer names the store; here it wrote the site or its cache
        if e.errno not in _WRITE_ERRNOS:
            raise
        where = e.filename or f"{out_dir} or {cache_dir}"
        raise SiteError(f"cannot write {where}: {e.strerror or e} (the site folder {out_dir} and its cache {cache_dir} "
                        f"must be writable and have free space; run `lens site` again once they do)") from None


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"site: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _timed(report: SiteReport, name: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    report.seconds[name] = report.seconds.get(name, 0.0) + time.perf_counter() - t


def _out_tag(out_dir: Path) -> str:
    """Names a site folder's files in a cache that may serve several sites."""
    return hashlib.sha256(str(out_dir).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Options:
    site_url: str | None
    full_res: bool
    verify: bool = False  # trust no size and mtime: hash and compare everything


def _build(zoo: Zoo, store: Store, out_dir: Path, cache_dir: Path, models: list[str] | None,
           classes: list[int] | None, progress: bool, workers: int, report: SiteReport, options: Options) -> None:
    t0 = time.perf_counter()
    wanted = None if classes is None else set(classes)
    with _timed(report, "check"):
        model_names = select_models(zoo, store, models, report)
        manifest = Manifest(cache_dir / "manifest" / f"{_out_tag(out_dir)}.json")
        last = manifest.read()
        parts = {"zoo": zoo.data.model_dump(mode="json"), "options": replace(options, verify=False), "models": model_names,
                 "classes": sorted(wanted) if wanted is not None else None, "out": str(out_dir),
                 "templates": templates_digest().hex(), "code": code_digest(), "versions": [__version__, versions_tag()]}
        inputs, report.files_checked = inputs_digest(store.root, model_names, parts)
        if last.get("inputs") == inputs and not options.verify:
            outputs, n = tree_signature(out_dir)
            report.files_checked += n
            if last.get("outputs") == outputs:
                report.up_to_date = True
                report.seconds["total"] = time.perf_counter() - t0
                _say(progress, f"up to date: nothing changed since the last build ({report.files_checked} files checked "
                               f"in {report.seconds['total']:.1f} s)")
                return
    with _timed(report, "check"):  # from here on no path under the site or the cache leads outside them
        report.links_removed = remove_links(out_dir) + remove_links(cache_dir)
    manifest.forget()  # written again only once this build has finished
    _full_build(zoo, store, out_dir, cache_dir, model_names, wanted, progress, workers, report, options)
    with _timed(report, "check"):
        manifest.write(inputs, tree_signature(out_dir)[0])
    report.seconds["total"] = time.perf_counter() - t0
    _say(progress, f"done in {report.seconds['total']:.1f} s: {out_dir / 'index.html'}")


def _full_build(zoo: Zoo, store: Store, out_dir: Path, cache_dir: Path, model_names: list[str], wanted: set[int] | None,
                progress: bool, workers: int, report: SiteReport, options: Options) -> None:
    with _timed(report, "read store"):
        metas = read_metas(store, model_names, wanted)
        cap_concepts(metas, report)
        model_names = [m for m in model_names if any(k[0] == m for k in metas)]
        indices = sorted({i for _, i in metas})
    report.models, report.classes = model_names, len(indices)
    _say(progress, f"{len(indices)} classes x {len(model_names)} models from {store.root}")

    with _timed(report, "relations"):
        relations, class_rel = _relations(store, model_names, metas, cache_dir, report)
    _say(progress, f"relations: recomputed for {', '.join(report.relations_recomputed) or 'no model (cached)'}")

    # Source hashes are per store (a cache may serve several); encoded images are shared by content.
    store_tag = hashlib.sha256(str(store.root).encode()).hexdigest()[:12]
    plan = ImagePlan(webp.WebpCache(cache_dir / "webp"), cache_dir / "hashes" / store_tag, options.full_res,
                     rehash=options.verify)
    with _timed(report, "plan images"):
        views = _class_views(store, plan, model_names, indices, metas, class_rel, report)
        dictionaries = dictionary_views(store, plan, model_names, set(indices), report)
        attach_shared(views, dictionaries)
        report.dictionaries = sorted(dictionaries)
        report.sources_hashed = plan.sources_hashed
    with _timed(report, "images"):
        out_dir.mkdir(parents=True, exist_ok=True)
        write_if_changed(out_dir / MARKER_FILE, b"built by `lens site`; everything here is regenerated\n")
        place_images(out_dir, plan, workers, progress, report, options.verify)
    _say(progress, f"images: {report.images_encoded} encoded, {report.images_linked} placed, {report.images_unchanged} unchanged")

    infos = {i: class_info(i) for i in indices}
    with _timed(report, "shell (MkDocs)"):
        context = shell_context(zoo, store, model_names, metas, infos, views, set(dictionaries))
        shell_site = build_shell(cache_dir / "shell", context, zoo.data.title, model_names, report, options.site_url)
        shell_files = sync_shell(shell_site, out_dir, class_search_docs(infos))
        head, tail = split_chrome(shell_site)
        search = out_dir / "search" / "search_index.json"
        report.search_index_bytes = search.stat().st_size if search.is_file() else 0
    page_cache = PageCache(cache_dir / "pages" / f"{_out_tag(out_dir)}.json", out_dir, head, tail, trust=not options.verify)
    with _timed(report, "class pages"):
        index_bytes = class_index_json(model_names, infos, views).encode()
        write_if_changed(out_dir / INDEX_FILE, index_bytes)
        write_if_changed(out_dir / INDEX_SCRIPT, index_script(index_bytes.decode()))
        report.index_bytes = len(index_bytes)
        pages = write_class_pages(out_dir, head, tail, model_names, metas, infos, views, report, page_cache)
    with _timed(report, "atlas pages"):
        class_files, atlas_files = write_atlas(out_dir, head, tail, model_names, infos, views, relations, class_rel, report,
                                               page_cache)
        # The dictionary's pages and images (none without a dictionary); its images are pruned as pages are.
        deep_head, deep_tail = split_chrome(shell_site, DEEP_CHROME_PAGE)
        atlas_files |= write_dictionary_pages(out_dir, deep_head, deep_tail, head, tail, dictionaries, report, page_cache)
        atlas_files |= {f"{folder}/{name}" for folder, names in plan.folders.items()
                        if not folder.startswith("classes/") for name in names}
        page_cache.save()
        shell_pages = [p for p in shell_files if p.endswith(".html") and p != "404.html"]
        shell_files |= write_host_files(out_dir, options.site_url, shell_pages + [f"classes/{p}" for p in pages]
                                         + sorted(f for f in atlas_files if f.endswith(".html")))
    if not options.site_url:
        report.warnings.append("no site_url: 404.html links assume the site is served at the root of its host; "
                               "set `site_url:` in models.yaml or --site-url before publishing under a sub-path")
    with _timed(report, "prune"):
        report.files_removed = prune(out_dir, shell_files, pages | class_files, plan.folders, atlas_files)


def _relations(store: Store, model_names: list[str], metas: dict[tuple[str, int], Meta | Unreadable | None], cache_dir: Path,
               report: SiteReport) -> tuple[dict[str, ModelRelations], dict[tuple[str, int], ClassRelations | None]]:
    """Each model's concept relations (cached unless its records changed), and each class's part of them."""
    relations: dict[str, ModelRelations] = {}
    class_rel: dict[tuple[str, int], ClassRelations | None] = {}
    for m in model_names:
        rel = model_relations(m, store, {i: meta for (mm, i), meta in metas.items() if mm == m}, cache_dir)
        relations[m] = rel
        report.problems += [f"{m} {line}" for line in rel.problems]
        if rel.recomputed:
            report.relations_recomputed.append(m)
        for i in rel.classes:
            class_rel[(m, i)] = class_relations(rel, i)
    return relations, class_rel


def _class_views(store: Store, plan: ImagePlan, model_names: list[str], indices: list[int],
                 metas: dict[tuple[str, int], Meta | Unreadable | None],
                 class_rel: dict[tuple[str, int], ClassRelations | None], report: SiteReport) -> Views:
    """Every class's view for every model, its images planned; placeholders and their details go to the report."""
    views: Views = {}
    for i in indices:
        views[i] = []
        for m in model_names:
            meta = metas.get((m, i))
            images = plan.for_class(store, m, i) if (m, i) in metas else None
            view = model_class_view(m, meta, images, i, class_rel.get((m, i)))
            report.placeholders += count_placeholders(view)
            report.problems += [f"{m} {i:04d}: {p}" for p in view_problems(view)]
            views[i].append(view)
    return views
