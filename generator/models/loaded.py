"""A zoo model ready to render: its module on a device, its preprocessing and its g/h split."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..config import ModelEntry, WeightsUsed
from ..errors import ModelError
from .build import build_model
from .devices import resolve_device
from .layers import _channels_last_map, split_at_layer
from .preprocess import preprocess_of


class LoadedModel:
    """A zoo model ready to render: module, preprocessing, and its g/h split at the concept layer."""

    def __init__(self, entry: ModelEntry, module: nn.Module, device: torch.device, channels_last: bool = True,
                 compile: bool = False, bf16: bool = True,  # noqa: A002 - mirrors torch.compile
                 weights_used: WeightsUsed | None = None):
        self.entry = entry
        self.weights_used = weights_used or WeightsUsed(source=entry.weights.describe(), key_map=entry.key_map)
        self.name = entry.name
        self.device = device
        # bf16 autocast on CUDA only, where tensor cores make it pay; `bf16=False` measures fp32 there.
        self.autocast_bf16 = bf16 and device.type == "cuda"
        self.preprocess = preprocess_of(entry, module)
        module.requires_grad_(False)
        # channels_last suits both cuDNN and oneDNN convolutions (measured in benchmarks/bench_maco.py).
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.module = module.to(device, memory_format=self.memory_format)
        self.g, self.h = split_at_layer(self.module, entry.concept_layer, f"model '{entry.name}'", self.preprocess.input_size)
        if compile:
            self.g, self.h = torch.compile(self.g), torch.compile(self.h)
        self.mean = torch.tensor(self.preprocess.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.preprocess.std, device=device).view(1, 3, 1, 1)
        with torch.no_grad():
            probe = self.g(torch.zeros(1, 3, self.preprocess.input_size, self.preprocess.input_size, device=device))
        if probe.ndim not in (3, 4) or _channels_last_map(probe):
            what = "a channels-last (N, H, W, C)" if probe.ndim == 4 else f"a {probe.ndim}-d"
            raise ModelError(f"model '{self.name}': concept layer '{entry.concept_layer}' gives {what} output; "
                             "need a feature map (N, C, H, W) or tokens (N, T, C) (`lens layers MODEL` lists them)")
        self.act_shape = tuple(probe.shape[1:])
        self.num_concept_channels = probe.shape[1] if probe.ndim == 4 else probe.shape[-1]
        # Tokens (N, T, C): the first `num_prefix_tokens` are class/register tokens (ViT), the rest
        # patches. The pooled vector is what the head reads: the class token where the model pools
        # by token, else the mean of the patch tokens.
        self.num_prefix_tokens = int(getattr(module, "num_prefix_tokens", 0) or 0) if probe.ndim == 3 else 0
        self.token_pool = ("cls" if getattr(module, "global_pool", None) == "token" and self.num_prefix_tokens else "mean") \
            if probe.ndim == 3 else None

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype (float32; float64 in tests that check exact batch invariance)."""
        return next(self.module.parameters()).dtype

    def to(self, dtype: torch.dtype) -> LoadedModel:
        self.module.to(dtype)
        self.mean, self.std = self.mean.to(dtype), self.std.to(dtype)
        return self

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] to the model's normalised input."""
        return (x01 - self.mean.to(x01.dtype)) / self.std.to(x01.dtype)

    def pooled(self, act: torch.Tensor) -> torch.Tensor:
        """Concept-layer activations as the head pools them: (N, C).

        Feature maps: the spatial mean. Tokens: the class token where the head reads it (ViT's
        `global_pool='token'`), else the mean of the patch tokens (prefix tokens left out). CRAFT's
        patches, the concept bank and MACO's direction objective all live in this space. Linear
        in `act`, so it also pools concept coefficients.
        """
        if act.ndim == 4:
            return act.mean(dim=(2, 3))
        if self.token_pool == "cls":
            return act[:, 0]
        return act[:, self.num_prefix_tokens :].mean(dim=1)

    def spatial_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """Per-position values (N, H, W, k) or per-token ones (N, T, k) to an image grid (N, h, w, k).

        Prefix tokens (class, registers) have no place in the image and are dropped; the patch
        tokens of a square grid are laid out row by row. Anything else is returned as is.
        """
        if maps.ndim != 3:
            return maps
        patches = maps[:, self.num_prefix_tokens :]
        side = int(round(patches.shape[1] ** 0.5))
        return patches.reshape(len(maps), side, side, -1) if side * side == patches.shape[1] else patches

    def channels_last(self, act: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H, W, C); tokens stay (N, T, C)."""
        return act.permute(0, 2, 3, 1) if act.ndim == 4 else act

    def channels_first(self, act: torch.Tensor) -> torch.Tensor:
        """Inverse of channels_last."""
        return act.permute(0, 3, 1, 2) if act.ndim == 4 else act

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised input -> (logits, pooled concept-layer features), one pass."""
        act = self.g(x)
        return self.h(act), self.pooled(act)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(self.g(x))

    @cached_property
    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(W, b) when h is exactly `mean-pool then linear`, checked numerically; else None.

        Then the class logit splits exactly over concepts (CRAFT's logit share).
        """
        get = getattr(self.module, "get_classifier", None)
        clf = get() if callable(get) else None
        if clf is None:  # torchvision or the user's own module: its last Linear, if the check below holds
            clf = next((m for m in reversed(list(self.module.modules())) if isinstance(m, nn.Linear)), None)
        if not isinstance(clf, nn.Linear) or clf.in_features != self.num_concept_channels:
            return None
        gen = torch.Generator(device="cpu").manual_seed(0)
        act = torch.rand((2, *self.act_shape), generator=gen).to(self.device)
        with torch.no_grad():
            expected = self.pooled(act) @ clf.weight.T + clf.bias
            ok = torch.allclose(self.h(act), expected, rtol=1e-4, atol=1e-4)
        return (clf.weight.detach(), clf.bias.detach()) if ok else None

    def image_transform(self) -> Callable:
        """PIL image -> normalised tensor, as timm evaluates (resize, centre crop)."""
        return self.preprocess.transform()


def load_model(entry: ModelEntry, root: Path, device: str | torch.device = "cpu", **options: bool) -> LoadedModel:
    """Build, load and place a zoo model. options: channels_last (default True), compile (default False)."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    module, used = build_model(entry, root)
    return LoadedModel(entry, module, dev, weights_used=used, **options)
