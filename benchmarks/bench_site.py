"""Site budgets on a synthetic store of 1000 classes x 3 models (issue 4, section 3).

Times, on this machine:
- cold: empty site and empty cache (the synthetic store has few distinct images, so encoding is
  small here; it is reported apart);
- full: empty site, images already encoded (the budget: <= 60 s);
- no change: the same build again (the budget: <= 10 s): the manifest finds nothing changed;
- no change, every class read: the same with the manifest forgotten (pages kept by the page cache);
- one class changed: a new MACO image for one class and model;
- one class's CRAFT changed: its relations re-read, the model's global parts (similar concepts,
  alignment, t-SNE map) recomputed; the other models' relations come from the cache.
Relations (issue 12): the cold build computes every model's relations; per model <= 60 s for 10 000
concepts. Sizes: the largest class page (<= 60 KB), the filter index (<= 300 KB), Material's search
index, the concept map's data (<= 1 MB per 10 000 concepts), the largest per-class relations JSON.

    python benchmarks/bench_site.py [--classes 1000] [--keep]

Prints a table and writes benchmarks/results/site.json. The store is cached in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.synthetic_store import DEFAULT_MODELS, write_synthetic_store  # noqa: E402
from generator.config import load_zoo  # noqa: E402
from generator.site import SiteReport, build_site  # noqa: E402
from generator.store import encode_png  # noqa: E402

RESULTS = HERE / "results"
BUDGETS = {"class_page_kb": 60, "index_kb": 300, "full_build_s": 60, "no_change_s": 10, "map_kb_per_10k": 1024,
           "relations_per_model_s": 60}


def synthetic_store(n_classes: int) -> Path:
    root = RESULTS / f"synthetic-{n_classes}x{len(DEFAULT_MODELS)}"
    stamp = root / ".complete"
    if not stamp.is_file():
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        write_synthetic_store(root, n_classes, DEFAULT_MODELS)
        stamp.write_text("ok\n")
        print(f"wrote the synthetic store in {time.perf_counter() - t:.1f} s: {root}")
    return root


def timed_build(store: Path, out: Path, cache: Path) -> tuple[float, SiteReport]:
    zoo = load_zoo(HERE.parent / "models.yaml")
    t = time.perf_counter()
    report = build_site(zoo, store, out, progress=False, cache_dir=cache)
    return time.perf_counter() - t, report


def change_one_image(store: Path) -> None:
    """Replace the class MACO of the first class of the first model by a new image, as a re-render would."""
    class_dir = store / DEFAULT_MODELS[0] / "0000"
    meta = json.loads((class_dir / "meta.json").read_text())
    import numpy as np

    pixels = np.random.default_rng(int(time.time())).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    target = class_dir / meta["maco"]["files"]["image"]
    target.unlink()  # it is a hard link into the shared pool: never write through it
    target.write_bytes(encode_png(pixels))


def change_one_craft(store: Path) -> None:
    """Mark the first class's CRAFT of the first model as re-rendered (new finish time), as a re-run would."""
    path = store / DEFAULT_MODELS[0] / "0000" / "meta.json"
    meta = json.loads(path.read_text())
    meta["craft"]["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path.unlink()  # never write through a hard link
    path.write_text(json.dumps(meta, indent=1) + "\n")


def site_size(out: Path) -> tuple[int, int]:
    """Files and bytes as deployed (a hard link counts in full: a host gets a copy of each)."""
    files = size = 0
    for root, _, names in os.walk(out):
        for n in names:
            files += 1
            size += os.path.getsize(os.path.join(root, n))
    return files, size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--keep", action="store_true", help="keep the built site in benchmarks/results/site-*")
    args = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    store = synthetic_store(args.classes)
    out, cache = RESULTS / f"site-{args.classes}", RESULTS / f"site-cache-{args.classes}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)

    cold_s, cold = timed_build(store, out, cache)  # every cache empty: images encoded, relations computed
    shutil.rmtree(out)
    shutil.rmtree(cache / "hashes")
    shutil.rmtree(cache / "shell")
    full_s, full = timed_build(store, out, cache)  # encoded images and relations of unchanged CRAFT reused
    same_s, same = timed_build(store, out, cache)  # nothing changed: the manifest check alone
    shutil.rmtree(cache / "manifest")
    walk_s, walk = timed_build(store, out, cache)  # nothing changed, every class read: pages kept by the page cache
    change_one_image(store)
    one_s, one = timed_build(store, out, cache)
    change_one_craft(store)
    craft_s, craft = timed_build(store, out, cache)
    files, size = site_size(out)
    concepts_per_model = sum(1 for _ in (store / DEFAULT_MODELS[0]).glob("*/concepts/directions.*.npy")) * 10

    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "classes": full.classes, "models": full.models,
        "cold_build_s": round(cold_s, 2), "cold_images_encoded": cold.images_encoded,
        "cold_images_phase_s": round(cold.seconds.get("images", 0.0), 2),  # encoding plus placing every file
        "full_build_s": round(full_s, 2), "full_phases_s": {k: round(v, 2) for k, v in full.seconds.items()},
        "full_images_encoded": full.images_encoded, "full_images_placed": full.images_linked,
        "no_change_s": round(same_s, 2), "no_change_phases_s": {k: round(v, 2) for k, v in same.seconds.items()},
        "no_change_images_encoded": same.images_encoded, "no_change_pages_written": same.pages_written,
        "no_change_up_to_date": same.up_to_date, "no_change_files_checked": same.files_checked,
        "no_change_full_path_s": round(walk_s, 2), "no_change_full_path_phases_s": {k: round(v, 2) for k, v in walk.seconds.items()},
        "no_change_full_path_pages_written": walk.pages_written,
        "one_change_s": round(one_s, 2), "one_change_images_encoded": one.images_encoded,
        "one_change_pages_written": one.pages_written,
        "class_page_kb": round(full.largest_page_bytes / 1024, 1), "largest_page": full.largest_page,
        "index_kb": round(full.index_bytes / 1024, 1),
        "search_index_kb": round(full.search_index_bytes / 1024, 1),
        "site_files": files, "site_mb": round(size / 2**20, 1),
        "placeholders": full.placeholders,
        "cold_relations_s": round(cold.seconds.get("relations", 0.0), 2),
        "relations_per_model_s": round(cold.seconds.get("relations", 0.0) / max(1, len(cold.models)), 2),
        "concepts_per_model": concepts_per_model,
        "one_craft_changed_s": round(craft_s, 2), "one_craft_relations_s": round(craft.seconds.get("relations", 0.0), 2),
        "one_craft_recomputed": craft.relations_recomputed,
        "map_kb": round(full.largest_map_bytes / 1024, 1),
        "map_kb_per_10k": round(full.largest_map_bytes / 1024 * 10_000 / max(1, concepts_per_model), 1),
        "class_json_kb": round(full.largest_class_json_bytes / 1024, 1),
        "atlas_phase_s": round(full.seconds.get("atlas pages", 0.0), 2),
        "budgets": BUDGETS,
    }
    results["within_budget"] = {k: results[k] <= v for k, v in BUDGETS.items()}
    (RESULTS / "site.json").write_text(json.dumps(results, indent=1) + "\n")

    rows = [
        ("classes x models", f"{full.classes} x {len(full.models)}", ""),
        ("cold build (encoding included)", f"{cold_s:.1f} s",
         f"{cold.images_encoded} distinct images encoded; images phase {results['cold_images_phase_s']} s"),
        ("full build, images pre-encoded", f"{full_s:.1f} s", f"budget {BUDGETS['full_build_s']} s"),
        ("no-change rebuild", f"{same_s:.1f} s",
         f"budget {BUDGETS['no_change_s']} s; {'up to date: ' if same.up_to_date else ''}{same.files_checked} files checked,"
         f" {same.images_encoded} encoded, {same.pages_written} pages written"),
        ("no change, every class read", f"{walk_s:.1f} s",
         f"manifest forgotten; {walk.pages_written} pages written, {walk.pages_unchanged} kept"),
        ("one image changed", f"{one_s:.1f} s", f"{one.images_encoded} encoded, {one.pages_written} pages written"),
        ("largest class page", f"{results['class_page_kb']} KB", f"budget {BUDGETS['class_page_kb']} KB ({full.largest_page})"),
        ("filter index", f"{results['index_kb']} KB", f"budget {BUDGETS['index_kb']} KB"),
        ("Material search index", f"{results['search_index_kb']} KB", ""),
        ("site as deployed", f"{files} files, {results['site_mb']} MB", "synthetic images; copies of the cache's files on disk"),
        ("relations, cold (all models)", f"{results['cold_relations_s']} s",
         f"{results['relations_per_model_s']} s per model of {concepts_per_model} concepts; budget"
         f" {BUDGETS['relations_per_model_s']} s per model"),
        ("one class's CRAFT changed", f"{craft_s:.1f} s",
         f"relations {results['one_craft_relations_s']} s, recomputed for {', '.join(craft.relations_recomputed) or 'none'}"),
        ("concept map data", f"{results['map_kb']} KB", f"{results['map_kb_per_10k']} KB per 10k concepts; budget"
         f" {BUDGETS['map_kb_per_10k']} KB"),
        ("largest class relations JSON", f"{results['class_json_kb']} KB", "loaded on demand"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>16}  {note}")
    print("full build phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in full.seconds.items()))
    print("no-change phases:  " + ", ".join(f"{k} {v:.1f} s" for k, v in same.seconds.items()))
    print("no change, every class read: " + ", ".join(f"{k} {v:.1f} s" for k, v in walk.seconds.items()))
    print(f"within budget: {results['within_budget']}; written {RESULTS / 'site.json'}")
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if all(results["within_budget"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
