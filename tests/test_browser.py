"""End to end in a real browser: Debian's Chromium, headless, driven by playwright (never a
browser playwright downloads). Builds a site, serves it over HTTP and clicks through it like a
visitor. Screenshots go to test-outputs/browser/.

Skips, saying why, only where the browser truly cannot start.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks.synthetic_store import DEFAULT_MODELS, write_synthetic_store
from generator import site
from generator.config import load_zoo

from .browsing import ROOT, Watch, build_and_serve, load_all_images, search_until_results, serve, shot

pytestmark = pytest.mark.browser

# The store the site is built from: "synthetic_store" below, or "real_store" (a small real render,
# from tests/conftest.py; module or session scoped) -- the one line to change.
STORE_FIXTURE = "real_store"


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory) -> Path:
    return write_synthetic_store(tmp_path_factory.mktemp("store"), 6, DEFAULT_MODELS)


@pytest.fixture(scope="module")
def gallery_store(request) -> Path:
    return request.getfixturevalue(STORE_FIXTURE)


@pytest.fixture(scope="module")
def served(gallery_store, tmp_path_factory):
    """A site built from the gallery store."""
    yield from build_and_serve(gallery_store, tmp_path_factory, "site")


def test_visitor_filters_opens_a_class_toggles_overlay_switches_model_and_goes_next(browser, served):
    base, out = served
    index = json.loads((out / site.INDEX_FILE).read_text())
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page, base)

    # the class index, filtered as you type
    page.goto(base + "classes.html")
    page.wait_for_selector(".lens-card")
    total = page.locator(".lens-card").count()
    assert total == len(index["classes"])
    assert total >= 2, "the browser test needs a store with at least two classes"
    target = index["classes"][max(0, min(total - 2, total // 2 - 1))]  # one with a next class
    card = page.locator(f'.lens-card[href$="classes/{target[0]:04d}.html"]')
    query = target[2].split(",")[0]
    page.fill(".lens-filter", query)
    visible = page.locator(".lens-card:not([hidden])")
    assert 1 <= visible.count() < total
    assert card.is_visible() and query in card.inner_text()
    assert page.locator(".lens-count").inner_text() == f"{visible.count()} of {total} classes"
    page.fill(".lens-filter", target[1])  # by WordNet id
    assert page.locator(".lens-card:not([hidden])").count() == 1
    page.fill(".lens-filter", str(target[0]))  # by index
    assert page.locator(".lens-card:not([hidden])").count() >= 1
    assert not load_all_images(page)
    shot(page, "class-index-filtered")

    # follow the class
    card.click()
    page.wait_for_url(f"**/classes/{target[0]:04d}.html")
    missing = load_all_images(page)
    assert not missing, missing
    shot(page, "class-page")

    # the overlay toggle lays each class MACO's RGBA overlay over it, exactly on top
    page.evaluate("window.__stillHere = true")
    figure = page.locator("figure.lens-maco:not(.lens-no-overlay)").first
    over = figure.locator("img.lens-over")
    assert over.evaluate("e => getComputedStyle(e).display") == "none"
    page.click(".lens-overlay-toggle")
    assert page.locator(".lens-class").get_attribute("class") == "lens-class lens-overlay-on"
    assert page.get_attribute(".lens-overlay-toggle", "aria-pressed") == "true"
    assert over.evaluate("e => getComputedStyle(e).display") == "block"
    assert over.evaluate("e => e.complete && e.naturalWidth > 0")
    assert over.bounding_box() == figure.locator(".lens-plain img").bounding_box()
    shot(page, "class-page-overlay")
    page.click(".lens-overlay-toggle")
    assert over.evaluate("e => getComputedStyle(e).display") == "none"

    # the model switcher changes the concepts without loading another page
    models = page.locator(".lens-switch button")
    assert models.count() == len(index["models"])
    before = page.locator(".lens-craft:not([hidden])").get_attribute("data-model")
    other = models.nth(1) if models.count() > 1 else models.nth(0)
    other_name = other.get_attribute("data-model")
    other.click()
    assert page.locator(".lens-craft:not([hidden])").count() == 1
    assert page.locator(".lens-craft:not([hidden])").get_attribute("data-model") == other_name
    assert other.get_attribute("aria-selected") == "true"
    assert page.evaluate("window.__stillHere === true")  # no navigation happened
    assert models.count() == 1 or before != other_name
    page.evaluate("document.querySelector('.lens-switch').scrollIntoView(); window.scrollBy(0, -70)")
    shot(page, "class-page-model-switched")

    # next class, on the same model
    page.click("a.lens-next")
    nxt = index["classes"][[r[0] for r in index["classes"]].index(target[0]) + 1][0]
    page.wait_for_url(f"**/classes/{nxt:04d}.html#model={other_name}")
    assert page.locator(".lens-craft:not([hidden])").get_attribute("data-model") == other_name
    assert not load_all_images(page)
    shot(page, "class-page-next")

    # phones get the same page in one column
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert not load_all_images(page)
    shot(page, "class-page-mobile")
    assert not watch.problems, watch.problems
    page.close()


def test_home_random_class_and_model_page_grid(browser, served):
    base, out = served
    index = json.loads((out / site.INDEX_FILE).read_text())
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page, base)
    page.goto(base)
    assert not load_all_images(page)
    shot(page, "home")
    page.click("a.lens-random")
    page.wait_for_url("**/classes/*.html")
    slug = page.url.rsplit("/", 1)[1][:4]
    assert int(slug) in {row[0] for row in index["classes"]}

    model = index["models"][0]
    page.goto(base + f"models/{model}.html")
    page.wait_for_selector(".lens-card")
    expected = sum(1 for row in index["classes"] if row[3][0] != 0)
    assert page.locator(".lens-card").count() == expected
    assert not load_all_images(page)
    page.locator(".lens-grid").scroll_into_view_if_needed()
    shot(page, "model-page")

    assert not watch.problems, watch.problems
    page.close()

    dark = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme="dark")  # a fresh visitor
    watch = Watch(dark, base)
    dark.goto(base + "classes.html")  # Material follows the system's dark mode
    dark.wait_for_selector(".lens-card")
    assert dark.locator("body").get_attribute("data-md-color-scheme") == "slate"
    shot(dark, "class-index-dark")
    assert not watch.problems, watch.problems
    dark.close()


def test_hostile_models_yaml_text_runs_no_script(browser, gallery_store, tmp_path):
    raw = yaml.safe_load((ROOT / "models.yaml").read_text())
    raw["title"] = '<script>alert("title")</script> Gallery'
    raw["models"][0]["description"] = '<img src=x onerror=alert(1)> [click](javascript:alert(2)) <script>alert(3)</script>'
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "site"
    site.build_site(load_zoo(tmp_path / "models.yaml"), gallery_store, out, progress=False, cache_dir=tmp_path / "cache")
    httpd, base = serve(out)
    try:
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        for url in ["index.html", f"models/{raw['models'][0]['name']}.html", "classes.html"]:
            page.goto(base + url)
            page.wait_for_timeout(200)
        assert "<script>" in page.title()  # shown as text
        search_until_results(page, "onerror")  # Material's search shows matches as HTML snippets
        page.wait_for_timeout(300)
        assert not dialogs, dialogs
        page.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def atlas_served(synthetic_store, tmp_path_factory):
    """The concept atlas needs the per-image records and head rows the synthetic store writes."""
    yield from build_and_serve(synthetic_store, tmp_path_factory, "atlas")


def test_visitor_explores_the_concept_atlas(browser, atlas_served):
    base, out = atlas_served
    model = DEFAULT_MODELS[0]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page, base)

    # a class page with a concept that has a similar concept in another class and an aligned class with a page
    target, rank = next((i, c["rank"]) for i in range(6) if (out / "classes" / f"{i:04d}.json").is_file()
                        for c in json.loads((out / "classes" / f"{i:04d}.json").read_text())["models"].get(model, {}).get("concepts", [])
                        if c["similar"] and any(a[3] for a in c["aligned"]))
    page.goto(base + f"classes/{target:04d}.html#model={model}")
    section = page.locator(f'.lens-craft[data-model="{model}"]')
    assert section.locator("svg.lens-chart rect").count() == 10  # the importance chart, drawn at build time
    concept_order_and_star_agree(section)
    crops = section.locator(".lens-crops img")
    assert crops.count() == 10 and all(a.startswith("10 crops") for a in crops.evaluate_all("es => es.map(e => e.alt)"))
    box = crops.first.bounding_box()
    assert box["width"] == 5 * 80 + 4 * 4 and box["height"] == 2 * 80 + 4  # two rows of five, at their pixels
    overlay_slider_fades_the_overlay(page)
    large_view_opens(page, section)
    section.locator(".lens-rel .lens-similar-list a").first.wait_for()  # relations JSON loaded on demand
    point = section.locator("svg.lens-strat circle").first
    point.focus()  # decision strategies: the image's thumbnail on focus
    tip = section.locator(".lens-stratwrap .lens-tip")
    assert tip.is_visible() and tip.locator(".lens-thumb").evaluate("e => getComputedStyle(e).backgroundImage").startswith("url(")
    assert not load_all_images(page)
    section.locator("svg.lens-chart").scroll_into_view_if_needed()
    shot(page, "atlas-class-page")
    page.evaluate("document.querySelector('.lens-craft:not([hidden]) .lens-strategies').scrollIntoView(); window.scrollBy(0, -70)")
    point.focus()
    shot(page, "atlas-class-strategies")

    # open that concept's page (its section on the class's concepts page) from the class page
    section.locator("ol.lens-concepts > li h3 a").nth(rank - 1).click()
    page.wait_for_url(f"**/concepts/{model}-{target:04d}.html#c*")
    concept_url = page.url
    sec = page.locator(f"section#{concept_url.split('#')[1]}")
    assert sec.locator("h2").inner_text().startswith(f"Concept {rank}")
    assert sec.locator(".lens-cfull img").first.is_visible()
    assert page.locator("section.lens-csec:visible").count() == 1  # the permalink shows that concept alone
    slider, layer = sec.locator(".lens-opacity-slider"), sec.locator(".lens-heatlayer")
    assert layer.evaluate("e => getComputedStyle(e).opacity") == "1"
    slider.fill("30")  # the heatmap opacity slider
    assert layer.evaluate("e => getComputedStyle(e).opacity") == "0.3"
    assert sec.locator(".lens-photo").is_visible()  # the plain photos under the heatmaps
    assert not load_all_images(page)
    sec.scroll_into_view_if_needed()
    shot(page, "atlas-concept-page")

    # a similar concept of another class, then back and an aligned class
    similar = sec.locator("a.lens-similar").first
    href = similar.get_attribute("href")
    assert f"-{target:04d}.html" not in href
    similar.click()
    page.wait_for_url("**/concepts/" + href.split("/")[-1])
    assert page.locator(f"section#{href.split('#')[1]}").is_visible()
    assert not load_all_images(page)
    page.goto(concept_url)
    page.locator(".lens-cnav-all").click()  # back to every concept of the class
    assert page.locator("section.lens-csec:visible").count() == page.locator("section.lens-csec").count() > 1
    page.goto(concept_url)
    aligned = page.locator(f"section#{concept_url.split('#')[1]} a.lens-aligned").first
    href = aligned.get_attribute("href")
    aligned.click()
    page.wait_for_url("**/classes/" + href.split("/")[-1])
    assert page.locator(".lens-class").count() == 1

    # the concept map: filter by class name, hover, follow a point
    page.goto(base + f"atlas/{model}.html")
    page.wait_for_selector(".lens-map a.lens-pt")
    total = page.locator(".lens-map a.lens-pt").count()
    assert total >= 10 and page.locator(".lens-count").inner_text() == f"{total} of {total} concepts"
    name = json.loads((out / "atlas" / f"{model}.json").read_text())["classes"][str(target)]
    page.fill(".lens-map-filter", name)
    shown = page.locator(".lens-map a.lens-pt:not(.lens-off)")
    assert 1 <= shown.count() < total and page.locator(".lens-count").inner_text() == f"{shown.count()} of {total} concepts"
    shot(page, "atlas-map-filtered-one-class")
    page.fill(".lens-map-filter", "sh")  # goldfish, great white shark, tiger shark: three classes
    colours = page.evaluate("""() => { const by = {};
        document.querySelectorAll('.lens-map a.lens-pt:not(.lens-off)').forEach(a => {
            (by[a.dataset.cls] = by[a.dataset.cls] || new Set()).add(a.firstChild.getAttribute('fill')); });
        return Object.fromEntries(Object.entries(by).map(([k, v]) => [k, [...v]])); }""")
    assert len(colours) == 3 and all(len(v) == 1 for v in colours.values()), colours
    assert len({v[0] for v in colours.values()}) == 3 and "#999" not in {v[0] for v in colours.values()}
    legend = page.locator(".lens-map-legend span")
    assert sorted(t.split(" ", 1)[1] for t in legend.all_inner_texts()) == ["goldfish", "great white shark", "tiger shark"]
    shot(page, "atlas-map-three-classes")
    page.fill(".lens-map-filter", name)
    pt = shown.first
    pt.focus()  # points overlap: keyboard focus shows the same tooltip as hovering
    page.wait_for_function("() => { const i = document.querySelector('.lens-mapwrap .lens-tip img');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    assert not load_all_images(page)
    shot(page, "atlas-map-filtered")
    page.keyboard.press("Enter")  # follow the focused point
    page.wait_for_url(f"**/concepts/{model}-{target:04d}.html#c*")

    # the compare view: two models side by side, another class picked
    page.goto(base + f"atlas/compare.html#c={target}&a={DEFAULT_MODELS[0]}&b={DEFAULT_MODELS[1]}")
    page.wait_for_selector(".lens-cmp-col")
    assert [h.inner_text() for h in page.locator(".lens-cmp-col h3").all()] == list(DEFAULT_MODELS[:2])
    other = next(i for i in range(6) if i != target and (out / "classes" / f"{i:04d}.html").is_file())
    page.select_option(".lens-cmp-b", DEFAULT_MODELS[2])
    page.select_option(".lens-cmp-class", str(other))
    page.wait_for_function(f"() => location.hash.startsWith('#c={other}&') && "
                           f"document.querySelector('.lens-cmp-out a').href.endsWith('classes/{other:04d}.html')")
    assert [h.inner_text() for h in page.locator(".lens-cmp-col h3").all()] == [DEFAULT_MODELS[0], DEFAULT_MODELS[2]]
    assert page.locator(".lens-cmp-col img").count() >= 2
    assert not load_all_images(page)
    shot(page, "atlas-compare")
    assert not watch.problems, watch.problems
    page.close()


def concept_order_and_star_agree(section) -> None:  # noqa: ANN001
    """The list, the chart and the ★ marks of a class's concepts: one order, one set of stars."""
    chart = section.locator("svg.lens-chart text[x='0']").evaluate_all("es => es.map(e => e.textContent)")  # SVG: no innerText
    listed = section.locator("ol.lens-concepts > li h3").all_inner_texts()
    assert [t.rstrip("★") for t in chart] == [t.split()[1] for t in listed] == [str(n) for n in range(1, len(chart) + 1)]
    assert [t.endswith("★") for t in chart] == ["★ important" in t for t in listed]
    texts = section.locator("svg.lens-chart text:not([x='0'])").evaluate_all("es => es.map(e => e.textContent)")
    values = [float(t.replace("−", "-").rstrip(" %")) for t in texts]
    assert values == sorted(values, reverse=True), values
    assert section.locator("p.lens-sub", has_text="Listed by").count() == 1  # the order, stated


