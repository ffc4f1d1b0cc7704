"""Views of a model's shared concept dictionary (issue 19 §4-§5): a page per shown atom, each class's top
shared concepts, the model-wide map's points, and the same concept in other models.

Every URL here is relative to the site root (templates prefix their own depth). Atoms that are not
`shown` (dead, or in no class's top TOP_SHARED) have no page and no MACO: links to them are plain text.
Operator details (a failed MACO's error, a missing file) go to `problems`, never to a page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...records import AtlasAtom, AtlasRecord, AtomMacos, ClassAtoms, MatchRecord
from ...webp import strip_cells
from ..images import ClassImages
from ..paths import SourceError
from .classes import ImageView, image_view
from .formatting import FAILED, MISSING, NOT_VISUALIZED, few_images, finite, plural, short_name


def atom_page(model: str, atom: int) -> str:
    """The permalink of a shared concept, relative to the site root."""
    return f"dictionary/{model}/{atom:04d}.html"


def map_page(model: str) -> str:
    """The model-wide map of the dictionary, relative to the site root."""
    return f"dictionary/{model}.html"


def signed_pct(value: float | None) -> str:
    """A share already in percent (the atlas stores them so), signed where negative."""
    value = finite(value)
    return "—" if value is None else f"{value:.1f} %".replace("-", "−")


@dataclass
class AtomLink:
    """Another atom of the same dictionary (co-occurring): its page (None: it has none) and score."""

    index: int
    href: str | None
    score: str


@dataclass
class ClassUse:
    """A class using an atom: its share of that class's logit, and its class page (None: not in this site)."""

    index: int
    name: str
    href: str | None
    share: str
    negative: bool


@dataclass
class MatchView:
    """The same concept in another model: its atom there, the match score and whether it is mutual."""

    model: str
    atom: int
    score: str
    mutual: bool
    href: str | None  # None: the matched atom has no page there
    other: AtomView | None  # the matched atom's view (side by side), when it has a page


@dataclass
class AtomView:
    """A shown atom: its MACO, regions with heatmaps, how often it fires, its classes and neighbours."""

    model: str
    index: int
    page: str
    vis: ImageView
    frequency: str
    energy: str
    regions: str | None = None  # photo crops where it fires most (a strip)
    heat: str | None = None  # the same strip of RGBA heatmaps, under the opacity slider
    regions_size: tuple[int, int] | None = None
    n_regions: int = 0
    classes: list[ClassUse] = field(default_factory=list)
    cooccur: list[AtomLink] = field(default_factory=list)
    matches: list[MatchView] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class SharedItem:
    atom: int
    view: AtomView | None  # None: the atom has no page (not expected for a class's top atoms)
    share: str
    negative: bool


@dataclass
class SharedView:
    """A class's section of shared concepts for one model: its top atoms and the bias and residual shares."""

    model: str
    map: str
    n_images: int
    few: bool
    learned: str  # the dictionary's photos, in words (`learned_from`)
    items: list[SharedItem]
    bias: str
    residual: str


@dataclass
class DictionaryView:
    """One model's dictionary as the site shows it."""

    model: str
    n_photos: Any  # photos the dictionary saw (before augmentation)
    learned: str  # the same in words, with the augmentation (`learned_from`)
    few: bool  # fewer than FEW_IMAGES photos: its concepts are unreliable
    head_kind: str
    n_atoms: int
    n_alive: int
    atlas: AtlasRecord
    atoms: dict[int, AtomView] = field(default_factory=dict)  # shown atoms only
    problems: list[str] = field(default_factory=list)
    without_maco: int = 0  # shown atoms with no MACO rendered (not yet, or not among `dictionary.visualize`)


def atom_maco_view(macos: AtomMacos | None, atom: int, images: ClassImages, visualized: set[int] | None = None) -> ImageView:
    """An atom's MACO, as a concept's is shown (256 px view and thumbnail), or a placeholder;
    `visualized`: the atoms the settings give a MACO (None: all)."""
    what = f"MACO of shared concept {atom}"
    entry = macos.atoms.get(str(atom)) if macos is not None else None
    if entry is None and visualized is not None and atom not in visualized:
        limit = macos.visualize  # type: ignore[union-attr]
        return ImageView(f"{what} not visualized: these settings visualize each class's top {limit} shared concepts "
                         "(dictionary.visualize)", NOT_VISUALIZED, limit=limit)
    if entry is None:
        return ImageView(f"{what} not rendered yet", MISSING)
    if entry.status != "done" or not entry.image:
        return ImageView(f"{what} failed: {entry.error or 'no error message recorded'}", FAILED)
    # Its attribution map (entry.alpha) is not published: the atom page has no overlay toggle, and an
    # unreferenced overlay would cost ~5 KB per atom.
    return image_view(images, f"a{atom:04d}", what, entry.image, None, "overlay-thumb", "medium")


