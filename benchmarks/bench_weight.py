"""Weight of the published images per class x model, and how they look against their sources.

    python benchmarks/bench_weight.py --store STORE [--models M] [--classes 665,967]

Builds the site from STORE (current code, a fresh folder under benchmarks/results/weight/), then
prints per (class, model): bytes of images by kind and in total, the projection to 1000 classes x
3 models, and, for every published WebP, PSNR and SSIM (skimage.metrics) against the same variant
rendered losslessly from the store's PNG/JPEG sources. Side-by-side crops (source | published,
zoomed 2x) go to benchmarks/results/weight/sidebyside-*.png.

Measured on a real render (README of benchmarks, section "Site weight"): efficientnet-lite0 at the
default image size and concept count; MACO steps reduced to keep CPU time short (the weight of a
WebP depends on the picture's texture, which 8 steps already has; more steps make it smoother).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator import webp  # noqa: E402
from generator.config import load_zoo  # noqa: E402
from generator.site import build_site  # noqa: E402
from generator.site.images import ImagePlan  # noqa: E402
from generator.site.reading import read_meta  # noqa: E402
from generator.site.views import model_class_view  # noqa: E402
from generator.store import Store  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "weight"
BUDGET = 300 * 1024


def kind(name: str) -> str:
    """maco, maco-t, maco-o, concept, concept-t, concept-o, crops, heatmaps, png from a site file name."""
    role = name.split(".")[0]
    m = re.match(r"c\d+(-.*)?$", role)
    if m:
        return {None: "concept", "-t": "concept-t", "-o": "concept-o", "-crops": "crops", "-heat": "heatmaps", "-photo": "photos",
                "-png": "concept-png"}[m.group(1)]
    return role


def flat(im: Image.Image) -> np.ndarray:
    """RGB array; RGBA composited over mid-grey (what the overlay view shows on its checkerboard)."""
    if im.mode == "RGBA":
        bg = Image.new("RGBA", im.size, (128, 128, 128, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"))


def pad_heatmaps(store: Path, copy: Path, n: int) -> Path:
    """A copy of `store` where each concept lists `n` heatmaps (its own first, then other concepts')."""
    shutil.copytree(store, copy, symlinks=False)
    for meta_path in copy.glob("*/[0-9][0-9][0-9][0-9]/meta.json"):
        meta = json.loads(meta_path.read_text())
        pool = [a for c in meta.get("concepts", []) for a in c.get("attributions", [])]
        for c in meta.get("concepts", []):
            own = list(c.get("attributions", []))
            c["attributions"] = (own + [a for a in pool if a not in own])[:n]
        meta_path.write_text(json.dumps(meta))
    return copy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--models", default=None)
    ap.add_argument("--classes", default=None)
    ap.add_argument("--full-res", action="store_true")
    ap.add_argument("--pad-heatmaps", type=int, default=0,
                    help="copy the store and give every concept N attribution heatmaps, borrowed from the class's other "
                         "concepts (a class with one photo has one; CRAFT records 4 by default): the worst-case weight")
    args = ap.parse_args()
    zoo = load_zoo(ROOT / "models.yaml")
    models = args.models.split(",") if args.models else None
    classes = [int(c) for c in args.classes.split(",")] if args.classes else None
    shutil.rmtree(RESULTS, ignore_errors=True)
    if args.pad_heatmaps:
        args.store = pad_heatmaps(args.store, RESULTS / "store-padded", args.pad_heatmaps)
    out, cache = RESULTS / "site", RESULTS / "cache"
    report = build_site(zoo, args.store, out, models=models, classes=classes, progress=False, cache_dir=cache,
                        full_res=args.full_res)
    store = Store(args.store.resolve())
    plan = ImagePlan(webp.WebpCache(cache / "webp"), RESULTS / "memo", args.full_res)
    quality: dict[str, list[tuple[float, float]]] = defaultdict(list)
    shown: set[str] = set()
    for model in report.models:
        for index in sorted({int(p.name) for p in (store.root / model).iterdir() if p.name.isdigit()}):
            if classes is not None and index not in classes:
                continue
            folder = out / "classes" / f"{index:04d}" / model
            model_class_view(model, read_meta(store, model, index), plan.for_class(store, model, index))
            sizes: dict[str, int] = defaultdict(int)
            for f in folder.iterdir():
                sizes[kind(f.name)] += f.stat().st_size
            total = sum(v for k, v in sizes.items() if not k.endswith("png"))
            detail = ", ".join(f"{k} {v / 1024:.1f}" for k, v in sorted(sizes.items()))
            print(f"{index:04d} {model}: {total / 1024:.1f} KB of WebP ({'within' if total <= BUDGET else 'OVER'} the 300 KB budget)"
                  f"; by kind (KB): {detail}")
            print(f"  projection: 1000 classes x 3 models = {total * 3000 / 1e9:.2f} GB")
            for name, key in plan.folders[f"classes/{index:04d}/{model}"].items():
                variant, sources = plan.recipes[key]
                if variant == "png":
                    continue
                blur, webp.ALPHA_BLUR = webp.ALPHA_BLUR, 0.0  # the reference is the untouched attribution map
                try:
                    ref = webp.render_variant(variant, [Path(s) for s in sources])
                finally:
                    webp.ALPHA_BLUR = blur
                with Image.open(folder / name) as im:
                    pub = im.copy()
                a, b = flat(ref), flat(pub)
                psnr = peak_signal_noise_ratio(a, b, data_range=255)
                ssim = structural_similarity(a, b, channel_axis=2, data_range=255)
                quality[kind(name)].append((psnr, ssim))
                k = kind(name)
                if k not in shown:
                    shown.add(k)
                    if k in ("crops", "heatmaps"):  # the first cells of the strip
                        h, w = a.shape[0], min(a.shape[1], 2 * webp.CROP_CELL + webp.CROP_GAP)
                        y0 = x0 = 0
                    else:  # the centre
                        h = w = min(160, a.shape[0], a.shape[1])
                        y0, x0 = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
                    pair = np.concatenate([a[y0:y0 + h, x0:x0 + w], np.full((h, 4, 3), 255, np.uint8),
                                           b[y0:y0 + h, x0:x0 + w]], axis=1)
                    path = RESULTS / f"sidebyside-{k}.png"
                    Image.fromarray(pair).resize((pair.shape[1] * 2, pair.shape[0] * 2), Image.Resampling.NEAREST).save(path)
    print("quality of the published WebP against the lossless variant (mean over files): kind: PSNR dB, SSIM, files")
    for k, values in sorted(quality.items()):
        v = np.array(values)
        print(f"  {k:10s} {v[:, 0].mean():5.1f} dB  SSIM {v[:, 1].mean():.3f}  (min {v[:, 1].min():.3f}, {len(v)} files)")
    print(f"side-by-side crops (source | published, 2x): {RESULTS}/sidebyside-*.png")


if __name__ == "__main__":
    main()
