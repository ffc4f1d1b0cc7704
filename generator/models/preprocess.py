"""What a model expects as input (size, mean, std, interpolation, crop), as timm evaluates it: the
entry's keys, else the model's own config (timm's pretrained cfg, torchvision's default weights)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..config import ModelEntry


@dataclass(frozen=True)
class Preprocess:
    """What a model expects: a square input, normalised with mean/std after resizing."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float

    def as_dict(self) -> dict:
        return {
            "input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
            "interpolation": self.interpolation, "crop_pct": self.crop_pct,
        }

    def transform(self) -> Callable:
        """PIL image -> normalised (3, S, S) tensor, as timm evaluates (resize, centre crop, normalise)."""
        from timm.data import create_transform

        return create_transform(input_size=(3, self.input_size, self.input_size), interpolation=self.interpolation,
                                mean=self.mean, std=self.std, crop_pct=self.crop_pct)


def _torchvision_cfg(builder: str) -> dict | None:
    """The preprocessing of torchvision's default weights for a builder (metadata only, nothing
    downloaded), in timm's data-config terms; None where the builder has no weights listed."""
    import torchvision

    try:
        t = torchvision.models.get_model_weights(builder).DEFAULT.transforms()
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    except Exception:  # noqa: BLE001 - no weights enum for this builder: timm's defaults apply
        return None
    return {"input_size": (3, crop, crop), "mean": tuple(t.mean), "std": tuple(t.std),
            "interpolation": t.interpolation.value, "crop_pct": crop / resize}


def preprocess_of(entry: ModelEntry, module: nn.Module) -> Preprocess:
    """The entry's preprocessing keys, else the model's own config: timm's pretrained cfg, torchvision's
    default weights' transforms for a `torchvision:` builder, timm's ImageNet defaults for the rest."""
    from timm.data import resolve_data_config

    cfg = (_torchvision_cfg(entry.torchvision) if entry.torchvision is not None else None) or resolve_data_config({}, model=module)
    return Preprocess(
        input_size=entry.input_size or int(cfg["input_size"][-1]),
        mean=tuple(entry.mean or cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(entry.std or cfg["std"]),  # type: ignore[arg-type]
        interpolation=entry.interpolation or cfg.get("interpolation", "bicubic"),
        crop_pct=entry.crop_pct or float(cfg.get("crop_pct", 0.875)),
    )
