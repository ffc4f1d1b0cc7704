"""Class lists for benchmark command lines: lens class SPECs, plus START-END:STEP for a spread."""

from __future__ import annotations

from generator.classes import parse_class_spec


def parse_class_list(text: str) -> list[int]:
    """`0-999:50,967` -> 0, 50, ..., 950, 967; parts without a step are lens SPECs (`0-9`, `n02123045`)."""
    classes: list[int] = []
    for part in text.split(","):
        span, step, stride = part.partition(":")
        if step:
            lo, _, hi = span.partition("-")
            classes += range(int(lo), int(hi or lo) + 1, int(stride))
        else:
            classes += parse_class_spec(part)
    return list(dict.fromkeys(classes))  # first occurrence order, no repeats
