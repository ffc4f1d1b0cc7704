"""CRAFT per class: time by stage (activations, NMF, Sobol, concept MACO) and faithfulness.

    python benchmarks/bench_craft.py                          # 20 classes of ../shared/imagenet-samples
    python benchmarks/bench_craft.py --images DIR --classes 0-99 --maco-settings default
    python benchmarks/bench_craft.py --method nmf,semi-nmf --augment --maco-settings none   # the two dictionaries
    python benchmarks/bench_craft.py --mode patches,tokens --augment --maco-settings none   # issue 19 §1

Faithfulness figures per class: does removing the top concept (zeroing its coefficients before h)
lower the class logit more than removing the least important one; and the deletion areas
(concepts removed in importance order vs random order; lower is more faithful). `--method` runs
each listed concept dictionary on the same classes and images (`auto`, `nmf`, `semi-nmf`);
`--augment` adds the mirror image and two 80% corner crops of every image (the samples hold one
image per class). `--mode` compares what the dictionary factorises: re-forwarded `patches` or the
concept layer's own `tokens`. Where the head is pool + linear, each row also checks the exact
Sobol total indices CRAFT now uses there against the quasi-Monte Carlo estimate (their correlation
and whether both rank the same concept first). Writes JSON and markdown to benchmarks/results/.
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
from generator.images import SourceImage, demo_photos, load_class_images  # noqa: E402
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
    p.add_argument("--method", default="auto", help="concept dictionaries to compare, comma-separated: auto, nmf, semi-nmf")
    p.add_argument("--mode", default="patches", help="what the dictionary factorises, comma-separated: patches, tokens")
    p.add_argument("--augment", action="store_true", help="add each image's mirror and two 80%% corner crops")
    args = p.parse_args()
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    variants = [(method, mode) for method in methods for mode in modes]

    zoo = load_zoo(ROOT / "models.yaml")
    device = resolve_device(args.device)
    model = load_model(zoo.model(args.model), zoo.root, device)
    base_settings = zoo.craft_settings(model.entry)
    maco_settings = zoo.maco_settings(model.entry, zoo.preset("demo").maco if args.maco_settings == "demo" else {})
    spectrum = resolve_spectrum(zoo.data.spectrum, ROOT / "artifacts" / "spectra")
    classes = parse_class_list(args.classes)
    photos = None if args.images else demo_photos()
    rows = []
    for c in classes:
        images = load_class_images(args.images, imagenet_class(c).wnid) if args.images else photos
        if args.augment:
            images = augmented(images)
        for method, mode in variants:
            craft_settings = base_settings.model_copy(update={"method": method, "mode": mode})
            t = time.perf_counter()
            result = craft.run_craft(model, images, c, craft_settings)
            total = time.perf_counter() - t
            if not result.concepts:
                print(f"class {c}: no usable image, skipped", flush=True)
                continue
            row = {"class": c, "method_setting": method, "mode": mode, "method": result.method, "name": imagenet_class(c).name,
                   "n_images": len(result.views), "selection": result.selection,
                   **{f"{k}_s": v for k, v in result.timings.items()}, "craft_total_s": total, "nmf_error": result.nmf_error,
                   "top_drop": result.concepts[0].removal_drop, "least_drop": result.concepts[-1].removal_drop,
                   "auc_importance": result.deletion["auc_importance"], "auc_random": result.deletion["auc_random"]}
            row["top_beats_least"] = row["top_drop"] > row["least_drop"]
            row["seconds_per_image"] = total / len(result.views)
            row.update(sobol_check(model, result, c, craft_settings))
            if args.maco_settings != "none":
                objectives = [maco.direction_objective(f"concept/{c:04d}/{k.id}", k.direction) for k in result.concepts]
                t = time.perf_counter()
                maco.render(model, objectives, maco_settings, spectrum)
                row["concept_maco_s"] = time.perf_counter() - t
                row["concept_maco_count"] = len(objectives)
            rows.append(row)
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    summaries, md = {}, []
    for method, mode in variants:
        summary = summarise([r for r in rows if r["method_setting"] == method and r["mode"] == mode], args, device)
        summaries[f"{method}/{mode}"] = summary
        used = ", ".join(summary["methods_used"])
        md += [f"CRAFT ({method}: {used}; {mode}), {args.model} on {summary['device']} ({summary['threads']} threads), "
               f"{summary['classes']} classes of {summary['images']} ({summary['images_per_class']:.1f} images/class"
               + (", with mirror and corner crops" if args.augment else "") + ")", "",
               "| stage | mean seconds per class |", "|---|---:|"]
        md += [f"| {k.removesuffix('_s')} | {v:.2f} |" for k, v in summary["mean_s"].items()]
        md += ["", f"- removing the top concept lowers the logit more than removing the least important: "
               f"{100 * summary['top_beats_least_fraction']:.0f}% of classes",
               f"- deletion area, importance order vs random: {summary['mean_auc_importance']:.3f} vs {summary['mean_auc_random']:.3f} "
               f"(importance order lower in {100 * summary['auc_importance_below_random_fraction']:.0f}% of classes)",
               f"- dictionary relative reconstruction error: {summary['mean_nmf_error']:.3f}",
               f"- seconds per image (whole CRAFT): {summary['mean_seconds_per_image']:.3f}"]
        if "sobol_exact_corr" in summary:
            md += [f"- exact vs estimated Sobol totals (pool + linear head): mean correlation "
                   f"{summary['sobol_exact_corr']:.3f}, same top concept in {100 * summary['sobol_same_top']:.0f}% of classes"]
        md += [""]
    (RESULTS / f"{args.tag}.json").write_text(json.dumps({"summary": summaries, "rows": rows}, indent=1))
    (RESULTS / f"{args.tag}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def summarise(rows: list[dict], args: argparse.Namespace, device: torch.device) -> dict:
    def mean(key: str) -> float:
        return statistics.fmean(r[key] for r in rows if key in r)

    return {
        "model": args.model, "device": str(device), "threads": torch.get_num_threads(), "classes": len(rows),
        "methods_used": sorted({r["method"] for r in rows}),
        "images": str(args.images or "demo photos"), "images_per_class": mean("n_images"),
        "mean_s": {k: mean(k) for k in ("activations_s", "nmf_s", "sobol_s", "craft_total_s", "concept_maco_s")
                   if any(k in r for r in rows)},
        "concept_maco_settings": args.maco_settings, "top_beats_least_fraction": mean("top_beats_least"),
        "mean_auc_importance": mean("auc_importance"), "mean_auc_random": mean("auc_random"),
        "auc_importance_below_random_fraction": statistics.fmean(r["auc_importance"] < r["auc_random"] for r in rows),
        "mean_nmf_error": mean("nmf_error"), "mean_seconds_per_image": mean("seconds_per_image"),
        **({"sobol_exact_corr": mean("sobol_exact_corr"), "sobol_same_top": mean("sobol_same_top")}
           if any("sobol_exact_corr" in r for r in rows) else {}),
    }


def sobol_check(model, result: craft.CraftResult, class_index: int, settings) -> dict:
    """Where the head is pool + linear: exact total indices vs CRAFT's quasi-Monte Carlo estimate."""
    if model.linear_head is None or result.maps.ndim != 4:
        return {}
    W = torch.stack([k.direction for k in sorted(result.concepts, key=lambda k: k.id)]).to(model.device)
    maps = result.maps.to(model.device)
    exact = craft.linear_totals(model, maps, W, class_index).mean(0).cpu()
    estimate = craft.sobol_totals(model, maps, W, class_index, settings.sobol_designs, settings.seed).mean(0).cpu()
    corr = float(torch.corrcoef(torch.stack([exact, estimate]))[0, 1])
    return {"sobol_exact_corr": corr, "sobol_same_top": int(exact.argmax()) == int(estimate.argmax())}


def augmented(images: list[SourceImage]) -> list[SourceImage]:
    """Each image, its mirror, and its top-left and bottom-right 80% crops."""
    from PIL import ImageOps

    out = []
    for im in images:
        w, h = im.image.size
        cw, ch = round(0.8 * w), round(0.8 * h)
        out += [im, SourceImage(im.source + "#mirror", ImageOps.mirror(im.image), im.credit),
                SourceImage(im.source + "#crop-tl", im.image.crop((0, 0, cw, ch)), im.credit),
                SourceImage(im.source + "#crop-br", im.image.crop((w - cw, h - ch, w, h)), im.credit)]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
