"""Views of one class for one model: the MACO picture, the CRAFT concepts (pictures, crops, heatmaps),
their pages, and the operator details behind the placeholders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...images import CREDITS
from ...records import Attribution, Concept, MacoRecord, Meta
from ...webp import STRIP_HEATMAPS, strip_geometry
from ..images import ClassImages
from ..paths import SourceError
from ..reading import Unreadable
from .figures import Chart, concept_order, importance_chart, ordered_concepts
from .formatting import MISSING, NO_CONCEPTS, NO_IMAGES, NOT_VISUALIZED, UNAVAILABLE, bar, few_images, finite, fmt, part_problem, pct


@dataclass
class ImageView:
    """A MACO picture (class or concept): URLs of its views, or why it is missing."""

    problem: str | None = None  # detail for the operator (report, model page), never shown on class pages
    state: str | None = None  # MISSING, FAILED, ... : what the placeholder says to visitors
    limit: int | None = None  # NOT_VISUALIZED: how many top concepts the settings visualize
    full: str | None = None
    thumb: str | None = None
    overlay: str | None = None
    png: str | None = None  # lossless full-resolution PNG with alpha, when the build publishes them
    size: tuple[int, int] | None = None  # pixels of `full` (and `overlay`): never shown larger
    thumb_size: tuple[int, int] | None = None
    self_prob: float | None = None
    self_rank: Any = None


@dataclass
class ConceptView:
    id: int
    rank: int
    importance: str
    importance_pct: float
    logit_share: str | None
    logit_pct: float
    vis: ImageView
    crops: str | None = None
    crops_size: tuple[int, int] | None = None
    n_crops: int = 0
    heatmaps: str | None = None
    heatmaps_size: tuple[int, int] | None = None
    heatmap_sources: str = ""
    photos: str | None = None  # the plain photos under the heatmaps, same strip geometry
    problems: list[str] = field(default_factory=list)
    page: str = ""  # the concept's own page, relative to the site root
    sobol: float | None = None  # the raw Sobol total index estimate
    share: float | None = None  # signed logit share, or the bounded normalised Sobol share
    top_count: int | None = None  # images where it is the most important concept
    important: bool = False


@dataclass
class CraftView:
    problem: str | None = None
    state: str | None = None
    concepts: list[ConceptView] = field(default_factory=list)
    n_images: Any = None
    selection: Any = None
    reason: Any = None
    credits: list[str] = field(default_factory=list)
    chart: Chart | None = None
    need: int | None = None  # images a concept must top to be marked important; None: unknown
    strategy_kind: str = "none"  # what the decision-strategy plot's importance is
    order: str = "sobol"  # what the list, the chart and the ranks are ordered by: "logit" or "sobol"
    few: bool = False  # fewer than FEW_IMAGES photos: concepts unreliable, no decision-strategy plot
    sprite: str | None = None  # thumbnails of the class's images, for the decision-strategy plot
    relations_problem: str | None = None


@dataclass
class ModelClassView:
    """Everything a class page shows for one model."""

    name: str
    rendered: bool
    maco: ImageView
    craft: CraftView
    shared: Any = None  # views.dictionary.SharedView: the class's top shared concepts; None without a dictionary


def maco_view(record: MacoRecord | None, images: ClassImages, role: str = "maco", what: str = "MACO",
              overlay_variant: str = "overlay", full_variant: str | None = "full") -> ImageView:
    """A MACO part (class or concept): full view (None: the thumbnail is the only view), thumbnail
    and RGBA overlay, or the reason it is missing."""
    problem = part_problem(record, what)
    if problem or record is None:  # part_problem is never None for an absent record
        state, detail = problem or (MISSING, f"{what} not rendered yet")
        return ImageView(detail, state)
    files = record.files
    view = image_view(images, role, what, files.get("image"), files.get("alpha"), overlay_variant, full_variant)
    view.self_prob, view.self_rank = finite(record.self_prob), record.self_rank
    return view


def image_view(images: ClassImages, role: str, what: str, image: object, alpha: object | None,
               overlay_variant: str = "overlay", full_variant: str | None = "full") -> ImageView:
    """The views of one MACO picture (store paths of its image and alpha map) planned under `role`:
    full view (None: the thumbnail is the only view), thumbnail and RGBA overlay; UNAVAILABLE where a
    file is missing or unsafe. Shared by class, concept and dictionary-atom MACOs."""
    sources = [image] + ([alpha] if alpha else [])
    try:
        thumb = images.add(f"{role}-t", "thumb", sources[:1])
        return ImageView(
            problem=None,
            full=images.add(role, full_variant, sources[:1]) if full_variant else thumb,
            thumb=thumb,
            overlay=images.add(f"{role}-o", overlay_variant, sources) if len(sources) > 1 else None,
            png=images.add(f"{role}-png", "png", sources) if images.plan.full_res else None,
            size=images.size(full_variant or "thumb", sources[:1]),
            thumb_size=images.size("thumb", sources[:1]),
        )
    except SourceError as e:
        return ImageView(f"{what} image unavailable: {e}", UNAVAILABLE)


def concept_view(concept: Concept, rank: int, images: ClassImages, top_importance: float,
                 visualized: int | None = None, page: str = "", stored_rank: int | None = None) -> ConceptView:
    """`rank`: the concept's place in the page's order; `stored_rank`: its place in CRAFT's Sobol
    order, which `visualized` (how many top concepts the render visualizes; None: all) counts in."""
    role = f"c{concept.id}"
    importance, share = finite(concept.importance), finite(concept.logit_share)
    view = ConceptView(
        id=concept.id, rank=rank,
        importance=fmt(importance), importance_pct=bar(importance, top_importance),
        logit_share=None if share is None else pct(share), logit_pct=bar(None if share is None else abs(share), 1.0),
        # The class page shows the thumbnail and loads the 256 px view (`full`) only when a visitor opens
        # it; the concept's own page shows it. Its overlay stays a thumbnail: a 256 px overlay per
        # concept would add ~20 KB x 10 to every class x model (benchmarks/README.md, issue 21).
        vis=maco_view(concept.maco, images, role, "Concept visualization", "overlay-thumb", "medium"),
        page=page, sobol=importance, share=share,
    )
    if concept.maco is None and visualized is not None and (stored_rank or rank) > visualized:
        view.vis = ImageView(f"not visualized: these settings visualize the top {visualized} concepts (craft.visualize)",
                             NOT_VISUALIZED, limit=visualized)
    crops = [c.file for c in concept.crops]  # all the render kept (`top_crops`), strongest first
    if crops:
        try:
            view.crops, view.n_crops = images.add(f"{role}-crops", "strip", crops), len(crops)
            view.crops_size = strip_geometry(len(crops))
        except SourceError as e:
            view.problems.append(f"crops unavailable: {e}")
    heatmaps = concept.attributions[:STRIP_HEATMAPS]
    view.heatmap_sources = ", ".join(a.source or "?" for a in heatmaps)
    if heatmaps:
        try:
            view.heatmaps = images.add(f"{role}-heat", "strip", [a.file for a in heatmaps])
            view.heatmaps_size = strip_geometry(len(heatmaps))
        except SourceError as e:
            view.problems.append(f"attribution heatmaps unavailable: {e}")
        photos = [_photo(a) for a in heatmaps]
        if view.heatmaps and all(photos):
            try:
                view.photos = images.add(f"{role}-photo", "strip", photos)
            except SourceError:
                view.photos = None  # the slider then fades the heatmaps alone
    return view


def _photo(attribution: Attribution) -> str | None:
    """The plain photo under a heatmap, when the render stored one (an extra field of the record)."""
    photo = getattr(attribution, "photo", None)
    return photo if isinstance(photo, str) and photo else None


def concepts_page(model: str, index: int) -> str:
    """The page of a class's concepts for one model, relative to the site root."""
    return f"concepts/{model}-{index:04d}.html"


