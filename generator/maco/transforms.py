"""MACO's transforms: random square crops (one batched roi_align) and per-crop noise, drawn from
the counter-based generator (`rng`), so each objective's crops do not depend on the batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import roi_align

from ..config import MacoSettings
from .rng import counters, noise_from_bits_, normal_from_bits, random_bits, uniform_from_bits


@dataclass(frozen=True)
class _StepConfig:
    """Plain values of MacoSettings that the step needs (a frozen dataclass traces cleanly under torch.compile)."""

    crops: int
    crop_scale: tuple[float, float]
    crop_jitter: float
    noise: float
    cossim_power: float
    image_size: int
    input_size: int


def sample_boxes(keys: torch.Tensor, settings: MacoSettings | _StepConfig, size: int, dtype: torch.dtype = torch.float32,
                 increments: torch.Tensor | None = None) -> torch.Tensor:
    """(B, crops, 4) square boxes (x0, y0, x1, y1) in pixels, one row of settings.crops per key:
    side ~ U(crop_scale) x size, centre ~ N(size/2, jitter x size), kept inside the image."""
    n = settings.crops
    if increments is None:
        increments = counters(3 * n, keys.device)
    bits = random_bits(keys, increments).view(len(keys), n, 3)
    lo, hi = settings.crop_scale
    half = ((lo + (hi - lo) * uniform_from_bits(bits[..., :1], dtype)).clamp(max=1.0) * size) / 2  # (B, n, 1)
    centre = size * (0.5 + settings.crop_jitter * normal_from_bits(bits[..., 1:], dtype))  # (B, n, 2)
    centre = torch.minimum(torch.maximum(centre, half), size - half)
    return torch.cat([centre - half, centre + half], dim=-1)


def random_crops(images: torch.Tensor, boxes: torch.Tensor, out_size: int) -> torch.Tensor:
    """Crop every image at its (crops, 4) boxes and resize to out_size, area-averaged by one batched roi_align:
    (B, 3, H, W), (B, crops, 4) -> (B * crops, 3, S, S)."""
    b, n = boxes.shape[:2]
    index = torch.arange(b, device=images.device, dtype=images.dtype).repeat_interleave(n)[:, None]
    rois = torch.cat([index, boxes.reshape(b * n, 4).to(images.dtype)], dim=1)
    return roi_align(images, rois, output_size=out_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def crop_noise(keys: torch.Tensor, settings: MacoSettings | _StepConfig, out_size: int, dtype: torch.dtype = torch.float32,
               increments: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian plus uniform noise per crop, in the model's normalised input space (as the reference):
    (B * crops, 3, S, S), one batched draw for all keys."""
    n = settings.crops * 3 * out_size**2
    if increments is None:
        increments = counters((n + 1) // 2, keys.device)  # two values per 64-bit word
    noise = noise_from_bits_(random_bits(keys, increments), dtype)[:, :n]
    return (noise * settings.noise).view(-1, 3, out_size, out_size)
