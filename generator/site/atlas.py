"""The concept atlas pages: a page per concept (permalink), each class's relations as JSON loaded
on demand by its class page and by the compare view, a concept map per model, the compare view.

Layout (all at depth 1, so they share the class pages' chrome and its relative URLs):
    concepts/<model>-<NNNN>.html#c<id>    a concept's section (its permalink) on its class's concepts page
    classes/<NNNN>.json                   a class's relations, every model (loaded on demand)
    atlas/<model>.html, atlas/<model>.json   the concept map and its data
    atlas/compare.html                    two models side by side, for any class
URLs inside the JSON files are relative to the site root; pages prefix them with their root.

A page per concept, as a permalink: `concepts/<model>-<NNNN>.html#c<id>` shows that concept alone
(CSS `:target`, templates/assets/lens.css), with links to the class's other concepts and "all".
One file per class and model rather than per concept: each file repeats the theme's chrome (~14 KB
of the ~35 KB of a 10-concept file, against ~2 KB per concept), so files per concept would make
30 000 files and ~4x the bytes at 1000 classes x 3 models, and ~10x the pages to render per build.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..classes import ImageNetClass, all_classes
from .pagecache import PageCache
from .pages import Views, page_html
from .paths import INDEX_SCRIPT, site_path, write_if_changed
from .relations import ModelRelations
from .report import SiteReport
from .templating import jinja_env
from .views import ConceptView, ModelClassView, concepts_page, short_name
from .views.dictionary import shared_json

MAP_GRID = 1000  # map coordinates are integers 0..MAP_GRID-1: small JSON, plenty of resolution


@dataclass
class Link:
    """A related concept (rank set) or class (rank None), with the cosine behind the relation."""

    rank: int | None
    name: str  # the class's short name
    index: int
    href: str | None  # relative to the site root; None where the target has no page
    percent: int  # the cosine, in percent


class Atlas:
    """Lookups shared by every atlas page: concept ranks and thumbnails, class pages that exist."""

    def __init__(self, model_names: list[str], views: Views, relations: dict[str, ModelRelations]):
        self.models = model_names
        self.relations = relations
        self.concepts: dict[tuple[str, int, int], ConceptView] = {}
        self.rendered: set[int] = set(views)
        for i, per_model in views.items():
            for v in per_model:
                for c in v.craft.concepts:
                    self.concepts[(v.name, i, c.id)] = c
        self.names = all_classes()

    def name(self, index: int) -> str:
        return short_name(self.names[index].name)

    def similar(self, model: str, index: int, concept_id: int) -> list[Link]:
        rel = self.relations.get(model)
        n = rel.number(index, concept_id) if rel else None
        if rel is None or n is None:
            return []
        out = []
        for j, cos in zip(rel.similar[n], rel.similar_cos[n]):
            if j < 0:
                continue
            other, other_id = int(rel.owner[j]), int(rel.concept_id[j])
            c = self.concepts.get((model, other, other_id))
            if c is None:
                continue
            out.append(Link(c.rank, self.name(other), other, c.page, round(100 * float(cos))))
        return out

    def aligned(self, model: str, index: int, concept_id: int) -> list[Link]:
        rel = self.relations.get(model)
        n = rel.number(index, concept_id) if rel else None
        if rel is None or n is None or rel.aligned is None or rel.aligned_cos is None:
            return []
        return [Link(None, self.name(int(k)), int(k), f"classes/{int(k):04d}.html" if int(k) in self.rendered else None,
                     round(100 * float(cos))) for k, cos in zip(rel.aligned[n], rel.aligned_cos[n])]

    def head_kind(self, model: str) -> str | None:
        rel = self.relations.get(model)
        return rel.head.kind if rel is not None and rel.head is not None and rel.aligned is not None else None


def _links(links: list[Link]) -> list[list[Any]]:
    return [[lk.rank, lk.name, lk.index, lk.href, lk.percent] for lk in links]


def class_json(index: int, per_model: list[ModelClassView], atlas: Atlas, strategies: dict[str, Any]) -> str:
    """Everything bulky of one class's relations, for its class page and the compare view."""
    models: dict[str, Any] = {}
    for v in per_model:
        if not v.rendered:
            continue
        concepts = []
        for c in v.craft.concepts:
            concepts.append({
                "id": c.id, "rank": c.rank, "page": c.page, "thumb": None if c.vis.problem else f"classes/{c.vis.thumb}",
                "share": None if c.share is None else round(c.share, 4), "important": c.important,
                "similar": _links(atlas.similar(v.name, index, c.id)), "aligned": _links(atlas.aligned(v.name, index, c.id)),
            })
        models[v.name] = {
            "maco": None if v.maco.problem else f"classes/{v.maco.full}",
            "craft_state": v.craft.state,  # neutral states only: operator details never reach visitors
            "aligned_kind": atlas.head_kind(v.name), "concepts": concepts,
            "strategies": strategies.get(v.name),
        }
        if v.shared is not None:  # only with a dictionary: a store without one gets the same JSON as before
            models[v.name]["shared"] = shared_json(v.shared)
    return json.dumps({"class": index, "models": models}, separators=(",", ":"), ensure_ascii=False)