def concept_page(model: str, index: int, concept_id: int) -> str:
    """The permalink of a concept: its section on its class's concepts page, relative to the site root.

    One page per (class, model), not per concept: 30 000 pages would each carry the 14 KB Material
    chrome (480 MB and tens of seconds per build for 1000 classes x 3 models)."""
    return f"{concepts_page(model, index)}#c{concept_id}"


def craft_view(meta: Meta, images: ClassImages, model: str = "", index: int = 0, relations: Any = None) -> CraftView:
    """`relations`: the class's ClassRelations (important concepts, decision strategies) or None."""
    record = meta.craft
    problem = part_problem(record, "CRAFT")
    if problem or record is None:
        state, detail = problem or (MISSING, "CRAFT not rendered yet")
        return CraftView(detail, state)
    stored = {id(c): n for n, c in enumerate(sorted(meta.concepts, key=concept_order), start=1)}
    order, concepts = ordered_concepts(meta.concepts)
    top = max((finite(c.importance) or 0.0 for c in concepts), default=0.0)
    visualized = (record.settings or {}).get("visualize")  # settings are free-form: what the render was given
    visualized = visualized if isinstance(visualized, int) and not isinstance(visualized, bool) and visualized >= 0 else None
    view = CraftView(
        problem=None,
        concepts=[concept_view(c, rank, images, top, visualized, concept_page(model, index, c.id), stored[id(c)])
                  for rank, c in enumerate(concepts, start=1)],
        n_images=record.n_images,
        selection=record.image_selection,
        reason=record.reason,
        credits=photo_credits(meta),
        order=order,
        few=few_images(record.n_images),
    )
    if not view.concepts and (record.n_images == 0 or record.image_selection == "none"):
        view.problem, view.state = f"CRAFT: {record.reason or 'no usable image of this class'}", NO_IMAGES
    elif not view.concepts:
        view.problem, view.state = f"CRAFT found no concepts: {record.reason or 'no reason recorded'}", NO_CONCEPTS
    if not view.concepts:
        return view
    counts = need = None
    if relations is not None and relations.kind != "none":
        view.strategy_kind = relations.kind
        # The ★ counts images by the same importance as the order (per-image logit shares where the
        # order is by logit share), so the mark and the order never measure different things.
        if relations.kind == order:
            counts, need, view.need = relations.counts, relations.need, relations.need
        if relations.thumbs and not view.few:
            try:
                view.sprite = images.add("images", "sprite", [relations.thumbs])
            except SourceError:
                view.sprite = None  # the plot then shows points without thumbnails
    elif relations is not None:
        view.relations_problem = relations.problem
    view.chart = importance_chart(view.concepts, counts, need)
    return view


