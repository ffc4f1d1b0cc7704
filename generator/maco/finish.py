"""MACO's finishing and evaluation: percentile clip and alpha map of a render, and how a finished
uint8 render is shown to a model (`render_inputs`, the one conversion; `classify` and
`quality` both use it)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models import LoadedModel


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


def render_inputs(model: LoadedModel, images: Sequence[np.ndarray]) -> torch.Tensor:
    """Finished uint8 renders (H, W, 3), each whole, as the model's normalised input (B, 3, S, S).

    The one conversion of a render into a model's input: MACO's self rank (`classify`) and every
    quality score (transfer, plausibility features) see the same pixels. The square render is
    resized to the model's input side with the model's own interpolation (its timm preprocessing
    or models.yaml's `interpolation`): bicubic where it says bicubic, else bilinear (antialiased
    resizing exists for those two only, so `nearest` resizes bilinearly), then clamped to [0, 1]."""
    x = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images]).float().div(255).to(model.device)
    side = model.preprocess.input_size
    mode = "bicubic" if model.preprocess.interpolation == "bicubic" else "bilinear"
    x = F.interpolate(x, size=(side, side), mode=mode, antialias=True, align_corners=False).clamp(0, 1)
    return model.normalize(x)


@torch.no_grad()
def classify(model: LoadedModel, images: Sequence[np.ndarray], class_indices: Sequence[int]) -> tuple[list[float], list[int]]:
    """Probability and rank (1 = top) of each image's class, the image shown as `render_inputs` shows it."""
    if not images:
        return [], []
    probs = model.logits(render_inputs(model, images)).float().softmax(-1)
    target = torch.tensor(list(class_indices), device=probs.device)
    p = probs.gather(1, target[:, None])
    ranks = 1 + (probs > p).sum(1)
    return p[:, 0].cpu().tolist(), ranks.cpu().tolist()
