"""Site budgets on a synthetic store of 1000 classes x 3 models (issue 4, section 3).

Times, on this machine:
- cold: empty site and empty cache (the synthetic store has few distinct images, so encoding is
  small here; it is reported apart);
- full: empty site, images already encoded (the budget: <= 60 s);
- no change: the same build again (the budget: <= 10 s);
- one class changed: a new MACO image for one class and model.
Sizes: the largest class page (<= 60 KB), the filter index (<= 300 KB), Material's search index.

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
BUDGETS = {"class_page_kb": 60, "index_kb": 300, "full_build_s": 60, "no_change_s": 10}


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

    cold_s, cold = timed_build(store, out, cache)
    shutil.rmtree(out)
    shutil.rmtree(cache / "hashes")
    shutil.rmtree(cache / "shell")
    full_s, full = timed_build(store, out, cache)
    same_s, same = timed_build(store, out, cache)
    change_one_image(store)
    one_s, one = timed_build(store, out, cache)
    files, size = site_size(out)

    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "classes": full.classes, "models": full.models,
        "cold_build_s": round(cold_s, 2), "cold_images_encoded": cold.images_encoded,
        "cold_images_phase_s": round(cold.seconds.get("images", 0.0), 2),  # encoding plus placing every file
        "full_build_s": round(full_s, 2), "full_phases_s": {k: round(v, 2) for k, v in full.seconds.items()},
        "full_images_encoded": full.images_encoded, "full_images_placed": full.images_linked,
        "no_change_s": round(same_s, 2), "no_change_phases_s": {k: round(v, 2) for k, v in same.seconds.items()},
        "no_change_images_encoded": same.images_encoded, "no_change_pages_written": same.pages_written,
        "one_change_s": round(one_s, 2), "one_change_images_encoded": one.images_encoded,
        "one_change_pages_written": one.pages_written,
        "class_page_kb": round(full.largest_page_bytes / 1024, 1), "largest_page": full.largest_page,
        "index_kb": round(full.index_bytes / 1024, 1),
        "search_index_kb": round(full.search_index_bytes / 1024, 1),
        "site_files": files, "site_mb": round(size / 2**20, 1),
        "placeholders": full.placeholders,
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
         f"budget {BUDGETS['no_change_s']} s; {same.images_encoded} encoded, {same.pages_written} pages written"),
        ("one image changed", f"{one_s:.1f} s", f"{one.images_encoded} encoded, {one.pages_written} pages written"),
        ("largest class page", f"{results['class_page_kb']} KB", f"budget {BUDGETS['class_page_kb']} KB ({full.largest_page})"),
        ("filter index", f"{results['index_kb']} KB", f"budget {BUDGETS['index_kb']} KB"),
        ("Material search index", f"{results['search_index_kb']} KB", ""),
        ("site as deployed", f"{files} files, {results['site_mb']} MB", "synthetic images; hard links from the cache on disk"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>16}  {note}")
    print("full build phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in full.seconds.items()))
    print("no-change phases:  " + ", ".join(f"{k} {v:.1f} s" for k, v in same.seconds.items()))
    print(f"within budget: {results['within_budget']}; written {RESULTS / 'site.json'}")
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if all(results["within_budget"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
