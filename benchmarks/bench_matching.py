"""The same concept in two models (issue 19 §5): how often lite0's and lite2's atoms match, on the samples.

    python benchmarks/bench_dictionary.py --model efficientnet-lite0 --augment 2 --seeds 0,1 --tag dictionary-lite0-aug
    python benchmarks/bench_dictionary.py --model efficientnet-lite2 --augment 2 --seeds 0 --tag dictionary-lite2-aug
    python benchmarks/bench_matching.py --a efficientnet-lite0:dictionary-lite0-aug:0 \\
        --b efficientnet-lite2:dictionary-lite2-aug:0 --same efficientnet-lite0:dictionary-lite0-aug:1

The dictionaries come from bench_dictionary.py (`benchmarks/results/sae-<tag>-s<seed>.pt`), trained
on the same photos (every photo of ../shared/imagenet-samples but every 5th, the same seeded crops
and mirrors for both models). Both encode the same held-out views, which no dictionary saw (every
5th photo and its mirror), as `codes.<h>.npz` holds them (each token's top-k codes), and
`generator.matching.match_codes` matches them on the common grid. `--same` is the sanity check:
the first dictionary against one of the same model trained with another seed, which should match
more than two models do. Writes benchmarks/results/matching-<A>--<B>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_dictionary import RESULTS, SAMPLES, held_out, held_tokens, load_sae, load_samples  # noqa: E402
from generator import matching  # noqa: E402
from generator.classes import imagenet_class  # noqa: E402
from generator.config import load_zoo  # noqa: E402
from generator.dictionary_atlas import code_arrays  # noqa: E402
from generator.models import load_model  # noqa: E402
from generator.sae import TopKSAE, encode_batched  # noqa: E402
from generator.tokens import token_grid  # noqa: E402


def top_codes(sae: TopKSAE, views: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each token's top-k atoms and codes, (views, T, k) int16 / float16, as codes.<h>.npz stores them."""
    z = encode_batched(sae, views.reshape(-1, views.shape[-1]))
    values, indices = z.topk(sae.k, dim=-1)
    shape = (*views.shape[:2], sae.k)
    return code_arrays(indices.reshape(shape), values.reshape(shape))


def codes_of(spec: str, zoo, held_photos, sources: list[str]) -> tuple[dict, int, str]:
    """MODEL:TAG:SEED -> the held-out views' codes (the npz layout), the atom count and a label."""
    name, tag, seed = spec.split(":")
    model = load_model(zoo.model(name), zoo.root, "cpu")
    sae, settings = load_sae(RESULTS / f"sae-{tag}-s{seed}.pt")
    views = held_tokens(model, name, held_photos)
    indices, values = top_codes(sae, views)
    return ({"sources": np.array(sources), "grid": np.array(token_grid(model)), "indices": indices,
             "values": values}, settings.atoms, f"{name} ({tag}, seed {seed})")


def report(found: matching.Matches, a: dict, b: dict, atoms_a: int, common, n_views: int, seed: int) -> dict:
    """The figures of one pair: threshold, how many atoms match, mutual rate, score and null distributions."""
    cells = common[0] * common[1]
    fired_a = np.zeros(atoms_a, bool)
    fired_a[np.unique(a["indices"][a["values"] > 0])] = True
    scores = found.a_to_b.score[fired_a]
    ma = matching.code_maps(a["indices"], a["values"], a["grid"], atoms_a, common)
    mb = matching.code_maps(b["indices"], b["values"], b["grid"], int(b["indices"].max()) + 1, common)
    null = matching.null_scores(ma, mb, cells, seed)
    q = [0.1, 0.5, 0.9, 0.99]
    matched = scores >= found.threshold
    return {"views": n_views, "common_grid": list(common), "threshold": found.threshold,
            "atoms_a": atoms_a, "atoms_a_firing": int(fired_a.sum()), "atoms_a_matched": int(matched.sum()),
            "atoms_b_matched": len(found.entries("b_to_a")),
            "mutual_rate": found.mutual_rate, "mutual_pairs": int((found.a_to_b.mutual & (found.a_to_b.score >= found.threshold)).sum()),
            "score_quantiles": dict(zip(map(str, q), np.quantile(scores, q).round(3).tolist())),
            "null_quantiles": dict(zip(map(str, q), np.quantile(null, q).round(3).tolist())),
            "score_histogram": np.histogram(scores, bins=10, range=(0, 1))[0].tolist(),
            "null_histogram": np.histogram(null, bins=10, range=(0, 1))[0].tolist()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="MODEL:TAG:SEED of bench_dictionary.py's saved dictionary")
    p.add_argument("--b", required=True, help="the other model's, MODEL:TAG:SEED")
    p.add_argument("--same", help="the sanity check: the first model's dictionary of another seed, MODEL:TAG:SEED")
    p.add_argument("--images", type=Path, default=SAMPLES)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="the null's permutation")
    args = p.parse_args()
    zoo = load_zoo(ROOT / "models.yaml")
    photos, classes = load_samples(args.images, args.classes)
    held = sorted(held_out(len(photos)))
    held_photos = [photos[i] for i in held]
    sources = [f"{imagenet_class(classes[i]).wnid}{view}" for i in held for view in ("", "#flip")]
    a, atoms_a, label_a = codes_of(args.a, zoo, held_photos, sources)
    rows = {}
    for spec in filter(None, [args.b, args.same]):
        b, atoms_b, label_b = codes_of(spec, zoo, held_photos, sources)
        t = time.perf_counter()
        found, common, n = matching.match_codes(a, b, atoms_a, atoms_b, seed=args.seed)
        row = report(found, a, b, atoms_a, common, n, args.seed)
        row["match_s"] = time.perf_counter() - t
        rows[f"{label_a} vs {label_b}"] = row
        print(f"{label_a} vs {label_b}: " + json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"matching-{args.a.replace(':', '_')}--{args.b.replace(':', '_')}.json"
    out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
