"""The one place the site reads the artifact store: which models and classes are rendered, each
class's meta.json, each model's model.json, and the side files the concept atlas needs (concept
vectors, per-image records, `head.npz`; their formats are generator/sidefiles.py's). Views, pages
and relations get what these return and never open store files themselves (images are hashed and
encoded by `images`, from the paths meta.json names). Guarantee: an unreadable meta.json never
stops a build; it becomes a placeholder, and an unreadable side file is None or SideFileError."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import sidefiles
from .. import store as store_
from ..classes import NUM_CLASSES, ImageNetClass, all_classes
from ..config import ModelEntry, Zoo
from ..records import AtlasRecord, AtomMacos, DictionaryRecord, MatchRecord, Meta, ModelCard, part_state
from ..sidefiles import Head, PerImage, SideFileError
from ..sidefiles import read_directions as _read_directions
from ..sidefiles import read_head as _read_head
from ..sidefiles import read_per_image as _read_per_image
from ..store import META, ClassPaths, Store, UnsafePath
from .paths import is_model_slug
from .report import SiteReport


@dataclass(frozen=True)
class Unreadable:
    """Stand-in for a meta.json that exists but does not validate (shown as a neutral placeholder)."""

    problem: str  # one line for the build report and the model page (paths are redacted there)


def class_info(index: int, meta: Meta | None = None) -> ImageNetClass:
    """timm's name for the class (meta is accepted for callers that have it; names come from timm)."""
    return all_classes()[index]


def read_meta(store: Store, model: str, index: int) -> Meta | Unreadable | None:
    """The validated meta.json, Unreadable(why) when it does not validate, None when absent.

    Never repairs: the site builds from a read-only store and leaves unusable files where they are."""
    before = len(store.problems)
    meta = store.meta(model, index, repair=False)
    if meta is None and len(store.problems) > before:
        line = store.problems[-1].removeprefix(f"{store.meta_path(model, index)}: ")
        return Unreadable(f"meta.json unreadable: {line}")
    return meta


def read_metas(store: Store, models: list[str], wanted: set[int] | None) -> dict[tuple[str, int], Meta | Unreadable | None]:
    """meta.json of every rendered (model, class), restricted to `wanted` classes when given."""
    metas: dict[tuple[str, int], Meta | Unreadable | None] = {}
    for m in models:
        for i in rendered_classes(store, m):
            if wanted is None or i in wanted:
                metas[(m, i)] = read_meta(store, m, i)
    return metas


MAX_CONCEPTS = 50  # concepts a page shows per class and model (CRAFT's rank is 10 by default)


def cap_concepts(metas: dict[tuple[str, int], Meta | Unreadable | None], report: SiteReport) -> None:
    """Keep at most MAX_CONCEPTS concepts of each record, the first by rank (1 = most important),
    with a warning naming the record: one meta.json with 10,000 concepts made a 21 MB page."""
    for (model, index), meta in list(metas.items()):
        if isinstance(meta, Meta) and len(meta.concepts) > MAX_CONCEPTS:
            kept = sorted(meta.concepts, key=lambda c: c.rank)[:MAX_CONCEPTS]
            metas[(model, index)] = meta.model_copy(update={"concepts": kept})
            report.warnings.append(f"{model} {index:04d}: meta.json holds {len(meta.concepts)} concepts; the site shows "
                                   f"the first {MAX_CONCEPTS} by rank (MAX_CONCEPTS, generator/site/reading.py)")


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


def model_card(zoo: Zoo, store: Store, model: str) -> ModelCard:
    """model.json written by the renderer, completed from models.yaml (whose description wins).
    An absent or unusable model.json gives a card from models.yaml alone."""
    card = store.model_card(model) or ModelCard(name=model)
    entry: ModelEntry | None = zoo.models.get(model)
    if entry is not None:
        # The card says what was rendered; only the description is prose users edit later.
        card.description = entry.description or card.description
        card.arch = card.arch if card.arch is not None else entry.architecture
        card.weights = card.weights if card.weights is not None else entry.weights.describe()
        card.concept_layer = card.concept_layer if card.concept_layer is not None else entry.concept_layer
        card.key_map = card.key_map if card.key_map is not None else entry.key_map
    card.weights = weights_label(card.weights)
    return card


# ----------------------------------------------------------------------------- the atlas's side files


def read_head(model_dir: Path) -> Head | None:
    """The model's `head.npz`, or None when it is absent or unreadable (concepts then have no aligned classes)."""
    try:
        return _read_head(model_dir)
    except SideFileError:
        return None