def overlay_slider_fades_the_overlay(page) -> None:  # noqa: ANN001
    over = page.locator("figure.lens-maco:not(.lens-no-overlay) img.lens-over").first
    page.locator(".lens-overlay-slider").fill("40")  # moving it turns the overlay on
    assert page.get_attribute(".lens-overlay-toggle", "aria-pressed") == "true"
    assert over.evaluate("e => getComputedStyle(e).display") == "block"
    assert over.evaluate("e => getComputedStyle(e).opacity") == "0.4"
    shot(page, "class-page-overlay-slider")
    page.locator(".lens-overlay-slider").fill("100")
    page.click(".lens-overlay-toggle")
    assert over.evaluate("e => getComputedStyle(e).display") == "none"


def large_view_opens(page, section) -> None:  # noqa: ANN001
    """A concept's larger view loads only when opened (click or keyboard), in a dialog that Esc closes."""
    link = section.locator(".lens-cvis > a.lens-plain").first
    url = link.get_attribute("href")
    assert page.evaluate(f"() => ![...document.images].some(i => i.src.endsWith({url!r}))")  # not loaded before
    link.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("dialog.lens-large")
    assert dialog.evaluate("d => d.open")
    page.wait_for_function("() => { const i = document.querySelector('dialog.lens-large img'); return i.complete && i.naturalWidth > 0; }")
    assert dialog.locator("img").get_attribute("src") == url
    shot(page, "class-page-large-view")
    page.keyboard.press("Escape")
    assert not dialog.evaluate("d => d.open")
