"""Class lists for benchmark command lines: a lens class SPEC, or START-END:STEP for a spread."""

from __future__ import annotations

from generator.classes import parse_class_spec


def parse_class_list(text: str) -> list[int]:
    """`0-999:50` -> 0, 50, ..., 950; anything else is a lens SPEC (`0-9,967`, `n02123045`)."""
    if ":" not in text:
        return parse_class_spec(text)
    classes: list[int] = []
    for part in text.split(","):
        span, _, step = part.partition(":")
        lo, _, hi = span.partition("-")
        classes += list(range(int(lo), int(hi or lo) + 1, int(step or 1)))
    return sorted(set(classes), key=classes.index)
