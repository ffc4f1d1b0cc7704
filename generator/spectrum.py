"""MACO's fixed Fourier magnitude spectrum: computed from natural images or a 1/f power law.

Nothing is downloaded. A spectrum is the mean |rfft2| per channel of images in MACO's
decorrelated colour space, stored at a reference resolution and resized to each render.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import ConfigError

REFERENCE_SIZE = 512

# Square root of ImageNet's RGB colour covariance (Lucid), scaled to unit max column norm and
# transposed so that `rgb = decorrelated @ COLOR_CORRELATION`.
COLOR_CORRELATION = torch.tensor(
    [[0.56282854, 0.58447580, 0.58447580],
     [0.19482528, 0.00000000, -0.19482528],
     [0.04329450, -0.10823626, 0.06494176]],
    dtype=torch.float32,
)


@dataclass(frozen=True)
class Spectrum:
    """A magnitude spectrum (3, R, R // 2 + 1) and the id recorded in meta.json."""

    id: str
    magnitude: torch.Tensor

    def resized(self, size: int) -> torch.Tensor:
        """The magnitude for an image of side `size`: (3, size, size // 2 + 1)."""
        shape = (size, size // 2 + 1)
        if tuple(self.magnitude.shape[1:]) == shape:
            return self.magnitude
        return F.interpolate(self.magnitude[None], size=shape, mode="bilinear", align_corners=False, antialias=True)[0]


def powerlaw_spectrum(size: int = REFERENCE_SIZE, decay: float = 1.0) -> Spectrum:
    """1/f^decay magnitude, equal in the three decorrelated channels (Lucid's scaling)."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    freq = torch.sqrt(fx**2 + fy**2).clamp(min=1.0 / size)
    magnitude = (1.0 / freq**decay).expand(3, -1, -1).contiguous()
    return Spectrum(f"powerlaw-{decay:g}", magnitude)


def _square(image: Image.Image, size: int) -> torch.Tensor:
    """Centre square crop resized to size x size, as a (3, size, size) tensor in [0, 1]."""
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    square = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC, box=box)
    return torch.from_numpy(np.asarray(square, dtype=np.float32) / 255.0).permute(2, 0, 1)


def decorrelate(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB into MACO's decorrelated colour basis (inverse of the recorrelation)."""
    inverse = torch.linalg.inv(COLOR_CORRELATION).to(rgb)
    return torch.einsum("...chw,cd->...dhw", rgb, inverse)


# The spectrum's format: 2 since the images are windowed. Cache keys carry it, so a spectrum cached before is not reused.
SPECTRUM_VERSION = 2


def _window(size: int) -> torch.Tensor:
    """A 2-D Hann window with unit mean power. A photo is not periodic: its FFT sees a step at every border, which puts a
    bright cross (energy on the fx = 0 and fy = 0 axes at every frequency) in the magnitude; a MACO render drawn with that
    magnitude shows it as axis-aligned blocks and streaks (issue 22). The window removes the step."""
    w = torch.hann_window(size, periodic=False, dtype=torch.float64)
    w2 = w[:, None] * w[None, :]
    return (w2 / w2.pow(2).mean().sqrt()).float()


def spectrum_from_images(images: Iterable[Image.Image], size: int = REFERENCE_SIZE, label: str = "images",
                         window: bool = True) -> Spectrum:
    """Mean |rfft2| per decorrelated channel over the images, Hann-windowed (no border cross; `window=False`: as before
    SPECTRUM_VERSION 2, for comparisons); the id hashes the result."""
    total, count = None, 0
    weights = _window(size) if window else torch.ones(size, size)
    for image in images:
        x = decorrelate(_square(image, size))
        magnitude = torch.fft.rfft2((x - x.mean(dim=(-2, -1), keepdim=True)) * weights).abs()
        total = magnitude if total is None else total + magnitude
        count += 1
    if total is None:
        raise ConfigError(f"spectrum '{label}': no usable image to compute it from")
    magnitude = total / count
    magnitude[:, 0, 0] = magnitude[:, 0, 1:].mean(dim=-1)  # DC was removed; any finite value works
    digest = hashlib.sha256(magnitude.numpy().tobytes()).hexdigest()[:8]
    return Spectrum(f"{label}-{count}-{digest}", magnitude)


def save_spectrum(spectrum: Spectrum, path: Path) -> None:
    """Atomic, with a temporary name per writer: shard workers may compute the same one at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, spectrum.magnitude.numpy(), allow_pickle=False)
    for target, data in ((path.with_suffix(".json"), json.dumps({"id": spectrum.id}).encode()), (path, buf.getvalue())):
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as f:
            f.write(data)
        os.replace(f.name, target)


def load_spectrum_file(path: Path) -> Spectrum:
    """A .npy written by `lens spectrum` (or any (3, R, R//2+1) array); never unpickles.

    Anything else (not a .npy, pickled objects, a wrong shape, negative, non-finite or all-zero
    values, which can only give a NaN image) is a ConfigError naming the file."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ConfigError(f"spectrum {path}: not a numpy .npy array ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise ConfigError(f"spectrum {path}: expected a numeric (3, R, R//2+1) array")
    magnitude = torch.from_numpy(np.asarray(array, dtype=np.float32))
    if magnitude.ndim != 3 or magnitude.shape[0] != 3 or magnitude.shape[1] < 2 or magnitude.shape[2] != magnitude.shape[1] // 2 + 1:
        raise ConfigError(f"spectrum {path}: expected a (3, R, R//2+1) magnitude spectrum, got {tuple(magnitude.shape)}")
    if not torch.isfinite(magnitude).all() or (magnitude < 0).any():
        raise ConfigError(f"spectrum {path}: has negative or non-finite values")
    if not (magnitude.flatten(1).sum(-1) > 0).all():
        raise ConfigError(f"spectrum {path}: a channel is all zero, which can only give a NaN image")
    sidecar = path.with_suffix(".json")
    try:
        sid = json.loads(sidecar.read_text())["id"] if sidecar.exists() else None
    except (ValueError, KeyError, TypeError, OSError):
        sid = None  # the id is only a label; one is derived from the content below
    return Spectrum(sid or f"file-{hashlib.sha256(magnitude.numpy().tobytes()).hexdigest()[:8]}", magnitude)


SPECTRUM_SAMPLE = 2000  # images read to compute a spectrum from a folder; the mean converges long before


def _folder_images(folder: Path, limit: int = SPECTRUM_SAMPLE) -> list[Path]:
    from .images import IMAGE_SUFFIXES

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"{folder}: no images found to compute a spectrum from")
    step = max(1, len(files) // limit)
    return files[::step][:limit]


def spectrum_from_folder(folder: Path) -> Spectrum:
    from .images import load_rgb

    images = (im for im in map(load_rgb, _folder_images(folder)) if im is not None)
    return spectrum_from_images(images, label="images")


def resolve_spectrum(choice: str, cache_dir: Path, images_dir: Path | None = None, write_cache: bool = True) -> Spectrum:
    """`powerlaw`, `photos` (bundled demo photos), `images` (the configured folder) or a .npy path.

    Computed spectra are cached in cache_dir, keyed on their inputs; with `write_cache=False` (reports)
    a cached one is read but a new one is not written.
    """
    if choice == "powerlaw":
        return powerlaw_spectrum()
    if choice == "photos":
        key, compute = f"photos-v{SPECTRUM_VERSION}", lambda: spectrum_from_images((p.image for p in _demo()), label="photos")
    elif choice == "images":
        if images_dir is None:
            raise ConfigError("spectrum 'images' needs an images folder (`images:` in models.yaml or --images)")
        files = _folder_images(images_dir)
        listing = "\n".join(f"{p.relative_to(images_dir)}:{p.stat().st_size}" for p in files)
        key = f"images-v{SPECTRUM_VERSION}-" + hashlib.sha256(f"{images_dir.resolve()}\n{listing}".encode()).hexdigest()[:12]
        compute = lambda: spectrum_from_folder(images_dir)  # noqa: E731
    else:
        path = Path(choice)
        if not path.is_file():
            raise ConfigError(f"spectrum '{choice}': not `powerlaw`, `photos`, `images` nor an existing .npy file")
        return load_spectrum_file(path)
    cached = cache_dir / f"{key}.npy"
    if cached.is_file():
        return load_spectrum_file(cached)
    spectrum = compute()
    if not write_cache:
        return spectrum
    try:
        save_spectrum(spectrum, cached)
    except OSError as e:  # a read-only or full store: the spectrum is still usable, only not cached
        import logging

        logging.getLogger("lens").warning("cannot cache the spectrum in %s: %s", cache_dir, e.strerror or e)
    return spectrum


def _demo():  # noqa: ANN202
    from .images import demo_photos

    return demo_photos()
