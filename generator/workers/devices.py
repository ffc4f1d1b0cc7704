"""Which devices a run uses: --device and --devices, checked in one line each."""

from __future__ import annotations

import sys

import torch


def default_devices(device: str, devices: str | None) -> list[str]:
    """`--devices 0,1` or all visible GPUs; the CPU (with a notice) where there is none.
    A device that does not exist is a one-line error naming the flag."""
    from ..errors import PlanError
    from ..models import resolve_device

    if device != "auto":
        resolve_device(device)  # unknown names and missing GPUs fail here, in one line
    if device == "cpu":
        return ["cpu"]
    if devices is not None:
        names = [d.strip() for d in devices.split(",")]
        if not names or any(not d for d in names):
            raise PlanError(f"--devices '{devices}': expected GPU indices or device names, e.g. 0,1 or cpu,cpu")
        out = []
        for d in names:
            name = f"cuda:{d}" if d.isdigit() else d
            resolve_device(name)
            out.append(str(torch.device(name)) if name != "cpu" else "cpu")
        return out
    if torch.cuda.is_available():
        return [str(resolve_device(device))] if device.startswith("cuda:") else [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    print("lens: no GPU visible, rendering on the CPU (use small settings, e.g. --classes demo)", file=sys.stderr)
    return ["cpu"]
