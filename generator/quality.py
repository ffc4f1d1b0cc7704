"""Quality figures of class visualizations, stored in meta.json (`maco.quality`) and model.json.

- self: probability and rank of the class under the rendering model;
- transfer: rank of the class under every other judge;
- plausibility: in another judge's penultimate feature space, cosine similarity of the
  visualization to real images of its class minus that to real images of other classes;
- accuracy: top-1 of each judge on the reference images (ImageNet-layout folders only).

At scale: only the selected models and classes are scored; a unit already scored by the same
judges with the same settings (`Quality.key`) is skipped, so a re-run does nothing; the reference
embeddings of each (judge, images folder) are cached in `<store>/.cache/quality/`; judges are the
`--judges` models (of the zoo, or packaged), by default the packaged models (efficientnet-lite0/1/2,
whose weights ship with the package), whether or not the zoo lists them: a user's own models are
judges only when named; progress shows as a bar, or under `--no-progress` as the render's periodic
lines (reference images embedded, then scores); each judge sees images at its own input size and normalisation; a judge that cannot be
loaded is skipped with a warning (and exit code 1), the others go on.

Reference images are the configured ImageNet-layout folder, else the demo photos labelled by the
class the judge predicts for them.

What a person sees (issue 22), for the quality study (benchmarks/study_quality.py; not stored):
`color_statistics` (mean blue minus red, mean saturation) and `blockiness` (long axis-aligned
edges) of a finished render, and `plausibility_ranks` (the class's rank by its nearest photo).
"""

from __future__ import annotations

import hashlib
import io
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .classes import imagenet_class
from .config import ModelEntry, Zoo, load_zoo, settings_hash
from .craft import make_views
from .images import SourceImage, class_image_paths, demo_photos, load_rgb
from .maco import classify, render_inputs
from .models import LoadedModel, load_model, resolve_device
from .records import Meta, ModelCard, Quality, Unit
from .store import Store, atomic_write_bytes

log = logging.getLogger("lens")

# A render shown to a judge: the one conversion MACO's self rank uses too (maco.render_inputs);
# the name stays for callers of `quality.model_inputs` (benchmarks).
model_inputs = render_inputs
QUALITY_VERSION = 1  # bump when a change of code changes the scores
CHUNK = 64  # images per forward pass and per read of renders

REFERENCE_PER_CLASS = 4  # real images per class used for plausibility (and accuracy)


@dataclass
class Reference:
    """Real images with labels (or the demo photos, labelled by each judge's prediction)."""

    paths: list[Path | None]  # None for demo photos
    labels: list[int]
    labelled_by_folder: bool  # True: labels are ground truth (accuracy is meaningful)
    signature: str  # which files: part of the cache key
    _demo: list[SourceImage] | None = None

    def images(self, start: int, stop: int) -> list[tuple[int, SourceImage]]:
        """(index, image) of the readable images among [start, stop); unreadable files are warned about and left out."""
        if self._demo is not None:
            return list(enumerate(self._demo))[start:stop]
        out = []
        for i, (p, c) in enumerate(zip(self.paths[start:stop], self.labels[start:stop]), start=start):
            im = load_rgb(p)  # type: ignore[arg-type]
            if im is not None:
                out.append((i, SourceImage(f"{imagenet_class(c).wnid}/{p.name}", im)))  # type: ignore[union-attr]
        return out

    def __len__(self) -> int:
        return len(self.paths)


def reference_images(images_dir: Path | None, classes: Sequence[int] = (), per_class: int = REFERENCE_PER_CLASS) -> Reference:
    """Real images of every class found in the folder (not only the rendered ones, for the contrast).
    Only listed here; pixels are read when a judge needs them (not at all when its embeddings are cached)."""
    if images_dir is None:
        photos = demo_photos()
        return Reference([None] * len(photos), [], False, "demo-photos", photos)
    paths, labels, listing = [], [], []
    for c in range(1000):
        for p in class_image_paths(images_dir, imagenet_class(c).wnid)[:per_class]:
            paths.append(p)
            labels.append(c)
            listing.append(f"{p.parent.name}/{p.name}:{p.stat().st_size}")
    digest = hashlib.sha256("\n".join(listing).encode()).hexdigest()[:16]
    return Reference(paths, labels, True, f"{images_dir.resolve()}:{digest}")