def strategies_json(view: ModelClassView, rel: Any) -> dict[str, Any] | None:
    """The decision-strategy plot of one class and model: points, thumbnails and legend; None where
    the class has too few photos to place (views.FEW_IMAGES: its page says so instead)."""
    if rel is None or not rel.points or view.craft.few:
        return None
    ranks = {c.id: c.rank for c in view.craft.concepts}
    return {
        "kind": rel.kind, "need": rel.need, "n": rel.n_images,
        "points": [[x, y, ranks.get(k, 0)] for x, y, k in rel.points],
        "sources": rel.sources, "sprite": f"classes/{view.craft.sprite}" if view.craft.sprite else None,
        "cols": 16, "cell": 64,
    }


def map_json(model: str, rel: ModelRelations, atlas: Atlas) -> str:
    """Every concept of a model: [x, y, class, concept id, rank, thumbnail hash] with x, y in 0..999."""
    points = []
    classes: dict[int, str] = {}
    for n in range(len(rel.owner)):
        i, k = int(rel.owner[n]), int(rel.concept_id[n])
        c = atlas.concepts.get((model, i, k))
        if c is None:
            continue
        x, y = (min(MAP_GRID - 1, int(math.floor(float(v) * MAP_GRID))) for v in rel.xy[n])
        thumb = c.vis.thumb.rsplit(".", 2)[1] if c.vis.thumb and not c.vis.problem else 0
        points.append([x, y, i, k, c.rank, thumb])
        classes[i] = short_name(atlas.names[i].name)
    return json.dumps({"model": model, "classes": classes, "points": points}, separators=(",", ":"), ensure_ascii=False)


def write_atlas(out_dir: Path, head: str, tail: str, model_names: list[str], infos: dict[int, ImageNetClass],
                views: Views, relations: dict[str, ModelRelations], class_rel: dict[tuple[str, int], Any],
                report: SiteReport, cache: PageCache) -> tuple[set[str], set[str]]:
    """Write the atlas; returns (files under classes/, other files) for pruning."""
    atlas = Atlas(model_names, views, relations)
    env = jinja_env()
    concept_t, map_t, compare_t = env.get_template("concept.html"), env.get_template("map.html"), env.get_template("compare.html")
    class_files, other = set(), set()

    def put(rel: str, data: bytes) -> None:
        if write_if_changed(site_path(out_dir, rel), data):
            report.atlas_written += 1
        other.add(rel)

    for i, info in infos.items():
        per_model = views[i]
        strategies = {v.name: strategies_json(v, class_rel.get((v.name, i))) for v in per_model if v.rendered}
        data = class_json(i, per_model, atlas, strategies).encode()
        write_if_changed(site_path(out_dir, f"classes/{info.slug}.json"), data)
        report.largest_class_json_bytes = max(report.largest_class_json_bytes, len(data))
        class_files.add(f"{info.slug}.json")
        for v in per_model:
            if not v.craft.concepts:
                continue
            rel = concepts_page(v.name, i)
            context = {"cls": info, "model": v.name, "craft": v.craft, "aligned_kind": atlas.head_kind(v.name),
                       "items": [(c, atlas.similar(v.name, i, c.id), atlas.aligned(v.name, i, c.id)) for c in v.craft.concepts]}
            key = cache.key(rel, context)
            other.add(rel)
            if not cache.fresh(rel, key):
                title = f"Concepts of {short_name(info.name)} ({info.index}) · {v.name}"
                put(rel, page_html(head, tail, title, concept_t.render(**context)))
                cache.wrote(rel, key)
    for m in model_names:
        rel = relations.get(m)
        if rel is None:
            continue
        data = map_json(m, rel, atlas).encode()
        report.largest_map_bytes = max(report.largest_map_bytes, len(data))
        put(f"atlas/{m}.json", data)
        put(f"atlas/{m}.html", page_html(head, tail, f"Concept map · {m}", map_t.render(model=m, n=len(rel.owner))))
    put("atlas/compare.html", page_html(head, tail, "Compare models", compare_t.render(models=model_names, index_file=INDEX_SCRIPT)))
    return class_files, other
