"""The model-wide concept dictionary (TopK SAE, issue 19 §6): quality, faithfulness, stability, time.

    python benchmarks/bench_dictionary.py --model efficientnet-lite0          # ../shared/imagenet-samples
    python benchmarks/bench_dictionary.py --model efficientnet-lite2 --atoms 1024 --epochs 10

The samples hold one photo per class: every photo and its mirror image are used. Every 5th photo
(both views) is held out of training; R², L0, the dead fraction and the reconstruction agreement
(top-1 of the head on reconstructed tokens vs on the real ones) are measured on those. Deletion
runs on every class: the class's top atoms (by share of its logit, over its two views) are removed
from the tokens (z_k D_k subtracted) and the logit drop compared with removing as many random atoms
among those firing on the same view. Stability: a second seed, atoms matched one to one by cosine
(Hungarian), mean matched cosine. Writes JSON and markdown to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator import model_concepts as mc  # noqa: E402
from generator.classes import imagenet_class  # noqa: E402
from generator.config import load_zoo  # noqa: E402
from generator.images import load_class_images  # noqa: E402
from generator.models import load_model  # noqa: E402
from generator.sae import quality, stability, train_sae  # noqa: E402
from generator.tokens import stream_tokens  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SAMPLES = Path("/work/shared/imagenet-samples") if Path("/work/shared/imagenet-samples").is_dir() \
    else ROOT.parent / "shared" / "imagenet-samples"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--images", type=Path, default=SAMPLES)
    p.add_argument("--classes", type=int, default=1000, help="the first N classes' photos")
    p.add_argument("--atoms", type=int)
    p.add_argument("--k", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--tokens-per-image", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seeds", default="0,1", help="the first is measured; the others give stability")
    p.add_argument("--top", type=int, default=5, help="atoms removed per class in the deletion test")
    p.add_argument("--train-tokens", type=int, help="train on a seeded subsample of this many tokens of the sample")
    p.add_argument("--eval-classes", type=int, help="the second pass (agreement, shares, deletion) on the first N photos only")
    p.add_argument("--tag", default=None)
    args = p.parse_args()
    if not args.images.is_dir():
        print(f"no images at {args.images}", file=sys.stderr)
        return 2
    torch.manual_seed(0)  # nothing here should draw from it; set so a stray draw cannot vary between runs
    zoo = load_zoo(ROOT / "models.yaml")
    model = load_model(zoo.model(args.model), zoo.root, "cpu")
    overrides = {k: v for k, v in {"atoms": args.atoms, "k": args.k, "epochs": args.epochs,
                                   "tokens_per_image": args.tokens_per_image, "lr": args.lr,
                                   "batch_size": args.batch_size}.items() if v is not None}
    settings = zoo.dictionary_settings(model.entry, overrides)
    photos, classes = [], []
    for c in range(args.classes):
        found = load_class_images(args.images, imagenet_class(c).wnid)
        if found:
            photos.append(found[0].image)
            classes.append(c)
    held = {i for i in range(len(photos)) if i % 5 == 4}
    train = [im for i, im in enumerate(photos) if i not in held]
    row: dict = {"model": args.model, "photos": len(photos), "train_photos": len(train), "views_per_photo": 2,
                 "threads": torch.get_num_threads(), "settings": settings.model_dump(mode="json")}

    # The token sample is cached under benchmarks/results/ (git-ignored: derived from the samples).
    cache = RESULTS / f"tokens-{args.model}-{len(photos)}-{settings.tokens_per_image}-{settings.seed}.pt"
    t = time.perf_counter()
    if cache.exists():
        tokens, row["token_pass_s"] = torch.load(cache, weights_only=True)
    else:
        tokens = mc.sample_tokens(model, train, settings.tokens_per_image, settings.seed, flips=True)
        row["token_pass_s"] = time.perf_counter() - t
        RESULTS.mkdir(parents=True, exist_ok=True)
        torch.save((tokens, row["token_pass_s"]), cache)
    if args.train_tokens and args.train_tokens < len(tokens):
        tokens = tokens[torch.randperm(len(tokens), generator=torch.Generator().manual_seed(0))[: args.train_tokens]]
    row["train_tokens"] = len(tokens)
    row["channels"] = tokens.shape[1]
    print(f"{len(tokens)} training tokens of {tokens.shape[1]} channels in {row['token_pass_s']:.0f} s", flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    saes = []
    for seed in seeds:
        s = settings.model_copy(update={"seed": seed})
        trained = train_sae(tokens, s, on_epoch=lambda e, loss: print(f"seed {seed} epoch {e}: loss {loss:.4f}", flush=True))
        saes.append(trained.sae)
        row.setdefault("train_s", []).append(trained.seconds)
    sae = saes[0]
    row["stability"] = [stability(sae, other) for other in saes[1:]]
    del tokens

    held_photos = [photos[i] for i in sorted(held)]
    held_tokens = mc.sample_tokens(model, held_photos, 10**9, 0, flips=True)
    q = quality(sae, held_tokens)
    row.update({k: q[k] for k in ("r2", "l0", "dead_fraction")})
    row["frequency_quantiles"] = torch.quantile(torch.tensor(q["frequency"]), torch.tensor([0.5, 0.9, 0.99])).tolist()
    del held_tokens

    n_eval = args.eval_classes or len(photos)
    row["eval_photos"] = n_eval
    row.update(evaluate(model, sae, photos[:n_eval], classes[:n_eval], held, args.top))
    row["flops_per_token"] = 6 * 2 * row["channels"] * settings.atoms  # encoder + decoder matmuls, forward + backward
    tag = args.tag or f"dictionary-{args.model}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{tag}.json").write_text(json.dumps(row, indent=1))
    print(json.dumps({k: v for k, v in row.items() if k not in ("settings",)}, indent=1))
    return 0


def evaluate(model, sae, photos, classes, held, top: int) -> dict:
    """Second streamed pass: agreement on held-out views, shares and deletion on every class."""
    agree, total, wins, compared, exact_err = 0, 0, 0, 0, 0.0
    shares_bias, shares_residual, shares_top = [], [], []
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for part in stream_tokens(model, photos, batch=32, flips=True):
        photo_of = [i // 2 for i in part.indices]
        rows = [j for j, i in enumerate(photo_of) if i in held]
        if rows:
            r = mc.reconstruction(model, sae, part.tokens[rows])
            agree += int((r["top1"] == r["top1_rebuilt"]).sum())
            total += len(rows)
        for j in range(0, len(part.indices), 2):  # a photo's two views are consecutive in a batch of even size
            c = classes[photo_of[j]]
            terms = [mc.head_terms(model, sae, part.tokens[j + v], c) for v in (0, 1)]
            if j == 0:  # the split adds up to the model's own logit (checked once per batch)
                logit = float(model.h(mc.as_layer(model, part.tokens[j : j + 1]))[0, c])
                exact_err = max(exact_err, abs(terms[0].logit - logit))
            shares = mc.class_shares(terms)
            atoms = torch.tensor(shares["atoms"])
            best = torch.argsort(atoms, descending=True)[:top].tolist()
            shares_bias.append(shares["bias"])
            shares_residual.append(shares["residual"])
            shares_top.append(float(atoms[best].sum()))
            drops = [mc.deletion_drops(model, sae, part.tokens[j + v], c, best, gen) for v in (0, 1)]
            top_drop = sum(d[0] for d in drops) / 2
            random_drop = sum(d[1] for d in drops) / 2
            if not math.isnan(random_drop):
                compared += 1
                wins += top_drop > random_drop
    return {"reconstruction_agreement": agree / max(total, 1), "held_views": total,
            "deletion_top_beats_random": wins / max(compared, 1), "deletion_classes": compared,
            "mean_share_top_atoms_pct": sum(shares_top) / len(shares_top),
            "mean_share_bias_pct": sum(shares_bias) / len(shares_bias),
            "mean_share_residual_pct": sum(shares_residual) / len(shares_residual),
            "max_abs_split_error": exact_err, "evaluate_s": time.perf_counter() - t}


if __name__ == "__main__":
    raise SystemExit(main())
