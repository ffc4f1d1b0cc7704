"""MACO's objectives: what each image is optimised for (a class logit or a direction in pooled
concept-layer features), its seed, and the batched per-objective score of one pass."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch


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


def atom_objective(atom: int, decoder_row: torch.Tensor) -> Objective:
    """Atom `atom` of the model-wide dictionary: dot-cos with its decoder row, as a concept MACO uses
    its CRAFT direction. On the pooled concept layer: the pooled dot is the mean over tokens of each
    token's dot with the atom (pooling is a mean), so the image is driven to show the atom everywhere."""
    return direction_objective(f"dictionary/atom/{atom:04d}", decoder_row)


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
