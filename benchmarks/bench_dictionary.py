"""The model-wide concept dictionary (TopK SAE, issue 19 §6): quality, faithfulness, stability, time.

    python benchmarks/bench_dictionary.py --model efficientnet-lite0          # ../shared/imagenet-samples
    python benchmarks/bench_dictionary.py --model efficientnet-lite2 --atoms 1024 --epochs 10
    python benchmarks/bench_dictionary.py --model efficientnet-lite0 --augment 2 --atoms 1024 --k 64 --epochs 3

The samples hold one photo per class: every photo and its mirror image are used. Every 5th photo
(both views) is held out of training entirely; R², L0, the dead fraction and the reconstruction
agreement (top-1 of the head on reconstructed tokens vs on the real ones) are measured on those.
`--augment N` adds, for each training photo, N seeded random resized crops (`augmented`), each
with its mirror as well: 2 (N + 1) views per training photo; held-out photos get no crops.
Deletion runs on every class: the class's top atoms (by share of its logit, over its two views)
are removed from the tokens (z_k D_k subtracted) and the logit drop compared with removing as
many random atoms among those firing on the same view. Stability: a second seed, atoms matched
one to one by cosine (Hungarian), mean matched cosine. Writes JSON to benchmarks/results/, and
each seed's trained dictionary (`sae-<tag>-s<seed>.pt`, for bench_matching.py).

Token caches and dictionaries under benchmarks/results/ are derived from the samples: git-ignored,
never committed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator import model_concepts as mc  # noqa: E402
from generator.classes import imagenet_class  # noqa: E402
from generator.config import DictionarySettings, load_zoo  # noqa: E402
from generator.images import load_class_images  # noqa: E402
from generator.models import load_model  # noqa: E402
from generator.sae import TopKSAE, quality, stability, train_sae  # noqa: E402
from generator.tokens import stream_tokens  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SAMPLES = Path("/work/shared/imagenet-samples") if Path("/work/shared/imagenet-samples").is_dir() \
    else ROOT.parent / "shared" / "imagenet-samples"


def load_samples(folder: Path, n_classes: int) -> tuple[list[Image.Image], list[int]]:
    """The first photo of each of the first `n_classes` classes found in an ImageNet-layout folder."""
    photos, classes = [], []
    for c in range(n_classes):
        found = load_class_images(folder, imagenet_class(c).wnid)
        if found:
            photos.append(found[0].image)
            classes.append(c)
    return photos, classes


def held_out(n_photos: int) -> set[int]:
    """Every 5th photo: kept out of training (and of augmentation) entirely."""
    return {i for i in range(n_photos) if i % 5 == 4}


def random_crop_box(width: int, height: int, gen: torch.Generator, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)):
    """A RandomResizedCrop box (Szegedy et al.'s recipe, as torchvision draws it) from a seeded generator.

    Hand-written because torchvision's `RandomResizedCrop.get_params` draws from the global RNG,
    which a per-photo seed cannot drive. Falls back to the whole photo after 10 failed draws.
    """
    area = width * height
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(*scale, generator=gen))
        log_r = torch.empty(1).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
        aspect = math.exp(float(log_r))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            x = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            y = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            return (x, y, x + w, y + h)
    return (0, 0, width, height)


def augmented(photos: Sequence[Image.Image], crops: int, seed: int) -> Iterator[Image.Image]:
    """Each photo, then `crops` random resized crops of it, drawn by a generator seeded by (seed, photo).

    The model's own evaluation transform then rescales each crop to its input size, so a crop is a
    zoom into part of the photo. Lazy: only one photo's crops are in memory at a time. The same
    photos and seed give the same crops for every model (the boxes depend on the photo, not the model).
    """
    for i, photo in enumerate(photos):
        yield photo
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        for _ in range(crops):
            yield photo.crop(random_crop_box(photo.width, photo.height, gen))


def training_tokens(model, name: str, train: Sequence[Image.Image], settings: DictionarySettings,
                    crops: int) -> tuple[torch.Tensor, float]:
    """The training sample (float16, cached under benchmarks/results/) and the seconds its pass took."""
    cache = RESULTS / f"tokens-{name}-{len(train)}-{settings.tokens_per_image}-{settings.seed}-aug{crops}.pt"
    if cache.exists():
        return torch.load(cache, weights_only=True)
    t = time.perf_counter()
    views = augmented(train, crops, settings.seed) if crops else train
    tokens = mc.sample_tokens(model, views, settings.tokens_per_image, settings.seed, flips=True).half()
    seconds = time.perf_counter() - t
    RESULTS.mkdir(parents=True, exist_ok=True)
    torch.save((tokens, seconds), cache)
    return tokens, seconds


def held_tokens(model, name: str, photos: Sequence[Image.Image]) -> torch.Tensor:
    """Every token of `photos` and their mirrors: (views, T, C) float32, view 2i the photo, 2i+1 its mirror (cached by `name`)."""
    cache = RESULTS / f"held-{name}-{len(photos)}.pt"
    if cache.exists():
        return torch.load(cache, weights_only=True)
    out = torch.cat([part.tokens.cpu() for part in stream_tokens(model, photos, batch=32, flips=True)])
    RESULTS.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


def save_sae(sae: TopKSAE, settings: DictionarySettings, path: Path) -> None:
    torch.save({"settings": settings.model_dump(mode="json"), "model": sae.state_dict()}, path)


def load_sae(path: Path) -> tuple[TopKSAE, DictionarySettings]:
    """A dictionary written by `save_sae` (weights_only: plain tensors and JSON values)."""
    state = torch.load(path, weights_only=True)
    settings = DictionarySettings(**state["settings"])
    channels = state["model"]["D"].shape[1]
    sae = TopKSAE(channels, settings.atoms, settings.k, torch.Generator().manual_seed(0), torch.zeros(channels))
    sae.load_state_dict(state["model"])
    return sae.eval(), settings


def agreement(model, sae: TopKSAE, held: torch.Tensor, batch: int = 32) -> tuple[int, int]:
    """Views (of `held`, (views, T, C)) whose head top-1 on the reconstruction equals that on the tokens."""
    agree = 0
    for i in range(0, len(held), batch):
        r = mc.reconstruction(model, sae, held[i : i + batch])
        agree += int((r["top1"] == r["top1_rebuilt"]).sum())
    return agree, len(held)


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
    p.add_argument("--augment", type=int, default=0, metavar="N",
                   help="N seeded random resized crops per training photo (each with its mirror)")
    p.add_argument("--seeds", default="0,1", help="the first is measured; the others give stability")
    p.add_argument("--top", type=int, default=5, help="atoms removed per class in the deletion test")
    p.add_argument("--train-tokens", type=int, help="train on a seeded subsample of this many tokens of the sample")
    p.add_argument("--eval-classes", type=int, help="the second pass (shares, deletion) on the first N photos only (0: none)")
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
    photos, classes = load_samples(args.images, args.classes)
    held = held_out(len(photos))
    train = [im for i, im in enumerate(photos) if i not in held]
    tag = args.tag or f"dictionary-{args.model}"
    row: dict = {"model": args.model, "photos": len(photos), "train_photos": len(train), "augment_crops": args.augment,
                 "views_per_train_photo": 2 * (args.augment + 1), "threads": torch.get_num_threads(),
                 "settings": settings.model_dump(mode="json")}

    tokens, row["token_pass_s"] = training_tokens(model, args.model, train, settings, args.augment)
    if args.train_tokens and args.train_tokens < len(tokens):
        tokens = tokens[torch.randperm(len(tokens), generator=torch.Generator().manual_seed(0))[: args.train_tokens]]
    row["train_tokens"] = len(tokens)
    row["channels"] = tokens.shape[1]
    print(f"{len(tokens)} training tokens of {tokens.shape[1]} channels in {row['token_pass_s']:.0f} s", flush=True)
    saes = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        s = settings.model_copy(update={"seed": seed})
        trained = train_sae(tokens, s, on_epoch=lambda e, loss: print(f"seed {seed} epoch {e}: loss {loss:.4f}", flush=True))
        saes.append(trained.sae)
        row.setdefault("train_s", []).append(trained.seconds)
        RESULTS.mkdir(parents=True, exist_ok=True)
        save_sae(trained.sae, s, RESULTS / f"sae-{tag}-s{seed}.pt")
    sae = saes[0]
    row["stability"] = [stability(sae, other) for other in saes[1:]]
    row["train_r2"] = quality(sae, tokens[torch.randperm(len(tokens), generator=torch.Generator().manual_seed(1))[:20_000]])["r2"]
    del tokens

    held_photos = [photos[i] for i in sorted(held)]
    held_views = held_tokens(model, args.model, held_photos)
    q = quality(sae, held_views.reshape(-1, held_views.shape[-1]))
    row.update({k: q[k] for k in ("r2", "l0", "dead_fraction")})
    row["frequency_quantiles"] = torch.quantile(torch.tensor(q["frequency"]), torch.tensor([0.5, 0.9, 0.99])).tolist()
    agree, total = agreement(model, sae, held_views)
    row.update({"reconstruction_agreement": agree / max(total, 1), "held_views": total})
    del held_views
    # In sample: the first 200 training photos (and mirrors), whole, as the gallery's dictionary explains
    # the photos it saw; held-out photos are of classes no training photo shows (one photo per class).
    seen = held_tokens(model, f"{args.model}-insample", train[:200])
    agree_in, total_in = agreement(model, sae, seen)
    row.update({"insample_r2": quality(sae, seen.reshape(-1, seen.shape[-1]))["r2"],
                "insample_agreement": agree_in / max(total_in, 1), "insample_views": total_in})
    print(f"held out: R² {row['r2']:.3f}, agreement {agree}/{total}; in sample: R² {row['insample_r2']:.3f}, "
          f"agreement {agree_in}/{total_in} (training tokens' R² {row['train_r2']:.3f})", flush=True)
    del seen

    n_eval = len(photos) if args.eval_classes is None else args.eval_classes
    row["eval_photos"] = n_eval
    if n_eval:
        row.update(evaluate(model, sae, photos[:n_eval], classes[:n_eval], args.top))
    row["flops_per_token"] = 6 * 2 * row["channels"] * settings.atoms  # encoder + decoder matmuls, forward + backward
    (RESULTS / f"{tag}.json").write_text(json.dumps(row, indent=1))
    print(json.dumps({k: v for k, v in row.items() if k not in ("settings",)}, indent=1))
    return 0


def evaluate(model, sae, photos, classes, top: int) -> dict:
    """Second streamed pass: shares and deletion on every class (its photo and mirror)."""
    wins, compared, exact_err = 0, 0, 0.0
    shares_bias, shares_residual, shares_top = [], [], []
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for part in stream_tokens(model, photos, batch=32, flips=True):
        photo_of = [i // 2 for i in part.indices]
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
    return {"deletion_top_beats_random": wins / max(compared, 1), "deletion_classes": compared,
            "mean_share_top_atoms_pct": sum(shares_top) / len(shares_top),
            "mean_share_bias_pct": sum(shares_bias) / len(shares_bias),
            "mean_share_residual_pct": sum(shares_residual) / len(shares_residual),
            "max_abs_split_error": exact_err, "evaluate_s": time.perf_counter() - t}


if __name__ == "__main__":
    raise SystemExit(main())
