"""Digests of a tiny render, to check that a refactor changes no pixel (issue 17: "the same renders,
bit for bit, for the same settings and seed").

Renders, on the CPU, three MACO objectives (two classes, one direction) of the tests' tiny random
model, and a `lens render` of two classes (MACO, CRAFT, concept MACOs) into a fixed folder, and
prints a digest of each: the renders' pixels, alpha maps and objectives; the store's PNG, JPEG and
npy files byte for byte and its npz files by content (their zip headers hold timestamps). Run it on
two commits and compare the lines.

    OMP_NUM_THREADS=1 python benchmarks/render_digest.py [--folder /tmp/lens-digest]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator import maco  # noqa: E402
from generator.cli import main as lens  # noqa: E402
from generator.config import MacoSettings, load_zoo  # noqa: E402
from generator.models import load_model  # noqa: E402
from generator.spectrum import powerlaw_spectrum  # noqa: E402
from tests.conftest import write_class_folder, write_tiny_zoo  # noqa: E402


def store_digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.suffix in (".png", ".npy", ".npz", ".jpg", ".webp"):
            h.update(str(p.relative_to(out)).encode())
            if p.suffix == ".npz":
                with np.load(p, allow_pickle=False) as z:
                    for k in sorted(z.files):
                        h.update(k.encode() + np.asarray(z[k]).tobytes())
            else:
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=Path("/tmp/lens-digest"), help="fixed: settings hashes name files")
    args = ap.parse_args(argv)
    shutil.rmtree(args.folder, ignore_errors=True)
    args.folder.mkdir(parents=True)
    config = write_tiny_zoo(args.folder / "zoo", images=write_class_folder(args.folder / "imgs"))
    zoo = load_zoo(config)
    model = load_model(zoo.model("tiny"), zoo.root, "cpu")
    settings = MacoSettings(steps=6, image_size=48, crops=2)
    torch.manual_seed(0)
    objectives = [maco.class_objective(1), maco.direction_objective("concept/0002/0", torch.rand(model.num_concept_channels)),
                  maco.class_objective(3)]
    h = hashlib.sha256()
    renders = maco.render(model, objectives, settings, powerlaw_spectrum())
    for r in renders:
        h.update(r.image.tobytes() + r.alpha.tobytes() + repr(r.objective).encode())
    print("render", h.hexdigest()[:16])
    print("classify", maco.classify(model, [renders[0].image], [1]))
    out = args.folder / "store"
    assert lens(["render", "--config", str(config), "--classes", "1-2", "--store", str(out), "--no-progress"]) == 0
    print("store", store_digest(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
