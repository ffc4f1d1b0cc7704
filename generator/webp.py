"""WebP variants of store images for the site, content-addressed so nothing is encoded twice.

An output's key hashes its variant and its sources' bytes. The encoded file lives once in a cache
folder (`<cache>/webp/<key[:2]>/<key>.webp`) and is copied into the site as
`<role>.<key[:12]>.webp`, never hard-linked: the site owns its bytes, so editing it cannot change
the cache (generator/site/images.py checks placed copies against it). Source hashes are memoized by
(size, mtime), as git's index does, so an unchanged store is not even re-read.

No torch here: the site must build fast and without the models.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageOps

from .store import atomic_write_bytes

# Sizes and qualities are chosen for the weight budget: at default settings (512 px MACO, 10
# concepts with crops and heatmaps) one class x model publishes <= 300 KB, so 1000 classes x 3
# models fit in 1 GB (figures, PSNR/SSIM and side-by-side crops: benchmarks/bench_weight.py).
FULL_SIZE = 512  # longest side of full views; smaller sources are not upscaled
THUMB_SIZE = 128  # longest side of thumbnails in grids and concept lists
CROP_CELL = 80  # side of one image in a strip (a concept's crops, its heatmaps): shown 80-90 px high
CROP_GAP = 4  # transparent gap between images in a strip
STRIP_COLUMNS = 5  # a strip wraps into rows of this many images: 10 crops read as two rows of five
STRIP_HEATMAPS = 3  # attribution heatmaps shown per concept (CRAFT records 4 by default)
QUALITY = 70  # visualizations
OVERLAY_QUALITY = 60  # the colours of an overlay, seen through its attribution map
PHOTO_QUALITY = 55  # crops and heatmaps of photos, which compress better
ALPHA_QUALITY = 40  # attribution maps (the overlay's alpha): smooth once blurred
ALPHA_BLUR = 1.5  # px, at the output's resolution: drops pixel noise the eye cannot read in an attribution map
METHOD = 6  # WebP's slowest, smallest setting: encoding is cached, bytes are published
SPRITE_SIZE = 2048  # a class's image thumbnails in one grid (decision strategies)
ENCODER_VERSION = "2"  # bump to re-encode everything after changing how variants look

# variant -> what it makes of its sources
VARIANTS = {
    "full": "image, longest side FULL_SIZE",
    "medium": "image, longest side FULL_SIZE // 2",
    "thumb": "image, longest side THUMB_SIZE",
    "overlay": "RGB image with its alpha map as transparency, FULL_SIZE",
    "overlay-thumb": "RGB image with its alpha map as transparency, THUMB_SIZE",
    "strip": "images in CROP_CELL squares (centre-cropped), rows of at most STRIP_COLUMNS, transparent gaps",
    "cells": "one horizontal strip of square cells (a dictionary atom's regions or their RGBA heatmaps), "
             "each cell scaled to CROP_CELL, laid out as `strip` (alpha kept)",
    "png": "lossless PNG at the source's resolution, its alpha map (if any) as transparency (opt-in, for papers)",
    "sprite": "image as stored, longest side at most SPRITE_SIZE (a grid of small thumbnails)",
}
_FIT = {"full": FULL_SIZE, "medium": FULL_SIZE // 2, "thumb": THUMB_SIZE, "overlay": FULL_SIZE, "overlay-thumb": THUMB_SIZE}
KEY_NAME_CHARS = 12  # of the key, in site file names; unique enough within one class folder


def variant_key(variant: str, source_digests: Sequence[str]) -> str:
    """The cache key of one output: everything that decides its bytes."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown image variant {variant!r}")
    recipe = (f"{ENCODER_VERSION}|{variant}|{FULL_SIZE}|{THUMB_SIZE}|{CROP_CELL}|{CROP_GAP}|{QUALITY}|{OVERLAY_QUALITY}|{PHOTO_QUALITY}|"
              f"{ALPHA_QUALITY}|{ALPHA_BLUR}|{METHOD}|" + ",".join(source_digests))
    return hashlib.sha256(recipe.encode()).hexdigest()


def output_name(role: str, key: str, variant: str = "") -> str:
    return f"{role}.{key[:KEY_NAME_CHARS]}.{'png' if variant == 'png' else 'webp'}"


def output_size(variant: str, source_size: tuple[int, int], n_sources: int = 1) -> tuple[int, int]:
    """Pixel size of a variant made from sources of `source_size` (the first source's), without encoding it."""
    w, h = source_size
    if variant == "strip":
        return strip_geometry(n_sources)
    if variant == "cells":
        return strip_geometry(strip_cells(source_size))
    side = _FIT.get(variant)
    if side is None or max(w, h) <= side:
        return w, h
    scale = side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


# ----------------------------------------------------------------------------- encoding


def _fit(im: Image.Image, side: int) -> Image.Image:
    """Scaled so the longest side is at most `side` (never upscaled)."""
    if max(im.size) > side:
        im = im.copy()
        im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return im


def _webp(im: Image.Image, quality: int = QUALITY) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="WEBP", quality=quality, method=METHOD, alpha_quality=ALPHA_QUALITY)
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
    im = _fit(rgb, side)
    if ALPHA_BLUR:  # at the output's resolution: thumbnails get as smooth a map as full views
        im.putalpha(im.getchannel("A").filter(ImageFilter.GaussianBlur(ALPHA_BLUR)))
    return im


