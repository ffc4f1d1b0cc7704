"""Quality of class visualizations under MACO variants: crop scale and magnitude spectrum.

    python benchmarks/study_quality.py --study crops      # small (reference) vs mixed vs large crops
    python benchmarks/study_quality.py --study spectrum   # photos vs 1/f vs a spectrum of the samples

For each variant it renders the same classes with the same seeds and reports:
- self top-1: the rendering model ranks the class first, on the finished image;
- transfer top-5: each other embedded model ranks it in its top 5;
- plausibility: in the next model's penultimate space, cosine to real images of the class minus
  cosine to real images of other classes (references: ../shared/imagenet-samples).
Contact sheets (one row per variant) go to benchmarks/results/ for looking at. The spectrum of the
samples is computed at run time and cached under benchmarks/results/ (never committed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.class_lists import parse_class_list  # noqa: E402
from generator import maco  # noqa: E402
from generator.config import load_zoo  # noqa: E402
from generator.craft import make_views  # noqa: E402
from generator.models import load_model, resolve_device  # noqa: E402
from generator.quality import model_inputs, penultimate, plausibility, reference_images  # noqa: E402
from generator.spectrum import resolve_spectrum  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SAMPLES = ROOT.parent / "shared" / "imagenet-samples"
STUDY_SETTINGS = {"steps": 64, "image_size": 256, "crops": 4}  # between the CPU demo and the GPU default
CLASSES = "0-999:50,665,698,872,967"  # 24 classes spread over ImageNet, and the demo's

VARIANTS = {
    "crops": {
        "small (0.20-0.30, reference)": {"crop_scale": (0.20, 0.30)},
        "mixed (0.25-1.0, default)": {"crop_scale": (0.25, 1.0)},
        "large (0.60-1.0)": {"crop_scale": (0.60, 1.0)},
    },
    "spectrum": {"photos (default)": "photos", "1/f power law": "powerlaw", "imagenet-samples": "images"},
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", choices=list(VARIANTS), required=True)
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--references", type=Path, default=SAMPLES)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--classes", default=CLASSES, help=f"SPEC, or START-END:STEP (default: {CLASSES})")
    p.add_argument("--tag", default=None, help="results name (default: study_<study>)")
    args = p.parse_args()
    if not args.references.is_dir():
        raise SystemExit(f"{args.references}: reference images are needed (an ImageNet-layout folder)")

    classes = parse_class_list(args.classes)
    tag = args.tag or f"study_{args.study}"
    zoo = load_zoo(ROOT / "models.yaml")
    device = resolve_device(args.device)
    model = load_model(zoo.model(args.model), zoo.root, device)
    others = [n for n in zoo.models if n != args.model]
    judges = {n: load_model(zoo.model(n), zoo.root, device) for n in others}
    feature_model = judges[others[0]]
    refs = reference_images(args.references, classes, per_class=1)
    _, ref_x = make_views(refs.images(0, len(refs)), feature_model)
    ref_feats = penultimate(feature_model, ref_x)

    rows, sheets = [], []
    for label, variant in VARIANTS[args.study].items():
        overrides = dict(STUDY_SETTINGS)
        spectrum_choice = zoo.data.spectrum
        if args.study == "crops":
            overrides.update(variant)
        else:
            spectrum_choice = variant
        settings = zoo.maco_settings(model.entry, overrides)
        spectrum = resolve_spectrum(spectrum_choice, RESULTS / "spectra", args.references)
        maco.render(model, [maco.class_objective(classes[0])], settings.model_copy(update={"steps": 2}), spectrum)  # warm-up
        t = time.perf_counter()
        renders = []
        for i in range(0, len(classes), args.batch_size):
            renders += maco.render(model, [maco.class_objective(c) for c in classes[i : i + args.batch_size]], settings, spectrum)
        seconds = (time.perf_counter() - t) / len(classes)
        images = [r.image for r in renders]
        _, self_ranks = maco.classify(model, images, classes)
        transfer = {n: maco.classify(j, images, classes)[1] for n, j in judges.items()}
        feats = penultimate(feature_model, model_inputs(feature_model, images))
        margins = [pl["margin"] for pl in plausibility(feats, classes, ref_feats, refs.labels) if pl]
        row = {"variant": label, "spectrum": spectrum.id, "settings": settings.model_dump(mode="json"),
               "self_top1": statistics.fmean(r == 1 for r in self_ranks),
               **{f"transfer_top5_{n}": statistics.fmean(r <= 5 for r in ranks) for n, ranks in transfer.items()},
               "plausibility_margin": statistics.fmean(margins), "plausibility_model": others[0],
               "seconds_per_visualization": seconds, "self_ranks": self_ranks, "transfer_ranks": transfer}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("settings", "self_ranks", "transfer_ranks")}), flush=True)
        sheets.append((label, images))

    RESULTS.mkdir(parents=True, exist_ok=True)
    thumb = 96
    sheet = Image.new("RGB", (thumb * len(classes), thumb * len(sheets)), "white")
    for j, (_, images) in enumerate(sheets):
        for i, im in enumerate(images):
            sheet.paste(Image.fromarray(im).resize((thumb, thumb), Image.Resampling.LANCZOS), (thumb * i, thumb * j))
    sheet.save(RESULTS / f"{tag}.png")
    (RESULTS / f"{tag}.json").write_text(json.dumps({"classes": classes, "model": args.model, "rows": rows}, indent=1))
    md = [f"{args.model}, {len(classes)} classes, {STUDY_SETTINGS}, device {device}; plausibility in {others[0]}'s space",
          "", "| variant | spectrum | self top-1 | " + " | ".join(f"top-5 under {n}" for n in others) + " | plausibility margin | s/viz |",
          "|---|---|---:|" + "---:|" * len(others) + "---:|---:|"]
    for r in rows:
        md.append(f"| {r['variant']} | {r['spectrum']} | {100 * r['self_top1']:.0f}% | "
                  + " | ".join(f"{100 * r[f'transfer_top5_{n}']:.0f}%" for n in others)
                  + f" | {r['plausibility_margin']:.4f} | {r['seconds_per_visualization']:.1f} |")
    md.append(f"\nContact sheet (rows in table order): benchmarks/results/{tag}.png")
    (RESULTS / f"{tag}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
