"""Reading images robustly: ImageNet-layout class folders and the offline demo photos.

A bad file never stops a run: it is skipped with a warning that names it. Every mode converts to
8-bit RGB with its value range kept: 16- and 32-bit integer images are scaled from their bit depth
(not clipped at 255), float images from [0, 1], alpha is composited on white. Images over
MAX_PIXELS (decompression bombs; 200 MP is larger than any camera's photos) are refused before
they are decoded.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

log = logging.getLogger("lens")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jpe"}
MAX_SIDE = 1024  # larger images are downscaled on load; the models see 224-384 px anyway
MAX_PIXELS = 200_000_000  # larger than a 200-megapixel phone photo; a bomb claims far more
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL's own check (a warning, made an error below, then an error at 2x)


@dataclass(frozen=True)
class SourceImage:
    """An image CRAFT can use: where it came from (path or package photo id) and its pixels."""

    source: str  # stable id shown on the site and in meta.json
    image: Image.Image  # RGB
    credit: str | None = None


def load_rgb(path: str | Path, max_side: int = MAX_SIDE) -> Image.Image | None:
    """An RGB image, downscaled so its longer side is at most max_side; None (with a warning) if unusable."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise OSError("empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise OSError(f"{im.width}x{im.height} pixels is over the {MAX_PIXELS // 1_000_000} MP limit")
                im.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size directly
                ImageFile.LOAD_TRUNCATED_IMAGES = False
                im.load()
                rgb = _to_rgb(im)
    except Exception as e:  # noqa: BLE001 - any decoder failure means "skip this file"
        log.warning("skipping unreadable image %s: %s", path, e)
        return None
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return rgb


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any mode to plain 8-bit RGB, value range kept (alpha composited on white)."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _wide_to_rgb(im)
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")


def _wide_to_rgb(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale to 8 bits: scaled from the bit depth, not clipped at 255."""
    a = np.asarray(im)
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0)
        scale = 1.0 if a.max(initial=0.0) <= 1.0 else 255.0  # [0, 1] floats, else 8-bit values stored as float
        a = a / scale
    else:
        top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = a.astype(np.float64) / top
    gray = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1), "RGB")


def class_image_paths(folder: Path, wnid: str) -> list[Path]:
    """Image files of one class in an ImageNet-layout folder (`folder/<wnid>/*`), sorted."""
    d = folder / wnid
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_class_images(folder: Path, wnid: str, limit: int | None = None) -> list[SourceImage]:
    out = []
    for p in class_image_paths(folder, wnid):
        if limit is not None and len(out) >= limit:
            break
        im = load_rgb(p)
        if im is not None:
            out.append(SourceImage(f"{wnid}/{p.name}", im))
    return out


_SKIMAGE_PHOTOS = {
    "chelsea": "chelsea.png", "coffee": "coffee.png", "astronaut": "astronaut.png",
    "rocket": "rocket.jpg", "camera": "camera.png", "motorcycle": "motorcycle_left.png",
}
CREDITS = {
    "china": "china.jpg by danielbuechele (flickr.com/photos/danielbuechele), CC BY 2.0, via scikit-learn's sample images",
    "flower": "flower.jpg by vultilion (flickr.com/photos/vultilion), CC BY 2.0, via scikit-learn's sample images",
    "grace_hopper": "grace_hopper.jpg (U.S. Navy portrait of Grace Hopper, public domain), via matplotlib's sample data",
}


def demo_photos() -> list[SourceImage]:
    """The natural photos shipped inside scikit-image, scikit-learn and matplotlib: no download."""
    import matplotlib.cbook
    import skimage.data
    import sklearn.datasets

    photos = []
    for name, filename in _SKIMAGE_PHOTOS.items():
        im = load_rgb(Path(skimage.data.data_dir) / filename)
        if im is not None:
            photos.append(SourceImage(f"demo/{name}", im, f"{filename} from scikit-image's data (skimage.data)"))
    sk_dir = Path(sklearn.datasets.__file__).parent / "images"
    for name in ("china", "flower"):
        im = load_rgb(sk_dir / f"{name}.jpg")
        if im is not None:
            photos.append(SourceImage(f"demo/{name}", im, CREDITS[name]))
    im = load_rgb(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    if im is not None:
        photos.append(SourceImage("demo/grace_hopper", im, CREDITS["grace_hopper"]))
    return photos


CROP_FRACTION = 0.75  # the augmentation's corner crops: this fraction of each side of the photo
VIEWS_PER_PHOTO = 10  # `augmented`: the photo and its 4 corner crops, each also mirrored


def augmented(photos: Sequence[SourceImage]) -> list[SourceImage]:
    """Each photo, its mirror, and its four corner crops (CROP_FRACTION of each side) with their mirrors:
    VIEWS_PER_PHOTO views per photo, for a dictionary that must learn from few photos (the demo's). A view's source
    id is the photo's plus a suffix (`#flip`, `#crop2`, `#crop2+flip`), the same for every model, and
    the crops are fractions of the photo, so views of one photo cover the same regions in every model."""
    out = []
    for photo in photos:
        w, h = photo.image.size
        cw, ch = round(w * CROP_FRACTION), round(h * CROP_FRACTION)
        crops = [(f"#crop{i}", photo.image.crop((x, y, x + cw, y + ch)))
                 for i, (x, y) in enumerate([(0, 0), (w - cw, 0), (0, h - ch), (w - cw, h - ch)])]
        for suffix, image in [("", photo.image), *crops]:
            mirror = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            flip = "+flip" if suffix else "#flip"
            out += [SourceImage(photo.source + suffix, image, photo.credit),
                    SourceImage(photo.source + suffix + flip, mirror, photo.credit)]
    return out
