"""Formatting for pages: values as short text, counts with their nouns, percentages and bar lengths,
the visitor-text filter every printed value passes, and the placeholder states of parts that cannot
be shown."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ...records import CraftRecord, PartRecord, part_state


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