def photo_credits(meta: Meta) -> list[str]:
    """Credits meta.json records, plus those of demo photos recognised by their source id."""
    credits = set(meta.craft.credits or []) if meta.craft is not None else set()
    for concept in meta.concepts:
        for item in [*concept.crops, *concept.attributions]:
            source = item.source or ""
            if source.startswith("demo/") and source[5:] in CREDITS:
                credits.add(CREDITS[source[5:]])
    return sorted(credits)


def model_class_view(model: str, meta: Meta | Unreadable | None, images: ClassImages | None, index: int = 0,
                     relations: Any = None) -> ModelClassView:
    """Everything a class page shows for one model; placeholders say why a part is missing."""
    if meta is None or images is None:
        missing = "not rendered for this model yet"
        return ModelClassView(model, False, ImageView(missing, MISSING), CraftView(missing, MISSING))
    if isinstance(meta, Unreadable):
        return ModelClassView(model, True, ImageView(meta.problem, UNAVAILABLE), CraftView(meta.problem, UNAVAILABLE))
    try:
        return ModelClassView(model, True, maco_view(meta.maco, images), craft_view(meta, images, model, index, relations))
    finally:
        images.done()


def view_problems(view: ModelClassView) -> list[str]:
    """The operator details behind a class page's placeholders (for the report and the model page);
    parts that are absent by design (concepts beyond `visualize`) are not problems."""
    if not view.rendered:
        return []
    found = [d for d in dict.fromkeys((view.maco.problem, view.craft.problem)) if d]  # an unreadable meta.json: one line
    for c in view.craft.concepts:
        if c.vis.problem and c.vis.state != NOT_VISUALIZED:
            found.append(f"concept {c.id}: {c.vis.problem}")
        found += [f"concept {c.id}: {p}" for p in c.problems]
    return found


def count_placeholders(view: ModelClassView) -> int:
    n = int(bool(view.maco.problem)) + int(bool(view.craft.problem))
    for c in view.craft.concepts:
        n += int(bool(c.vis.problem)) + len(c.problems)
    return n
