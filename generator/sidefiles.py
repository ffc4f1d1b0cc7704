"""The store's side files, beside meta.json and model.json: their names, formats, constants, writers
and readers, defined once (torch-free: the render writes them, the site and the benchmarks' synthetic
store read and write them through this module).

Per class with CRAFT done (`<tag>` = the CRAFT settings hash's first 8 characters):

- `concepts/directions.<tag>.npy` (meta `craft.files.directions`): float32 (r, C), the concept
  vectors in the concept layer, row j = the concept with the j-th smallest id.
- `concepts/per_image.<tag>.npz` (meta `craft.files.per_image`): `coefficients` float32 (N, r), each
  image's concept coefficients pooled as the head pools the concept layer, columns by concept id;
  `importance` float32 (N, r), optional, each image's Sobol total indices (their mean over images is
  the concepts' `importance`); `sources` str (N,), the images' source ids. Where the head is linear
  the site computes the exact per-image logit terms coefficient_k * (W_k . w_class) from the
  coefficients and `head.npz`, so they are not stored twice.
- `concepts/thumbs.<tag>.jpg` (meta `craft.files.thumbs`): the N views as the model sees them,
  THUMB_CELL px squares, THUMB_COLS per row, row-major in `per_image` order.
- `concepts/photos/photo_<view>.<tag>.jpg` (meta `concepts[].attributions[].photo`): the plain view
  under a heatmap, PHOTO_SIZE px like the heatmap; one file per view, shared by concepts.

Per model, `<model>/head.npz` (model.json `head`, records.HeadRecord): `weight` float32 (K, C),
`bias` float32 (K,) and `kind`: "linear" where h is mean-pool + linear (the rows themselves, exact),
"gradient" otherwise (a first-order linearisation, generator/concept_data.py says where). Written
atomically under the model-card lock, and only when its key differs from the one model.json records.

Per model, the concept dictionary's side files (issue 19; `<h>` = the dictionary's settings hash,
paths relative to `<model>/`):

- `dictionary/regions/<NNNN>.<h>.webp` (atlas `atoms[].regions` + ".webp"): a horizontal strip of up
  to TOP_REGIONS photo crops of atom NNNN, each REGION_SIDE px square, centred on the tokens where its
  code is largest (one per photo), high-quality WebP; `dictionary/regions/<NNNN>.<h>.heat.webp` the
  same strip of RGBA heatmaps (the atom's code over each crop, upsampled, inferno-coloured, alpha =
  intensity, one scale for the strip), lossless WebP, to lay over the crops under an opacity slider.
- `dictionary/codes.<h>.npz` (dictionary.json `files.codes`), for cross-model matching: `sources` str
  (V,) one identity per photo view, the same for the same photo in every model (its path relative to
  `images:` or the demo photo's name, plus a view suffix such as `#flip`); `grid` int (2,) the token
  grid (h, w); `indices` int16 (V, h*w, k) and `values` float16 (V, h*w, k), each token's top-k codes.
- `dictionary/maco/<NNNN>.<h>.webp` and `dictionary/maco/<NNNN>.alpha.<h>.webp`: atom NNNN's MACO and
  its attribution map (as a class MACO's `maco.png` / `maco_alpha.png`), lossless WebP.

Readers raise `SideFileError` (a ValueError) for a file that is absent, not an npy/npz, or of the
wrong shape; callers decide what a missing file means.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import StoreError
from .records import HeadRecord, ModelCard
from .store import Store, atomic_write_bytes, encode_jpeg, encode_webp

log = logging.getLogger("lens")

THUMB_CELL, THUMB_COLS = 64, 16  # the thumbnail grid: the site's sprite geometry
PHOTO_SIZE = 256  # = craft.attribution_overlay's out_size: a photo lies exactly under its heatmap
HEAD = "head.npz"
HEAD_VERSION = 1
DIRECTIONS_PATTERN = "concepts/directions.*.npy"
# Files of earlier CRAFT versions to delete once meta.json points at the new ones (workers.save_craft).
PRUNE_PATTERNS = ("concepts/per_image.*.npz", "concepts/thumbs.*.jpg", "concepts/photos/*")
TOP_REGIONS, REGION_SIDE = 10, 128  # an atom's region strip: up to 10 crops of 128 px
REGION_QUALITY = 90  # the photos of a region strip (its heatmaps are lossless: their alpha is the data)
MAX_CODE_ATOMS = 2**15  # codes.npz stores atom indices as int16


class SideFileError(ValueError):
    """A side file that is absent or does not have its documented format."""


# ----------------------------------------------------------------------------- names


def directions_name(tag: str) -> str:
    return f"concepts/directions.{tag}.npy"


def per_image_name(tag: str) -> str:
    return f"concepts/per_image.{tag}.npz"


def thumbs_name(tag: str) -> str:
    return f"concepts/thumbs.{tag}.jpg"


def photo_name(view: int, tag: str) -> str:
    return f"concepts/photos/photo_{view}.{tag}.jpg"


def atoms_name(h: str) -> str:
    """dictionary.json `files.atoms`: the trained SAE (safetensors, generator/sae.py `atoms_bytes`)."""
    return f"dictionary/atoms.{h}.safetensors"


def region_stem(atom: int, h: str) -> str:
    return f"dictionary/regions/{atom:04d}.{h}"


def region_names(atom: int, h: str) -> tuple[str, str]:
    """The photos strip and the heat strip of an atom."""
    stem = region_stem(atom, h)
    return f"{stem}.webp", f"{stem}.heat.webp"


def codes_name(h: str) -> str:
    return f"dictionary/codes.{h}.npz"


def atom_maco_names(atom: int, h: str) -> tuple[str, str]:
    """An atom's MACO image and its attribution (alpha) map."""
    return f"dictionary/maco/{atom:04d}.{h}.webp", f"dictionary/maco/{atom:04d}.alpha.{h}.webp"


