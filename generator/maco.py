"""MACO (Fel et al. 2023): a fixed Fourier magnitude, an optimised phase, random crops.

Separate pieces, as in Lucent: the parameterisation (phase -> image), the transforms (crops and
noise), the objectives (class logit; direction in pooled features), the render loop (NAdam, many
objectives per forward/backward pass) and the finishing (percentile clip, alpha map).

Batching never changes a result: every objective owns its random generator, seeded from its key,
and the loss is a sum of independent per-image terms.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from .config import MacoSettings
from .models import LoadedModel
from .spectrum import COLOR_CORRELATION, Spectrum

# ----------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class Objective:
    """What one image is optimised for: a class logit, or a direction in pooled concept-layer features."""

    key: str  # e.g. "class/0967" or "concept/0967/3"; seeds the image and names the result
    class_index: int | None = None
    direction: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.class_index is None) == (self.direction is None):
            raise ValueError(f"objective '{self.key}' needs exactly one of class_index or direction")


def class_objective(class_index: int) -> Objective:
    return Objective(f"class/{class_index:04d}", class_index=class_index)


def direction_objective(key: str, direction: torch.Tensor) -> Objective:
    return Objective(key, direction=direction.detach().float().cpu())


def objective_seed(base_seed: int, model_name: str, key: str) -> int:
    """A seed per (base seed, model, objective), independent of how objectives are batched."""
    digest = hashlib.sha256(f"{base_seed}:{model_name}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class _Targets:
    is_class: torch.Tensor  # (B,) bool
    class_index: torch.Tensor  # (B,) long, 0 where unused
    direction: torch.Tensor  # (B, C), zeros where unused


def _targets(objectives: Sequence[Objective], channels: int, device: torch.device, dtype: torch.dtype = torch.float32) -> _Targets:
    direction = torch.zeros(len(objectives), channels, dtype=dtype)
    for i, o in enumerate(objectives):
        if o.direction is not None:
            if o.direction.numel() != channels:
                raise ValueError(f"objective '{o.key}': direction has {o.direction.numel()} values, the concept layer {channels}")
            direction[i] = o.direction.reshape(-1)
    return _Targets(
        is_class=torch.tensor([o.class_index is not None for o in objectives], device=device),
        class_index=torch.tensor([o.class_index or 0 for o in objectives], device=device),
        direction=direction.to(device),
    )


def dot_cossim(features: torch.Tensor, direction: torch.Tensor, power: float) -> torch.Tensor:
    """dot(f, d) * max(cos(f, d), 0.1)^p, per row (Olah et al.; Horama)."""
    dot = (features * direction).sum(-1)
    cos = dot / (features.norm(dim=-1) * direction.norm(dim=-1) + 1e-8)
    return dot * cos.clamp(min=0.1) ** power


def objective_scores(logits: torch.Tensor, pooled: torch.Tensor, targets: _Targets, crops: int, power: float) -> torch.Tensor:
    """Mean score over each objective's crops: (B * crops, ...) -> (B,)."""
    is_class = targets.is_class.repeat_interleave(crops)
    class_score = logits.gather(1, targets.class_index.repeat_interleave(crops)[:, None])[:, 0]
    direction_score = dot_cossim(pooled, targets.direction.repeat_interleave(crops, dim=0), power)
    return torch.where(is_class, class_score, direction_score).view(-1, crops).mean(1)


# ----------------------------------------------------------------------------- parameterisation


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std per image."""
    dims = tuple(range(1, x.ndim))
    return (x - x.mean(dims, keepdim=True)) / (x.std(dims, keepdim=True) + 1e-4)


def phase_to_image(phase: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W//2+1) phase with a fixed magnitude -> (B, 3, H, W) RGB in [0, 1].

    The standardised phase is scaled by pi: with unit std, E[cos(phase)] = 0.61 and every frequency
    adds up in phase at pixel (0, 0), which shows as a glowing spot in the four corners.
    """
    phase = standardize(phase) * math.pi
    spectrum = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
    size = phase.shape[-2]
    x = standardize(torch.fft.irfft2(spectrum, s=(size, size)))
    x = torch.einsum("bchw,cd->bdhw", x, COLOR_CORRELATION.to(x))
    return torch.sigmoid(x)


