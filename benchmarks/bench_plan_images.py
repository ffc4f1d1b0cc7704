"""Time the site's image planning (the store's path check on every source, memoised source hashes).

    python benchmarks/synthetic_store.py /tmp/store --classes 300
    python benchmarks/bench_plan_images.py /tmp/store

Plans every (model, class) of STORE as `lens site` does (views built, nothing encoded), once to
memoise the source hashes, then prints the best of three more runs: what remains is the path check
and the memo look-ups, per build.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator import webp  # noqa: E402
from generator.site.images import ImagePlan  # noqa: E402
from generator.site.reading import read_metas  # noqa: E402
from generator.site.views import model_class_view  # noqa: E402
from generator.store import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path)
    args = ap.parse_args()
    store = Store(args.store)
    metas = read_metas(store, store.models(), None)
    cache = Path(tempfile.mkdtemp())

    def plan_all() -> float:
        plan = ImagePlan(webp.WebpCache(cache / "webp"), cache / "memo")
        t = time.perf_counter()
        for (m, i), meta in metas.items():
            model_class_view(m, meta, plan.for_class(store, m, i), i, None)
        return time.perf_counter() - t

    plan_all()  # memoises the source hashes
    best = min(plan_all() for _ in range(3))
    print(f"{len(metas)} (model, class) pairs: plan images {best:.2f} s (best of 3, hashes memoised)")


if __name__ == "__main__":
    main()
