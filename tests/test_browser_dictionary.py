"""The shared concept dictionary's pages in a real browser (issue 19 §7): a class page's shared concepts,
a shared concept's page with its heatmap slider, "the same concept in" another model, and the
dictionary map filtered by a class. Debian's Chromium, headless, driven by playwright, as
tests/test_browser.py; screenshots go to test-outputs/browser/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.synthetic_store import DEFAULT_MODELS, write_synthetic_store
from generator.records import MatchRecord
from generator.store import Store, atlas_record, write_dictionary_matches

from .browsing import Watch, build_and_serve, load_all_images, shot

pytestmark = pytest.mark.browser

N_CLASSES = 6


def match_top_concepts(store: Path, a: str, b: str, index: int) -> tuple[int, int]:
    """A match file in which class `index`'s top shared concept in `a` is the same concept as a shown one of `b`."""
    a, b = sorted((a, b))
    first = atlas_record(Store(store), a).classes[str(index)].top[0].atom
    other = atlas_record(Store(store), b).shown[0]
    write_dictionary_matches(Store(store), MatchRecord(
        models=[a, b], n_images=16, grid=[7, 7], threshold=0.3, mutual_rate=1.0,
        a_to_b={str(first): {"atom": other, "score": 0.72, "mutual": True}},
        b_to_a={str(other): {"atom": first, "score": 0.72, "mutual": True}}))
    return first, other


@pytest.fixture(scope="module")
def dictionary_store(tmp_path_factory) -> tuple[Path, tuple[int, int]]:
    store = write_synthetic_store(tmp_path_factory.mktemp("store"), N_CLASSES, DEFAULT_MODELS, dictionary=True)
    return store, match_top_concepts(store, DEFAULT_MODELS[0], DEFAULT_MODELS[1], 0)


@pytest.fixture(scope="module")
def served(dictionary_store, tmp_path_factory):
    yield from build_and_serve(dictionary_store[0], tmp_path_factory, "dictionary")


def test_visitor_follows_a_shared_concept_through_its_page_another_model_and_the_map(browser, served, dictionary_store):
    base, out = served
    store, (first, other) = dictionary_store
    a, b = sorted(DEFAULT_MODELS[:2])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page, base)

    # a class page: its shared concepts for model a, drawn from the class JSON
    page.goto(base + f"classes/0000.html#model={a}")
    box = page.locator(f'.lens-shared[data-model="{a}"]')
    box.locator("a.lens-shared-link").first.wait_for()
    top = atlas_record(Store(store), a).classes["0"].top
    assert box.locator("a.lens-shared-link").count() == len(top)
    texts = box.locator("li").all_inner_texts()
    assert [t.split("\n")[0] for t in texts] == [f"Shared concept {t.atom}" for t in top]
    assert all("of the logit" in t for t in texts) and "Baseline " in box.inner_text()
    assert not load_all_images(page)
    box.scroll_into_view_if_needed()
    shot(page, "dictionary-class-page")

    # open the top shared concept's page; its slider fades every heatmap layer over the photo regions
    box.locator("a.lens-shared-link").first.click()
    page.wait_for_url(f"**/dictionary/{a}/{first:04d}.html")
    section = page.locator(f"section#a{first}")
    assert section.locator("h2").inner_text() == f"Shared concept {first}"
    layers = section.locator(".lens-heatlayer")
    assert layers.count() >= 2  # its own regions, and the matched concept's beside them
    assert layers.evaluate_all("ls => ls.map(l => getComputedStyle(l).opacity)") == ["1"] * layers.count()
    section.locator(".lens-opacity-slider").fill("30")
    assert layers.evaluate_all("ls => ls.map(l => getComputedStyle(l).opacity)") == ["0.3"] * layers.count()
    assert section.locator(".lens-photo").first.is_visible()
    assert not load_all_images(page)
    shot(page, "dictionary-concept-page")

    # the same concept in model b
    same = section.locator("a.lens-same")
    assert same.count() == 1 and same.inner_text() == f"the same concept in {b}: shared concept {other}"
    same.click()
    page.wait_for_url(f"**/dictionary/{b}/{other:04d}.html")
    assert page.locator(f"section#a{other} a.lens-same").get_attribute("href").endswith(f"dictionary/{a}/{first:04d}.html")
    assert not load_all_images(page)

    # the dictionary map: every alive concept; a class filter keeps the concepts it uses and dims the others
    page.goto(base + f"dictionary/{a}.html")
    page.wait_for_selector(".lens-map .lens-pt")
    data = json.loads((out / "dictionary" / f"{a}.json").read_text())
    total = page.locator(".lens-map .lens-pt").count()
    assert total == len(data["points"]) == sum(x.alive for x in atlas_record(Store(store), a).atoms)
    assert page.locator(".lens-count").inner_text() == f"{total} of {total} shared concepts"
    name = data["classes"]["0"]
    page.fill(".lens-map-filter", name)
    kept = page.locator(".lens-map .lens-pt:not(.lens-off)")
    using = {p[2] for p in data["points"] if 0 in p[5]}
    assert sorted(int(x) for x in kept.evaluate_all("es => es.map(e => e.dataset.atom)")) == sorted(using)
    assert 1 <= kept.count() < total and page.locator(".lens-count").inner_text() == f"{kept.count()} of {total} shared concepts"
    assert page.locator(".lens-map .lens-off").first.evaluate("e => getComputedStyle(e).opacity") == "0.12"
    fills = set(kept.evaluate_all("es => es.map(e => e.firstChild.getAttribute('fill'))"))
    assert len(fills) == 1 and "#999" not in fills  # the class's own colour, as the legend says
    assert page.locator(".lens-map-legend span").all_inner_texts() == [f"0000 {name}"]
    shot(page, "dictionary-map-filtered")
    kept.first.focus()  # keyboard focus shows the point's tooltip
    assert page.locator(".lens-mapwrap .lens-tip").is_visible()

    # the class page's map link opens the map filtered by that class
    page.goto(base + f"dictionary/{a}.html#c=0")
    page.wait_for_selector(".lens-map .lens-pt")
    assert page.input_value(".lens-map-filter") == name
    kept = page.locator(".lens-map .lens-pt:not(.lens-off)")
    assert sorted(int(x) for x in kept.evaluate_all("es => es.map(e => e.dataset.atom)")) == sorted(using)
    assert page.locator(".lens-count").inner_text() == f"{len(using)} of {total} shared concepts"
    assert not watch.problems, watch.problems
    page.close()