def _side_file(paths: ClassPaths, rel: object) -> Path:
    """The side file at `rel`, through the store's path check (`store.ClassPaths`): one that is a link
    leading outside the store is never opened, and raises SideFileError saying so (the store's line,
    without the meta.json path it starts with)."""
    try:
        return paths.path(rel)
    except UnsafePath as e:
        raise SideFileError(str(e).removeprefix(f"{paths.where}: ")) from None


def read_directions(paths: ClassPaths, rel: str) -> np.ndarray:
    """The concept vectors (r, C) at `rel` (meta `craft.files.directions`); raises SideFileError."""
    return _read_directions(_side_file(paths, rel))


def read_per_image(paths: ClassPaths, rel: str, concepts: int) -> PerImage:
    """The per-image records at `rel` (meta `craft.files.per_image`); raises SideFileError."""
    return _read_per_image(_side_file(paths, rel), concepts)


# ----------------------------------------------------------------------------- the shared dictionary (issue 19)


class ModelPaths(ClassPaths):
    """The files of a model's folder that its dictionary records name (atlas, MACOs, region strips),
    each checked to stay inside the store exactly as a class's files are (`store.ClassPaths`)."""

    def __init__(self, store: Store, model: str):
        super().__init__(store, model, 0)
        self.base = store.root / model
        self.where = store.root / model / store_.DICTIONARY_RECORD


@dataclass
class Dictionary:
    """What the site shows of one model's concept dictionary, as the store holds it."""

    model: str
    record: DictionaryRecord
    atlas: AtlasRecord
    macos: AtomMacos | None  # None: no atom MACO rendered yet (placeholders)
    regions: dict[int, tuple[str, str]]  # shown atom -> (photo strip, heatmap strip), relative to the model folder


def read_dictionary(store: Store, model: str, problems: list[str]) -> Dictionary | None:
    """The model's done dictionary with its atlas, or None: absent (the site is as without dictionaries),
    failed or without an atlas (one line in `problems`, for the build report; no page shows it)."""
    record = store_.dictionary_record(store, model)
    if record is None:
        if (store.root / model / store_.DICTIONARY_RECORD).exists():
            problems.append(f"{model} dictionary: {store_.DICTIONARY_RECORD} unreadable")
        return None
    state = part_state(record)
    if state != "done":
        if state == "failed":
            problems.append(f"{model} dictionary failed: {record.error or 'no error message recorded'}")
        return None
    atlas = store_.atlas_record(store, model)
    if atlas is None:
        problems.append(f"{model} dictionary: no readable atlas yet (`lens render --what dictionary` writes it)")
        return None
    model_dir = store.root / model
    regions: dict[int, tuple[str, str]] = {}
    for a in atlas.atoms:
        if not (a.shown and a.regions):
            continue
        found = sidefiles.region_strips(model_dir, a.index, atlas.settings_hash)
        if found is None:
            continue
        try:
            regions[a.index] = tuple(Path(p).relative_to(model_dir).as_posix() for p in found)  # type: ignore[assignment]
        except ValueError:
            problems.append(f"{model} dictionary: region strips of atom {a.index} lie outside the model folder")
    return Dictionary(model, record, atlas, store_.atom_macos(store, model), regions)


def read_matches(store: Store, hashes: dict[str, str], problems: list[str]) -> dict[tuple[str, str], MatchRecord]:
    """The cross-model matches of every pair of models in `hashes` (model -> its dictionary's settings hash),
    keyed by the pair sorted by name as the store names them. A match file computed from other
    dictionaries than these (`MatchRecord.dictionaries`) is left out, with a line in `problems`."""
    found = {}
    models = sorted(hashes)
    for n, a in enumerate(models):
        for b in models[n + 1:]:
            record = store_.dictionary_matches(store, a, b)
            if record is None:
                continue
            if record.dictionaries is not None and list(record.dictionaries) != [hashes[a], hashes[b]]:
                problems.append(f"{a} and {b}: their dictionary matches are from older dictionaries (not shown; "
                                f"`lens render --what dictionary` matches them again)")
                continue
            found[(a, b)] = record
    return found


def weights_label(weights: str | None) -> str | None:
    """A weights source as visitors see it: a checkpoint file by its name alone (`file:model.pth`),
    never the folder of the machine that rendered it."""
    if weights and weights.startswith("file:"):
        return "file:" + weights.removeprefix("file:").replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return weights