def strip_geometry(n: int) -> tuple[int, int]:
    """Pixel size of a strip of `n` images: one row up to STRIP_COLUMNS (a strip of up to five is
    laid out as it always was, so its bytes and cache key are unchanged), then more rows."""
    cols, rows = max(1, min(n, STRIP_COLUMNS)), max(1, -(-n // STRIP_COLUMNS))
    return cols * CROP_CELL + (cols - 1) * CROP_GAP, rows * CROP_CELL + (rows - 1) * CROP_GAP


def _strip(crops: Sequence[Path]) -> Image.Image:
    strip = Image.new("RGBA", strip_geometry(len(crops)), (0, 0, 0, 0))
    for i, path in enumerate(crops):
        crop = ImageOps.fit(_open(path, "RGB"), (CROP_CELL, CROP_CELL), Image.Resampling.LANCZOS)
        row, col = divmod(i, STRIP_COLUMNS)
        strip.paste(crop, (col * (CROP_CELL + CROP_GAP), row * (CROP_CELL + CROP_GAP)))
    return strip


def strip_cells(size: tuple[int, int]) -> int:
    """Square cells in a horizontal strip of `size` (w, h): w // h, at least 1."""
    w, h = size
    return max(1, w // max(1, h))


def _cells(source: Path) -> Image.Image:
    """A stored strip of square cells (side = its height), re-laid as a `strip` of CROP_CELL cells in rows
    of STRIP_COLUMNS, transparency kept: the heatmap strip sits exactly over the photo strip."""
    im = _open(source, "RGBA")
    side = im.height
    n = strip_cells(im.size)
    out = Image.new("RGBA", strip_geometry(n), (0, 0, 0, 0))
    for i in range(n):
        cell = im.crop((i * side, 0, (i + 1) * side, side)).resize((CROP_CELL, CROP_CELL), Image.Resampling.LANCZOS)
        row, col = divmod(i, STRIP_COLUMNS)
        out.paste(cell, (col * (CROP_CELL + CROP_GAP), row * (CROP_CELL + CROP_GAP)))
    return out


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
    if variant == "cells":
        return _cells(sources[0])
    if variant == "sprite":
        return _fit(_open(sources[0], "RGB"), SPRITE_SIZE)
    raise ValueError(f"unknown image variant {variant!r}")


def unreadable_placeholder(variant: str) -> Image.Image:
    """Shown instead of a source that does not decode: a grey square with a cross."""
    side = THUMB_SIZE if variant in ("thumb", "overlay-thumb", "strip", "cells") else FULL_SIZE // 2
    im = Image.new("RGB", (side, side), (128, 128, 128))
    draw = ImageDraw.Draw(im)
    draw.line((0, 0, side, side), fill=(200, 60, 60), width=3)
    draw.line((0, side, side, 0), fill=(200, 60, 60), width=3)
    return im


def _png(image: Path, alpha: Path | None) -> bytes:
    im = _open(image, "RGB")
    if alpha is not None:
        a = _open(alpha, "L")
        im.putalpha(a if a.size == im.size else a.resize(im.size, Image.Resampling.BILINEAR))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def encode_variant(variant: str, sources: Sequence[Path]) -> tuple[bytes, str | None]:
    """Encoded bytes of a variant (WebP; PNG for `png`), and an error message when a source could not be decoded."""
    try:
        if variant == "png":
            return _png(sources[0], sources[1] if len(sources) > 1 else None), None
        photo = variant in ("strip", "cells", "sprite")
        quality = PHOTO_QUALITY if photo else OVERLAY_QUALITY if variant.startswith("overlay") else QUALITY
        return _webp(render_variant(variant, sources), quality), None
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

    def size(self, rel: str) -> tuple[int, int]:
        """Pixel size of an image whose digest was taken (memoized with it; only its header is read)."""
        entry = self.memo[rel] if rel in self.memo else [0, 0, self.digest(rel)]
        if len(entry) < 5:
            with Image.open(self.path(rel)) as im:
                entry[3:] = list(im.size)
            self.memo[rel] = entry
            self.changed = True
        return int(entry[3]), int(entry[4])

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

    def copy_into(self, key: str, dest: Path) -> None:
        """A copy of the encoded file at `dest` (whatever was there, a link included, is removed
        first, so no other file is ever written through), with the cached file's modification
        time, which later builds compare (site/images.py). Not atomic, on purpose: a temporary file
        and a rename doubled the cost of a copy (benchmarks/README.md, issue 18), and a copy cut
        short has neither the cache's size nor its mtime, so the next build replaces it."""
        with open(self.path(key), "rb") as f:
            data = f.read()
            st = os.fstat(f.fileno())
        dest.unlink(missing_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fd)


def _exit_with_parent(parent: int) -> None:
    """Pool initializer: the worker exits once its parent is gone (kill -9 included), instead of
    waiting forever on a queue nobody feeds. Polling getppid is portable (no prctl)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def encoding_pool(workers: int) -> ProcessPoolExecutor:
    """Forked workers (no re-import of the main script, which spawn would run again where a
    console script has no `__main__` guard) that exit once their parent is gone. A forked child
    inherits every descriptor: the site cache's lock closes itself in children
    (generator/site/paths.py), so a killed build leaves no worker holding it."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_exit_with_parent, initargs=(os.getpid(),))


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
    pool = encoding_pool(workers) if workers > 1 and len(todo) > 16 else None
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
