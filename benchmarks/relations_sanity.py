"""Sanity figures of the concept relations on a real CRAFT render (generator/site/relations.py).

For each class of the store, the most important concept (rank 1): is the class itself among the
ALIGNED_TOP classes whose classifier row aligns best with the concept vector? Also the spread of
concept-vector cosines within and across classes (how SIMILARITY_THRESHOLD was chosen). Reads the
classifier rows from the head.npz the render wrote (generator/concept_data.py).

    # --classes: the 50 indices 0, 20, ..., 980 spelled out; stop the render once CRAFT is done
    lens render --models efficientnet-lite0 --classes 0,20,40,...,980 --what craft
        --images ../shared/imagenet-samples --out /tmp/sanity --device cpu
    python benchmarks/relations_sanity.py /tmp/sanity --model efficientnet-lite0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.site.relations import ALIGNED_TOP, SIMILARITY_THRESHOLD, aligned_classes, unit_rows  # noqa: E402


def read_head(store: Path, model: str) -> np.ndarray:
    """The classifier rows the render wrote; linear heads only (aligned classes are their cosines)."""
    path = store / model / "head.npz"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: render CRAFT for {model} first (the render writes it)")
    with np.load(path, allow_pickle=False) as z:
        if str(z["kind"]) != "linear":
            raise SystemExit(f"{model}: the head is not pool + linear; this script handles linear heads only")
        return z["weight"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--model", default="efficientnet-lite0")
    args = ap.parse_args(argv)
    weight = read_head(args.store, args.model)
    hits, n, ranks, vectors, owners = 0, 0, [], [], []
    for meta_path in sorted((args.store / args.model).glob("[0-9][0-9][0-9][0-9]/meta.json")):
        meta = json.loads(meta_path.read_text())
        craft = meta.get("craft") or {}
        concepts = meta.get("concepts") or []
        if craft.get("status") != "done" or not concepts:
            continue
        index = int(meta["class_index"])
        W = np.load(meta_path.parent / craft["files"]["directions"])
        ids = sorted(c["id"] for c in concepts)
        top = min(concepts, key=lambda c: c["rank"])
        v = W[ids.index(top["id"])][None]
        idx, _ = aligned_classes(v, weight, top=1000)
        position = int(np.nonzero(idx[0] == index)[0][0]) + 1
        ranks.append(position)
        hits += position <= ALIGNED_TOP
        n += 1
        vectors.append(W)
        owners += [index] * len(W)
    if not n:
        raise SystemExit(f"no class with CRAFT done in {args.store / args.model}")
    u = unit_rows(np.concatenate(vectors))
    owners_a = np.array(owners)
    sims = u @ u.T
    same = owners_a[:, None] == owners_a[None, :]
    off = ~np.eye(len(u), dtype=bool)
    within, across = sims[same & off], sims[~same]
    print(f"{args.model}: {n} classes; the class itself among the {ALIGNED_TOP} classes aligned with its most important"
          f" concept: {hits}/{n} = {100 * hits / n:.0f} %; median rank of the class {int(np.median(ranks))} of 1000")
    print(f"concept cosines: within a class median {np.median(within):.2f}, across classes median {np.median(across):.2f},"
          f" 99th percentile across {np.percentile(across, 99):.2f}; above the threshold {SIMILARITY_THRESHOLD}:"
          f" {100 * (across >= SIMILARITY_THRESHOLD).mean():.2f} % of cross-class pairs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