def _atom_view(model: str, atom: AtlasAtom, macos: AtomMacos | None, regions: tuple[str, str] | None,
               images: ClassImages, shown: set[int], rendered: set[int], names: Any, visualized: set[int] | None) -> AtomView:
    view = AtomView(model, atom.index, atom_page(model, atom.index), atom_maco_view(macos, atom.index, images, visualized),
                    frequency=f"{100 * atom.frequency:.2f} %", energy=f"{100 * atom.energy:.2f} %")
    if view.vis.problem and view.vis.state not in (MISSING, NOT_VISUALIZED):  # not rendered (yet, or beyond `visualize`): counted
        view.problems.append(view.vis.problem)
    if regions is not None:
        try:
            view.regions = images.add(f"a{atom.index:04d}-regions", "cells", [regions[0]])
            view.heat = images.add(f"a{atom.index:04d}-heat", "cells", [regions[1]])
            view.regions_size = images.size("cells", [regions[0]])
            view.n_regions = _cells(images, regions[0])
        except SourceError as e:
            view.regions = view.heat = None
            view.problems.append(f"shared concept {atom.index}: regions unavailable: {e}")
    view.classes = [ClassUse(c.class_index, short_name(names[c.class_index].name),
                             f"classes/{c.class_index:04d}.html" if c.class_index in rendered else None,
                             signed_pct(c.share), c.share < 0) for c in atom.classes]
    view.cooccur = [AtomLink(o.atom, atom_page(model, o.atom) if o.atom in shown else None, f"{o.score:.2f}")
                    for o in atom.cooccur]
    return view


def _cells(images: ClassImages, rel: str) -> int:
    """Regions in a stored strip (square cells side by side), from its header; 0 if unreadable."""
    try:
        return strip_cells(images.hashes.size(rel))
    except Exception:  # noqa: BLE001 - an undecodable strip is encoded as a placeholder; the count is then unknown
        return 0


def learned_from(n_photos: Any, n_views: Any, augmented: bool) -> str:
    """What the dictionary was learned from, as its pages say it: "9 photos (augmented into 36 views:
    mirrors and crops)", "200 photos"."""
    text = plural(n_photos, "photo")
    if augmented:
        views = f" into {plural(n_views, 'view')}" if n_views is not None and n_views != n_photos else ""
        text += f" (augmented{views}: mirrors and crops)"
    return text


def dictionary_view(model: str, atlas: AtlasRecord, n_photos: Any, n_views: Any, augmented: bool, macos: AtomMacos | None,
                    regions: dict[int, tuple[str, str]], images: ClassImages, rendered: set[int], names: Any) -> DictionaryView:
    """The views of every shown atom of a model's dictionary; `rendered`: classes with a page in this site.
    `n_photos`: the photos it saw, `n_views` the views made of them (more when `augmented`)."""
    shown = set(atlas.shown)
    limit = macos.visualize if macos is not None else None
    visualized = None if limit is None else {t.atom for c in atlas.classes.values() for t in c.top[:limit]}
    view = DictionaryView(model, n_photos, learned_from(n_photos, n_views, augmented), few_images(n_photos), atlas.head_kind,
                          len(atlas.atoms), sum(a.alive for a in atlas.atoms), atlas)
    try:
        for a in atlas.atoms:
            if a.index in shown:
                av = _atom_view(model, a, macos, regions.get(a.index), images, shown, rendered, names, visualized)
                view.atoms[a.index] = av
                view.problems += av.problems
                view.without_maco += av.vis.state in (MISSING, NOT_VISUALIZED)
    finally:
        images.done()
    return view


def attach_matches(views: dict[str, DictionaryView], matches: dict[tuple[str, str], MatchRecord]) -> None:
    """"The same concept in MODEL" on every shown atom: the other model's best atom, only at or above the
    match record's threshold, best score first."""
    for (a, b), record in matches.items():
        for here, there, table in ((a, b, record.a_to_b), (b, a, record.b_to_a)):
            if here not in views or there not in views:
                continue
            for key, m in table.items():
                av = views[here].atoms.get(int(key)) if key.isdigit() else None
                if av is None or not (m.score >= record.threshold):
                    continue
                other = views[there].atoms.get(m.atom)
                av.matches.append(MatchView(there, m.atom, f"{m.score:.2f}", m.mutual, other.page if other else None, other))
    for v in views.values():
        for av in v.atoms.values():
            av.matches.sort(key=lambda m: -float(m.score))


def shared_view(view: DictionaryView, index: int) -> SharedView | None:
    """A class's top shared concepts in one model's dictionary; None when the dictionary did not see the class."""
    entry: ClassAtoms | None = view.atlas.classes.get(str(index))
    if entry is None:
        return None
    items = [SharedItem(t.atom, view.atoms.get(t.atom), signed_pct(t.share), t.share < 0) for t in entry.top]
    return SharedView(view.model, map_page(view.model), entry.n_images, few_images(entry.n_images), view.learned,
                      items, signed_pct(entry.bias_share), signed_pct(entry.residual_share))


def shared_json(view: SharedView) -> dict[str, Any]:
    """A class's shared concepts for its class JSON (drawn by lens.js: inline they would cost ~3 KB per
    model, and a class page of three models is at its 60 KB budget without them). URLs from the site root."""
    items = [{"atom": it.atom, "page": it.view.page if it.view else None,
              "thumb": it.view.vis.thumb if it.view and not it.view.vis.problem else None,
              "share": it.share, "negative": it.negative} for it in view.items]
    for item, it in zip(items, view.items):
        if it.view and it.view.vis.state == NOT_VISUALIZED:  # beyond `dictionary.visualize`: said so, not "yet"
            item["limit"] = it.view.vis.limit
    return {"map": view.map, "n": view.n_images, "few": view.few, "learned": view.learned,
            "bias": view.bias, "residual": view.residual, "items": items}
