"""Lens MACO against Horama 0.3.0 (the MACO authors' reference toolbox), side by side.

    pip install -e '.[bench]'          # horama==0.3.0
    python benchmarks/bench_vs_horama.py --device cuda                        # lite0, default settings, 8 classes
    OMP_NUM_THREADS=2 python benchmarks/bench_vs_horama.py --device cpu --steps 24 --image-size 128 --input-size 128 \\
        --crops 4 --classes 1,207,417,967                                     # a few minutes on a CPU

Both run on the same device, model (loaded by generator.models, bf16 autocast on CUDA for both),
steps, crops per step, crop scale, noise, learning rate, image size and model input size, and the
same magnitude spectrum: Horama downloads its spectrum at run time, so the project's spectrum is
written as the file it expects (`spectrum_decorrelated.npy`, (3, H, W//2+1) magnitudes in the
decorrelated colour space) into a temporary working directory. Horama renders one objective per
call; lens renders B objectives per pass (B from the worker's rule, or --batch-size). Reported:
objectives/s of each and their ratio, and the project's quality figures for both on the same
classes: self rank under the rendering model, top-1/top-5 under the other embedded models
(transfer), and the plausibility margin in the next model's feature space against real images
(`--references`, an ImageNet-layout folder; skipped with a note when absent). Horama's images are
finished like lens's (1st/99th percentile clip, stretch). Horama draws box sides in
[max, 2 max - min] of crop_scale (its code adds the max, not the min): kept as is, it is Horama.
Writes JSON and markdown to --out (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # Horama's per-step progress bar

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.class_lists import parse_class_list  # noqa: E402
from generator import maco  # noqa: E402
from generator.config import load_zoo  # noqa: E402
from generator.craft import make_views  # noqa: E402
from generator.models import LoadedModel, load_model, resolve_device  # noqa: E402
from generator.quality import model_inputs, penultimate, plausibility, reference_images  # noqa: E402
from generator.spectrum import resolve_spectrum  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SAMPLES = Path(os.environ.get("LENS_IMAGENET_SAMPLES", ROOT.parent / "shared" / "imagenet-samples"))
CLASSES = "1,207,417,530,664,817,948,967"  # goldfish, golden retriever, balloon, digital clock, monitor, sports car, apple, espresso


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def horama_workdir(magnitude: np.ndarray):
    """A temporary working directory holding the project's spectrum under Horama's file name (no download)."""
    from horama.maco_fv import MACO_SPECTRUM_FILENAME

    before = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="lens-horama-") as d:
        np.save(Path(d) / MACO_SPECTRUM_FILENAME, magnitude.astype(np.float32))
        os.chdir(d)
        try:
            yield
        finally:
            os.chdir(before)


def run_horama(model: LoadedModel, classes: list[int], settings, seed: int) -> tuple[list[np.ndarray], float]:  # noqa: ANN001
    """One Horama MACO per class; returns finished uint8 images and wall seconds (after a warm-up)."""
    from horama import maco as horama_maco

    def render(c: int, steps: int) -> torch.Tensor:
        def objective(crops: torch.Tensor) -> torch.Tensor:
            with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=model.autocast_bf16):
                return model.logits(crops)[:, c].float().mean()

        torch.manual_seed(seed + c)
        image, _ = horama_maco(objective, total_steps=steps, learning_rate=settings.lr, image_size=settings.image_size,
                               model_input_size=settings.input_size, noise=settings.noise, crops_per_iteration=settings.crops,
                               box_size=tuple(settings.crop_scale), device=str(model.device))
        return image.detach()

    render(classes[0], 2)  # warm-up
    sync(model.device)
    t = time.perf_counter()
    finals = [render(c, settings.steps) for c in classes]
    sync(model.device)
    seconds = time.perf_counter() - t
    return [maco.finish_image(f.float().cpu(), settings.image_percentile) for f in finals], seconds


def run_lens(model: LoadedModel, classes: list[int], settings, spectrum, batch: int, mode: str) -> tuple[list[np.ndarray], float]:  # noqa: ANN001
    objectives = [maco.class_objective(c) for c in classes]
    maco.render(model, objectives[:batch], settings.model_copy(update={"steps": 2}), spectrum, mode=mode)  # warm-up (compile)
    sync(model.device)
    t = time.perf_counter()
    renders = []
    for i in range(0, len(objectives), batch):
        renders += maco.render(model, objectives[i : i + batch], settings, spectrum, mode=mode)
    sync(model.device)
    return [r.image for r in renders], time.perf_counter() - t


def score(images: list[np.ndarray], classes: list[int], model: LoadedModel, judges: dict[str, LoadedModel],
          feature_model: str | None, ref: tuple | None) -> dict:
    """The project's quality figures (generator/quality.py) for a set of class visualizations."""
    _, self_ranks = maco.classify(model, images, classes)
    out = {"self_top1": statistics.fmean(r == 1 for r in self_ranks), "self_ranks": self_ranks}
    for name, judge in judges.items():
        ranks = maco.classify(judge, images, classes)[1]
        out[f"transfer_{name}"] = {"top1": statistics.fmean(r == 1 for r in ranks), "top5": statistics.fmean(r <= 5 for r in ranks),
                                   "ranks": ranks}
    if ref is not None and feature_model is not None:
        ref_feats, ref_labels = ref
        judge = judges[feature_model]
        feats = penultimate(judge, model_inputs(judge, images))
        margins = [p["margin"] for p in plausibility(feats, classes, ref_feats, ref_labels) if p]
        out["plausibility_margin"] = statistics.fmean(margins) if margins else None
        out["plausibility_model"] = feature_model
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--device", default="auto")
    p.add_argument("--classes", default=CLASSES, help=f"SPEC or START-END:STEP (default: {CLASSES})")
    p.add_argument("--steps", type=int, default=None, help="default: the zoo's settings for the model (256)")
    p.add_argument("--crops", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="lens objectives per pass (default: the worker's rule)")
    p.add_argument("--mode", default=None, help="lens step mode (maco.STEP_MODES; default $LENS_MACO_STEP or eager)")
    p.add_argument("--references", type=Path, default=SAMPLES, help="ImageNet-layout folder of real images (plausibility)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-quality", action="store_true", help="timing only")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default="vs_horama")
    args = p.parse_args()

    import horama

    classes = parse_class_list(args.classes)
    zoo = load_zoo(ROOT / "models.yaml")
    device = resolve_device(args.device)
    model = load_model(zoo.model(args.model), zoo.root, device)
    overrides = {k: v for k, v in {"steps": args.steps, "crops": args.crops, "image_size": args.image_size,
                                   "input_size": args.input_size, "seed": args.seed}.items() if v is not None}
    settings = zoo.maco_settings(model.entry, overrides)
    if settings.input_size is None:
        settings = settings.model_copy(update={"input_size": model.preprocess.input_size})
    spectrum = resolve_spectrum(zoo.data.spectrum, ROOT / "artifacts" / "spectra")
    mode = maco.step_mode(args.mode)
    batch = args.batch_size or maco.probe_batch_size(model, settings, spectrum)
    batch = max(1, min(batch, len(classes)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; {args.model}; {len(classes)} classes; steps {settings.steps}, crops {settings.crops}, "
          f"image {settings.image_size}, input {settings.input_size}, crop scale {tuple(settings.crop_scale)}; "
          f"lens B={batch} ({mode}); horama {horama.__version__}", flush=True)

    lens_images, lens_s = run_lens(model, classes, settings, spectrum, batch, mode)
    print(f"lens:   {lens_s:.1f} s, {len(classes) / lens_s:.4f} objectives/s", flush=True)
    with horama_workdir(spectrum.magnitude.cpu().numpy()):
        horama_images, horama_s = run_horama(model, classes, settings, args.seed)
    print(f"horama: {horama_s:.1f} s, {len(classes) / horama_s:.4f} objectives/s", flush=True)
    ratio = horama_s / lens_s
    print(f"objectives/s ratio lens / horama: {ratio:.2f}", flush=True)

    report = {"device": name, "torch": torch.__version__, "horama_version": horama.__version__, "model": args.model, "classes": classes,
              "settings": settings.model_dump(mode="json"), "lens_batch": batch, "lens_mode": mode,
              "lens": {"seconds": lens_s, "objectives_per_s": len(classes) / lens_s},
              "horama": {"seconds": horama_s, "objectives_per_s": len(classes) / horama_s}, "ratio": ratio}
    if not args.no_quality:
        others = [n for n in zoo.models if n != args.model]
        judges = {n: load_model(zoo.model(n), zoo.root, device) for n in others}
        ref, feature_model = None, others[0] if others else None
        if args.references.is_dir() and feature_model:
            refs = reference_images(args.references, classes, per_class=1)
            _, ref_x = make_views(refs.images, judges[feature_model])
            ref = (penultimate(judges[feature_model], ref_x), refs.labels)
        else:
            print(f"plausibility skipped: no reference images at {args.references}", flush=True)
        for label, images in (("lens", lens_images), ("horama", horama_images)):
            report[label]["quality"] = score(images, classes, model, judges, feature_model, ref)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tag}.json").write_text(json.dumps(report, indent=1))
    md = [f"Device: {name}; torch {torch.__version__}; horama {horama.__version__}; {args.model}; {len(classes)} classes "
          f"({args.classes}); {settings.steps} steps, {settings.crops} crops, {settings.image_size} px, input {settings.input_size}; "
          f"lens B={batch}, step mode {mode}", "",
          "| | " + " | ".join(["seconds", "objectives/s", "self top-1", *(f"top-1 / top-5 under {n}" for n in (
              [n for n in zoo.models if n != args.model] if not args.no_quality else [])), "plausibility margin"]) + " |",
          "|---|---:|---:|---:|" + "---:|" * (0 if args.no_quality else len(zoo.models) - 1) + "---:|"]
    for label in ("lens", "horama"):
        r, q = report[label], report[label].get("quality", {})
        cells = [f"{100 * q[k]['top1']:.0f}% / {100 * q[k]['top5']:.0f}%" for k in q if k.startswith("transfer_")]
        margin = q.get("plausibility_margin")
        row = [label, f"{r['seconds']:.1f}", f"{r['objectives_per_s']:.4f}", f"{100 * q['self_top1']:.0f}%" if q else "-",
               *cells, "-" if margin is None else f"{margin:.4f}"]
        md.append("| " + " | ".join(row) + " |")
    md.append(f"\nObjectives/s ratio lens / horama: {ratio:.2f}")
    (args.out / f"{args.tag}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    from PIL import Image

    thumb = 96
    sheet = Image.new("RGB", (thumb * len(classes), 2 * thumb), "white")
    for j, images in enumerate((lens_images, horama_images)):
        for i, im in enumerate(images):
            sheet.paste(Image.fromarray(im).resize((thumb, thumb), Image.Resampling.LANCZOS), (thumb * i, thumb * j))
    sheet.save(args.out / f"{args.tag}.png")  # row 1 lens, row 2 horama
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
