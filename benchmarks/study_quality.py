"""Quality of class visualizations under MACO variants.

    python benchmarks/study_quality.py --study crops      # small (reference) vs mixed vs large crops
    python benchmarks/study_quality.py --study spectrum   # photos vs 1/f vs a spectrum of the samples
    python benchmarks/study_quality.py --study clean      # issue 22: blockiness, haze, their causes, steps

For each variant it renders the same classes with the same seeds and reports:
- self top-1: the rendering model ranks the class first, on the finished image;
- transfer top-5: each other embedded model ranks it in its top 5;
- plausibility, in the next model's penultimate space against the reference photos
  (../shared/imagenet-samples, one per class for the 1000 classes): the margin (cosine to photos of
  the class minus cosine to the others), top-1 (the nearest photo is of the class) and top-5;
- what a person sees (generator/quality.py): mean blue minus red, mean saturation (0-255) and
  blockiness, as medians over the renders, next to the photos' median and interquartile range.
Contact sheets (one row per variant) go to benchmarks/results/ for looking at (`--sheet` writes a
small JPEG elsewhere, e.g. under docs/). Spectra and reference embeddings computed from the samples
are cached under benchmarks/results/ (never committed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.class_lists import parse_class_list  # noqa: E402
from generator import maco  # noqa: E402
from generator.config import load_zoo  # noqa: E402
from generator.images import demo_photos  # noqa: E402
from generator.maco import parameterization  # noqa: E402
from generator.models import load_model, resolve_device  # noqa: E402
from generator.quality import (  # noqa: E402
    blockiness,
    color_statistics,
    embed_reference,
    model_inputs,
    penultimate,
    plausibility,
    plausibility_ranks,
    reference_images,
)
from generator.spectrum import Spectrum, resolve_spectrum, spectrum_from_images  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SAMPLES = ROOT.parent / "shared" / "imagenet-samples"
STUDY_SETTINGS = {"steps": 64, "image_size": 256, "crops": 4}  # between the CPU demo and the GPU default
CLASSES = "0-999:50,665,698,872,967"  # 24 classes spread over ImageNet, and the demo's
CLEAN_CLASSES = "7,94,207,309,388,430,574,717,817,937"  # issue 22's ten: cock, hummingbird, ..., broccoli
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the published normalisation constant of the packaged models
OLD = {"spectrum": "photos-unwindowed", "mean_color": None}  # the defaults before issue 22
NEW = {"spectrum": "photos", "mean_color": IMAGENET_MEAN}

VARIANTS: dict[str, dict[str, dict]] = {
    "crops": {
        "small (0.20-0.30, reference)": {"crop_scale": (0.20, 0.30)},
        "mixed (0.25-1.0, default)": {"crop_scale": (0.25, 1.0)},
        "large (0.60-1.0)": {"crop_scale": (0.60, 1.0)},
    },
    "spectrum": {"photos (default)": {"spectrum": "photos"}, "1/f power law": {"spectrum": "powerlaw"},
                 "imagenet-samples": {"spectrum": "images"}},
    "clean": {
        "before: photos spectrum unwindowed, grey mean": OLD,
        "spectrum: photos, Hann-windowed": {**OLD, "spectrum": "photos"},
        "spectrum: 1/f power law": {**OLD, "spectrum": "powerlaw"},
        "spectrum: imagenet-samples, windowed (study only)": {**OLD, "spectrum": "images"},
        "spectrum: blend of windowed photos and 1/f": {**OLD, "spectrum": "blend"},
        "colour: unwindowed + ImageNet mean": {**OLD, "mean_color": IMAGENET_MEAN},
        "windowed + ImageNet mean": NEW,
        "  + no colour decorrelation": {**NEW, "decorrelate": False},
        "  + clip 0.1 %": {**NEW, "image_percentile": 0.1},
        "  + lr 0.5": {**NEW, "lr": 0.5},
        "  + lr 2": {**NEW, "lr": 2.0},
        "  + crops 0.4-1.0": {**NEW, "crop_scale": (0.4, 1.0)},
        "  + crop jitter 0.3": {**NEW, "crop_jitter": 0.3},
        "  + noise 0.1": {**NEW, "noise": 0.1},
        "  + noise 0": {**NEW, "noise": 0.0},
    },
}


def study_spectrum(choice: str, references: Path) -> Spectrum:
    """A row's spectrum: the product's choices, the unwindowed photos spectrum of before, or a blend."""
    if choice == "photos-unwindowed":
        return spectrum_from_images((p.image for p in demo_photos()), label="photos-unwindowed", window=False)
    if choice == "blend":  # geometric mean of the windowed photos spectrum and 1/f, each at unit mean
        a, b = (resolve_spectrum(c, RESULTS / "spectra").magnitude for c in ("photos", "powerlaw"))
        return Spectrum("blend-photos-powerlaw", (a / a.mean() * b / b.mean()).sqrt())
    return resolve_spectrum(choice, RESULTS / "spectra", references)


@contextlib.contextmanager
def colour_decorrelation(enabled: bool) -> Iterator[None]:
    """Without decorrelation the phase's three channels are R, G, B themselves (the recorrelation matrix is the
    identity), as in a plain Fourier parameterisation: a study row, not a setting."""
    saved = parameterization.COLOR_CORRELATION
    if not enabled:
        parameterization.COLOR_CORRELATION = torch.eye(3)  # unit column norms, as the matrix it replaces
    try:
        yield
    finally:
        parameterization.COLOR_CORRELATION = saved


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    q1, q2, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return float(q1), float(q2), float(q3)


def photo_statistics(refs) -> dict:  # noqa: ANN001
    """Quartiles of the colour and blockiness figures over the reference photos (cached under results/)."""
    cache = RESULTS / "reference-cache" / f"photo-statistics-v2-{refs.signature.rsplit(':', 1)[-1]}.json"
    if cache.is_file():
        return {k: tuple(v) for k, v in json.loads(cache.read_text()).items()}
    stats = []
    for i in range(0, len(refs), 64):
        stats += [(*color_statistics(np.asarray(im.image)), blockiness(np.asarray(im.image))) for _, im in refs.images(i, i + 64)]
    found = {name: quartiles([s[k] for s in stats]) for k, name in enumerate(("blue_minus_red", "saturation", "blockiness"))}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(found))
    return found


def contact_sheet(rows: list[tuple[str, list[np.ndarray]]], path: Path, thumb: int = 96, quality: int = 80) -> None:
    """One row of thumbnails per variant, in order (PNG, or JPEG/WebP by the suffix: small enough to commit)."""
    columns = max(len(images) for _, images in rows)
    sheet = Image.new("RGB", (thumb * columns, thumb * len(rows)), "white")
    for j, (_, images) in enumerate(rows):
        for i, im in enumerate(images):
            sheet.paste(Image.fromarray(im).resize((thumb, thumb), Image.Resampling.LANCZOS), (thumb * i, thumb * j))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, **({} if path.suffix == ".png" else {"quality": quality}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", choices=list(VARIANTS), required=True)
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--references", type=Path, default=SAMPLES)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--classes", default=None, help=f"SPEC, or START-END:STEP (default: {CLASSES}; clean: {CLEAN_CLASSES})")
    p.add_argument("--settings", default=None, help=f"JSON MACO settings of every row (default: {json.dumps(STUDY_SETTINGS)})")
    p.add_argument("--only", default=None, help="comma-separated row numbers (0-based) to run")
    p.add_argument("--variant", action="append", default=[], metavar="LABEL=JSON",
                   help="a row of your own: settings and `spectrum` as JSON (repeatable; replaces the study's rows)")
    p.add_argument("--sheet", type=Path, default=None,
                   help="also write the contact sheet here (e.g. docs/quality/x.jpg), without rows whose spectrum comes from the samples")
    p.add_argument("--thumb", type=int, default=96, help="side of the --sheet's thumbnails")
    p.add_argument("--sheet-from", action="append", default=[], metavar="TAG[:ROWS]",
                   help="only write --sheet from the renders previous runs kept (results/TAG/), rows ROWS (e.g. 0,2; all by default)")
    p.add_argument("--tag", default=None, help="results name (default: study_<study>)")
    p.add_argument("--nearest", action="append", default=[], metavar="TAG",
                   help="only print, for the kept renders of previous runs (results/TAG/), the class of the photo nearest "
                        "to each render whose own class's photo is not (plausibility top-1's misses)")
    args = p.parse_args()
    if not args.references.is_dir():
        raise SystemExit(f"{args.references}: reference images are needed (an ImageNet-layout folder)")
    torch.manual_seed(0)
    if args.sheet_from:
        return sheet_from(args.sheet_from, args.sheet, args.thumb)
    if args.nearest:
        return nearest(args.nearest, args.model, args.references, resolve_device(args.device))

    classes = parse_class_list(args.classes or (CLEAN_CLASSES if args.study == "clean" else CLASSES))
    base = json.loads(args.settings) if args.settings else dict(STUDY_SETTINGS)
    variants = dict(VARIANTS[args.study])
    if args.variant:
        variants = {label: json.loads(spec) for label, _, spec in (v.partition("=") for v in args.variant)}
    if args.only:
        keep = {int(i) for i in args.only.split(",")}
        variants = {k: v for i, (k, v) in enumerate(variants.items()) if i in keep}
    tag = args.tag or f"study_{args.study}"
    zoo = load_zoo(ROOT / "models.yaml")
    device = resolve_device(args.device)
    model = load_model(zoo.model(args.model), zoo.root, device)
    others = [n for n in zoo.models if n != args.model]
    judges = {n: load_model(zoo.model(n), zoo.root, device) for n in others}
    feature_model = judges[others[0]]
    refs = reference_images(args.references, range(1000), per_class=1)
    ref = embed_reference(feature_model, refs, RESULTS / "reference-cache", others[0])
    ref_labels = [refs.labels[k] for k in ref.kept]
    photos = photo_statistics(refs)
    print(json.dumps({"photos": photos}), flush=True)

    rows, sheets = [], []
    for label, variant in variants.items():
        variant = dict(variant)
        spectrum = study_spectrum(variant.pop("spectrum", zoo.data.spectrum), args.references)
        with colour_decorrelation(variant.pop("decorrelate", True)):
            row, images = run_row(model, judges, feature_model, classes, zoo.maco_settings(model.entry, base, variant), spectrum,
                                  args.batch_size, (ref.features, ref_labels))
        rows.append({"variant": label, **row})
        save_renders(tag, len(rows) - 1, images)
        print(json.dumps({k: v for k, v in rows[-1].items() if not isinstance(v, (list, dict))}), flush=True)
        sheets.append((label, images))
        if args.sheet and not row["spectrum"].startswith("images"):  # a committed sheet holds nothing from the samples
            contact_sheet([sh for sh, r in zip(sheets, rows) if not r["spectrum"].startswith("images")], args.sheet, args.thumb)
        write_results(tag, classes, args.model, photos, rows)

    contact_sheet(sheets, RESULTS / f"{tag}.png")
    md = table(rows, photos, others, f"{args.model}, {len(classes)} classes, {base}, device {device}; "
               f"plausibility in {others[0]}'s space against {len(ref_labels)} photos")
    (RESULTS / f"{tag}.md").write_text(md + f"\nContact sheet (rows in table order): benchmarks/results/{tag}.png\n")
    print(md)
    return 0


def sheet_from(sources: list[str], path: Path | None, thumb: int) -> int:
    """A contact sheet from runs' kept renders (`TAG` or `TAG:0,2`), in order; never a row drawn with the samples' spectrum."""
    if path is None:
        raise SystemExit("--sheet-from needs --sheet PATH")
    sheet = []
    for source in sources:
        tag, _, only = source.partition(":")
        rows = json.loads((RESULTS / f"{tag}.json").read_text())["rows"]
        for i in [int(k) for k in only.split(",")] if only else range(len(rows)):
            if rows[i]["spectrum"].startswith("images"):
                print(f"{tag} row {i} ({rows[i]['variant']}): left out, its spectrum comes from the samples", file=sys.stderr)
                continue
            sheet.append((rows[i]["variant"], kept_renders(tag, i)))
    contact_sheet(sheet, path, thumb)
    print(f"{path}: {len(sheet)} rows, {path.stat().st_size // 1024} KB")
    return 0


def kept_renders(tag: str, row: int) -> list[np.ndarray]:
    """The renders `save_renders` kept for a row, in class order."""
    strip = np.asarray(Image.open(RESULTS / tag / f"row{row:02d}.png").convert("RGB"))
    side = strip.shape[0]
    return [strip[:, k : k + side] for k in range(0, strip.shape[1], side)]


def nearest(tags: list[str], model_name: str, references: Path, device: torch.device) -> int:
    """Plausibility top-1's misses of kept runs: each render's class -> the class of its nearest photo (the judge's space)."""
    from generator.classes import imagenet_class

    zoo = load_zoo(ROOT / "models.yaml")
    judge_name = [n for n in zoo.models if n != model_name][0]  # as main(): the first other model
    judge = load_model(zoo.model(judge_name), zoo.root, device)
    refs = reference_images(references, range(1000), per_class=1)
    ref = embed_reference(judge, refs, RESULTS / "reference-cache", judge_name)
    labels = [refs.labels[k] for k in ref.kept]

    def name(c: int) -> str:
        return imagenet_class(c).name.split(",")[0]

    for tag in tags:
        found = json.loads((RESULTS / f"{tag}.json").read_text())
        for i, row in enumerate(found["rows"]):
            sims = penultimate(judge, model_inputs(judge, kept_renders(tag, i))) @ ref.features.T
            misses = [f"{name(c)} -> {name(labels[int(s.argmax())])}" for c, s in zip(found["classes"], sims)
                      if labels[int(s.argmax())] != c]
            print(f"{tag} | {row['variant'].strip()} | {'; '.join(misses) or 'none'}")
    return 0


def save_renders(tag: str, row: int, images: list[np.ndarray]) -> None:
    """The row's renders side by side, lossless, under results/ (never committed): figures can be recomputed from them."""
    (RESULTS / tag).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(images, axis=1)).save(RESULTS / tag / f"row{row:02d}.png")


