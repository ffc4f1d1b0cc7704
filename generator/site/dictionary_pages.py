"""The shared concept dictionary's pages (issue 19 §4-§5): a page per shown atom, the model-wide map and
its data, and the class pages' "Shared concepts" sections (attached to the class views here, drawn by
templates/shared.html).

Layout (URLs relative; images through the site's image pipeline, `images.ImagePlan.for_dictionary`):
    dictionary/<model>/<NNNN>.html           a shown atom's page (its permalink), depth 2: the chrome
                                             MkDocs renders at that depth (`shell.DEEP_CHROME_PAGE`)
    dictionary/<model>/<role>.<hash>.webp    its MACO views and region strips
    dictionary/<model>.html, <model>.json    the map and its points (loaded by lens.js)

A store without dictionaries gets none of these, and its pages are exactly as before (tested). Atom
pages go through the page cache: an unchanged atlas re-renders nothing, a changed one its pages."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..classes import all_classes
from ..records import TOP_SHARED
from ..store import Store
from .images import ImagePlan
from .pagecache import PageCache
from .pages import Views, page_html
from .paths import site_path, write_if_changed
from .reading import ModelPaths, read_dictionary, read_matches
from .report import SiteReport
from .templating import jinja_env
from .views import short_name
from .views.dictionary import DictionaryView, atom_page, attach_matches, dictionary_view, map_page, shared_view

MAP_GRID = 1000  # map coordinates are integers 0..MAP_GRID-1, as the concept map's
# A class "uses" an atom on the map (its filter highlights it) when the atom is among the class's top
# TOP_SHARED or carries at least this share of its logit, in %. On the demo's atlas the median |share|
# of an atom's listed classes is 0.85 % and the 75th percentile 2.4 %: without a floor every atom
# listed every one of the 4 classes, and a filter highlighted half the map.
MAP_MIN_SHARE = 2.0


def dictionary_views(store: Store, plan: ImagePlan, model_names: list[str], rendered: set[int],
                     report: SiteReport) -> dict[str, DictionaryView]:
    """Every model's dictionary with its images planned and its cross-model matches attached; models
    without a done dictionary are left out (their problems, if any, go to the report)."""
    names = all_classes()
    views: dict[str, DictionaryView] = {}
    for m in model_names:
        d = read_dictionary(store, m, report.problems)
        if d is None:
            continue
        images = plan.for_dictionary(store, m, ModelPaths(store, m))
        n_views = d.atlas.n_images or d.record.n_images
        n_photos = d.atlas.n_photos or d.record.n_photos or n_views  # written before n_photos: photos = views
        augmented = bool(d.atlas.augmented or d.record.augmented)
        views[m] = dictionary_view(m, d.atlas, n_photos, n_views, augmented, d.macos, d.regions, images, rendered, names)
        report.problems += [f"{m} dictionary: {p}" for p in views[m].problems]
        report.atoms_without_maco += views[m].without_maco
        report.placeholders += sum(bool(a.vis.problem) for a in views[m].atoms.values())
    attach_matches(views, read_matches(store, {m: v.atlas.settings_hash for m, v in views.items()}, report.problems))
    return views


def attach_shared(views: Views, dictionaries: dict[str, DictionaryView]) -> None:
    """Each class view gets its "Shared concepts" section for the models whose dictionary saw the class."""
    for i, per_model in views.items():
        for v in per_model:
            d = dictionaries.get(v.name)
            v.shared = shared_view(d, i) if d is not None else None


def map_json(view: DictionaryView) -> str:
    """Every alive atom: [x, y, atom, has a page (1/0), thumbnail hash | 0, [classes using it (MAP_MIN_SHARE)]],
    with x, y the atlas's map scaled to 0..999 and each class's short name once in `classes`."""
    names = all_classes()
    points: list[list[Any]] = []
    classes: dict[int, str] = {}
    users: dict[int, list[int]] = {}
    for i, entry in view.atlas.classes.items():  # a class's top atoms count as atoms it uses, whatever their rank
        for t in entry.top:
            users.setdefault(t.atom, []).append(int(i))
    placed = [a for a in view.atlas.atoms if a.alive and a.xy is not None and len(a.xy) == 2
              and all(math.isfinite(v) for v in a.xy)]
    xy = np.array([a.xy for a in placed], dtype=np.float64).reshape(-1, 2)
    lo, span = (xy.min(axis=0), np.ptp(xy, axis=0)) if len(xy) else (np.zeros(2), np.zeros(2))
    unit = np.where(span > 1e-12, (xy - lo) / np.where(span > 1e-12, span, 1.0), 0.5)  # the atlas's own scale: to [0, 1]
    for a, (ux, uy) in zip(placed, unit):
        x, y = (min(MAP_GRID - 1, int(math.floor(float(v) * MAP_GRID))) for v in (ux, uy))
        av = view.atoms.get(a.index)
        thumb = av.vis.thumb.rsplit(".", 2)[1] if av is not None and av.vis.thumb and not av.vis.problem else 0
        used = list(dict.fromkeys([c.class_index for c in a.classes if abs(c.share) >= MAP_MIN_SHARE] + users.get(a.index, [])))
        for c in used:
            classes[c] = short_name(names[c].name)
        points.append([x, y, a.index, int(av is not None), thumb, used])
    return json.dumps({"model": view.model, "classes": classes, "points": points}, separators=(",", ":"), ensure_ascii=False)


def write_dictionary_pages(out_dir: Path, deep_head: str, deep_tail: str, head: str, tail: str,
                           dictionaries: dict[str, DictionaryView], report: SiteReport, cache: PageCache) -> set[str]:
    """Write every atom page and map; returns the files written (site-relative), for pruning. `deep_*` is the
    chrome at depth 2 (atom pages), `head`/`tail` the class pages' chrome at depth 1 (maps)."""
    env = jinja_env()
    atom_t, map_t = env.get_template("dictionary_concept.html"), env.get_template("dictionary_map.html")
    files: set[str] = set()
    for m, d in dictionaries.items():
        matched = sorted({mv.model for a in d.atoms.values() for mv in a.matches})
        facts = {"n_atoms": d.n_atoms, "n_alive": d.n_alive, "n_photos": d.n_photos, "learned": d.learned,
                 "few": d.few, "head_kind": d.head_kind}
        for index, atom in d.atoms.items():
            rel = atom_page(m, index)
            context = {"root": "../../", "model": m, "atom": atom, "dictionary": facts, "matched_models": matched}
            key = cache.key(rel, context)
            files.add(rel)
            if cache.fresh(rel, key):
                report.dictionary_unchanged += 1
                continue
            chrome = deep_head.replace('/dictionary/_chrome/_chrome.html"', f'/{rel}"')
            data = page_html(chrome, deep_tail, f"Shared concept {index} · {m}", atom_t.render(**context))
            if write_if_changed(site_path(out_dir, rel), data):
                report.dictionary_written += 1
            else:
                report.dictionary_unchanged += 1
            cache.wrote(rel, key)
        data = map_json(d).encode()
        report.largest_dictionary_map_bytes = max(report.largest_dictionary_map_bytes, len(data))
        rel_json, rel_map = f"dictionary/{m}.json", map_page(m)
        body = map_t.render(model=m, top_shared=TOP_SHARED, **facts)
        for rel, blob in ((rel_json, data), (rel_map, page_html(head, tail, f"Dictionary map · {m}", body))):
            if write_if_changed(site_path(out_dir, rel), blob):
                report.dictionary_written += 1
            files.add(rel)
    return files
