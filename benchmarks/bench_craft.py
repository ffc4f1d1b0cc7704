"""CRAFT per class: time by stage (activations, NMF, Sobol, concept MACO) and faithfulness.

    python benchmarks/bench_craft.py                          # 20 classes of ../shared/imagenet-samples
    python benchmarks/bench_craft.py --images DIR --classes 0-99 --maco-settings default

Faithfulness figures per class: does removing the top concept (zeroing its coefficients before h)
lower the class logit more than removing the least important one; and the deletion areas
(concepts removed in importance order vs random order; lower is more faithful). Writes JSON and
markdown to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.class_lists import parse_class_list  # noqa: E402
from generator import craft, maco  # noqa: E402
from generator.classes import imagenet_class  # noqa: E402
from generator.config import load_zoo  # noqa: E402
from generator.images import demo_photos, load_class_images  # noqa: E402
from generator.models import load_model, resolve_device  # noqa: E402
from generator.spectrum import resolve_spectrum  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SAMPLES = ROOT.parent / "shared" / "imagenet-samples"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--images", type=Path, default=SAMPLES if SAMPLES.is_dir() else None,
                   help="ImageNet-layout folder (default: ../shared/imagenet-samples; the demo photos if absent)")
    p.add_argument("--classes", default="0-999:50", help="SPEC, or START-END:STEP (default: 20 classes spread over ImageNet)")
    p.add_argument("--maco-settings", choices=["demo", "default", "none"], default="demo",
                   help="settings of the concept visualizations timed per class (none: skip them)")
    p.add_argument("--device", default="auto")
    p.add_argument("--tag", default="craft")
    args = p.parse_args()

    zoo = load_zoo(ROOT / "models.yaml")
    device = resolve_device(args.device)
    model = load_model(zoo.model(args.model), zoo.root, device)
    craft_settings = zoo.craft_settings(model.entry)
    maco_settings = zoo.maco_settings(model.entry, zoo.preset("demo").maco if args.maco_settings == "demo" else {})
    spectrum = resolve_spectrum(zoo.data.spectrum, ROOT / "artifacts" / "spectra")
    classes = parse_class_list(args.classes)
    photos = None if args.images else demo_photos()
    rows = []
    for c in classes:
        images = load_class_images(args.images, imagenet_class(c).wnid) if args.images else photos
        t = time.perf_counter()
        result = craft.run_craft(model, images, c, craft_settings)
        total = time.perf_counter() - t
        if not result.concepts:
            print(f"class {c}: no usable image, skipped", flush=True)
            continue
        row = {"class": c, "name": imagenet_class(c).name, "n_images": len(result.views), "selection": result.selection,
               **{f"{k}_s": v for k, v in result.timings.items()}, "craft_total_s": total, "nmf_error": result.nmf_error,
               "top_drop": result.concepts[0].removal_drop, "least_drop": result.concepts[-1].removal_drop,
               "auc_importance": result.deletion["auc_importance"], "auc_random": result.deletion["auc_random"]}
        row["top_beats_least"] = row["top_drop"] > row["least_drop"]
        if args.maco_settings != "none":
            objectives = [maco.direction_objective(f"concept/{c:04d}/{k.id}", k.direction) for k in result.concepts]
            t = time.perf_counter()
            maco.render(model, objectives, maco_settings, spectrum)
            row["concept_maco_s"] = time.perf_counter() - t
            row["concept_maco_count"] = len(objectives)
        rows.append(row)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    def mean(key: str) -> float:
        return statistics.fmean(r[key] for r in rows if key in r)

    summary = {
        "model": args.model, "device": str(device), "threads": torch.get_num_threads(), "classes": len(rows),
        "images": str(args.images or "demo photos"), "images_per_class": mean("n_images"),
        "mean_s": {k: mean(k) for k in ("activations_s", "nmf_s", "sobol_s", "craft_total_s", "concept_maco_s")
                   if any(k in r for r in rows)},
        "concept_maco_settings": args.maco_settings, "top_beats_least_fraction": mean("top_beats_least"),
        "mean_auc_importance": mean("auc_importance"), "mean_auc_random": mean("auc_random"),
        "auc_importance_below_random_fraction": statistics.fmean(r["auc_importance"] < r["auc_random"] for r in rows),
        "mean_nmf_error": mean("nmf_error"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    md = [f"CRAFT, {args.model} on {summary['device']} ({summary['threads']} threads), {len(rows)} classes of "
          f"{summary['images']} ({summary['images_per_class']:.1f} images/class)", "",
          "| stage | mean seconds per class |", "|---|---:|"]
    md += [f"| {k.removesuffix('_s')} | {v:.2f} |" for k, v in summary["mean_s"].items()]
    md += ["", f"- removing the top concept lowers the logit more than removing the least important: "
           f"{100 * summary['top_beats_least_fraction']:.0f}% of classes",
           f"- deletion area, importance order vs random: {summary['mean_auc_importance']:.3f} vs {summary['mean_auc_random']:.3f} "
           f"(importance order lower in {100 * summary['auc_importance_below_random_fraction']:.0f}% of classes)",
           f"- NMF relative reconstruction error: {summary['mean_nmf_error']:.3f}"]
    (RESULTS / f"{args.tag}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
