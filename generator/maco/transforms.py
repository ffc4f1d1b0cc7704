"""MACO's transforms: random square crops (one batched roi_align; turned crops by grid_sample) and
per-crop noise, drawn from the counter-based generator (`rng`), so each objective's crops do not
depend on the batch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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
    crop_rotation: float
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


def sample_angles(keys: torch.Tensor, settings: MacoSettings | _StepConfig, dtype: torch.dtype = torch.float32,
                  increments: torch.Tensor | None = None) -> torch.Tensor:
    """(B, crops) angles in radians, ~ U(-crop_rotation, crop_rotation) degrees, from the boxes' keys at
    increments after the boxes' own (`rotation_increments`): the boxes stay what they were without rotation."""
    if increments is None:
        increments = rotation_increments(settings.crops, keys.device)
    u = uniform_from_bits(random_bits(keys, increments), dtype)
    return (2 * u - 1) * math.radians(settings.crop_rotation)


def rotation_increments(crops: int, device: torch.device) -> torch.Tensor:
    """The angles' counters: those after the 3 x crops of the boxes (`sample_boxes`) in the same stream."""
    return counters(4 * crops, device)[3 * crops :]


def turned_crops(images: torch.Tensor, boxes: torch.Tensor, angles: torch.Tensor, out_size: int) -> torch.Tensor:
    """Square crops turned by `angles` about their centres: (B, 3, H, W), (B, crops, 4), (B, crops) ->
    (B * crops, 3, S, S), in roi_align's order.

    roi_align's boxes are axis-aligned, hence grid_sample on an affine grid per crop. It samples at
    2S x 2S then averages 2 x 2 (an area average, as roi_align's, for crops up to about 2.3x the
    output side: 512 px crops to 224); corners that leave the image reflect back into it.
    """
    b, n = angles.shape
    h, w = images.shape[-2:]
    centre, half = (boxes[..., :2] + boxes[..., 2:]) / 2, (boxes[..., 2:3] - boxes[..., 0:1]) / 2  # (B, n, 2), (B, n, 1)
    cos, sin = torch.cos(angles)[..., None], torch.sin(angles)[..., None]
    # Output (u, v) in [-1, 1] -> pixel centre + half R(angle) (u, v) -> grid_sample's coordinates 2 x / W - 1.
    # Python scalars only: no tensor is built from host data in the step (CUDA graphs capture it).
    row_x = torch.cat([half * cos, -half * sin, centre[..., :1]], -1) * (2.0 / w)
    row_y = torch.cat([half * sin, half * cos, centre[..., 1:]], -1) * (2.0 / h)
    theta = torch.stack([row_x, row_y], -2)  # (B, n, 2, 3)
    theta = torch.cat([theta[..., :2], theta[..., 2:] - 1.0], -1)
    out = []
    for k in range(n):  # one grid_sample per crop index: the image batch is not copied per crop
        grid = F.affine_grid(theta[:, k], [b, 3, 2 * out_size, 2 * out_size], align_corners=False)
        sampled = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        out.append(F.avg_pool2d(sampled, 2))
    return torch.stack(out, 1).reshape(b * n, 3, out_size, out_size)


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
