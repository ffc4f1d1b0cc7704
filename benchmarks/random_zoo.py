"""A models.yaml of three randomly initialised timm models (ResNet, ViT, ConvNeXt) for trying `lens`.

    python benchmarks/random_zoo.py /tmp/random-zoo
    lens layers vit-tiny-random --config /tmp/random-zoo/models.yaml
    lens render --config /tmp/random-zoo/models.yaml --classes 1 --images DIR

The weights are `timm.create_model(arch, pretrained=False)` after `torch.manual_seed(0)`, saved
as safetensors: what a user adding an architecture through YAML does, minus the training.
"""

from __future__ import annotations

import sys
from pathlib import Path

ARCHS = {"resnet18-random": "resnet18", "vit-tiny-random": "vit_tiny_patch16_224", "convnext-atto-random": "convnext_atto"}


def write_random_zoo(folder: Path) -> Path:
    import timm
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["images: null", "spectrum: powerlaw",
             "defaults:", "  maco: {steps: 2, image_size: 64, crops: 2, input_size: 64}",
             "  craft: {rank: 3, top_crops: 2, sobol_designs: 4, nmf_iters: 30, attribution_images: 1, visualize: 2}",
             "models:"]
    for name, arch in ARCHS.items():
        torch.manual_seed(0)
        save_file(timm.create_model(arch, pretrained=False).state_dict(), str(folder / f"{arch}.safetensors"))
        lines.append(f"  - {{name: {name}, arch: {arch}, weights: {{file: {arch}.safetensors}}}}")
    path = folder / "models.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    print(write_random_zoo(Path(sys.argv[1] if len(sys.argv) > 1 else "random-zoo")))
