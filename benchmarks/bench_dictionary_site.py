"""The shared concept dictionary's pages at scale (issue 19 §4): build time and weight of a site whose
models each have a dictionary, against the same store without them.

A synthetic store (benchmarks/synthetic_store.py) of N classes x 3 models, each model with a
dictionary of ATOMS atoms (its synthetic atlas: every class's top 5 atoms are shown, so pages ~
min(alive atoms, 5 N)). Times: a cold build (empty site and cache), a no-change rebuild (the
manifest), a rebuild with the manifest forgotten (every page through the page cache), and a rebuild
after one model's atlas changed. Sizes: atom pages, their images, the map data, the largest class page.

    python benchmarks/bench_dictionary_site.py [--classes 100] [--atoms 512]

Prints one JSON object (and writes benchmarks/results/dictionary-site.json). The synthetic images repeat
(8 photo variants), so encoding time is lower than a real store's; bytes per file are realistic.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import synthetic_store  # noqa: E402
from generator.config import load_zoo  # noqa: E402
from generator.site import build_site  # noqa: E402
from generator.store import Store, atlas_record, write_atlas_record  # noqa: E402

RESULTS = HERE / "results"


def _build(store: Path, out: Path, cache: Path) -> tuple[float, object]:
    t = time.perf_counter()
    report = build_site(load_zoo(HERE.parent / "models.yaml"), store, out, progress=False, cache_dir=cache)
    return time.perf_counter() - t, report


def _bytes(folder: Path, suffix: str) -> tuple[int, int]:
    files = [p for p in folder.rglob(f"*{suffix}") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--atoms", type=int, default=512)
    args = ap.parse_args(argv)
    synthetic_store.DICT_ATOMS = args.atoms  # the synthetic dictionary's size (a module setting)
    work = Path(tempfile.mkdtemp(prefix="lens-dict-site-"))
    try:
        result: dict[str, object] = {"classes": args.classes, "models": len(synthetic_store.DEFAULT_MODELS), "atoms": args.atoms}
        for label, dictionary in (("without", False), ("with", True)):
            t = time.perf_counter()
            store = synthetic_store.write_synthetic_store(work / f"store-{label}", args.classes, dictionary=dictionary)
            result[f"store_{label}_s"] = round(time.perf_counter() - t, 1)
            out, cache = work / f"site-{label}", work / f"cache-{label}"
            cold, report = _build(store, out, cache)
            again, _ = _build(store, out, cache)
            shutil.rmtree(cache / "manifest")
            paged, full = _build(store, out, cache)
            result[label] = {"cold_s": round(cold, 1), "no_change_s": round(again, 2), "page_cache_s": round(paged, 1),
                             "largest_class_page_kb": round(report.largest_page_bytes / 1024, 1),
                             "pages_unchanged": full.pages_unchanged + full.dictionary_unchanged}
            if dictionary:
                n_html, html_bytes = _bytes(out / "dictionary", ".html")
                n_img, img_bytes = _bytes(out / "dictionary", ".webp")
                m = synthetic_store.DEFAULT_MODELS[2]
                atlas = atlas_record(Store(store), m)
                atlas.atoms[atlas.shown[0]].frequency = 0.5
                write_atlas_record(Store(store), m, atlas)
                changed, rep = _build(store, out, cache)
                result[label].update({
                    "atom_pages": n_html - len(synthetic_store.DEFAULT_MODELS), "dictionary_html_mb": round(html_bytes / 2**20, 2),
                    "dictionary_images": n_img, "dictionary_images_mb": round(img_bytes / 2**20, 2),
                    "kb_per_atom_page": round((html_bytes + img_bytes) / 1024 / max(1, n_html - 3), 1),
                    "largest_map_kb": round(report.largest_dictionary_map_bytes / 1024, 1),
                    "one_atlas_changed_s": round(changed, 1), "pages_rewritten_after_one_atlas": rep.dictionary_written})
        print(json.dumps(result, indent=1))
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "dictionary-site.json").write_text(json.dumps(result, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
