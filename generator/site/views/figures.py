"""The figures of a class: the concept importance chart (signed logit shares or normalised Sobol
indices), the one order of its concepts, and the table of settings and quality, one column per model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...records import Concept, CraftRecord, MacoRecord, Meta
from .formatting import finite, fmt

if TYPE_CHECKING:  # the chart marks the class view's concepts; only the type is needed here
    from .classes import ConceptView


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