@dataclass
class JudgeReference:
    """One judge's view of the reference images: unit-norm features and its top-1 predictions."""

    features: torch.Tensor
    predicted: list[int]
    kept: list[int]  # indices into the Reference of the images that could be read


def embed_reference(judge: LoadedModel, reference: Reference, cache: Path | None, judge_key: str,
                    advance: Callable[[float], object] = lambda n: None) -> JudgeReference:
    """Features and predictions of the reference images under a judge, cached per (judge, images folder).
    `advance(k)` is called as the images are embedded (all at once when cached), for progress."""
    key = settings_hash("quality-reference", QUALITY_VERSION, judge_key, reference.signature)
    path = cache / f"{judge.name}-{key}.npz" if cache is not None else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                found = JudgeReference(torch.from_numpy(z["features"]).to(judge.device), z["predicted"].tolist(), z["kept"].tolist())
            advance(len(reference))
            return found
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable reference cache %s", path)
    feats, predicted, kept = [], [], []
    for i in range(0, len(reference), CHUNK):
        chunk = reference.images(i, i + CHUNK)
        if not chunk:
            advance(min(CHUNK, len(reference) - i))
            continue
        _, x = make_views([im for _, im in chunk], judge)
        with torch.no_grad():
            predicted += judge.logits(x).argmax(-1).tolist()
        feats.append(penultimate(judge, x))
        kept += [j for j, _ in chunk]
        advance(min(CHUNK, len(reference) - i))
    features = torch.cat(feats) if feats else torch.zeros(0)
    if path is not None:
        buf = io.BytesIO()
        np.savez(buf, features=features.cpu().numpy(), predicted=np.asarray(predicted, dtype=np.int64),
                 kept=np.asarray(kept, dtype=np.int64))
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as e:  # a read-only store: the scores can still be computed, only not cached
            log.warning("cannot cache reference embeddings in %s: %s", path.parent, e)
    return JudgeReference(features, predicted, kept)


