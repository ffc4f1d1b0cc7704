"""The static site: the artifact store turned into a fast, offline, browsable gallery.

How the work is split (measured: MkDocs spends ~12 ms a page, so 1000 class pages through it
would cost 12 s on every build, changed or not):
- MkDocs with the Material theme builds the shell: home, class index, model pages, method,
  adding a model, credits, the theme's assets and the search index (shell pages only, so small).
- Jinja writes the class pages into the chrome of one page that MkDocs rendered at the same
  depth (`classes/_chrome.html`), so they share the theme, header, dark mode and search box,
  and every relative URL in the chrome stays right.
- Images are WebP, content-addressed (`generator.webp`): unchanged sources are never re-encoded.
- The class filter (class index, model pages, random class) reads one small JSON index.

Output layout, all URLs relative so the site works from any static host and under a sub-path:
    index.html, classes.html, models/<model>.html, method.html, ...   MkDocs
    classes.json                                                       the filter index
    classes/<NNNN>.html                                                Jinja
    classes/<NNNN>/<model>/<role>.<hash>.webp                          images

No torch here (class names are read from timm's bundled text files, not through timm).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from markupsafe import escape
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from . import webp
from .resources import templates_dir
from .classes import NUM_CLASSES, ImageNetClass, all_classes
from .config import (
    SLUG_PATTERN,
    CraftSettings,
    MacoSettings,
    ModelEntry,
    Preset,
    WeightsSource,
    Zoo,
    ZooFile,
)
from .errors import SiteError
from .images import CREDITS
from .store import META, Store, atomic_write_bytes, file_lock

TEMPLATES = templates_dir()  # generator/resources.py: the packaged copy, else the checkout's templates/
INDEX_FILE = "classes.json"
MARKER_FILE = ".lens-site"  # says "this folder is a site we built", so pruning it is safe
CHROME_PAGE = "classes/_chrome.md"
TITLE_MARK = "LENSTITLEMARK"
BODY_MARK = "<!--LENSBODYMARK-->"
UNREADABLE = "_unreadable"  # key of the stand-in for a meta.json that cannot be read
SHELL_VERSION = "1"  # bump when the shell templates change shape, to force a MkDocs rebuild
_SLUG = re.compile(SLUG_PATTERN)

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


class SourceError(ValueError):
    """A store file that meta.json names is missing or its path is unsafe."""


# ----------------------------------------------------------------------------- classes, torch-free


def class_info(index: int, meta: dict[str, Any] | None = None) -> ImageNetClass:
    """timm's name for the class (meta is accepted for callers that have it; names come from timm)."""
    return all_classes()[index]


# ----------------------------------------------------------------------------- report


@dataclass
class SiteReport:
    """What a build did; `print(report)` gives a short summary."""

    out_dir: Path
    models: list[str] = field(default_factory=list)
    classes: int = 0
    pages_written: int = 0
    pages_unchanged: int = 0
    images_encoded: int = 0
    images_linked: int = 0  # copied into the site from the encoding cache
    images_unchanged: int = 0  # already in the site
    files_removed: int = 0  # stale pages and images of an earlier build
    sources_hashed: int = 0
    placeholders: int = 0  # parts shown as missing or failed
    shell_built: bool = False  # False: MkDocs skipped, its inputs had not changed
    largest_page: str = ""
    largest_page_bytes: int = 0
    index_bytes: int = 0
    search_index_bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        kb = 1024
        lines = [
            f"site: {self.out_dir}",
            f"  {self.classes} classes x {len(self.models)} models ({', '.join(self.models) or 'none'})",
            f"  class pages: {self.pages_written} written, {self.pages_unchanged} unchanged;"
            f" largest {self.largest_page_bytes / kb:.1f} KB ({self.largest_page or '-'})",
            f"  images: {self.images_encoded} encoded, {self.images_linked} placed from cache,"
            f" {self.images_unchanged} unchanged; {self.files_removed} stale files removed",
            f"  placeholders for missing or failed parts: {self.placeholders}",
            f"  filter index {self.index_bytes / kb:.1f} KB, search index {self.search_index_bytes / kb:.1f} KB,"
            f" shell {'rebuilt' if self.shell_built else 'unchanged'}",
            "  time: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.seconds.items()),
        ]
        lines += [f"  warning: {w}" for w in self.warnings[:20]]
        if len(self.warnings) > 20:
            lines.append(f"  ... and {len(self.warnings) - 20} more warnings")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- paths


def site_path(out_dir: Path, rel: str) -> Path:
    """`out_dir/rel`, refusing anything that would land outside the site."""
    parts = rel.split("/")
    if not rel or "\\" in rel or any(part in ("", ".", "..") for part in parts):
        raise SiteError(f"refusing to write outside the site: {rel!r}")
    return out_dir.joinpath(*parts)


def _store_rel(rel: object) -> str:
    """A file meta.json names, checked to stay inside its class folder."""
    if not isinstance(rel, str) or not rel:
        raise SourceError("no file recorded in meta.json")
    if rel.startswith("/") or "\\" in rel or ".." in rel.split("/"):
        raise SourceError(f"unsafe path {rel!r} in meta.json")
    return rel