def initial_phase(generators: Sequence[torch.Generator], size: int, device: torch.device,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.stack([torch.randn(3, size, size // 2 + 1, generator=g, device=device, dtype=dtype) for g in generators])


# ----------------------------------------------------------------------------- transforms


def sample_boxes(generator: torch.Generator, n: int, settings: MacoSettings, size: int, device: torch.device) -> torch.Tensor:
    """n square boxes (x0, y0, x1, y1) in pixels: side ~ U(crop_scale) x size, centre ~ N(size/2, jitter),
    kept inside the image."""
    lo, hi = settings.crop_scale
    side = (lo + (hi - lo) * torch.rand(n, 1, generator=generator, device=device)).clamp(max=1.0) * size
    centre = size * (0.5 + settings.crop_jitter * torch.randn(n, 2, generator=generator, device=device))
    centre = torch.minimum(torch.maximum(centre, side / 2), size - side / 2)
    return torch.cat([centre - side / 2, centre + side / 2], dim=1)


def random_crops(images: torch.Tensor, generators: Sequence[torch.Generator], settings: MacoSettings, out_size: int) -> torch.Tensor:
    """settings.crops crops of each image, resized to out_size (area-averaged by roi_align): (B * crops, 3, S, S)."""
    n, size, device = settings.crops, images.shape[-1], images.device
    boxes = torch.cat([
        torch.cat([torch.full((n, 1), float(b), device=device), sample_boxes(g, n, settings, size, device)], dim=1)
        for b, g in enumerate(generators)
    ])
    return roi_align(images, boxes.to(images.dtype), output_size=out_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def crop_noise(generators: Sequence[torch.Generator], settings: MacoSettings, out_size: int, device: torch.device,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gaussian plus uniform noise per crop, in the model's normalised input space (as the reference)."""
    shape = (settings.crops, 3, out_size, out_size)
    noise = [
        torch.randn(shape, generator=g, device=device, dtype=dtype) + torch.rand(shape, generator=g, device=device, dtype=dtype) - 0.5
        for g in generators
    ]
    return torch.cat(noise) * settings.noise


# ----------------------------------------------------------------------------- render loop


@dataclass
class MacoRender:
    """One finished visualization: pixels, alpha map, and its final objective value."""

    key: str
    image: np.ndarray  # (H, W, 3) uint8, percentile-clipped and normalised
    alpha: np.ndarray  # (H, W) uint8, the attribution/transparency map
    objective: float
    finite: bool  # False if the objective or the image went NaN/inf

    @property
    def rgba(self) -> np.ndarray:
        return np.concatenate([self.image, self.alpha[..., None]], axis=-1)


def render(
    model: LoadedModel,
    objectives: Sequence[Objective],
    settings: MacoSettings,
    spectrum: Spectrum,
    progress: Callable[[int], None] | None = None,
) -> list[MacoRender]:
    """Optimise one image per objective, all in the same forward/backward passes.

    On CUDA the model runs under bf16 autocast (`model.autocast_bf16`; channels_last, like on the CPU), and the step loop
    never waits for the device: everything is read back once, after the last step.
    """
    device, size, dtype = model.device, settings.image_size, model.dtype
    input_size = settings.input_size or model.preprocess.input_size
    generators = [torch.Generator(device=device).manual_seed(objective_seed(settings.seed, model.name, o.key)) for o in objectives]
    targets = _targets(objectives, model.num_concept_channels, device, dtype)
    magnitude = spectrum.resized(size).to(device, dtype)
    phase = initial_phase(generators, size, device, dtype).requires_grad_(True)
    optimizer = torch.optim.NAdam([phase], lr=settings.lr)
    alpha = torch.zeros(len(objectives), 3, size, size, device=device, dtype=dtype)
    scores = torch.zeros(len(objectives), device=device, dtype=dtype)

    for _ in range(settings.steps):
        optimizer.zero_grad(set_to_none=True)
        image = phase_to_image(phase, magnitude)
        image.retain_grad()
        x = model.normalize(random_crops(image, generators, settings, input_size))
        x = (x + crop_noise(generators, settings, input_size, device, dtype)).contiguous(memory_format=model.memory_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=model.autocast_bf16):
            logits, pooled = model.forward(x)
        scores = objective_scores(logits.to(dtype), pooled.to(dtype), targets, settings.crops, settings.cossim_power)
        (-scores.sum()).backward()
        alpha += image.grad.abs()  # type: ignore[union-attr]
        optimizer.step()
        if progress is not None:
            progress(1)

    with torch.no_grad():
        final = phase_to_image(phase, magnitude)
    finite = (torch.isfinite(scores) & torch.isfinite(final).flatten(1).all(1) & torch.isfinite(alpha).flatten(1).all(1)).cpu()
    scores, final, alpha = scores.detach().cpu(), final.cpu(), alpha.cpu()
    return [
        MacoRender(o.key, finish_image(final[i], settings.image_percentile), finish_alpha(alpha[i], settings.alpha_percentile),
                   float(scores[i]), bool(finite[i]))
        for i, o in enumerate(objectives)
    ]


# ----------------------------------------------------------------------------- finishing


def finish_image(image: torch.Tensor, percentile: float) -> np.ndarray:
    """Clip `percentile` % at each end, stretch to [0, 255] (the reference's display practice)."""
    image = torch.nan_to_num(image.float())
    if percentile > 0:
        lo, hi = torch.quantile(image.flatten(), torch.tensor([percentile / 100, 1 - percentile / 100], dtype=image.dtype))
        image = image.clamp(lo, hi)
    image = (image - image.min()) / (image.max() - image.min()).clamp(min=1e-8)
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def finish_alpha(alpha: torch.Tensor, percentile: float) -> np.ndarray:
    """Channel-mean |d objective / d image|, capped at its `percentile` and scaled to [0, 255]."""
    a = torch.nan_to_num(alpha.float()).mean(0)
    cap = torch.quantile(a.flatten(), percentile / 100).clamp(min=1e-12)
    return ((a.clamp(max=cap) / cap).numpy() * 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def classify(model: LoadedModel, images: Sequence[np.ndarray], class_indices: Sequence[int]) -> tuple[list[float], list[int]]:
    """Probability and rank (1 = top) of each image's class, the whole square image resized to the model input."""
    if not images:
        return [], []
    x = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images]).float().div(255).to(model.device)
    side = model.preprocess.input_size
    mode = "bicubic" if model.preprocess.interpolation == "bicubic" else "bilinear"
    x = F.interpolate(x, size=(side, side), mode=mode, antialias=True, align_corners=False).clamp(0, 1)
    probs = model.logits(model.normalize(x)).float().softmax(-1)
    target = torch.tensor(list(class_indices), device=probs.device)
    p = probs.gather(1, target[:, None])
    ranks = 1 + (probs > p).sum(1)
    return p[:, 0].cpu().tolist(), ranks.cpu().tolist()


def probe_batch_size(model: LoadedModel, settings: MacoSettings, spectrum: Spectrum, limit: int = 256) -> int:
    """Objectives per pass that fit in free device memory, measured with a 1-step render of 2 objectives.

    On the CPU, throughput per crop falls as the batch grows (cache-bound: 20 crops/s at 8 crops
    per pass, 9 at 128 for efficientnet-lite0, benchmarks/bench_maco.py), so about 8 crops per pass.
    """
    if model.device.type != "cuda":
        return max(1, 8 // settings.crops)
    probe = settings.model_copy(update={"steps": 1})
    torch.cuda.synchronize(model.device)
    torch.cuda.reset_peak_memory_stats(model.device)
    base = torch.cuda.memory_allocated(model.device)
    render(model, [class_objective(0), class_objective(1)], probe, spectrum)
    per_objective = max(1, (torch.cuda.max_memory_allocated(model.device) - base) // 2)
    free, _ = torch.cuda.mem_get_info(model.device)
    return int(max(1, min(limit, 0.8 * free // per_objective)))
