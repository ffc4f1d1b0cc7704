"""Concept-layer tokens from one streamed pass per image (issue 19 §1).

A token is one spatial position of the concept layer: a CNN's h x w feature-map positions, a ViT's
tokens (prefix tokens included: the class token is what a `global_pool='token'` head reads). The
model sees each photo once, preprocessed as timm evaluates; batches are yielded as they are
computed, so a caller keeps only what it needs (a sample of tokens per image for the dictionary,
one class's grids for CRAFT) and never every token of every photo.

Geometry helpers map a token back to the input square it summarises (`token_box`), which CRAFT's
token mode uses for its crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from PIL import Image

from .models import LoadedModel

Box = tuple[int, int, int, int]


@dataclass
class TokenBatch:
    """One batch of the pass: `tokens` (n, T, C) float32 on the model's device, T = h * w or the token count."""

    indices: list[int]  # positions of these images in the caller's sequence
    tokens: torch.Tensor
    grid: tuple[int, int] | None  # (h, w) of a feature map, row-major in T; None for ViT tokens


def as_tokens(model: LoadedModel, act: torch.Tensor) -> torch.Tensor:
    """Concept-layer activations (N, C, H, W) or (N, T, C) as tokens (N, T, C)."""
    spatial = model.channels_last(act)
    return spatial.reshape(len(act), -1, spatial.shape[-1])


def token_grid(model: LoadedModel) -> tuple[int, int] | None:
    """(h, w) of the concept layer's feature map, or None for token layers."""
    return tuple(model.act_shape[1:]) if len(model.act_shape) == 3 else None  # type: ignore[return-value]


@torch.no_grad()
def stream_tokens(model: LoadedModel, images: Sequence[Image.Image], batch: int = 32,
                  flips: bool = False) -> Iterator[TokenBatch]:
    """The concept-layer tokens of each image, `batch` images per forward pass.

    With `flips`, each image is followed by its mirror (indices then count 2 per photo: 2i, 2i+1),
    the augmentation the benchmarks use where the samples hold one photo per class.
    """
    transform = model.image_transform()
    grid = token_grid(model)
    pending: list[torch.Tensor] = []
    indices: list[int] = []

    def flush() -> TokenBatch:
        x = torch.stack(pending).to(model.device, memory_format=model.memory_format)
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=model.autocast_bf16):
            act = model.g(x)
        out = TokenBatch(list(indices), as_tokens(model, act.float()), grid)
        pending.clear()
        indices.clear()
        return out

    n = 0
    for image in images:
        x = transform(image.convert("RGB"))
        for view in ([x, torch.flip(x, dims=(-1,))] if flips else [x]):
            pending.append(view)
            indices.append(n)
            n += 1
            if len(pending) >= batch:
                yield flush()
    if pending:
        yield flush()


def token_box(position: int, grid: tuple[int, int], input_size: int, side: int) -> Box:
    """The input square of `side` pixels centred on a feature-map position (row-major), kept inside the image.

    A deep layer's receptive field covers most of the input; the square of CRAFT's patch size
    around the position's centre is the region that position mostly summarises, and the crop shown.
    """
    h, w = grid
    row, col = divmod(position, w)
    cy, cx = (row + 0.5) * input_size / h, (col + 0.5) * input_size / w
    side = min(side, input_size)
    x0 = int(round(min(max(cx - side / 2, 0), input_size - side)))
    y0 = int(round(min(max(cy - side / 2, 0), input_size - side)))
    return (x0, y0, x0 + side, y0 + side)


def token_boxes(model: LoadedModel, side: int) -> list[Box]:
    """The input box each token of the concept layer shows, in token order.

    Feature maps: the square around each position (`token_box`). ViT tokens: prefix tokens
    (class, registers) summarise the whole image; patch tokens lie on a square grid, row by row.
    """
    size = model.preprocess.input_size
    grid = token_grid(model)
    if grid is not None:
        return [token_box(i, grid, size, side) for i in range(grid[0] * grid[1])]
    count = model.act_shape[0]
    patches = count - model.num_prefix_tokens
    n = int(round(patches ** 0.5))
    whole = (0, 0, size, size)
    if n * n != patches:  # no square layout to place them on
        return [whole] * count
    return [whole] * model.num_prefix_tokens + [token_box(i, (n, n), size, side) for i in range(patches)]
