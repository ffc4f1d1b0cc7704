"""The model page: the model's card, quality figures over its rendered classes, and the settings most used."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ...records import Accuracy, CraftRecord, MacoRecord, Meta, ModelCard
from .formatting import finite, fmt, pct


def _mean(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.fmean(vs) if vs else None


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
    dictionary_map: str | None = None  # the shared concept dictionary's map, relative to the site root


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
