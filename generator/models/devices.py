"""Which device a model runs on: `auto`, `cpu`, `cuda` or `cuda:N`, checked against what torch sees."""

from __future__ import annotations

import torch

from ..errors import ModelError


def resolve_device(device: str = "auto") -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N`; anything else, or a GPU that is not there, is a one-line ModelError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ModelError(f"--device '{device}': unknown device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ModelError(f"--device '{device}': unsupported device type '{dev.type}'; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"--device '{device}' was asked for, but torch sees no CUDA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"--device '{device}': only {torch.cuda.device_count()} CUDA GPUs are visible")
    return dev