# ----------------------------------------------------------------------------- encoding


def directions_npy(vectors: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(vectors, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def per_image_npz(coefficients: np.ndarray, sources: Sequence[str], importance: np.ndarray | None = None) -> bytes:
    """The `per_image` file: columns by concept id, rows in view order."""
    arrays: dict[str, Any] = {"coefficients": np.asarray(coefficients, dtype=np.float32), "sources": np.array(list(sources), dtype=str)}
    if importance is not None:
        arrays["importance"] = np.asarray(importance, dtype=np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def thumbs_image(pictures: Sequence[Image.Image]) -> Image.Image:
    """The pictures as THUMB_CELL px squares, THUMB_COLS per row (fewer columns when there are fewer)."""
    cols = max(1, min(THUMB_COLS, len(pictures)))
    rows = max(1, math.ceil(len(pictures) / cols))
    sheet = Image.new("RGB", (cols * THUMB_CELL, rows * THUMB_CELL))
    for i, picture in enumerate(pictures):
        cell = picture.resize((THUMB_CELL, THUMB_CELL), Image.Resampling.BICUBIC)
        sheet.paste(cell.convert("RGB"), ((i % cols) * THUMB_CELL, (i // cols) * THUMB_CELL))
    return sheet


def photo_image(picture: Image.Image) -> Image.Image:
    """The plain view under a heatmap: resized exactly as craft.attribution_overlay resizes its base."""
    return picture.resize((PHOTO_SIZE, PHOTO_SIZE), Image.Resampling.BILINEAR)


def head_npz(weight: np.ndarray, bias: np.ndarray, kind: str) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, weight=np.asarray(weight, dtype=np.float32), bias=np.asarray(bias, dtype=np.float32), kind=np.array(kind))
    return buf.getvalue()


def region_strip(crops: Sequence[Image.Image]) -> Image.Image:
    """Up to TOP_REGIONS crops side by side, each resized to REGION_SIDE px square (RGB)."""
    crops = list(crops)[:TOP_REGIONS]
    if not crops:
        raise ValueError("a region strip needs at least one crop")
    strip = Image.new("RGB", (REGION_SIDE * len(crops), REGION_SIDE))
    for i, crop in enumerate(crops):
        strip.paste(crop.convert("RGB").resize((REGION_SIDE, REGION_SIDE), Image.Resampling.BICUBIC), (i * REGION_SIDE, 0))
    return strip


def heat_strip(maps: Sequence[np.ndarray]) -> Image.Image:
    """The code maps (2-D, >= 0, any size) as RGBA heatmaps side by side: bilinear to REGION_SIDE px,
    one scale for the whole strip (so crops compare), inferno colours, alpha = intensity."""
    import matplotlib

    maps = [np.asarray(m, dtype=np.float32) for m in list(maps)[:TOP_REGIONS]]
    if not maps or any(m.ndim != 2 for m in maps):
        raise ValueError("a heat strip needs at least one 2-D map")
    vmax = max(float(m.max()) for m in maps)
    strip = np.zeros((REGION_SIDE, REGION_SIDE * len(maps), 4), dtype=np.uint8)
    for i, m in enumerate(maps):
        big = np.asarray(Image.fromarray(np.clip(m, 0, None)).resize((REGION_SIDE, REGION_SIDE), Image.Resampling.BILINEAR))
        heat = np.clip(big / vmax, 0, 1) if vmax > 0 else np.zeros_like(big)
        rgba = matplotlib.colormaps["inferno"](heat)
        rgba[..., 3] = heat
        strip[:, i * REGION_SIDE:(i + 1) * REGION_SIDE] = (rgba * 255).round().astype(np.uint8)
    return Image.fromarray(strip, "RGBA")


@dataclass
class Codes:
    """`codes.<h>.npz` as held in memory: view ids (V,), the token grid (h, w), top-k codes per token."""

    sources: list[str]
    grid: tuple[int, int]
    indices: np.ndarray  # int16 (V, h*w, k)
    values: np.ndarray  # float16 (V, h*w, k)


def codes_npz(codes: Codes) -> bytes:
    """The codes file; refuses shapes that do not fit its format (one row per view, h*w tokens)."""
    indices, values = np.asarray(codes.indices), np.asarray(codes.values)
    views, tokens = len(codes.sources), codes.grid[0] * codes.grid[1]
    if indices.shape != values.shape or indices.ndim != 3 or indices.shape[:2] != (views, tokens):
        raise ValueError(f"codes of shape {indices.shape}/{values.shape} for {views} views of {tokens} tokens")
    if indices.size and (indices.min() < 0 or indices.max() >= MAX_CODE_ATOMS):
        raise ValueError(f"atom indices outside 0..{MAX_CODE_ATOMS - 1}")
    buf = io.BytesIO()
    np.savez_compressed(buf, sources=np.array(codes.sources, dtype=str), grid=np.array(codes.grid, dtype=np.int64),
                        indices=indices.astype(np.int16), values=values.astype(np.float16))
    return buf.getvalue()


# ----------------------------------------------------------------------------- writing


@dataclass
class PerImage:
    """One class's per-image records: coefficients (N, r), Sobol totals (N, r) or None, source ids (N)."""

    coefficients: np.ndarray
    importance: np.ndarray | None
    sources: list[str]


class ClassFiles:
    """Writes one class's atlas files during workers.save_craft; `written` lists them (to keep on prune).

    `pictures` are the views as the model saw them, in `per_image` row order."""

    def __init__(self, store: Store, model: str, class_index: int, tag: str, pictures: Sequence[Image.Image],
                 per_image: PerImage | None):
        self.store, self.model, self.class_index, self.tag = store, model, class_index, tag
        self.pictures, self.per_image = pictures, per_image
        self.written: set[str] = set()
        self._photos: dict[int, str] = {}

    def _write(self, rel: str, data: bytes) -> str:
        self.store.write_file(self.model, self.class_index, rel, data)
        self.written.add(rel)
        return rel

    def directions(self, vectors: np.ndarray) -> str:
        """The concept vectors (rows by concept id); returns the entry for `craft.files.directions`."""
        return self._write(directions_name(self.tag), directions_npy(vectors))

    def write(self) -> dict[str, str]:
        """`per_image` and `thumbs`: the entries for `craft.files` (none without per-image records)."""
        p = self.per_image
        if p is None or not self.pictures:
            return {}
        return {"per_image": self._write(per_image_name(self.tag), per_image_npz(p.coefficients, p.sources, p.importance)),
                "thumbs": self._write(thumbs_name(self.tag), encode_jpeg(thumbs_image(self.pictures)))}

    def photo(self, view: int) -> str:
        """The photo of view `view` (written on first use)."""
        if view not in self._photos:
            self._photos[view] = self._write(photo_name(view, self.tag), encode_jpeg(photo_image(self.pictures[view])))
        return self._photos[view]


def write_region_strips(model_dir: Path, atom: int, h: str, crops: Sequence[Image.Image],
                        maps: Sequence[np.ndarray]) -> str:
    """An atom's two region strips (crops and their code maps, in the same order), written atomically;
    returns their stem for `AtlasAtom.regions`."""
    if len(crops) != len(maps):
        raise ValueError(f"{len(crops)} crops but {len(maps)} code maps")
    photos, heat = region_names(atom, h)
    atomic_write_bytes(model_dir / photos, encode_webp(region_strip(crops), lossless=False, quality=REGION_QUALITY))
    atomic_write_bytes(model_dir / heat, encode_webp(heat_strip(maps)))
    return region_stem(atom, h)


def write_codes(model_dir: Path, h: str, codes: Codes) -> str:
    """`dictionary/codes.<h>.npz`, atomically; returns its entry for dictionary.json `files.codes`."""
    rel = codes_name(h)
    atomic_write_bytes(model_dir / rel, codes_npz(codes))
    return rel


def write_head(store: Store, model: str, key: str, compute: Callable[[], tuple[np.ndarray, np.ndarray, str]]) -> str | None:
    """`<model>/head.npz` from `compute()` (weight, bias, kind), unless model.json says the file with
    this `key` is current. Returns its kind, or None when `compute` failed (logged: the atlas then
    shows no aligned classes). A store that cannot be written raises StoreError."""
    path = store.root / model / HEAD
    kind: list[str] = []

    def change(card: ModelCard) -> None:
        if card.head is not None and card.head.key == key and path.is_file():
            kind.append(str(card.head.kind))
            return
        weight, bias, k = compute()
        atomic_write_bytes(path, head_npz(weight, bias, k))
        card.head = HeadRecord(file=HEAD, kind=k, key=key)
        kind.append(k)

    try:
        store.update_model_card(model, change)
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - an optional file of the atlas must never stop a render
        log.warning("%s: head.npz not written (%s: %s); the atlas will show no aligned classes", model, type(e).__name__, e)
        return None
    return kind[0] if kind else None


# ----------------------------------------------------------------------------- reading


@dataclass
class Head:
    """`head.npz` as read: class rows (K, C), their kind, and a digest of the file (size, mtime)."""

    weight: np.ndarray
    kind: str  # linear | gradient
    digest: str
    bias: np.ndarray | None = None


def read_head(model_dir: Path) -> Head:
    """The model's head.npz (a file without `kind` is linear: written before gradient heads)."""
    path = model_dir / HEAD
    try:
        st = path.stat()
        with np.load(path, allow_pickle=False) as z:
            weight = np.asarray(z["weight"], dtype=np.float32)
            bias = np.asarray(z["bias"], dtype=np.float32) if "bias" in z.files else None
            kind = str(z["kind"]) if "kind" in z.files else "linear"
    except (OSError, KeyError, ValueError) as e:
        raise SideFileError(f"{path}: {type(e).__name__}") from None
    if weight.ndim != 2:
        raise SideFileError(f"{path}: weight has {weight.ndim} dimensions, not 2")
    return Head(weight, kind, f"{st.st_size}:{st.st_mtime_ns}", bias)


def read_directions(path: Path) -> np.ndarray:
    """The concept vectors (r, C) of one class."""
    try:
        vectors = np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as e:
        raise SideFileError(f"{path}: {type(e).__name__}") from None
    if vectors.ndim != 2:
        raise SideFileError(f"{path}: {vectors.ndim} dimensions, not 2")
    return vectors


def read_per_image(path: Path, concepts: int) -> PerImage:
    """One class's per-image records, checked to have one column per concept."""
    try:
        with np.load(path, allow_pickle=False) as z:
            coefficients = np.asarray(z["coefficients"], dtype=np.float32)
            importance = np.asarray(z["importance"], dtype=np.float32) if "importance" in z.files else None
            sources = [str(s) for s in z["sources"]] if "sources" in z.files else []
    except (OSError, KeyError, ValueError) as e:
        raise SideFileError(type(e).__name__) from None
    if coefficients.ndim != 2 or coefficients.shape[1] != concepts:
        raise SideFileError("ValueError")
    return PerImage(coefficients, importance, sources)


def region_strips(model_dir: Path, atom: int, h: str) -> tuple[Path, Path] | None:
    """An atom's (photos, heat) strips, or None unless both files exist."""
    photos, heat = (model_dir / rel for rel in region_names(atom, h))
    return (photos, heat) if photos.is_file() and heat.is_file() else None


def read_codes(path: Path) -> Codes:
    """A model's codes file, checked against its documented shapes."""
    try:
        with np.load(path, allow_pickle=False) as z:
            sources = [str(s) for s in z["sources"]]
            grid = tuple(int(g) for g in z["grid"])
            indices, values = np.asarray(z["indices"]), np.asarray(z["values"])
    except (OSError, KeyError, ValueError) as e:
        raise SideFileError(f"{path}: {type(e).__name__}") from None
    if len(grid) != 2 or indices.shape != values.shape or indices.ndim != 3 \
            or indices.shape[:2] != (len(sources), grid[0] * grid[1]):
        raise SideFileError(f"{path}: codes of shape {indices.shape} do not fit {len(sources)} views of grid {grid}")
    return Codes(sources, (grid[0], grid[1]), indices, values)