def is_model_slug(name: str) -> bool:
    return bool(_SLUG.match(name)) and name not in (".", "..")


def _check_out_dir(out_dir: Path, store_root: Path) -> None:
    if out_dir == store_root or out_dir in store_root.parents or store_root in out_dir.parents:
        raise SiteError(f"the site folder {out_dir} and the artifact store {store_root} must not contain each other")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER_FILE).is_file():
        raise SiteError(f"{out_dir} is not empty and was not built by `lens site`; refusing to overwrite it "
                        f"(choose an empty or new folder)")


def default_cache_dir(store_root: Path) -> Path:
    """Beside the renders it derives from (Store.models() skips dot folders)."""
    return store_root / ".site-cache"


# ----------------------------------------------------------------------------- images of one class


class ImagePlan:
    """The WebP files a build needs: per site folder the names to keys, per key how to encode it."""

    def __init__(self, cache: webp.WebpCache, memo_root: Path):
        self.cache = cache
        self.memo_root = memo_root
        self.folders: dict[str, dict[str, str]] = {}
        self.recipes: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.sources_hashed = 0

    def for_class(self, store: Store, model: str, index: int) -> ClassImages:
        slug = f"{index:04d}"
        folder = f"classes/{slug}/{model}"
        names = self.folders.setdefault(folder, {})
        hashes = webp.SourceHashes(self.memo_root / model / f"{slug}.json", store.class_dir(model, index))
        return ClassImages(self, f"{slug}/{model}", names, hashes)


class ClassImages:
    """Adds the images of one (model, class) to the plan; gives URLs relative to the class page."""

    def __init__(self, plan: ImagePlan, url_base: str, names: dict[str, str], hashes: webp.SourceHashes):
        self.plan, self.url_base, self.names, self.hashes = plan, url_base, names, hashes

    def add(self, role: str, variant: str, files: Sequence[object]) -> str:
        rels = [_store_rel(f) for f in files]
        digests = []
        for rel in rels:
            try:
                digests.append(self.hashes.digest(rel))
            except (FileNotFoundError, NotADirectoryError):
                raise SourceError(f"file missing: {rel}") from None
            except OSError as e:
                raise SourceError(f"file unreadable: {rel} ({e.strerror or e})") from None
        key = webp.variant_key(variant, digests)
        name = webp.output_name(role, key)
        self.names[name] = key
        if key not in self.plan.recipes:
            self.plan.recipes[key] = (variant, tuple(self.hashes.path(r) for r in rels))
        return f"{self.url_base}/{name}"

    def done(self) -> None:
        self.plan.sources_hashed += self.hashes.hashed
        self.hashes.save()


# ----------------------------------------------------------------------------- formatting


