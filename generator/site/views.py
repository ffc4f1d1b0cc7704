"""Typed view models: what the templates show, computed from the store's records.

Each view is a dataclass with the display-ready fields a template reads (text already formatted,
URLs already relative to the page). A part that cannot be shown carries `state` (what its
placeholder tells visitors, in words the templates hold) and `problem` (the detail, for the build
report and the model page only); views never raise for a bad or partial record.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..images import CREDITS
from ..records import Accuracy, Attribution, Concept, CraftRecord, MacoRecord, Meta, ModelCard, PartRecord, part_state
from ..webp import STRIP_HEATMAPS, strip_geometry
from .images import ClassImages
from .paths import SourceError
from .reading import Unreadable

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


_ABS_DIRS = re.compile(r"(?<![\w.:/~>-])(?:/|~/)(?:[^/\s'\"]+/)+")


def redact_paths(text: str, store_root: str | None = None) -> str:
    """Text for a page, without the building machine's absolute paths: the store becomes `<store>`,
    any other absolute folder `…/` (the file name stays)."""
    if store_root:
        text = text.replace(store_root.rstrip("/") + "/", "<store>/")
    return _ABS_DIRS.sub("…/", text)


def visitor_text(value: Any) -> Any:
    """Every value a template prints passes here (the Jinja environment's `finalize`): plain text
    loses the building machine's absolute folders, so a path recorded in a setting, a model card or
    a reason never reaches a visitor. Markup (a macro's output, already finalized) and non-text
    values pass unchanged. Operator details (errors, store problems) never get this far: views
    give templates a neutral `state` for them, and the details go to the build report."""
    if isinstance(value, str) and not hasattr(value, "__html__"):
        return redact_paths(value)
    return value


def finite(value: float | None) -> float | None:
    """The value, or None when it is absent or not a finite number (NaN is not shown as a figure)."""
    return None if value is None or not math.isfinite(value) else float(value)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def plural(n: Any, noun: str, nouns: str | None = None) -> str:
    """`1 image`, `12 images`, `— images` (an unknown count): the one place a count meets its noun."""
    one = isinstance(n, int) and not isinstance(n, bool) and n == 1
    return f"{fmt(n)} {noun if one else (nouns or noun + 's')}"


# Below this many photos per class, a class's concepts rest on too few patches to be trusted (with one
# photo, Sobol estimates exceed 1 by noise): its concept section says so, and the decision-strategy
# plot (one point per photo) is not drawn. CRAFT's default draws 200 photos. Documented in
# templates/docs/method.md ("Few photos").
FEW_IMAGES = 10


def few_images(n_images: Any) -> bool:
    """Whether a CRAFT record's image count is below FEW_IMAGES (an unknown count counts as few)."""
    return not (isinstance(n_images, int) and not isinstance(n_images, bool) and n_images >= FEW_IMAGES)


def _mean(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.fmean(vs) if vs else None


def bar(value: float | None, top: float) -> float:
    """Bar length in percent of `top`, clipped to 0-100."""
    if value is None or top <= 0:
        return 0.0
    return round(max(0.0, min(100.0, 100 * value / top)), 1)


# What a placeholder is about; templates turn each state into the words visitors read, and the
# detail (operator text: errors, settings keys) goes to the build report and the model page only.
MISSING, FAILED, UNAVAILABLE, NO_IMAGES, NO_CONCEPTS, NOT_VISUALIZED = (
    "missing", "failed", "unavailable", "no-images", "no-concepts", "not-visualized")


def part_problem(record: PartRecord | None, what: str) -> tuple[str, str] | None:
    """(state, detail) of a part that cannot be shown, or None when it is done."""
    state = part_state(record)
    if record is None:
        return MISSING, f"{what} not rendered yet"
    if state == FAILED:
        return FAILED, f"{what} failed: {record.error or 'no error message recorded'}"
    if state == NO_IMAGES:
        reason = record.reason if isinstance(record, CraftRecord) else None
        return NO_IMAGES, f"{what}: {reason or 'no usable image of this class'}"
    return None


# ----------------------------------------------------------------------------- views of one class


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
class Bar:
    """One concept's bar in the importance chart."""

    rank: int
    value: float  # signed, as a fraction of the chart's largest |value| (so in [-1, 1])
    percent: float  # the share in percent, signed
    negative: bool
    important: bool
    sobol: float | None  # the raw Sobol estimate, shown in the tooltip


@dataclass
class Chart:
    kind: str  # "logit": signed logit shares; "sobol": normalised Sobol total indices
    bars: list[Bar]
    has_negative: bool
    clipped: int  # Sobol estimates above 1 bounded to 1 before normalising


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


def maco_view(record: MacoRecord | None, images: ClassImages, role: str = "maco", what: str = "MACO",
              overlay_variant: str = "overlay", full_variant: str | None = "full") -> ImageView:
    """A MACO part (class or concept): full view (None: the thumbnail is the only view), thumbnail
    and RGBA overlay, or the reason it is missing."""
    problem = part_problem(record, what)
    if problem or record is None:  # part_problem is never None for an absent record
        state, detail = problem or (MISSING, f"{what} not rendered yet")
        return ImageView(detail, state)
    files = record.files
    sources = [files.get("image")] + ([files["alpha"]] if files.get("alpha") else [])
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
            self_prob=finite(record.self_prob),
            self_rank=record.self_rank,
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


def importance_chart(concepts: list[ConceptView], counts: dict[int, int] | None, need: int | None) -> Chart | None:
    """Signed logit shares where every concept has one; else Sobol total indices, each bounded to
    [0, 1] (a total index cannot exceed 1: above is estimator noise) and normalised to sum 1. The
    bars come in the list's order, which `ordered_concepts` made the order of these same values."""
    if not concepts:
        return None
    if all(c.share is not None for c in concepts):
        kind, values = "logit", [float(c.share) for c in concepts]  # type: ignore[arg-type]
        clipped = 0
    elif all(c.sobol is not None for c in concepts):
        raw = [float(c.sobol) for c in concepts]  # type: ignore[arg-type]
        clipped = sum(v > 1 for v in raw)
        kind, values = "sobol", normalised_sobol(raw)
    else:
        return None
    scale = max((abs(v) for v in values), default=0.0) or 1.0
    bars = []
    for c, v in zip(concepts, values):
        c.share = v
        c.top_count = None if counts is None else counts.get(c.id, 0)
        c.important = bool(counts is not None and need is not None and c.top_count is not None and c.top_count >= need)
        bars.append(Bar(c.rank, round(v / scale, 4), round(100 * v, 1), v < 0, c.important, c.sobol))
    return Chart(kind, bars, any(b.negative for b in bars), clipped)


def normalised_sobol(raw: list[float]) -> list[float]:
    """Sobol total indices bounded to [0, 1] and normalised to sum 1 (all 0 where none is positive)."""
    bounded = [min(1.0, max(0.0, v)) for v in raw]
    total = sum(bounded)
    return [v / total if total > 0 else 0.0 for v in bounded]


def concept_order(concept: Concept) -> tuple[float, float]:
    """CRAFT's own order (by Sobol index): the one `craft.visualize` counts in."""
    return (concept.rank, -(finite(concept.importance) or 0.0))


def ordered_concepts(concepts: list[Concept]) -> tuple[str, list[Concept]]:
    """The one order of a class's concepts on every page, chart and JSON: by signed share of the
    logit, largest first, where every concept has one (the head is linear: Lens's "% of logit"),
    else by normalised Sobol index; ties keep CRAFT's order. Returns ("logit" | "sobol", concepts)."""
    stored = sorted(concepts, key=concept_order)
    shares = [finite(c.logit_share) for c in stored]
    if stored and all(v is not None for v in shares):
        keys, kind = shares, "logit"
    else:
        keys, kind = normalised_sobol([finite(c.importance) or 0.0 for c in stored]), "sobol"
    order = sorted(range(len(stored)), key=lambda k: (-float(keys[k]), k))  # type: ignore[arg-type]
    return kind, [stored[k] for k in order]


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


# ----------------------------------------------------------------------------- figures table


@dataclass
class Row:
    """A labelled row of cells, one per model."""

    label: str
    cells: list[str]


@dataclass
class Section:
    title: str
    rows: list[Row]
    settings: bool  # shown folded


def figures_table(models: list[str], metas: list[Meta | None]) -> list[Section]:
    """Settings and quality of one class as sections of rows, one column per model."""
    macos = [m.maco if m is not None else None for m in metas]
    crafts = [m.craft if m is not None else None for m in metas]
    quality = [m.quality if m is not None else None for m in macos]

    def row(label: str, values: list[Any]) -> Row | None:
        return Row(label, [fmt(v) for v in values]) if any(v is not None for v in values) else None

    def deletion(c: CraftRecord | None, key: str) -> Any:
        return getattr(c.deletion, key, None) if c is not None else None  # records.Deletion, or None

    maco_rows = [
        row("status", [m and m.status for m in macos]),
        row("probability of the class", [m and m.self_prob for m in macos]),
        row("rank of the class", [m and m.self_rank for m in macos]),
        row("steps", [m and m.steps for m in macos]),
        row("wall time (s)", [m and m.wall_time_s for m in macos]),
        row("seed", [m and m.seed for m in macos]),
        row("spectrum", [m and m.spectrum for m in macos]),
        row("settings hash", [m and m.settings_hash for m in macos]),
    ]
    others = sorted({o for q in quality if q is not None for o in q.transfer})
    for other in others:
        cells = [q.transfer.get(other) if q is not None else None for q in quality]
        maco_rows.append(row(f"rank / probability on {other}",
                             [f"{fmt(c.rank)} / {fmt(c.prob)}" if c else None for c in cells]))
    plaus = [q.plausibility if q is not None else None for q in quality]
    for key, label in (("margin", "plausibility margin"), ("same_class", "similarity to class images"),
                       ("other_classes", "similarity to other classes"), ("model", "plausibility judged by")):
        maco_rows.append(row(label, [getattr(p, key) if p is not None else None for p in plaus]))
    craft_rows = [
        row("status", [c and c.status for c in crafts]),
        row("images", [c and c.n_images for c in crafts]),
        row("image selection", [c and c.image_selection for c in crafts]),
        row("concepts", [len(m.concepts) if m is not None and c is not None else None for m, c in zip(metas, crafts)]),
        row("dictionary method", [c and c.method for c in crafts]),
        row("dictionary reconstruction error", [c and c.nmf_error for c in crafts]),
        row("deletion AUC, by importance", [deletion(c, "auc_importance") for c in crafts]),
        row("deletion AUC, random order", [deletion(c, "auc_random") for c in crafts]),
        row("wall time (s)", [c and c.wall_time_s for c in crafts]),
        row("settings hash", [c and c.settings_hash for c in crafts]),
    ]
    sections = [
        Section("MACO", [r for r in maco_rows if r], False),
        Section("CRAFT", [r for r in craft_rows if r], False),
        Section("MACO settings", _settings_rows(macos), True),
        Section("CRAFT settings", _settings_rows(crafts), True),
    ]
    return [s for s in sections if s.rows]


def _settings_rows(records: list[MacoRecord | None] | list[CraftRecord | None]) -> list[Row]:
    settings = [(r.settings or {}) if r is not None else {} for r in records]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return [Row(k, [fmt(s.get(k)) if k in s else "—" for s in settings]) for k in keys]


# ----------------------------------------------------------------------------- model page


@dataclass
class Item:
    label: str
    value: str


@dataclass
class ModelSummary:
    """The model page: its card, quality figures over its classes, and the settings most used."""

    name: str
    description: str | None
    arch: str | None
    n_classes: int
    card: list[Item]
    figures: list[Item]
    maco_settings: list[Item]
    craft_settings: list[Item]
    problem_classes: list[str] = field(default_factory=list)  # slugs of classes with a placeholder (no detail: see the build report)


def model_summary(model: str, card: ModelCard, metas: list[Meta]) -> ModelSummary:
    """The model page's quality figures, computed over its rendered classes."""
    macos = [m.maco for m in metas if m.maco is not None]
    crafts = [m.craft for m in metas if m.craft is not None]
    done_macos = [m for m in macos if m.done]
    ranks = [m.self_rank for m in done_macos if m.self_rank is not None]
    transfer = [t.rank for m in done_macos if m.quality is not None for t in m.quality.transfer.values()]
    margins = [finite(m.quality.plausibility.margin) for m in done_macos
               if m.quality is not None and m.quality.plausibility is not None]
    done_crafts = [c for c in crafts if c.done]
    methods = Counter(c.method for c in done_crafts if c.method)
    figures = [
        ("classes rendered", str(len(metas))),
        ("MACO done / failed", f"{len(done_macos)} / {sum(m.failed for m in macos)}"),
        ("CRAFT done / failed", f"{len(done_crafts)} / {sum(c.failed for c in crafts)}"),
        ("MACO images classified as their class (top-1)", pct(sum(r == 1 for r in ranks) / len(ranks)) if ranks else None),
        ("MACO images in another model's top 5 (transfer)", pct(sum(t <= 5 for t in transfer) / len(transfer)) if transfer else None),
        ("mean plausibility margin", fmt(_mean(margins)) if _mean(margins) is not None else None),
        ("mean CRAFT deletion AUC, by importance", _fmt_mean(getattr(c.deletion, "auc_importance", None) for c in done_crafts)),
        ("mean CRAFT deletion AUC, random order", _fmt_mean(getattr(c.deletion, "auc_random", None) for c in done_crafts)),
        ("dictionary method", ", ".join(f"{k} ({n})" if len(methods) > 1 else k for k, n in methods.most_common()) or None),
        ("mean dictionary reconstruction error", _fmt_mean(c.nmf_error for c in done_crafts)),
        ("total render time (h)", fmt(sum(finite(r.wall_time_s) or 0.0 for r in [*macos, *crafts]) / 3600)),
    ]
    accuracy = card.accuracy or Accuracy()  # as `lens quality` measured it
    top1 = accuracy.top1
    top1 = finite(top1) if isinstance(top1, (int, float)) and not isinstance(top1, bool) else None
    card_rows = [
        ("architecture", card.arch),
        ("parameters", f"{card.params / 1e6:.2f} M" if card.params else None),
        ("weights", card.weights),
        ("checkpoint key map", card.key_map),
        ("concept layer", card.concept_layer),
        ("measured top-1 accuracy", f"{pct(top1)} on {fmt(accuracy.n_images)} images"
                                    f" ({fmt(accuracy.source)})" if top1 is not None else None),
    ] + [(f"preprocess: {k}", fmt(v)) for k, v in (card.preprocess or {}).items()]
    return ModelSummary(
        name=model,
        description=card.description,
        arch=card.arch,
        n_classes=len(metas),
        card=[Item(k, str(v)) for k, v in card_rows if v is not None],
        figures=[Item(k, v) for k, v in figures if v is not None],
        maco_settings=_common_settings(done_macos),
        craft_settings=_common_settings(done_crafts),
    )


def _fmt_mean(values: Iterable[Any]) -> str | None:
    m = _mean(finite(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None for v in values)
    return None if m is None else fmt(m)


def _common_settings(records: list[MacoRecord] | list[CraftRecord]) -> list[Item]:
    """The settings most classes were rendered with, and in how many classes."""
    blobs = Counter(json.dumps(r.settings, sort_keys=True) for r in records if r.settings)
    if not blobs:
        return []
    blob, n = blobs.most_common(1)[0]
    rows = [Item(k, fmt(v)) for k, v in json.loads(blob).items()]
    if len(blobs) > 1:
        rows.append(Item("classes with these settings", f"{n} of {len(records)}"))
    return rows
