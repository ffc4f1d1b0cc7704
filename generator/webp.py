"""WebP variants of store images for the site, content-addressed so nothing is encoded twice.

An output's key hashes its variant and its sources' bytes. The encoded file lives once in a cache
folder (`<cache>/webp/<key[:2]>/<key>.webp`) and is hard-linked (or copied) into the site as
`<role>.<key[:12]>.webp`; a name that exists is therefore already up to date. Source hashes are
memoized by (size, mtime), as git's index does, so an unchanged store is not even re-read.

No torch here: the site must build fast and without the models.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from .store import atomic_write_bytes

FULL_SIZE = 512  # longest side of full views; smaller sources are not upscaled
THUMB_SIZE = 128  # longest side of thumbnails in grids and concept lists
CROP_CELL = 128  # side of one image in a strip (a concept's crops, its heatmaps)
CROP_GAP = 4  # transparent gap between images in a strip
SPRITE_SIZE = 2048  # a class's image thumbnails in one grid (decision strategies)
QUALITY = 82
ENCODER_VERSION = "1"  # bump to re-encode everything after changing how variants look

# variant -> what it makes of its sources
VARIANTS = {
    "full": "image, longest side FULL_SIZE",
    "medium": "image, longest side FULL_SIZE // 2",
    "thumb": "image, longest side THUMB_SIZE",
    "overlay": "RGB image with its alpha map as transparency, FULL_SIZE",
    "overlay-thumb": "RGB image with its alpha map as transparency, THUMB_SIZE",
    "strip": "images side by side in CROP_CELL squares (centre-cropped), transparent gaps",
    "sprite": "image as stored, longest side at most SPRITE_SIZE (a grid of small thumbnails)",
}
KEY_NAME_CHARS = 12  # of the key, in site file names; unique enough within one class folder


def variant_key(variant: str, source_digests: Sequence[str]) -> str:
    """The cache key of one output: everything that decides its bytes."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown image variant {variant!r}")
    recipe = f"{ENCODER_VERSION}|{variant}|{FULL_SIZE}|{THUMB_SIZE}|{CROP_CELL}|{CROP_GAP}|{QUALITY}|" + ",".join(source_digests)
    return hashlib.sha256(recipe.encode()).hexdigest()


def output_name(role: str, key: str) -> str:
    return f"{role}.{key[:KEY_NAME_CHARS]}.webp"


# ----------------------------------------------------------------------------- encoding


def _fit(im: Image.Image, side: int) -> Image.Image:
    """Scaled so the longest side is at most `side` (never upscaled)."""
    if max(im.size) > side:
        im = im.copy()
        im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return im


def _webp(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="WEBP", quality=QUALITY, method=4, alpha_quality=90)
    return buf.getvalue()


