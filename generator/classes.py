"""ImageNet-1k classes (index, WordNet id, name) and the class SPEC parser.

Names and WordNet ids come from timm's bundled ImageNet metadata files (the ones behind
timm.data.ImageNetInfo), read directly so that torch-free tools (the site) stay fast.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import ClassSpecError

NUM_CLASSES = 1000


@dataclass(frozen=True)
class ImageNetClass:
    index: int
    wnid: str
    name: str

    @property
    def slug(self) -> str:
        """Index-based, so unique even where names collide (there are two 'crane')."""
        return f"{self.index:04d}"


def _timm_info_dir() -> Path:
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("timm is not installed; it ships the ImageNet class names")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "_info"


@lru_cache(maxsize=1)
def all_classes() -> tuple[ImageNetClass, ...]:
    """The 1000 classes in index order, named as timm's ImageNetInfo names them."""
    info = _timm_info_dir()
    wnids = (info / "imagenet_synsets.txt").read_text(encoding="utf-8").split()
    lines = (info / "imagenet_synset_to_lemma.txt").read_text(encoding="utf-8").splitlines()
    lemmas = dict(line.split("\t", 1) for line in lines if "\t" in line)
    if len(wnids) != NUM_CLASSES:
        raise RuntimeError(f"{info}: expected {NUM_CLASSES} ImageNet synsets, found {len(wnids)}")
    return tuple(ImageNetClass(i, w, lemmas.get(w, w)) for i, w in enumerate(wnids))


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
    """`all`, `0-99`, `281,967`, `n02123045`, class names (`espresso,tabby`), or a comma-separated mix;
    sorted, without repeats.

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
        elif _NAME.match(part):
            chosen.add(index_of_name(part))
        else:
            raise ClassSpecError(
                f"cannot read '{part}' in class SPEC '{spec}': use all, 0-99, 281,967, n02123045, espresso or a preset name"
            )
    return sorted(chosen)


_NAME = re.compile(r"^[^\W\d][\w '.-]*$")


def _normalise(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


@lru_cache(maxsize=1)
def _synonyms() -> dict[str, tuple[int, ...]]:
    """Every synonym of every class name ('tabby, tabby cat' gives two), lower case, to its classes."""
    table: dict[str, list[int]] = {}
    for c in all_classes():
        for synonym in c.name.split(","):
            if synonym.strip():
                table.setdefault(_normalise(synonym), []).append(c.index)
    return {k: tuple(dict.fromkeys(v)) for k, v in table.items()}


def index_of_name(name: str) -> int:
    """The class one of whose synonyms is `name` (case, spaces and underscores aside); an ambiguous or
    unknown name raises ClassSpecError listing the candidates with their indices."""
    table = _synonyms()
    found = table.get(_normalise(name), ())
    if len(found) == 1:
        return found[0]
    if found:
        options = ", ".join(f"{i} ({all_classes()[i].name})" for i in found)
        raise ClassSpecError(f"class name '{name}' is ambiguous: {options}; give the index instead")
    close = difflib.get_close_matches(_normalise(name), list(table), n=4, cutoff=0.75)
    if not close:  # a word of a longer name: 'retriever' -> golden retriever, ...
        close = [k for k in table if _normalise(name) in k.split()][:4]
    hint = f" (did you mean {', '.join(f'{k!r} = {table[k][0]}' for k in close)}?)" if close else ""
    raise ClassSpecError(f"unknown class name '{name}'{hint or ' (names are the ImageNet-1k ones timm uses, e.g. espresso, tabby)'}")
