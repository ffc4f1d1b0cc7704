"""ImageNet-1k classes (index, WordNet id, name) and the class SPEC parser.

Names and WordNet ids come from timm's bundled ImageNet metadata, so nothing is downloaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

NUM_CLASSES = 1000


class ClassSpecError(ValueError):
    """A class SPEC that does not parse; the message names the offending part."""


@dataclass(frozen=True)
class ImageNetClass:
    index: int
    wnid: str
    name: str

    @property
    def slug(self) -> str:
        """Index-based, so unique even where names collide (there are two 'crane')."""
        return f"{self.index:04d}"


@lru_cache(maxsize=1)
def _info():  # noqa: ANN202 - timm type is internal
    from timm.data import ImageNetInfo

    return ImageNetInfo("imagenet-1k")


@lru_cache(maxsize=1)
def all_classes() -> tuple[ImageNetClass, ...]:
    info = _info()
    return tuple(
        ImageNetClass(i, info.index_to_label_name(i), info.index_to_description(i)) for i in range(NUM_CLASSES)
    )


def imagenet_class(index: int) -> ImageNetClass:
    if not 0 <= index < NUM_CLASSES:
        raise ClassSpecError(f"class index {index} is out of range 0-{NUM_CLASSES - 1}")
    return all_classes()[index]


@lru_cache(maxsize=1)
def _wnid_to_index() -> dict[str, int]:
    return {c.wnid: c.index for c in all_classes()}


def index_of_wnid(wnid: str) -> int:
    try:
        return _wnid_to_index()[wnid]
    except KeyError:
        raise ClassSpecError(f"unknown WordNet id '{wnid}' (not one of the ImageNet-1k classes)") from None


_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_WNID = re.compile(r"^n\d{8}$")


def parse_class_spec(spec: str) -> list[int]:
    """`all`, `0-99`, `281,967`, `n02123045`, or a comma-separated mix; sorted, without repeats.

    Preset names (e.g. `demo`) are resolved by the caller, which knows `models.yaml`.
    """
    spec = spec.strip()
    if not spec:
        raise ClassSpecError("empty class SPEC")
    if spec == "all":
        return list(range(NUM_CLASSES))
    chosen: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            raise ClassSpecError(f"empty item in class SPEC '{spec}'")
        if part.isdigit():
            chosen.add(imagenet_class(int(part)).index)
        elif m := _RANGE.match(part):
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise ClassSpecError(f"range '{part}' runs backwards")
            imagenet_class(lo), imagenet_class(hi)
            chosen.update(range(lo, hi + 1))
        elif _WNID.match(part):
            chosen.add(index_of_wnid(part))
        else:
            raise ClassSpecError(
                f"cannot read '{part}' in class SPEC '{spec}': use all, 0-99, 281,967, n02123045 or a preset name"
            )
    return sorted(chosen)