def _open(path: Path, mode: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert(mode)


def _overlay(image: Path, alpha: Path, side: int) -> Image.Image:
    rgb = _open(image, "RGB")
    a = _open(alpha, "L")
    if a.size != rgb.size:
        a = a.resize(rgb.size, Image.Resampling.BILINEAR)
    rgb.putalpha(a)
    return _fit(rgb, side)


def _strip(crops: Sequence[Path]) -> Image.Image:
    width = len(crops) * CROP_CELL + (len(crops) - 1) * CROP_GAP
    strip = Image.new("RGBA", (max(width, 1), CROP_CELL), (0, 0, 0, 0))
    for i, path in enumerate(crops):
        crop = ImageOps.fit(_open(path, "RGB"), (CROP_CELL, CROP_CELL), Image.Resampling.LANCZOS)
        strip.paste(crop, (i * (CROP_CELL + CROP_GAP), 0))
    return strip


def render_variant(variant: str, sources: Sequence[Path]) -> Image.Image:
    if variant == "full":
        return _fit(_open(sources[0], "RGB"), FULL_SIZE)
    if variant == "medium":
        return _fit(_open(sources[0], "RGB"), FULL_SIZE // 2)
    if variant == "thumb":
        return _fit(_open(sources[0], "RGB"), THUMB_SIZE)
    if variant == "overlay":
        return _overlay(sources[0], sources[1], FULL_SIZE)
    if variant == "overlay-thumb":
        return _overlay(sources[0], sources[1], THUMB_SIZE)
    if variant == "strip":
        return _strip(sources)
    if variant == "sprite":
        return _fit(_open(sources[0], "RGB"), SPRITE_SIZE)
    raise ValueError(f"unknown image variant {variant!r}")


def unreadable_placeholder(variant: str) -> Image.Image:
    """Shown instead of a source that does not decode: a grey square with a cross."""
    side = THUMB_SIZE if variant in ("thumb", "overlay-thumb", "strip") else FULL_SIZE // 2
    im = Image.new("RGB", (side, side), (128, 128, 128))
    draw = ImageDraw.Draw(im)
    draw.line((0, 0, side, side), fill=(200, 60, 60), width=3)
    draw.line((0, side, side, 0), fill=(200, 60, 60), width=3)
    return im


def encode_variant(variant: str, sources: Sequence[Path]) -> tuple[bytes, str | None]:
    """WebP bytes of a variant, and an error message when a source could not be decoded."""
    try:
        return _webp(render_variant(variant, sources)), None
    except Exception as e:  # noqa: BLE001 - any decoder failure gives a placeholder, not a stopped build
        return _webp(unreadable_placeholder(variant)), f"{', '.join(str(s) for s in sources)}: {e}"


# ----------------------------------------------------------------------------- source hashes


class SourceHashes:
    """sha256 of the files under `base` (a class folder), memoized by (size, mtime_ns) in one small JSON file.

    Paths are plain strings relative to `base`: this runs for every source of every class on
    every build, where pathlib's parsing would cost more than the stat calls themselves.
    """

    def __init__(self, memo_path: Path, base: Path):
        self.memo_path = memo_path
        self.base = str(base)
        self.changed = False
        self.hashed = 0
        try:
            self.memo: dict[str, list] = json.loads(memo_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self.memo = {}
        self.seen: dict[str, str] = {}

    def path(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def digest(self, rel: str) -> str:
        """Raises FileNotFoundError if the file is gone."""
        if rel in self.seen:
            return self.seen[rel]
        path = self.path(rel)
        st = os.stat(path)
        entry = self.memo.get(rel)
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            digest = entry[2]
        else:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            self.memo[rel] = [st.st_size, st.st_mtime_ns, digest]
            self.changed = True
            self.hashed += 1
        self.seen[rel] = digest
        return digest

    def save(self) -> None:
        """Keeps only the files looked at this time, so the memo never grows stale entries."""
        if len(self.memo) != len(self.seen):
            self.memo = {k: v for k, v in self.memo.items() if k in self.seen}
            self.changed = True
        if self.changed:
            atomic_write_bytes(self.memo_path, json.dumps(self.memo, separators=(",", ":")).encode())
            self.changed = False


# ----------------------------------------------------------------------------- cache


class WebpCache:
    """Encoded variants by key, shared by every site built from the same store."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.webp"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def link_into(self, key: str, dest: Path) -> None:
        """Hard link (no copy, no extra disk) where the filesystem allows, else a copy."""
        src = self.path(key)
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        try:
            os.link(src, dest)
        except OSError:  # another filesystem, or links not allowed: an atomic copy
            atomic_write_bytes(dest, src.read_bytes())


def _encode_job(job: tuple[str, str, tuple[str, ...], str]) -> tuple[str, str | None]:
    """Worker side: encode one variant straight into the cache (so bytes never cross processes)."""
    key, variant, sources, target = job
    data, error = encode_variant(variant, [Path(s) for s in sources])
    atomic_write_bytes(Path(target), data)
    return key, error


def encode_missing(cache: WebpCache, jobs: dict[str, tuple[str, tuple[str, ...]]], workers: int,
                   progress: bool = False) -> list[str]:
    """Encode every key not yet in the cache; returns the errors (unreadable sources)."""
    todo = [(k, v, srcs, str(cache.path(k))) for k, (v, srcs) in jobs.items()]
    errors: list[str] = []
    if not todo:
        return errors
    results: Iterable[tuple[str, str | None]]
    pool = ProcessPoolExecutor(workers) if workers > 1 and len(todo) > 16 else None
    try:
        results = pool.map(_encode_job, todo, chunksize=16) if pool else map(_encode_job, todo)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(todo), desc="site: encoding WebP", unit="img", leave=False)
        for _, error in results:
            if error:
                errors.append(error)
    finally:
        if pool:
            pool.shutdown()
    return errors