@torch.no_grad()
def penultimate(model: LoadedModel, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Unit-norm pre-logit features (timm's forward_head(pre_logits=True))."""
    feats = []
    for i in range(0, len(x), batch):
        f = model.module.forward_head(model.module.forward_features(x[i : i + batch]), pre_logits=True)
        feats.append(torch.nn.functional.normalize(f.float().flatten(1), dim=-1))
    return torch.cat(feats) if feats else torch.zeros(0)


def plausibility(viz_features: torch.Tensor, viz_classes: Sequence[int], ref_features: torch.Tensor,
                 ref_labels: Sequence[int]) -> list[dict | None]:
    """Mean cosine to real images of the class, to real images of other classes, and the margin;
    None for a class with no reference image of its own or of other classes (none at all included)."""
    if len(ref_features) == 0:
        return [None] * len(viz_classes)
    labels = torch.tensor(list(ref_labels))
    sims = viz_features @ ref_features.T
    out = []
    for i, c in enumerate(viz_classes):
        same, other = sims[i][labels == c], sims[i][labels != c]
        if len(same) == 0 or len(other) == 0:
            out.append(None)
            continue
        out.append({"same_class": float(same.mean()), "other_classes": float(other.mean()),
                    "margin": float(same.mean() - other.mean())})
    return out


def plausibility_ranks(viz_features: torch.Tensor, viz_classes: Sequence[int], ref_features: torch.Tensor,
                       ref_labels: Sequence[int]) -> list[int | None]:
    """Rank (1 = top) of each visualization's class among the reference classes, ordered by their nearest reference
    image (cosine): 1 when the photo nearest to the render is of its class. None where the class has no reference."""
    labels = torch.tensor(list(ref_labels))
    classes = labels.unique()
    sims = viz_features @ ref_features.T  # (V, R)
    nearest = torch.full((len(viz_classes), len(classes)), -2.0).scatter_reduce(
        1, torch.searchsorted(classes, labels).expand(len(viz_classes), -1), sims, reduce="amax")  # (V, classes)
    out: list[int | None] = []
    for i, c in enumerate(viz_classes):
        hit = (classes == c).nonzero()
        out.append(None if len(hit) == 0 else int(1 + (nearest[i] > nearest[i, hit[0, 0]]).sum()))
    return out


# ----------------------------------------------------------------------------- image statistics (issue 22)


def color_statistics(image: np.ndarray) -> tuple[float, float]:
    """(mean blue minus red, mean HSV saturation) of an (H, W, 3) uint8 image, both in 0-255 units.

    Photos are warm (ImageNet: blue minus red about -19) and coloured; a grey haze shows as values near 0 and a low
    saturation."""
    rgb = np.asarray(image, dtype=np.float64)
    saturation = np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("HSV"), dtype=np.float64)[..., 1]
    return float((rgb[..., 2] - rgb[..., 0]).mean()), float(saturation.mean())


BLOCKINESS_SIDE = 256  # images are compared at one side, so the figure does not depend on the render's size


def blockiness(image: np.ndarray) -> float:
    """Excess of long axis-aligned edges: log10 of the mean power on the horizontal and vertical frequency axes over
    that of the 1-3 cycles beside them, at 32-128 cycles per image, in the Hann-windowed luminance at 256 px (the
    window keeps the image's own borders off the axes).

    A straight edge across the image puts its energy exactly on an axis; the rectangular blocks and window-frame
    streaks of issue 22 are made of such edges, where photos, even of buildings, have few long ones at fine scales.
    ImageNet photos: median about 0, interquartile range about -0.04 to 0.07; renders before issue 22: 0.26 to 0.33.
    (Tried and rejected: the share of gradient energy on axis-aligned edges; the same ratio over 1-cycle-wide axes
    or at 8-96 cycles, where photos of man-made things overlap the renders: benchmarks/README.md, issue 22.)"""
    side = BLOCKINESS_SIDE
    grey = np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("L").resize((side, side), Image.Resampling.BICUBIC),
                      dtype=np.float64)
    window = np.hanning(side)
    power = np.abs(np.fft.fft2((grey - grey.mean()) * np.outer(window, window))) ** 2
    f = np.abs(np.fft.fftfreq(side) * side)
    fy, fx = f[:, None], f[None, :]
    ring = (np.maximum(fx, fy) >= 32) & (np.maximum(fx, fy) <= 128)
    on_axis = ring & ((fx == 0) | (fy == 0))
    beside = ring & (((fx >= 1) & (fx <= 3)) | ((fy >= 1) & (fy <= 3)))
    return float(np.log10(power[on_axis].mean() / max(power[beside].mean(), 1e-12)))


def packaged_zoo() -> Zoo:
    """The embedded default zoo, whose models' weights ship inside installed packages."""
    from .resources import default_zoo_path

    return load_zoo(default_zoo_path())


def default_judges(zoo: Zoo) -> list[str]:
    """The packaged models (weights shipped inside a package: efficientnet-lite0/1/2), whether or not
    `zoo` lists them; a user's own models are judges only when `--judges` names them."""
    return [m.name for m in packaged_zoo().models.values() if m.weights.package]


def judge_entry(zoo: Zoo, name: str) -> ModelEntry:
    """A judge by name: the zoo's model of that name, else the packaged one; else the zoo's one-line error."""
    if name in zoo.models:
        return zoo.models[name]
    packaged = packaged_zoo()
    return packaged.models[name] if name in packaged.models else zoo.model(name)


def judge_identity(entry: ModelEntry) -> dict:
    """What a judge's scores depend on: the model's identity, whatever its concept layer."""
    return {k: v for k, v in entry.identity().items() if k != "concept_layer"}