def write_results(tag: str, classes: list[int], model: str, photos: dict, rows: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{tag}.json").write_text(json.dumps({"classes": classes, "model": model, "photos": photos, "rows": rows}, indent=1))


def run_row(model, judges: dict, feature_model, classes: list[int], settings, spectrum: Spectrum, batch: int,  # noqa: ANN001
            references: tuple[torch.Tensor, list[int]]) -> tuple[dict, list[np.ndarray]]:
    """Render the classes under one variant and score them."""
    maco.render(model, [maco.class_objective(classes[0])], settings.model_copy(update={"steps": 2}), spectrum)  # warm-up
    t = time.perf_counter()
    renders = []
    for i in range(0, len(classes), batch):
        renders += maco.render(model, [maco.class_objective(c) for c in classes[i : i + batch]], settings, spectrum)
    seconds = (time.perf_counter() - t) / len(classes)
    images = [r.image for r in renders]
    _, self_ranks = maco.classify(model, images, classes)
    transfer = {n: maco.classify(j, images, classes)[1] for n, j in judges.items()}
    feats = penultimate(feature_model, model_inputs(feature_model, images))
    margins = [pl["margin"] for pl in plausibility(feats, classes, *references) if pl]
    plaus = [r for r in plausibility_ranks(feats, classes, *references) if r is not None]
    stats = [(*color_statistics(im), blockiness(im)) for im in images]
    return ({"spectrum": spectrum.id, "settings": settings.model_dump(mode="json"),
             "blue_minus_red": statistics.median(s[0] for s in stats), "saturation": statistics.median(s[1] for s in stats),
             "blockiness": statistics.median(s[2] for s in stats),
             "self_top1": statistics.fmean(r == 1 for r in self_ranks),
             **{f"transfer_top5_{n}": statistics.fmean(r <= 5 for r in ranks) for n, ranks in transfer.items()},
             "plausibility_margin": statistics.fmean(margins), "plausibility_top1": statistics.fmean(r == 1 for r in plaus),
             "plausibility_top5": statistics.fmean(r <= 5 for r in plaus), "seconds_per_visualization": seconds,
             "self_ranks": self_ranks, "transfer_ranks": transfer, "plausibility_ranks": plaus,
             "per_image": [list(s) for s in stats]}, images)


def table(rows: list[dict], photos: dict, others: list[str], title: str) -> str:
    def iqr(q: tuple[float, float, float]) -> str:
        return f"{q[1]:.1f} ({q[0]:.1f}..{q[2]:.1f})"

    head = ("| variant | blue-red | saturation | blockiness | self top-1 | " + " | ".join(f"top-5 {n}" for n in others)
            + " | plaus. top-1 | plaus. top-5 | plaus. margin | s/viz |")
    md = [title, "", head, "|---|" + "---:|" * (8 + len(others)),
          f"| photos: median (IQR) | {iqr(photos['blue_minus_red'])} | {iqr(photos['saturation'])} | "
          f"{photos['blockiness'][1]:.2f} ({photos['blockiness'][0]:.2f}..{photos['blockiness'][2]:.2f}) |" + " |" * (5 + len(others))]
    for r in rows:
        md.append(f"| {r['variant']} | {r['blue_minus_red']:.1f} | {r['saturation']:.1f} | {r['blockiness']:.2f} | "
                  f"{100 * r['self_top1']:.0f}% | " + " | ".join(f"{100 * r[f'transfer_top5_{n}']:.0f}%" for n in others)
                  + f" | {100 * r['plausibility_top1']:.0f}% | {100 * r['plausibility_top5']:.0f}% | {r['plausibility_margin']:.3f}"
                  f" | {r['seconds_per_visualization']:.1f} |")
    return "\n".join(md)


if __name__ == "__main__":
    raise SystemExit(main())
