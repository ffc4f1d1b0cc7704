"""Load time of a ResNet-50 (random init) as timm's train.py saves it (`model_best.pth.tar`: both
state dicts, the SGD momentum buffers, `args` as an argparse.Namespace), read with
torch.load(weights_only=True) and the EMA entry picked, against the same EMA weights as safetensors.

    python benchmarks/bench_checkpoints.py [--arch resnet50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from timm.utils import CheckpointSaver, ModelEmaV3

from generator.config import ModelEntry
from generator.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        model = timm.create_model(args.arch)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()  # momentum buffers in the optimizer state, as after a training step
        ema = ModelEmaV3(model)
        CheckpointSaver(model, opt, args=argparse.Namespace(model=args.arch, lr=0.1), model_ema=ema,
                        checkpoint_dir=tmp, recovery_dir=tmp).save_checkpoint(0, metric=1.0)
        save_file(ema.module.state_dict(), str(d / "ema.safetensors"))
        for name in ("model_best.pth.tar", "ema.safetensors"):
            entry = ModelEntry(name="m", arch=args.arch, weights={"file": str(d / name)})
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                _, used = build_model(entry, d)
                times.append(time.perf_counter() - t)
            print(f"{name}: {(d / name).stat().st_size / 1e6:.0f} MB, build + strict load best of {args.repeat}: "
                  f"{min(times):.2f} s; {used.describe().replace(str(d) + '/', '')}")


if __name__ == "__main__":
    main()
