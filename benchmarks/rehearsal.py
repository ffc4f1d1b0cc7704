"""Rehearsal of a full-scale run, with faults: render -> quality -> site for every selected class x the
three embedded models (plus a fourth model that cannot load), at tiny settings, on the CPU.

    OMP_NUM_THREADS=1 python benchmarks/rehearsal.py --classes 0-999     # the full rehearsal (~45 min, 2 cores)
    OMP_NUM_THREADS=1 python benchmarks/rehearsal.py --classes 0-29      # a small-scale check

Faults injected while it runs:
- the first render is killed with SIGKILL mid-way, then resumed;
- a second render is started on the same store at the same time as the resume;
- then a corrupt meta.json, a wrong-shaped one and a deleted image file, repaired by one more render;
- a fourth zoo model whose weights file does not exist.

At the end it checks, prints, and exits 1 if a check fails: done / failed / no-images counts per
model and part (the three good models all done, every unit of the broken one failed with its
reason), one class page per class, every meta.json valid, no temporary or claim file left, no
traceback in any output; then wall time per stage and a projection to default settings (one MACO
objective at default settings timed for a few steps and scaled to 256, and one default CRAFT).
Figures go to benchmarks/results/rehearsal.json and are meant for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
GOOD = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
BROKEN = "broken-weights"
TINY_MACO = {"steps": 8, "image_size": 64, "crops": 2, "input_size": 64}
# CRAFT's patches and the judges' photos go through the model at its input size (224-260 px by default);
# at 96 px they cost ~6x less, which brings 3000 CRAFTs within the 45-minute budget on two cores.
TINY_INPUT = 96
TINY_CRAFT = {"rank": 5, "visualize": 2, "sobol_designs": 8, "nmf_iters": 100, "top_crops": 3, "attribution_images": 1,
              "max_images": 20}


def write_config(work: Path, samples: Path) -> Path:
    """The embedded zoo (same entries as models.yaml) at tiny settings, plus one model that cannot load."""
    import yaml

    zoo = yaml.safe_load((ROOT / "models.yaml").read_text())
    zoo["models"] = [{**m, "input_size": TINY_INPUT} for m in zoo["models"] if m["name"] in GOOD]
    zoo["models"].append({"name": BROKEN, "arch": "tf_efficientnet_lite0", "weights": {"file": "missing.safetensors"},
                          "description": "a model whose weights file does not exist (injected fault)"})
    zoo.update(images=str(samples.resolve()), out=str(work / "artifacts"), site=str(work / "site"), presets={},
               defaults={"maco": TINY_MACO, "craft": TINY_CRAFT})
    path = work / "models.yaml"
    path.write_text(yaml.safe_dump(zoo, sort_keys=False))
    return path


class Runner:
    """Runs `lens` commands as subprocesses, keeps their output and times the stages."""

    def __init__(self, work: Path, config: Path, classes: str):
        self.work, self.config, self.classes = work, config, classes
        self.logs: list[Path] = []
        self.stages: dict[str, float] = {}
        self.killed: dict = {}
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    def start(self, name: str, *argv: str, threads: int = 1) -> subprocess.Popen:
        """One thread per process where two run at once (oversubscribed OpenMP threads crawl)."""
        log = self.work / f"{name}.log"
        self.logs.append(log)
        cmd = [sys.executable, "-m", "generator", *argv]
        env = {**self.env, "OMP_NUM_THREADS": str(threads)}
        return subprocess.Popen(cmd, cwd=self.work, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)

    def lens(self, name: str, *argv: str) -> int:
        t = time.perf_counter()
        code = self.start(name, *argv, threads=min(2, os.cpu_count() or 1)).wait()
        self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t
        print(f"  {name}: exit {code} in {time.perf_counter() - t:.0f} s", flush=True)
        return code

    def selection(self) -> list[str]:
        return ["--config", str(self.config), "--classes", self.classes, "--no-progress"]


def done_units(store: Path) -> int:
    try:
        lines = (store / "runs.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(json.loads(line).get("done", 0) for line in lines if '"batch_end"' in line)


def render_with_faults(r: Runner, store: Path, total_units: int) -> list[int]:
    """kill -9 mid-render, resume beside a concurrent second render, then corrupt and repair."""
    t = time.perf_counter()
    first = r.start("render-1-killed", "render", *r.selection(), "--device", "cpu", threads=min(2, os.cpu_count() or 1))
    target = max(3, int(total_units * 0.4))  # a third would be exactly the first model's units: kill inside the second
    while done_units(store) < target and first.poll() is None:
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    from generator.store import Store

    held = Store(store).leftovers()  # claims and temporaries the killed render left: the resume must take them over
    r.killed = {"units_done": done_units(store), "seconds": round(time.perf_counter() - t, 1), "left_behind": len(held),
                "examples": sorted(str(p.relative_to(store)) for p in held)[:3]}
    print(f"  render-1-killed: SIGKILL after {done_units(store)} units, {time.perf_counter() - t:.0f} s; left behind "
          f"{len(held)} claim or temporary files ({', '.join(r.killed['examples'])})", flush=True)
    resume = r.start("render-2-resume", "render", *r.selection(), "--device", "cpu")
    time.sleep(2.0)
    concurrent = r.start("render-3-concurrent", "render", *r.selection(), "--device", "cpu")
    codes = [resume.wait(), concurrent.wait()]
    r.stages["render"] = time.perf_counter() - t
    print(f"  render-2-resume / render-3-concurrent: exit {codes} after {r.stages['render']:.0f} s", flush=True)
    return codes


def inject_record_faults(store: Path) -> dict[str, str]:
    """A corrupt meta.json, a wrong-shaped one and a deleted image, in three different classes."""
    metas = sorted((store / GOOD[0]).glob("[0-9][0-9][0-9][0-9]/meta.json"))
    corrupt, shaped, deleted = metas[0], metas[len(metas) // 2], metas[-1]
    corrupt.write_text('{"schema": 2, "model": "efficientnet-lite0", "maco": {"status": "do')  # torn
    shaped.write_text(json.dumps({"schema": 2, "model": GOOD[0], "class_index": "not a number", "maco": []}))
    image = json.loads(deleted.read_text())["maco"]["files"]["image"]
    (deleted.parent / image).unlink()
    return {"corrupt": str(corrupt), "wrong_shape": str(shaped), "deleted": str(deleted.parent / image)}


def projection(samples: Path, classes: int, measured: dict) -> dict:
    """Time one MACO objective at default settings (a few steps, scaled to 256) and one default CRAFT,
    on lite0, and project the whole gallery (1000 classes x 3 models) at default settings on this CPU."""
    import torch

    from generator import craft, maco
    from generator.config import load_zoo
    from generator.images import load_class_images
    from generator.models import load_model
    from generator.spectrum import resolve_spectrum

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    zoo = load_zoo(ROOT / "models.yaml")
    entry = zoo.model(GOOD[0])
    m = load_model(entry, zoo.root, "cpu")
    settings = zoo.maco_settings(entry)
    probe_steps = 4
    spectrum = resolve_spectrum("photos", RESULTS / "spectra")
    maco.render(m, [maco.class_objective(1)], settings.model_copy(update={"steps": 1}), spectrum)  # warm-up
    t = time.perf_counter()
    maco.render(m, [maco.class_objective(1)], settings.model_copy(update={"steps": probe_steps}), spectrum)
    maco_s = (time.perf_counter() - t) * settings.steps / probe_steps
    craft_settings = zoo.craft_settings(entry)
    images = load_class_images(samples, "n01440764")
    t = time.perf_counter()
    craft.run_craft(m, images, 0, craft_settings)
    craft_s = time.perf_counter() - t
    concepts = craft_settings.visualize if craft_settings.visualize is not None else craft_settings.rank
    per_class = maco_s * (1 + concepts) + craft_s
    return {"default_maco_s_per_objective_lite0": round(maco_s, 1), "default_craft_s_per_class_lite0": round(craft_s, 1),
            "craft_images_per_class": len(images), "concept_visualizations_per_class": concepts,
            "projected_cpu_hours_1000_classes_x_3_models": round(per_class * 1000 * 3 / 3600, 1),
            "note": "lite1/lite2 are slower than lite0 (larger inputs); CRAFT is timed on the one sample image per class "
                    "(max_images 200 at full scale); the defaults are meant for GPUs"}


def check(results: dict, name: str, ok: bool, detail: str = "") -> None:
    results["checks"][name] = {"ok": bool(ok), "detail": detail}
    print(f"  [{'ok' if ok else 'FAIL'}] {name}" + (f": {detail}" if detail else ""), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", default="0-999", help="class SPEC (e.g. 0-49 for a small-scale check)")
    default_samples = Path(os.environ.get("LENS_IMAGENET_SAMPLES", ROOT.parent / "shared" / "imagenet-samples"))
    p.add_argument("--samples", type=Path, default=default_samples, help="ImageNet-layout folder (default: $LENS_IMAGENET_SAMPLES)")
    p.add_argument("--work", type=Path, default=RESULTS / "rehearsal")
    p.add_argument("--no-projection", action="store_true", help="skip timing the default settings")
    args = p.parse_args()
    if not args.samples.is_dir():
        print(f"rehearsal: {args.samples} is not a folder (ImageNet samples, one folder per wnid)", file=sys.stderr)
        return 2
    from generator.classes import parse_class_spec

    classes = parse_class_spec(args.classes)
    work = args.work.resolve()
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    config = write_config(work, args.samples)
    store, site = work / "artifacts", work / "site"
    r = Runner(work, config, args.classes)
    results: dict = {"classes": len(classes), "settings": {"maco": TINY_MACO, "craft": TINY_CRAFT, "input_size": TINY_INPUT},
                     "checks": {}}
    started = time.perf_counter()
    print(f"rehearsal: {len(classes)} classes x {len(GOOD)} models + {BROKEN}, in {work}", flush=True)

    # ------------------------------------------------------------------ render, with faults
    units_estimate = len(classes) * len(GOOD) * (2 + TINY_CRAFT["visualize"])
    codes = render_with_faults(r, store, units_estimate)
    faults = inject_record_faults(store)
    t = time.perf_counter()
    codes.append(r.lens("render-4-repair", "render", *r.selection(), "--device", "cpu"))
    r.stages["render"] += time.perf_counter() - t
    results["faults"] = {**faults, "killed_render": r.killed}
    repair_log = (work / "render-4-repair.log").read_text()

    # ------------------------------------------------------------------ quality and site
    quality_code = r.lens("quality", "quality", *r.selection(), "--device", "cpu")
    quality_again = r.lens("quality-again", "quality", *r.selection(), "--device", "cpu")
    site_code = r.lens("site", "site", "--config", str(config), "--store", str(store), "--site", str(site), "--no-progress")
    status_code = r.lens("status", "status", *r.selection()[:-1], "--json")  # status has no progress bar
    status_text = (work / "status.log").read_text()
    status = json.loads(status_text[status_text.index("{"):])

    # ------------------------------------------------------------------ checks
    print("checks:", flush=True)
    check(results, "renders exit 1 (the broken model's units failed, nothing else)", all(c == 1 for c in codes), f"exit codes {codes}")
    counts = status["models"]
    results["counts"] = counts
    print(f"  {'model':22s} {'part':8s} " + " ".join(f"{s:>9s}" for s in ("done", "failed", "no-images", "other")))
    for model, parts in counts.items():
        for part, c in parts.items():
            if sum(c.values()):
                other = sum(c.values()) - c["done"] - c["failed"] - c["no-images"]
                print(f"  {model:22s} {part:8s} {c['done']:9d} {c['failed']:9d} {c['no-images']:9d} {other:9d}")
    for model in GOOD:
        c = counts[model]
        expected_concepts = (len(classes) - c["craft"]["no-images"]) * TINY_CRAFT["visualize"]
        good = (c["maco"]["done"] == len(classes) and c["craft"]["done"] + c["craft"]["no-images"] == len(classes)
                and c["concept"]["done"] == expected_concepts and not any(c[k]["failed"] for k in c))
        check(results, f"{model}: every unit done", good, json.dumps({k: {s: n for s, n in v.items() if n} for k, v in c.items()}))
    b = counts[BROKEN]
    reasons = {f["error"] for f in status["failures"] if f["unit"].startswith(BROKEN + "/")}
    check(results, f"{BROKEN}: every unit failed with its reason", b["maco"]["failed"] == len(classes) == b["craft"]["failed"]
          and len(reasons) == 1 and "missing.safetensors" in next(iter(reasons)), "; ".join(reasons))
    failed_once = True
    for meta_path in (store / BROKEN).glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        failed_once &= all(meta[k]["attempts"] == 1 for k in ("maco", "craft"))
    check(results, f"{BROKEN}: recorded once per unit, not retried", failed_once)
    aside = sorted(p.name for p in store.rglob("meta.json.corrupt-*"))
    check(results, "corrupt and wrong-shaped meta.json moved aside and re-rendered",
          len(aside) == 2 and repair_log.count("moved aside") == 2, f"{len(aside)} moved aside")
    check(results, "deleted image repaired", Path(faults["deleted"]).is_file())
    check(results, "quality exits 0, and a second run has nothing to score", quality_code == 0 and quality_again == 0
          and "nothing to score" in (work / "quality-again.log").read_text())
    pages = [p for p in (site / "classes").glob("*.html") if re.fullmatch(r"\d{4}\.html", p.name)]
    check(results, f"{len(classes)} class pages", site_code == 0 and len(pages) == len(classes), f"{len(pages)} pages, exit {site_code}")
    from generator.records import Meta

    invalid = []
    metas = list(store.rglob("meta.json"))
    for path in metas:
        try:
            Meta.from_json_obj(json.loads(path.read_text()))
        except ValueError as e:
            invalid.append(f"{path}: {e}")
    check(results, "every meta.json valid", not invalid, f"{len(metas)} files" + (f"; {invalid[:3]}" if invalid else ""))
    from generator.store import Store

    left = Store(store).leftovers()
    check(results, "no temporary or claim files left", not left, ", ".join(str(p) for p in left[:5]))
    tracebacks = [log.name for log in r.logs if "Traceback" in log.read_text()]
    check(results, "no traceback in any output", not tracebacks, ", ".join(tracebacks))
    check(results, "status exit 1 (failed units of the broken model)", status_code == 1)

    # ------------------------------------------------------------------ figures
    results["stages_s"] = {k: round(v, 1) for k, v in r.stages.items()}
    results["total_s"] = round(time.perf_counter() - started, 1)
    scale = 1000 / len(classes)
    results["projected_1000_classes_s"] = {k: round(v * scale, 0) for k, v in r.stages.items() if k in ("render", "quality", "site")}
    results["load_average_1min"] = os.getloadavg()[0]  # other work on the machine inflates every figure
    print("wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r.stages.items()))
    print("projected to 1000 classes at these settings (linear; an upper bound for quality, whose small-scale time is "
          "mostly the one-off embedding of the reference images by each judge, cached): " +
          ", ".join(f"{k} {v / 60:.0f} min" for k, v in results["projected_1000_classes_s"].items()))
    if not args.no_projection:
        results["default_settings"] = projection(args.samples, len(classes), results)
        print("default settings: " + json.dumps(results["default_settings"]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rehearsal.json").write_text(json.dumps(results, indent=1))
    failed = [k for k, v in results["checks"].items() if not v["ok"]]
    print(f"rehearsal: {'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'} ({results['total_s'] / 60:.1f} min)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