def quality_key(zoo: Zoo, judges: Sequence[str], images_signature: str, render_hash: str) -> str:
    """What a score depends on: the judges (in order, which sets plausibility's), their identity,
    the reference images and the render's own settings."""
    identities = [judge_identity(judge_entry(zoo, j)) for j in judges]
    return settings_hash("quality", QUALITY_VERSION, list(judges), identities, images_signature, REFERENCE_PER_CLASS, render_hash)


def _plausibility_judge(model: str, judges: list[str]) -> str | None:
    """Plausibility is judged in another model's space: the judge after the model in the list, else the first other."""
    others = [j for j in judges if j != model]
    if not others:
        return None
    if model in judges:
        return judges[(judges.index(model) + 1) % len(judges)]
    return others[0]


def run_quality(zoo: Zoo, out: Path, models: list[str], classes: list[int], images_dir: Path | None,
                device: str = "auto", progress: bool = True, judges: list[str] | None = None) -> int:
    """Score the finished class visualizations of the selected models and classes that are not yet
    scored with these judges and settings. Returns 0, or 1 if a judge could not be loaded."""
    store = Store(out)
    dev = resolve_device(device)
    judges = list(dict.fromkeys(judges or default_judges(zoo)))
    entries = {j: judge_entry(zoo, j) for j in judges}  # unknown names fail here, in one line
    reference = reference_images(images_dir, classes)
    todo, keys = _unscored(store, zoo, models, classes, judges, reference.signature)
    for problem in store.problems:
        print(f"lens: {problem}")
    n = sum(len(v) for v in todo.values())
    if not n:
        log.info("quality: nothing to score (every selected render is scored with these judges and settings)")
        return 0
    scores: dict[str, dict[int, dict]] = {name: {m.class_index: {"transfer": {}} for m in metas} for name, metas in todo.items()}
    cache = store.root / ".cache" / "quality"
    code = 0
    unreadable: set[tuple[str, int]] = set()
    print(f"lens: quality: {n} class visualizations of {len(todo)} models, judges {', '.join(judges)} "
          f"(each embeds {len(reference)} reference images once, then cached)", file=sys.stderr)
    per_judge = n + len(reference)
    bar = _progress_bar(progress, per_judge * len(judges))
    try:
        for judge_name in judges:
            entry = entries[judge_name]
            try:  # judges need no concept layer
                judge = load_model(entry.model_copy(update={"concept_layer": "features"}), zoo.root, dev)
            except Exception as e:  # noqa: BLE001 - one unusable judge must not stop the others
                log.warning("quality: judge '%s' skipped: %s", judge_name, str(e).splitlines()[0] if str(e) else type(e).__name__)
                code = 1
                bar.update(per_judge)
                continue
            ref = embed_reference(judge, reference, cache, settings_hash(judge_identity(entry)), advance=bar.update)
            labels = [reference.labels[i] for i in ref.kept] if reference.labelled_by_folder else ref.predicted
            if reference.labelled_by_folder and labels:
                _write_accuracy(store, judge_name, ref.predicted, labels, str(images_dir))
            for name, metas in todo.items():
                plaus = (ref.features, labels) if _plausibility_judge(name, judges) == judge_name else None
                _judge_renders(judge, judge_name, name, metas, store, scores[name], unreadable, plaus, bar)
            del judge
    finally:
        bar.close()
    scored = 0  # visualizations some judge scored: not the unreadable ones, none when every judge was skipped
    for name, by_class in scores.items():
        for c, sc in by_class.items():
            if (name, c) in unreadable:  # never scored: left as it was, tried again next run
                continue
            _store_scores(store, name, c, {**sc, "key": keys[name, c] if code == 0 else None})
            scored += bool(sc["transfer"]) or len(sc) > 1
    print(f"lens: quality: scored {scored} class visualizations of {len(todo)} models with judges {', '.join(judges)}"
          + ("" if code == 0 else " (a judge was skipped: these scores count as not done and are scored again next run)"))
    return code