def fmt(value: Any) -> str:
    """A meta.json value as short text."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(", ", ": "), default=str)[:300]
    return str(value)[:300]


def short_name(name: str) -> str:
    """The first of an ImageNet class's synonyms: `great white shark, white shark, ...` -> `great white shark`."""
    return name.split(",")[0].strip() or name


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def _mean(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.fmean(vs) if vs else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def part_problem(record: Any, what: str) -> str | None:
    """Why a part cannot be shown, or None when it is done."""
    if not isinstance(record, dict):
        return f"{what} not rendered yet"
    status = record.get("status")
    if status == "failed":
        return f"{what} failed: {fmt(record.get('error') or 'no error message recorded')}"
    if status != "done":
        return f"{what} not finished (status {fmt(status)})"
    return None


# ----------------------------------------------------------------------------- views of one class


def _no_image(problem: str) -> dict[str, Any]:
    return {"problem": problem, "full": None, "thumb": None, "overlay": None, "self_prob": None, "self_rank": None}


def maco_view(record: Any, images: ClassImages, role: str = "maco", what: str = "MACO",
              overlay_variant: str = "overlay", full_variant: str = "full") -> dict[str, Any]:
    """A MACO part (class or concept): full view, thumbnail and RGBA overlay, or the reason it is missing."""
    problem = part_problem(record, what)
    if problem:
        return _no_image(problem)
    files = _dict(record.get("files"))
    try:
        return {
            "problem": None,
            "full": images.add(role, full_variant, [files.get("image")]),
            "thumb": images.add(f"{role}-t", "thumb", [files.get("image")]),
            "overlay": images.add(f"{role}-o", overlay_variant, [files.get("image"), files["alpha"]]) if files.get("alpha") else None,
            "self_prob": _num(record.get("self_prob")),
            "self_rank": record.get("self_rank"),
        }
    except SourceError as e:
        return _no_image(f"{what} image unavailable: {e}")


def concept_view(concept: dict[str, Any], rank: int, images: ClassImages, top_importance: float,
                 visualized: int | None = None) -> dict[str, Any]:
    """`visualized`: how many top concepts this render visualizes (CRAFT's `visualize`; None: all)."""
    role = f"c{int(concept['id'])}"
    importance, share = _num(concept.get("importance")), _num(concept.get("logit_share"))
    view: dict[str, Any] = {
        "id": int(concept["id"]), "rank": rank,
        "importance": fmt(importance), "importance_pct": _bar(importance, top_importance),
        "logit_share": None if share is None else _pct(share), "logit_pct": _bar(None if share is None else abs(share), 1.0),
        # Concepts show as thumbnails; their click-through view is half size (most of a site's bytes otherwise).
        "vis": maco_view(concept.get("maco"), images, role, "Concept visualization", "overlay-thumb", "medium"),
        "crops": None, "n_crops": 0, "problems": [],
    }
    if concept.get("maco") is None and visualized is not None and rank > visualized:
        view["vis"]["problem"] = f"Not visualized: these settings visualize the top {visualized} concepts (craft.visualize)"
    crops = [c.get("file") for c in _list(concept.get("crops")) if isinstance(c, dict)]
    if crops:
        try:
            view["crops"], view["n_crops"] = images.add(f"{role}-crops", "strip", crops), len(crops)
        except SourceError as e:
            view["problems"].append(f"crops unavailable: {e}")
    heatmaps = [a for a in _list(concept.get("attributions")) if isinstance(a, dict)]
    view.update(heatmaps=None, heatmap_sources=", ".join(str(a.get("source") or "?") for a in heatmaps))
    if heatmaps:
        try:
            view["heatmaps"] = images.add(f"{role}-heat", "strip", [a.get("file") for a in heatmaps])
        except SourceError as e:
            view["problems"].append(f"attribution heatmaps unavailable: {e}")
    return view


def _bar(value: float | None, top: float) -> float:
    """Bar length in percent of `top`, clipped to 0-100."""
    if value is None or top <= 0:
        return 0.0
    return round(max(0.0, min(100.0, 100 * value / top)), 1)


def _concept_order(concept: dict[str, Any]) -> tuple[float, float]:
    rank = _num(concept.get("rank"))
    return (rank if rank is not None else math.inf, -(_num(concept.get("importance")) or 0.0))


def craft_view(meta: dict[str, Any], images: ClassImages) -> dict[str, Any]:
    record = meta.get("craft")
    problem = part_problem(record, "CRAFT")
    if problem:
        return _no_craft(problem)
    concepts = sorted((c for c in _list(meta.get("concepts")) if isinstance(c, dict) and _is_int(c.get("id"))), key=_concept_order)
    top = max((_num(c.get("importance")) or 0.0 for c in concepts), default=0.0)
    visualized = _dict(record.get("settings")).get("visualize")
    visualized = visualized if _is_int(visualized) else None
    view = {
        "problem": None,
        "concepts": [concept_view(c, rank, images, top, visualized) for rank, c in enumerate(concepts, start=1)],
        "n_images": record.get("n_images"),
        "selection": record.get("image_selection"),
        "reason": record.get("reason"),
        "credits": photo_credits(meta),
    }
    if not view["concepts"]:
        view["problem"] = f"No concepts: {record.get('reason') or 'CRAFT found no images of this class'}"
    return view


def _no_craft(problem: str) -> dict[str, Any]:
    return {"problem": problem, "concepts": [], "n_images": None, "selection": None, "reason": None, "credits": []}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def photo_credits(meta: dict[str, Any]) -> list[str]:
    """Credits meta.json records, plus those of demo photos recognised by their source id."""
    credits = {str(c) for c in _list(_dict(meta.get("craft")).get("credits"))}
    for concept in _list(meta.get("concepts")):
        for item in _list(_dict(concept).get("crops")) + _list(_dict(concept).get("attributions")):
            source = str(_dict(item).get("source") or "")
            if source.startswith("demo/") and source[5:] in CREDITS:
                credits.add(CREDITS[source[5:]])
    return sorted(credits)


def model_class_view(model: str, meta: dict[str, Any] | None, images: ClassImages | None) -> dict[str, Any]:
    """Everything a class page shows for one model; placeholders say why a part is missing."""
    if meta is None or images is None:
        missing = "Not rendered for this model yet"
        return {"name": model, "rendered": False, "maco": _no_image(missing), "craft": _no_craft(missing)}
    if UNREADABLE in meta:
        return {"name": model, "rendered": True, "maco": _no_image(meta[UNREADABLE]), "craft": _no_craft(meta[UNREADABLE])}
    try:
        return {"name": model, "rendered": True, "maco": maco_view(meta.get("maco"), images), "craft": craft_view(meta, images)}
    finally:
        images.done()


def count_placeholders(view: dict[str, Any]) -> int:
    n = int(bool(view["maco"].get("problem"))) + int(bool(view["craft"].get("problem")))
    for c in view["craft"]["concepts"]:
        n += int(bool(c["vis"].get("problem"))) + len(c["problems"])
    return n


# ----------------------------------------------------------------------------- figures table


def figures_table(models: list[str], metas: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Settings and quality of one class as sections of rows, one column per model."""
    macos = [_dict(_dict(m).get("maco")) for m in metas]
    crafts = [_dict(_dict(m).get("craft")) for m in metas]
    quality = [_dict(m.get("quality")) for m in macos]

    def row(label: str, values: list[Any]) -> dict[str, Any] | None:
        return {"label": label, "cells": [fmt(v) for v in values]} if any(v is not None for v in values) else None

    maco_rows = [
        row("status", [m.get("status") for m in macos]),
        row("probability of the class", [m.get("self_prob") for m in macos]),
        row("rank of the class", [m.get("self_rank") for m in macos]),
        row("steps", [m.get("steps") for m in macos]),
        row("wall time (s)", [m.get("wall_time_s") for m in macos]),
        row("seed", [m.get("seed") for m in macos]),
        row("spectrum", [m.get("spectrum") for m in macos]),
        row("settings hash", [m.get("settings_hash") for m in macos]),
    ]
    others = sorted({o for q in quality for o in _dict(q.get("transfer"))})
    for other in others:
        cells = [_dict(_dict(q.get("transfer")).get(other)) for q in quality]
        maco_rows.append(row(f"rank / probability on {other}",
                             [f"{fmt(c.get('rank'))} / {fmt(c.get('prob'))}" if c else None for c in cells]))
    plaus = [_dict(q.get("plausibility")) for q in quality]
    for key, label in (("margin", "plausibility margin"), ("same_class", "similarity to class images"),
                       ("other_classes", "similarity to other classes"), ("model", "plausibility judged by")):
        maco_rows.append(row(label, [p.get(key) for p in plaus]))
    craft_rows = [
        row("status", [c.get("status") for c in crafts]),
        row("images", [c.get("n_images") for c in crafts]),
        row("image selection", [c.get("image_selection") for c in crafts]),
        row("concepts", [len(_list(_dict(m).get("concepts"))) if c else None for m, c in zip(metas, crafts)]),
        row("NMF relative error", [c.get("nmf_error") for c in crafts]),
        row("deletion AUC, by importance", [_dict(c.get("deletion")).get("auc_importance") for c in crafts]),
        row("deletion AUC, random order", [_dict(c.get("deletion")).get("auc_random") for c in crafts]),
        row("wall time (s)", [c.get("wall_time_s") for c in crafts]),
        row("settings hash", [c.get("settings_hash") for c in crafts]),
    ]
    sections = [
        {"title": "MACO", "rows": [r for r in maco_rows if r], "settings": False},
        {"title": "CRAFT", "rows": [r for r in craft_rows if r], "settings": False},
        {"title": "MACO settings", "rows": _settings_rows(macos), "settings": True},
        {"title": "CRAFT settings", "rows": _settings_rows(crafts), "settings": True},
    ]
    return [s for s in sections if s["rows"]]


def _settings_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    settings = [_dict(r.get("settings")) for r in records]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return [{"label": k, "cells": [fmt(s.get(k)) if k in s else "—" for s in settings]} for k in keys]


# ----------------------------------------------------------------------------- store reading


def read_meta(store: Store, model: str, index: int) -> dict[str, Any] | None:
    """meta.json, or {UNREADABLE: why} when it cannot be read (shown as a placeholder)."""
    try:
        meta = store.read_meta(model, index)
    except (RuntimeError, OSError, UnicodeDecodeError) as e:
        return {UNREADABLE: f"meta.json unreadable: {e}"}
    if meta is not None and not isinstance(meta, dict):
        return {UNREADABLE: "meta.json is not a JSON object"}
    return meta


def rendered_classes(store: Store, model: str) -> list[int]:
    base = store.root / model
    if not base.is_dir():
        return []
    found = []
    with os.scandir(base) as it:
        for d in it:
            if d.name.isdigit() and len(d.name) == 4 and int(d.name) < NUM_CLASSES and os.path.isfile(os.path.join(d.path, META)):
                found.append(int(d.name))
    return sorted(found)


def select_models(zoo: Zoo, store: Store, requested: list[str] | None, report: SiteReport) -> list[str]:
    """Requested models, else the zoo's in models.yaml order then any others in the store; only
    models with at least one rendered class, and only names that are safe slugs."""
    names = list(requested) if requested is not None else list(zoo.models) + [m for m in store.models() if m not in zoo.models]
    chosen = []
    for name in dict.fromkeys(names):
        if not is_model_slug(name):
            report.warnings.append(f"skipping model {name!r}: not a valid slug")
        elif (store.root / name).is_dir():
            chosen.append(name)
        elif requested is not None:
            report.warnings.append(f"model {name!r} has nothing rendered in {store.root}")
    return chosen


def model_card(zoo: Zoo, store: Store, model: str) -> dict[str, Any]:
    """model.json written by the renderer, completed from models.yaml (whose description wins)."""
    try:
        card = _dict(json.loads((store.root / model / "model.json").read_text()))
    except (OSError, json.JSONDecodeError):
        card = {}
    entry: ModelEntry | None = zoo.models.get(model)
    if entry is not None:
        # The card says what was rendered; only the description is prose users edit later.
        card["description"] = entry.description or card.get("description")
        card.setdefault("arch", entry.arch)
        card.setdefault("weights", entry.weights.describe())
        card.setdefault("concept_layer", entry.concept_layer)
        card.setdefault("key_map", entry.key_map)
    return card


def model_summary(model: str, card: dict[str, Any], metas: list[dict[str, Any]]) -> dict[str, Any]:
    """The model page's quality figures, computed over its rendered classes."""
    macos = [_dict(m.get("maco")) for m in metas]
    crafts = [_dict(m.get("craft")) for m in metas]
    done_macos = [m for m in macos if m.get("status") == "done"]
    ranks = [m.get("self_rank") for m in done_macos if _num(m.get("self_rank")) is not None]
    transfer = [_num(_dict(t).get("rank")) for m in done_macos for t in _dict(_dict(m.get("quality")).get("transfer")).values()]
    transfer = [t for t in transfer if t is not None]
    margins = [_num(_dict(_dict(m.get("quality")).get("plausibility")).get("margin")) for m in done_macos]
    done_crafts = [c for c in crafts if c.get("status") == "done"]
    figures = [
        ("classes rendered", str(len(metas))),
        ("MACO done / failed", f"{len(done_macos)} / {sum(m.get('status') == 'failed' for m in macos)}"),
        ("CRAFT done / failed", f"{len(done_crafts)} / {sum(c.get('status') == 'failed' for c in crafts)}"),
        ("MACO images classified as their class (top-1)", _pct(sum(r == 1 for r in ranks) / len(ranks)) if ranks else None),
        ("MACO images in another model's top 5 (transfer)", _pct(sum(t <= 5 for t in transfer) / len(transfer)) if transfer else None),
        ("mean plausibility margin", fmt(_mean(margins)) if _mean(margins) is not None else None),
        ("mean CRAFT deletion AUC, by importance", _fmt_mean(_dict(c.get("deletion")).get("auc_importance") for c in done_crafts)),
        ("mean CRAFT deletion AUC, random order", _fmt_mean(_dict(c.get("deletion")).get("auc_random") for c in done_crafts)),
        ("mean NMF relative error", _fmt_mean(c.get("nmf_error") for c in done_crafts)),
        ("total render time (h)", fmt(sum(_num(r.get("wall_time_s")) or 0.0 for r in macos + crafts) / 3600)),
    ]
    accuracy = _dict(card.get("accuracy"))
    preprocess = _dict(card.get("preprocess"))
    card_rows = [
        ("architecture (timm)", card.get("arch")),
        ("parameters", f"{card['params'] / 1e6:.2f} M" if _num(card.get("params")) else None),
        ("weights", card.get("weights")),
        ("checkpoint key map", card.get("key_map")),
        ("concept layer", card.get("concept_layer")),
        ("measured top-1 accuracy", f"{_pct(_num(accuracy.get('top1')))} on {fmt(accuracy.get('n_images'))} images"
                                    f" ({fmt(accuracy.get('source'))})" if _num(accuracy.get("top1")) is not None else None),
    ] + [(f"preprocess: {k}", fmt(v)) for k, v in preprocess.items()]
    return {
        "name": model,
        "description": card.get("description"),
        "arch": card.get("arch"),
        "n_classes": len(metas),
        "card": [{"label": k, "value": str(v)} for k, v in card_rows if v is not None],
        "figures": [{"label": k, "value": v} for k, v in figures if v is not None],
        "maco_settings": _common_settings(done_macos),
        "craft_settings": _common_settings(done_crafts),
    }


def _fmt_mean(values: Iterable[Any]) -> str | None:
    m = _mean(_num(v) for v in values)
    return None if m is None else fmt(m)


def _common_settings(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The settings most classes were rendered with, and in how many classes."""
    blobs = Counter(json.dumps(_dict(r.get("settings")), sort_keys=True) for r in records if r.get("settings"))
    if not blobs:
        return []
    blob, n = blobs.most_common(1)[0]
    rows = [{"label": k, "value": fmt(v)} for k, v in json.loads(blob).items()]
    if len(blobs) > 1:
        rows.append({"label": "classes with these settings", "value": f"{n} of {len(records)}"})
    return rows


# ----------------------------------------------------------------------------- adding-a-model reference


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    return re.sub(r"\b(typing|pydantic\.main|generator\.config)\.", "", text).replace("NoneType", "None")


def _default_text(f: Any) -> str:
    if f.is_required():
        return "required"
    value = f.default_factory() if f.default_factory is not None else f.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "see below"
    return json.dumps(value, default=str) if value is not None else "null"


def field_reference() -> list[dict[str, Any]]:
    """models.yaml keys, types, defaults and descriptions, read from the pydantic models so the
    page never drifts from the schema."""
    sections = [
        ("Top level", ZooFile), ("Each entry of `models`", ModelEntry), ("`weights` of a model", WeightsSource),
        ("`defaults.maco`, a model's `maco`", MacoSettings), ("`defaults.craft`, a model's `craft`", CraftSettings),
        ("Each entry of `presets`", Preset),
    ]
    out = []
    for title, kind in sections:
        rows = [{"key": name, "type": _type_name(f.annotation), "default": _default_text(f), "description": f.description or ""}
                for name, f in kind.model_fields.items()]
        out.append({"title": title, "doc": (kind.__doc__ or "").strip(), "rows": rows})
    return out


# ----------------------------------------------------------------------------- jinja


@functools.lru_cache(maxsize=2)
def jinja_env(templates: Path = TEMPLATES) -> jinja2.Environment:
    """Autoescape on for every template, Markdown included (text from models.yaml is inert there too)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = fmt
    env.filters["short_name"] = short_name
    return env


def render(name: str, **context: Any) -> str:
    return jinja_env().get_template(name).render(**context)


# ----------------------------------------------------------------------------- the shell (MkDocs)


def mkdocs_config(title: str, models: list[str], docs_dir: Path, site_dir: Path) -> dict[str, Any]:
    nav: list[Any] = [{"Home": "index.md"}, {"Classes": "classes.md"}]
    if models:
        nav.append({"Models": [{m: f"models/{m}.md"} for m in models]})
    nav += [{"Method": "method.md"}, {"Adding a model": "adding-a-model.md"}, {"Credits": "credits.md"}]
    return {
        # Material prints site_name unescaped in places: escape it here (it is never Markdown).
        "site_name": str(escape(title)),
        "docs_dir": str(docs_dir),
        "site_dir": str(site_dir),
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
        "not_in_nav": "/" + CHROME_PAGE,
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
        CHROME_PAGE: render("docs/chrome.md", title_mark=TITLE_MARK, body_mark=BODY_MARK).encode(),
    }
    for m in context["models"]:
        files[f"models/{m['name']}.md"] = render("docs/model.md", model=m, **context).encode()
    for asset in sorted((TEMPLATES / "assets").iterdir()):
        if asset.is_file():
            files[f"lens/{asset.name}"] = asset.read_bytes()
    return files


def _versions_tag() -> str:
    versions = []
    for dist in ("mkdocs", "mkdocs-material", "pymdown-extensions"):
        try:
            versions.append(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            versions.append("?")
    return ",".join(versions)


def build_shell(shell_dir: Path, context: dict[str, Any], title: str, models: list[str], report: SiteReport) -> Path:
    """Run MkDocs into `shell_dir/site` unless its inputs are unchanged; returns that folder."""
    docs_dir, site_dir = shell_dir / "docs", shell_dir / "site"
    files = write_shell_docs(docs_dir, context)
    config = mkdocs_config(title, models, docs_dir, site_dir)
    digest = hashlib.sha256()
    digest.update(f"{SHELL_VERSION}|{_versions_tag()}|{json.dumps(config, sort_keys=True)}".encode())
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + files[rel] + b"\0")
    stamp = shell_dir / "inputs.sha256"
    if stamp.is_file() and stamp.read_text() == digest.hexdigest() and (site_dir / CHROME_PAGE.replace(".md", ".html")).is_file():
        return site_dir
    shutil.rmtree(docs_dir, ignore_errors=True)
    for rel, data in files.items():
        path = site_path(docs_dir, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    config_path = shell_dir / "mkdocs.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    _run_mkdocs(config_path, report)
    stamp.write_text(digest.hexdigest())
    report.shell_built = True
    return site_dir


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


def split_chrome(shell_site: Path) -> tuple[str, str]:
    """The chrome of the page MkDocs rendered for class pages, cut around its body mark."""
    html = (shell_site / CHROME_PAGE.replace(".md", ".html")).read_text(encoding="utf-8")
    if html.count(BODY_MARK) != 1:
        raise SiteError("the class page chrome lost its body mark; check templates/docs/chrome.md")
    head, tail = html.split(BODY_MARK)
    return head, tail


def sync_shell(shell_site: Path, out_dir: Path) -> set[str]:
    """Copy the MkDocs output into the site, writing only files whose bytes changed."""
    skip = {CHROME_PAGE.replace(".md", ".html"), "sitemap.xml", "sitemap.xml.gz"}  # no site_url: a sitemap is useless
    copied = set()
    for path in shell_site.rglob("*"):
        rel = path.relative_to(shell_site).as_posix()
        if not path.is_file() or rel in skip:
            continue
        write_if_changed(site_path(out_dir, rel), path.read_bytes())
        copied.add(rel)
    return copied


def write_if_changed(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return True


# ----------------------------------------------------------------------------- pruning


def prune(out_dir: Path, shell_files: set[str], pages: set[str], folders: dict[str, dict[str, str]]) -> int:
    """Delete what an earlier build left and this one did not make; only inside our own layout."""
    removed = 0
    keep_top = shell_files | {INDEX_FILE, MARKER_FILE}
    for root, dirs, files in os.walk(out_dir):
        rel_root = Path(root).relative_to(out_dir).as_posix()
        if rel_root == ".":
            dirs[:] = [d for d in dirs if d != "classes"]
        for f in files:
            rel = f if rel_root == "." else f"{rel_root}/{f}"
            if rel not in keep_top:
                os.unlink(os.path.join(root, f))
                removed += 1
    classes_dir = out_dir / "classes"
    if not classes_dir.is_dir():
        return removed
    wanted_dirs: dict[str, set[str]] = {}
    for folder in folders:
        _, slug, model = folder.split("/")
        wanted_dirs.setdefault(slug, set()).add(model)
    for entry in os.scandir(classes_dir):
        if entry.is_file() and entry.name not in pages:
            os.unlink(entry.path)
            removed += 1
        elif entry.is_dir() and entry.name not in wanted_dirs:
            removed += _remove(entry)
        elif entry.is_dir():
            for sub in os.scandir(entry.path):
                if sub.is_dir() and sub.name in wanted_dirs[entry.name]:
                    names = folders[f"classes/{entry.name}/{sub.name}"]
                    removed += sum(_remove(f) for f in os.scandir(sub.path) if f.name not in names)
                else:
                    removed += _remove(sub)
    return removed


def _remove(entry: os.DirEntry[str] | Path) -> int:
    """Delete a file or a whole folder; returns how many files went."""
    path = Path(entry)
    if path.is_dir() and not path.is_symlink():
        n = sum(len(files) for _, _, files in os.walk(path))
        shutil.rmtree(path)
        return n
    path.unlink()
    return 1


# ----------------------------------------------------------------------------- images into the site


def place_images(out_dir: Path, plan: ImagePlan, workers: int, progress: bool, report: SiteReport) -> None:
    """Encode what the cache lacks, then link every missing output into the site."""
    missing: list[tuple[Path, str]] = []
    for folder, names in plan.folders.items():
        target = site_path(out_dir, folder)
        try:
            present = {e.name for e in os.scandir(target)}
        except FileNotFoundError:
            present = set()
            target.mkdir(parents=True, exist_ok=True)
        for name, key in names.items():
            if name in present:
                report.images_unchanged += 1
            else:
                missing.append((target / name, key))
    jobs = {key: plan.recipes[key] for _, key in missing if not plan.cache.has(key)}
    report.images_encoded = len(jobs)
    report.warnings += [f"unreadable image, shown as a placeholder: {e}" for e in
                        webp.encode_missing(plan.cache, jobs, workers, progress)]
    for dest, key in missing:
        plan.cache.link_into(key, dest)
    report.images_linked = len(missing)


# ----------------------------------------------------------------------------- the build


def build_site(zoo: Zoo, store_root: Path, out_dir: Path, *, models: list[str] | None = None,
               classes: list[int] | None = None, progress: bool = True, cache_dir: Path | None = None,
               workers: int | None = None) -> SiteReport:
    """Build (or bring up to date) the static site in `out_dir` from the renders in `store_root`.

    `models`/`classes` restrict the site to those; the cache of encoded images defaults to
    `<store>/.site-cache`. Raises SiteError when `out_dir` is not safe to write.
    """
    store_root, out_dir = Path(store_root).resolve(), Path(out_dir).resolve()
    _check_out_dir(out_dir, store_root)
    cache_dir = Path(cache_dir).resolve() if cache_dir else default_cache_dir(store_root)
    cache_dir.mkdir(parents=True, exist_ok=True)
    report = SiteReport(out_dir)
    with file_lock(cache_dir / ".lock"):  # two builds from one store share the cache's staging folder
        _build(zoo, Store(store_root), out_dir, cache_dir, models, classes, progress, workers or os.cpu_count() or 1, report)
    return report


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"site: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _timed(report: SiteReport, name: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    report.seconds[name] = report.seconds.get(name, 0.0) + time.perf_counter() - t


def _build(zoo: Zoo, store: Store, out_dir: Path, cache_dir: Path, models: list[str] | None,
           classes: list[int] | None, progress: bool, workers: int, report: SiteReport) -> None:
    t0 = time.perf_counter()
    wanted = None if classes is None else set(classes)
    with _timed(report, "read store"):
        model_names = select_models(zoo, store, models, report)
        metas: dict[tuple[str, int], dict[str, Any] | None] = {}
        for m in model_names:
            for i in rendered_classes(store, m):
                if wanted is None or i in wanted:
                    metas[(m, i)] = read_meta(store, m, i)
        model_names = [m for m in model_names if any(k[0] == m for k in metas)]
        indices = sorted({i for _, i in metas})
    report.models, report.classes = model_names, len(indices)
    _say(progress, f"{len(indices)} classes x {len(model_names)} models from {store.root}")

    plan = ImagePlan(webp.WebpCache(cache_dir / "webp"), cache_dir / "hashes")
    views: dict[int, list[dict[str, Any]]] = {}
    with _timed(report, "plan images"):
        for i in indices:
            views[i] = []
            for m in model_names:
                meta = metas.get((m, i))
                images = plan.for_class(store, m, i) if (m, i) in metas else None
                view = model_class_view(m, meta, images)
                report.placeholders += count_placeholders(view)
                views[i].append(view)
        report.sources_hashed = plan.sources_hashed
    with _timed(report, "images"):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MARKER_FILE).write_text("built by `lens site`; everything here is regenerated\n")
        place_images(out_dir, plan, workers, progress, report)
    _say(progress, f"images: {report.images_encoded} encoded, {report.images_linked} placed, {report.images_unchanged} unchanged")

    infos = {i: class_info(i, next((metas[(m, i)] for m in model_names if metas.get((m, i))), None)) for i in indices}
    with _timed(report, "shell (MkDocs)"):
        context = shell_context(zoo, store, model_names, metas, infos, views)
        shell_site = build_shell(cache_dir / "shell", context, zoo.data.title, model_names, report)
        shell_files = sync_shell(shell_site, out_dir)
        head, tail = split_chrome(shell_site)
        search = out_dir / "search" / "search_index.json"
        report.search_index_bytes = search.stat().st_size if search.is_file() else 0
    with _timed(report, "class pages"):
        index_bytes = class_index_json(model_names, infos, views).encode()
        write_if_changed(out_dir / INDEX_FILE, index_bytes)
        report.index_bytes = len(index_bytes)
        pages = write_class_pages(out_dir, head, tail, model_names, metas, infos, views, report)
    with _timed(report, "prune"):
        report.files_removed = prune(out_dir, shell_files, pages, plan.folders)
    report.seconds["total"] = time.perf_counter() - t0
    _say(progress, f"done in {report.seconds['total']:.1f} s: {out_dir / 'index.html'}")


def shell_context(zoo: Zoo, store: Store, model_names: list[str], metas: dict[tuple[str, int], dict[str, Any] | None],
                  infos: dict[int, ImageNetClass], views: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    summaries = []
    for m in model_names:
        ms = [meta for (mm, _), meta in sorted(metas.items()) if mm == m and meta and UNREADABLE not in meta]
        summaries.append(model_summary(m, model_card(zoo, store, m), ms))
    credits = sorted({c for meta in metas.values() if meta for c in photo_credits(meta)})
    return {
        "title": zoo.data.title,
        "models": summaries,
        "n_classes": len(infos),
        "example": example_figure(infos, views),
        "reference": field_reference(),
        "example_entry": EXAMPLE_ENTRY,
        "credits": credits,
        "index_file": INDEX_FILE,
    }


def example_figure(infos: dict[int, ImageNetClass], views: dict[int, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The first class MACO with an overlay, for the home page's "how to read" section."""
    for i, model_views in views.items():
        for v in model_views:
            if v["maco"].get("overlay"):
                c = infos[i]
                return {"slug": c.slug, "name": c.name, "model": v["name"],
                        "plain": f"classes/{v['maco']['full']}", "overlay": f"classes/{v['maco']['overlay']}"}
    return None


def class_index_json(model_names: list[str], infos: dict[int, ImageNetClass], views: dict[int, list[dict[str, Any]]]) -> str:
    """[index, wnid, name, per model: thumbnail hash, "!" (failed or missing image) or 0 (not rendered)]."""
    rows = []
    for i, info in infos.items():
        cells: list[Any] = []
        for v in views[i]:
            if not v["rendered"]:
                cells.append(0)
            elif v["maco"].get("thumb"):
                cells.append(v["maco"]["thumb"].rsplit(".", 2)[1])
            else:
                cells.append("!")
        rows.append([i, info.wnid, info.name, cells])
    return json.dumps({"models": model_names, "classes": rows}, separators=(",", ":"), ensure_ascii=False)


def write_class_pages(out_dir: Path, head: str, tail: str, model_names: list[str],
                      metas: dict[tuple[str, int], dict[str, Any] | None], infos: dict[int, ImageNetClass],
                      views: dict[int, list[dict[str, Any]]], report: SiteReport) -> set[str]:
    template = jinja_env().get_template("class.html")
    order = list(infos)
    names = set()
    for pos, i in enumerate(order):
        info = infos[i]
        title = f"{info.slug} · {short_name(info.name)}"
        body = template.render(
            cls=info, models=views[i],
            prev=infos[order[pos - 1]] if pos > 0 else None,
            next=infos[order[pos + 1]] if pos + 1 < len(order) else None,
            figures=figures_table(model_names, [metas.get((m, i)) for m in model_names]),
        )
        safe_title = str(escape(title))
        html = head.replace(TITLE_MARK, safe_title) + body + tail.replace(TITLE_MARK, safe_title)
        data = html.encode()
        name = f"{info.slug}.html"
        if write_if_changed(site_path(out_dir, f"classes/{name}"), data):
            report.pages_written += 1
        else:
            report.pages_unchanged += 1
        if len(data) > report.largest_page_bytes:
            report.largest_page_bytes, report.largest_page = len(data), f"classes/{name}"
        names.add(name)
    return names


# ----------------------------------------------------------------------------- serving


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".webp": "image/webp", ".json": "application/json"}

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


def make_server(site_dir: Path, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False) -> http.server.ThreadingHTTPServer:
    """An HTTP server for the site (port 0 picks a free one); call serve_forever() on it."""
    site_dir = Path(site_dir)
    if not (site_dir / "index.html").is_file():
        raise SiteError(f"{site_dir} has no index.html: build it first with `lens site`")
    base = _QuietHandler if quiet else type("_Handler", (_QuietHandler,), {"log_message": http.server.SimpleHTTPRequestHandler.log_message})
    handler = functools.partial(base, directory=str(site_dir))
    return http.server.ThreadingHTTPServer((host, port), handler)


def serve(site_dir: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the site until Ctrl-C, printing its URL."""
    with make_server(site_dir, host, port) as httpd:
        print(f"Serving {site_dir} at http://{host}:{httpd.server_address[1]}/ (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            httpd.serve_forever()
