"""The one place the site reads the artifact store: which models and classes are rendered, each
class's meta.json and each model's model.json. Views and pages get what these return and never
open store files themselves (images are hashed and encoded by `images`, from the paths meta.json
names). Guarantee: an unreadable meta.json never stops a build; it becomes a placeholder."""

from __future__ import annotations

import json
import os
from typing import Any

from ..classes import NUM_CLASSES, ImageNetClass, all_classes
from ..config import ModelEntry, Zoo
from ..store import META, Store
from .paths import is_model_slug
from .report import SiteReport

UNREADABLE = "_unreadable"  # key of the stand-in for a meta.json that cannot be read

Meta = dict[str, Any]  # one class's meta.json (schema at the top of generator/store.py)


def class_info(index: int, meta: Meta | None = None) -> ImageNetClass:
    """timm's name for the class (meta is accepted for callers that have it; names come from timm)."""
    return all_classes()[index]


def read_meta(store: Store, model: str, index: int) -> Meta | None:
    """meta.json, or {UNREADABLE: why} when it cannot be read (shown as a placeholder).

    The only read of meta.json in the site: switching to typed records changes this function."""
    try:
        meta = store.read_meta(model, index)
    except (RuntimeError, OSError, UnicodeDecodeError) as e:
        return {UNREADABLE: f"meta.json unreadable: {e}"}
    if meta is not None and not isinstance(meta, dict):
        return {UNREADABLE: "meta.json is not a JSON object"}
    return meta


def read_metas(store: Store, models: list[str], wanted: set[int] | None) -> dict[tuple[str, int], Meta | None]:
    """meta.json of every rendered (model, class), restricted to `wanted` classes when given."""
    metas: dict[tuple[str, int], Meta | None] = {}
    for m in models:
        for i in rendered_classes(store, m):
            if wanted is None or i in wanted:
                metas[(m, i)] = read_meta(store, m, i)
    return metas


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
        card = json.loads((store.root / model / "model.json").read_text())
        card = card if isinstance(card, dict) else {}
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