def _unscored(store: Store, zoo: Zoo, models: list[str], classes: list[int], judges: list[str],
              signature: str) -> tuple[dict[str, list[Meta]], dict[tuple[str, int], str]]:
    """The finished class visualizations not yet scored with these judges and settings, per model,
    and the quality key each is to be scored under."""
    todo: dict[str, list[Meta]] = {}
    keys: dict[tuple[str, int], str] = {}
    for name in models:
        for meta in store.iter_meta_records(name, classes, repair=False):  # `lens render` alone moves files aside
            rec = meta.maco
            if rec is None or not rec.done or store.missing_files(meta, Unit(name, meta.class_index, "maco")):
                continue
            key = quality_key(zoo, judges, signature, rec.settings_hash)
            if rec.quality is not None and rec.quality.key == key:
                continue  # scored by the same judges with the same settings
            keys[name, meta.class_index] = key
            todo.setdefault(name, []).append(meta)
    return todo, keys


def _judge_renders(judge: LoadedModel, judge_name: str, name: str, metas: list[Meta], store: Store, scores: dict[int, dict],
                   unreadable: set[tuple[str, int]], plaus: tuple[torch.Tensor, list] | None, bar: Any) -> None:
    """One judge's scores of one model's renders, CHUNK pictures at a time, into `scores` (by class):
    self rank and probability where the judge is the model, else transfer; plausibility where `plaus`
    holds the judge's (reference features, labels)."""
    for i in range(0, len(metas), CHUNK):
        loaded = [(m, _stored_picture(store, m, unreadable)) for m in metas[i : i + CHUNK]]
        bar.update(len(loaded))
        cls = [m.class_index for m, p in loaded if p is not None]
        pictures = [p for _, p in loaded if p is not None]
        if not pictures:
            continue
        with torch.no_grad():
            probs, ranks = classify(judge, pictures, cls)
        for c, p, r in zip(cls, probs, ranks):
            if judge_name == name:
                scores[c].update(self_prob=p, self_rank=r)
            else:
                scores[c]["transfer"][judge_name] = {"rank": r, "prob": p}
        if plaus is not None:
            feats = penultimate(judge, model_inputs(judge, pictures))
            for c, pl in zip(cls, plausibility(feats, cls, *plaus)):
                if pl is not None:
                    scores[c]["plausibility"] = {"model": judge_name, **pl}


def _progress_bar(progress: bool, total: float) -> Any:
    """A tqdm bar, or under `--no-progress` the render's periodic log lines (generator/progress.py)."""
    from tqdm import tqdm

    from .progress import LogBar

    if not progress:
        return LogBar("quality", total)
    return tqdm(total=total, desc="quality", unit="unit", dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}, {rate_fmt}]")


def _stored_picture(store: Store, meta: Meta, unreadable: set[tuple[str, int]]) -> np.ndarray | None:
    """A class visualization as RGB; None, said in one line once, when it cannot be read (or would be
    read from outside the store): that class is left unscored and the others go on."""
    key = (meta.model, meta.class_index)
    if key in unreadable:
        return None
    try:
        with Image.open(store.file_path(meta.model, meta.class_index, meta.maco.files.get("image"))) as im:  # type: ignore[union-attr]
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        unreadable.add(key)
        print(f"lens: quality: {store.meta_path(*key)}: class visualization unreadable, not scored "
              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})")
        return None


def _store_scores(store: Store, model: str, class_index: int, s: dict) -> None:
    def change(meta: Meta) -> None:
        rec = meta.maco
        if rec is None or not rec.done:
            return
        # A key only when every judge answered: a partial score is redone by the next run.
        rec.quality = Quality.model_validate({"transfer": s["transfer"], "plausibility": s.get("plausibility"), "key": s.get("key")})
        if "self_rank" in s:
            rec.self_prob, rec.self_rank = s["self_prob"], s["self_rank"]

    store.update_meta(model, class_index, change)


def _write_accuracy(store: Store, model: str, predicted: list[int], labels: list[int], source: str) -> None:
    correct = sum(p == t for p, t in zip(predicted, labels))

    def change(card: ModelCard) -> None:
        card.accuracy = {"top1": correct / len(labels), "n_images": len(labels), "source": source}

    store.update_model_card(model, change)
