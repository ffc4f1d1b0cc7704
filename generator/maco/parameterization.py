"""MACO's parameterisation: an optimised Fourier phase under a fixed magnitude, turned into RGB."""

from __future__ import annotations

import math

import torch

from ..spectrum import COLOR_CORRELATION
from .rng import counters, normal_from_bits, random_bits


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std per image."""
    dims = tuple(range(1, x.ndim))
    return (x - x.mean(dims, keepdim=True)) / (x.std(dims, keepdim=True) + 1e-4)


def phase_to_image(phase: torch.Tensor, magnitude: torch.Tensor, color_bias: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, H, W//2+1) phase with a fixed magnitude -> (B, 3, H, W) RGB in [0, 1].

    `color_bias` (3, 1, 1), added before the sigmoid, gives the image a mean colour (`color_bias_of`): without it every
    channel has zero mean and the image is grey on average, where photos are warm (issue 22).

    The standardised phase is scaled by pi: with unit std, E[cos(phase)] = 0.61 and every frequency
    adds up in phase at pixel (0, 0), which shows as a glowing spot in the four corners.
    """
    phase = standardize(phase) * math.pi
    spectrum = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
    size = phase.shape[-2]
    x = standardize(torch.fft.irfft2(spectrum, s=(size, size)))
    # Recorrelate colours, out[:, d] = sum_c x[:, c] C[c, d]: a broadcast product dispatches the same ops for every
    # batch size (einsum's reshape is a view at B = 1 and a copy above).
    x = (x[:, :, None] * COLOR_CORRELATION.to(x)[None, :, :, None, None]).sum(1)
    return torch.sigmoid(x if color_bias is None else x + color_bias)


def color_bias_of(mean_color: tuple[float, float, float] | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
    """The (3, 1, 1) pre-sigmoid offset for a mean RGB colour in (0, 1): logit(mean); None for none (grey)."""
    if mean_color is None:
        return None
    return torch.logit(torch.tensor(mean_color, dtype=torch.float64)).to(device, dtype).view(3, 1, 1)


def initial_phase(keys: torch.Tensor, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 3, size, size//2+1) standard-normal-like phase, one row per objective key (see `stream_keys`)."""
    shape = (3, size, size // 2 + 1)
    bits = random_bits(keys, counters(math.prod(shape), keys.device))
    return normal_from_bits(bits, dtype).view(len(keys), *shape)
