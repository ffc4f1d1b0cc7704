"""The shared concept dictionary's pages (generator/site/dictionary_pages.py, views/dictionary.py): a page
per shown atom, the class pages' "Shared concepts" sections, the map's data, the same concept in other
models, incremental builds, placeholders and no operator text. Built from the synthetic store's
dictionaries (benchmarks/synthetic_store.py); no model runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from benchmarks.synthetic_store import DEFAULT_MODELS, write_synthetic_store
from generator import site
from generator.config import load_zoo
from generator.records import TOP_SHARED, MatchRecord
from generator.site.dictionary_pages import MAP_MIN_SHARE
from generator.site.publish import check_site
from generator.site.views import FEW_IMAGES
from generator.site.views.dictionary import learned_from, signed_pct
from generator.store import (
    Store,
    atlas_record,
    atom_macos,
    dictionary_matches,
    update_atom_macos,
    write_atlas_record,
    write_dictionary_matches,
)

from .test_site import urls_of

ROOT = Path(__file__).resolve().parent.parent
N_CLASSES = 6


@pytest.fixture(scope="module")
def zoo():
    return load_zoo(ROOT / "models.yaml")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_synthetic_store(tmp_path_factory.mktemp("store"), N_CLASSES, DEFAULT_MODELS, dictionary=True)


@pytest.fixture(scope="module")
def built(zoo, store, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    report = site.build_site(zoo, store, out, progress=False, cache_dir=tmp_path_factory.mktemp("cache"))
    return out, report


def small_store(root: Path, models=DEFAULT_MODELS, classes: int = 2) -> Path:
    """A store with dictionaries and few, small classes: a test that builds several sites stays quick."""
    return write_synthetic_store(root, classes, models, concepts=3, crops=3, attributions=2, dictionary=True)


def _resolves(out: Path, page: Path, url: str) -> bool:
    path = unquote(urlsplit(url).path)
    return not path or (page.parent / path).resolve().is_file()


def _local_urls(html: str) -> list[str]:
    return [u for u in urls_of(html) if not u.startswith(("#", "data:")) and "://" not in u]


def test_every_shown_atom_has_a_page_with_its_parts(built, store):
    out, report = built
    assert report.dictionaries == sorted(DEFAULT_MODELS)
    for m in DEFAULT_MODELS:
        atlas = atlas_record(Store(store), m)
        macos = atom_macos(Store(store), m)
        assert atlas is not None and atlas.shown
        pages = sorted(p.name for p in (out / "dictionary" / m).glob("*.html"))
        assert pages == [f"{k:04d}.html" for k in atlas.shown]  # shown atoms only: no page for dead or unused ones
        for k in atlas.shown:
            page = out / "dictionary" / m / f"{k:04d}.html"
            html = page.read_text()
            atom = atlas.atom(k)
            assert f"Shared concept {k}" in html
            entry = macos.atoms.get(str(k))
            if entry is not None and entry.status == "done":
                assert re.search(rf'<img src="\.\./\.\./dictionary/{m}/a{k:04d}\.[0-9a-f]{{12}}\.webp"', html)
            else:
                assert 'class="lens-missing" data-state="failed"' in html
            assert 'class="lens-opacity-slider"' in html and 'class="lens-heatlayer"' in html and 'class="lens-photo"' in html
            assert f"{100 * atom.frequency:.2f} % of the image regions" in html
            for c in atom.classes:
                assert f"({c.class_index})" in html
            for c in atom.cooccur:
                assert f"shared concept {c.atom}" in html
            learned = learned_from(atlas.n_photos, atlas.n_images, atlas.augmented)
            assert f"learned from the concept-layer activations of {learned}, shared" in html
            assert ("(augmented into 16 views: mirrors and crops)" in learned) == atlas.augmented
            assert ("Few photos" in html) == (atlas.n_photos < FEW_IMAGES)  # 8 photos augmented into 16 views are few
            for url in _local_urls(html):
                assert _resolves(out, page, url), f"{page.relative_to(out)}: {url}"


def test_class_pages_list_the_top_shared_concepts_with_shares_and_links(built, store):
    """Each class page holds a "Shared concepts" box per model whose dictionary saw the class, filled from
    the class JSON (as the other relations are: inline, three models would break the 60 KB page budget)."""
    out, report = built
    atlases = {m: atlas_record(Store(store), m) for m in DEFAULT_MODELS}
    seen = 0
    for i in range(N_CLASSES):
        page = out / "classes" / f"{i:04d}.html"
        if not page.is_file():
            continue
        html = page.read_text()
        data = json.loads((out / "classes" / f"{i:04d}.json").read_text())
        for m, atlas in atlases.items():
            entry = atlas.classes.get(str(i))
            stub = f'<div class="lens-shared" data-model="{m}"></div>'
            if entry is None or m not in data["models"]:
                assert stub not in html and "shared" not in data["models"].get(m, {})
                continue
            assert html.count(stub) == 1
            shared = data["models"][m]["shared"]
            assert len(entry.top) == TOP_SHARED and len(shared["items"]) == TOP_SHARED
            for t, it in zip(entry.top, shared["items"]):
                assert it["atom"] == t.atom and it["share"] == signed_pct(t.share) and it["negative"] == (t.share < 0)
                assert it["page"] == f"dictionary/{m}/{t.atom:04d}.html" and (out / it["page"]).is_file()
                assert it["thumb"] is None or (out / it["thumb"]).is_file()
            assert (shared["bias"], shared["residual"]) == (signed_pct(entry.bias_share), signed_pct(entry.residual_share))
            assert shared["map"] == f"dictionary/{m}.html" and shared["n"] == entry.n_images
            assert shared["few"] == (entry.n_images < FEW_IMAGES)
            assert shared["learned"] == learned_from(atlas.n_photos, atlas.n_images, atlas.augmented)
            seen += 1
        for url in _local_urls(html):
            assert _resolves(out, page, url), f"{page.relative_to(out)}: {url}"
    assert seen >= N_CLASSES
    assert report.largest_page_bytes <= 60 * 1024, report.largest_page  # the class page budget holds


def test_the_map_data_holds_the_alive_atoms_with_their_pages(built, store):
    out, report = built
    for m in DEFAULT_MODELS:
        atlas = atlas_record(Store(store), m)
        data = json.loads((out / "dictionary" / f"{m}.json").read_text())
        alive = [a.index for a in atlas.atoms if a.alive]
        assert sorted(p[2] for p in data["points"]) == alive
        assert all(0 <= p[0] < 1000 and 0 <= p[1] < 1000 for p in data["points"])
        assert {p[2] for p in data["points"] if p[3]} == set(atlas.shown)
        for x, y, atom, has_page, thumb, classes in data["points"]:
            if has_page:
                assert (out / "dictionary" / m / f"{atom:04d}.html").is_file()
            if thumb:
                assert (out / "dictionary" / m / f"a{atom:04d}-t.{thumb}.webp").is_file()
            assert all(str(c) in data["classes"] for c in classes)
            a = atlas.atom(atom)
            strong = [c.class_index for c in a.classes if abs(c.share) >= MAP_MIN_SHARE]
            tops = {int(i) for i, e in atlas.classes.items() if atom in {t.atom for t in e.top}}
            assert classes[:len(strong)] == strong and set(classes) == set(strong) | tops
        html = (out / "dictionary" / f"{m}.html").read_text()
        assert 'class="lens-atlas lens-dictmap"' in html and f'data-map="{m}.json"' in html
        model_page = (out / "models" / f"{m}.html").read_text()
        assert f'href="../dictionary/{m}.html"' in model_page
    assert 0 < report.largest_dictionary_map_bytes < 50 * 1024


def _same_concepts(html: str) -> list[tuple[str, int, str]]:
    found = re.findall(r'<a class="lens-same" href="\.\./\.\./dictionary/([^/]+)/(\d{4})\.html">[^<]*</a> · match ([0-9.]+)', html)
    return [(m, int(k), score) for m, k, score in found]


def test_the_same_concept_in_another_model_only_above_the_threshold(zoo, tmp_path):
    store = small_store(tmp_path / "store", classes=4)
    a, b = sorted(DEFAULT_MODELS[:2])
    sa, sb = (atlas_record(Store(store), m).shown for m in (a, b))
    unshown_b = next(k.index for k in atlas_record(Store(store), b).atoms if not k.shown)
    t = 0.3
    write_dictionary_matches(Store(store), MatchRecord(
        models=[a, b], n_images=16, grid=[7, 7], threshold=t, mutual_rate=0.5,
        a_to_b={str(sa[0]): {"atom": sb[0], "score": 0.8, "mutual": True},
                str(sa[1]): {"atom": sb[1], "score": t / 2, "mutual": False},  # below the threshold: never listed
                str(sa[2]): {"atom": unshown_b, "score": 0.5, "mutual": False}},  # the match there has no page
        b_to_a={str(sb[0]): {"atom": sa[0], "score": 0.8, "mutual": True},
                str(sb[2]): {"atom": sa[3], "score": 0.4, "mutual": False}}))
    out = tmp_path / "site"
    site.build_site(zoo, store, out, progress=False, cache_dir=tmp_path / "cache")

    def atom_html(m: str, k: int) -> str:
        return (out / "dictionary" / m / f"{k:04d}.html").read_text()

    def same_section(html: str) -> str:
        return html.split("The same concept in other models", 1)[1].split("</section>", 1)[0]

    first = atom_html(a, sa[0])
    assert _same_concepts(first) == [(b, sb[0], "0.80")] and "mutual" in same_section(first)
    assert first.count('class="lens-cmp-grid lens-dict-cmp"') == 1  # side by side with the matched concept
    assert f"../../dictionary/{b}/a{sb[0]:04d}" in same_section(first)  # the matched concept's pictures
    below = atom_html(a, sa[1])
    assert _same_concepts(below) == [] and f"the same concept in {b}" not in below
    assert f"No concept of {b} matches it above the threshold." in below
    no_page = atom_html(a, sa[2])
    assert f"the same concept in {b}: shared concept {unshown_b} (no page there)" in no_page
    assert _same_concepts(no_page) == [] and "lens-dict-cmp" not in no_page
    back = atom_html(b, sb[2])
    assert _same_concepts(back) == [(a, sa[3], "0.40")] and "mutual" not in same_section(back).split("Matched by")[0]
    assert _same_concepts(atom_html(b, sb[0])) == [(a, sa[0], "0.80")]
    third = DEFAULT_MODELS[2]  # matched with no model: says so
    k = atlas_record(Store(store), third).shown[0]
    assert "No other model's dictionary was matched with this one." in atom_html(third, k)


def test_a_changed_atlas_rerenders_its_pages_and_an_unchanged_one_does_not(zoo, tmp_path):
    store = small_store(tmp_path / "store", DEFAULT_MODELS[:2])
    shutil.rmtree(store / "dictionary-matches")  # unmatched: each model's pages depend on its own atlas only
    out, cache = tmp_path / "site", tmp_path / "cache"
    first = site.build_site(zoo, store, out, progress=False, cache_dir=cache)
    n_pages = sum(len(atlas_record(Store(store), m).shown) for m in DEFAULT_MODELS[:2])
    assert first.dictionary_written >= n_pages
    shutil.rmtree(cache / "manifest")  # a full build that finds every page as it left it
    second = site.build_site(zoo, store, out, progress=False, cache_dir=cache)
    assert (second.dictionary_written, second.dictionary_unchanged) == (0, n_pages)
    assert second.images_encoded == 0
    m, other = DEFAULT_MODELS[1], DEFAULT_MODELS[0]
    atlas = atlas_record(Store(store), m)
    k = atlas.shown[0]
    atlas.atoms[k].frequency = 0.4321
    write_atlas_record(Store(store), m, atlas)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "dictionary").rglob("*.html")}
    third = site.build_site(zoo, store, out, progress=False, cache_dir=cache)
    assert third.dictionary_written >= 1 and third.dictionary_unchanged >= n_pages - len(atlas.shown)
    assert "43.21 % of the image regions" in (out / "dictionary" / m / f"{k:04d}.html").read_text()
    changed = {p.relative_to(out).as_posix() for p, t in mtimes.items() if p.stat().st_mtime_ns != t}
    assert f"dictionary/{m}/{k:04d}.html" in changed
    assert not any(c.startswith(f"dictionary/{other}/") for c in changed), changed


def test_a_store_without_dictionaries_builds_as_before_and_their_pages_go_with_them(zoo, tmp_path):
    models = DEFAULT_MODELS[:2]
    plain = write_synthetic_store(tmp_path / "plain", 2, models, concepts=3, crops=3, attributions=2)
    with_dict = small_store(tmp_path / "dict", models)
    reference = tmp_path / "reference"
    report = site.build_site(zoo, plain, reference, progress=False, cache_dir=tmp_path / "c0")
    assert report.dictionaries == [] and not (reference / "dictionary").exists()
    assert "lens-shared" not in (reference / "classes" / "0000.html").read_text()
    assert "Shared concept dictionary" not in (reference / "models" / f"{DEFAULT_MODELS[0]}.html").read_text()
    out = tmp_path / "site"
    site.build_site(zoo, with_dict, out, progress=False, cache_dir=tmp_path / "c1")
    assert (out / "dictionary").is_dir() and "lens-shared" in (out / "classes" / "0000.html").read_text()
    for m in models:  # the dictionaries removed: the same store as `plain`
        (with_dict / m / "dictionary.json").unlink()
        shutil.rmtree(with_dict / m / "dictionary")
    shutil.rmtree(with_dict / "dictionary-matches")
    site.build_site(zoo, with_dict, out, progress=False, cache_dir=tmp_path / "c1")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(reference).as_posix() for p in reference.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (reference / rel).read_bytes(), rel


def test_missing_atom_macos_are_placeholders_and_no_page_shows_operator_text(zoo, tmp_path):
    store = small_store(tmp_path / "store", DEFAULT_MODELS[:2])
    m = DEFAULT_MODELS[1]
    (store / m / "dictionary" / "macos.json").unlink()  # no atom MACO rendered yet
    a, b = sorted(DEFAULT_MODELS[:2])
    record = dictionary_matches(Store(store), a, b)
    record.dictionaries = ["an older dictionary", "another"]  # matches of dictionaries since replaced
    write_dictionary_matches(Store(store), record)
    out = tmp_path / "site"
    report = site.build_site(zoo, store, out, progress=False, cache_dir=tmp_path / "cache")
    assert any("from older dictionaries" in p for p in report.problems)
    assert not any('class="lens-same"' in p.read_text() for p in (out / "dictionary").rglob("*.html"))
    shown = atlas_record(Store(store), m).shown
    for k in shown:
        html = (out / "dictionary" / m / f"{k:04d}.html").read_text()
        assert 'class="lens-missing" data-state="missing"' in html and "Not rendered yet." in html
    assert any("FloatingPointError" in p for p in report.problems)  # the synthetic failed atom MACO: in the report
    # not rendered (yet, or beyond `dictionary.visualize`) is counted once, not listed as a fault per atom
    assert report.atoms_without_maco >= len(shown) and not any("not rendered yet" in p for p in report.problems)
    assert f"{report.atoms_without_maco} shown concepts without a MACO" in str(report)
    exception = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b|Traceback|not rendered yet|macos\.json|atlas\.|\.heat\.webp")
    for p in (out / "dictionary").rglob("*"):
        if p.suffix in (".html", ".json"):
            text = p.read_text()
            hit = exception.search(text)
            assert not hit, f"{p.relative_to(out)} shows {hit.group(0)!r}"
            assert str(tmp_path) not in text and str(store) not in text


def test_atoms_beyond_dictionary_visualize_say_so_not_yet(zoo, tmp_path):
    """With `dictionary.visualize: 1` recorded in macos.json, a shown atom that is no class's top atom has
    no MACO because of the setting: its page and the class boxes say so, not "not rendered yet"."""
    store = small_store(tmp_path / "store", DEFAULT_MODELS[:1])
    m = DEFAULT_MODELS[0]
    atlas = atlas_record(Store(store), m)
    first = {c.top[0].atom for c in atlas.classes.values()}
    beyond = [k for k in atlas.shown if k not in first]
    assert beyond, "the synthetic atlas shows atoms beyond the classes' first"

    def limit_to_one(record) -> None:  # noqa: ANN001
        record.visualize = 1
        for k in beyond:
            record.atoms.pop(str(k), None)

    update_atom_macos(Store(store), m, atom_macos(Store(store), m).settings_hash, limit_to_one)
    out = tmp_path / "site"
    report = site.build_site(zoo, store, out, progress=False, cache_dir=tmp_path / "cache")
    for k in beyond:
        html = (out / "dictionary" / m / f"{k:04d}.html").read_text()
        assert 'data-state="not-visualized"' in html and "Only each class's top shared concept has a visualization." in html
    items = [it for i in atlas.classes for it in json.loads((out / "classes" / f"{int(i):04d}.json").read_text())
             ["models"][m]["shared"]["items"]]
    assert {it["atom"] for it in items if it.get("limit") == 1} == {it["atom"] for it in items if it["atom"] in beyond} != set()
    assert all("limit" not in it for it in items if it["atom"] in first)
    assert report.atoms_without_maco >= len(beyond) and not any("not visualized" in p for p in report.problems)


def test_few_photos_make_the_dictionary_say_its_concepts_are_unreliable(zoo, tmp_path):
    store = small_store(tmp_path / "store", DEFAULT_MODELS[:1], classes=1)
    m = DEFAULT_MODELS[0]
    atlas = atlas_record(Store(store), m)
    atlas.n_photos = 3
    write_atlas_record(Store(store), m, atlas)
    out, url = tmp_path / "site", "https://example.org/gallery/"
    site.build_site(zoo, store, out, progress=False, cache_dir=tmp_path / "cache", site_url=url)
    rel = f"dictionary/{m}/{atlas.shown[0]:04d}.html"
    html = (out / rel).read_text()
    assert "Few photos" in html and "3 photos" in html and "unreliable" in html
    assert "Few photos" in (out / "dictionary" / f"{m}.html").read_text()
    # published under a sub-path: the atom page's canonical link is its own, the sitemap lists it, nothing leaks
    assert f'<link rel="canonical" href="{url}{rel}">' in html and "_chrome" not in html
    assert f"<loc>{url}{rel}</loc>" in (out / "sitemap.xml").read_text()
    assert check_site(out, url) == []
