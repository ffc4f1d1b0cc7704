"""Quality figures of class visualizations, stored in meta.json (`maco.quality`) and model.json.

- self: probability and rank of the class under the rendering model;
- transfer: rank of the class under every other model of the zoo;
- plausibility: in another model's penultimate feature space, cosine similarity of the
  visualization to real images of its class minus that to real images of other classes;
- accuracy: top-1 of each model on the reference images (ImageNet-layout folders only).

Reference images are the configured ImageNet-layout folder, else the demo photos labelled by the
class the rendering model predicts for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .classes import imagenet_class
from .config import Zoo
from .craft import make_views
from .images import SourceImage, class_image_paths, demo_photos, load_rgb
from .maco import classify
from .models import LoadedModel, load_model, resolve_device
from .records import Meta, ModelCard, Quality
from .store import Store

REFERENCE_PER_CLASS = 4  # real images per class used for plausibility (and accuracy)


@dataclass
class Reference:
    """Real images with labels, embedded once per feature model."""

    images: list[SourceImage]
    labels: list[int]
    labelled_by_folder: bool  # True: labels are ground truth (accuracy is meaningful)


def reference_images(images_dir: Path | None, classes: Sequence[int], per_class: int = REFERENCE_PER_CLASS) -> Reference:
    """Real images of every class found in the folder (not only the rendered ones, for the contrast)."""
    if images_dir is None:
        return Reference(demo_photos(), [], False)
    images, labels = [], []
    for c in range(1000):
        for p in class_image_paths(images_dir, imagenet_class(c).wnid)[:per_class]:
            im = load_rgb(p)
            if im is not None:
                images.append(SourceImage(f"{imagenet_class(c).wnid}/{p.name}", im))
                labels.append(c)
    return Reference(images, labels, True)


@torch.no_grad()
def penultimate(model: LoadedModel, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Unit-norm pre-logit features (timm's forward_head(pre_logits=True))."""
    feats = []
    for i in range(0, len(x), batch):
        f = model.module.forward_head(model.module.forward_features(x[i : i + batch]), pre_logits=True)
        feats.append(torch.nn.functional.normalize(f.float().flatten(1), dim=-1))
    return torch.cat(feats) if feats else torch.zeros(0)


def model_inputs(model: LoadedModel, images: Sequence[np.ndarray]) -> torch.Tensor:
    """Rendered uint8 images, whole, resized to the model input and normalised."""
    x = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images]).float().div(255).to(model.device)
    side = model.preprocess.input_size
    x = torch.nn.functional.interpolate(x, size=(side, side), mode="bicubic", antialias=True, align_corners=False)
    return model.normalize(x.clamp(0, 1))


def plausibility(viz_features: torch.Tensor, viz_classes: Sequence[int], ref_features: torch.Tensor,
                 ref_labels: Sequence[int]) -> list[dict | None]:
    """Mean cosine to real images of the class, to real images of other classes, and the margin."""
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


def run_quality(zoo: Zoo, out: Path, models: list[str], classes: list[int], images_dir: Path | None,
                device: str = "auto", progress: bool = True) -> None:
    """Score every finished class visualization of the selected models against all zoo models."""
    from tqdm import tqdm

    store = Store(out)
    dev = resolve_device(device)
    renders: dict[str, dict[int, np.ndarray]] = {}
    for name in models:
        for meta in store.iter_meta_records(name, classes):
            rec = meta.maco
            if rec is not None and rec.done:
                path = store.class_dir(name, meta.class_index) / rec.files["image"]
                renders.setdefault(name, {})[meta.class_index] = np.asarray(Image.open(path).convert("RGB"))
    if not renders:
        return
    reference = reference_images(images_dir, classes)
    zoo_models = list(zoo.models)
    scores: dict[str, dict[int, dict]] = {n: {c: {"transfer": {}} for c in r} for n, r in renders.items()}
    for judge_name in tqdm(zoo_models, desc="quality", unit="model", disable=not progress):
        judge = load_model(zoo.model(judge_name), zoo.root, dev)
        _, ref_x = make_views(reference.images, judge)
        with torch.no_grad():
            chunks = [judge.logits(ref_x[i : i + 64]).argmax(-1) for i in range(0, len(ref_x), 64)]
        ref_pred = torch.cat(chunks).tolist() if chunks else []
        labels = reference.labels if reference.labelled_by_folder else ref_pred
        if reference.labelled_by_folder and labels:
            _write_accuracy(store, judge_name, ref_pred, labels, str(images_dir))
        ref_feats = penultimate(judge, ref_x)
        for name, by_class in renders.items():
            cls = list(by_class)
            probs, ranks = classify(judge, [by_class[c] for c in cls], cls)
            for c, p, r in zip(cls, probs, ranks):
                if judge_name == name:
                    scores[name][c].update(self_prob=p, self_rank=r)
                else:
                    scores[name][c]["transfer"][judge_name] = {"rank": r, "prob": p}
            # Plausibility is judged in another model's space: the next model of the zoo.
            if zoo_models[(zoo_models.index(name) + 1) % len(zoo_models)] == judge_name and len(zoo_models) > 1:
                feats = penultimate(judge, model_inputs(judge, [by_class[c] for c in cls]))
                for c, pl in zip(cls, plausibility(feats, cls, ref_feats, labels)):
                    if pl is not None:
                        scores[name][c]["plausibility"] = {"model": judge_name, **pl}
        del judge
    for name, by_class in scores.items():
        for c, s in by_class.items():
            _store_scores(store, name, c, s)


def _store_scores(store: Store, model: str, class_index: int, s: dict) -> None:
    def change(meta: Meta) -> None:
        rec = meta.maco
        if rec is None or not rec.done:
            return
        rec.quality = Quality.model_validate({"transfer": s["transfer"], "plausibility": s.get("plausibility")})
        if "self_rank" in s:
            rec.self_prob, rec.self_rank = s["self_prob"], s["self_rank"]

    store.update_meta(model, class_index, change)


def _write_accuracy(store: Store, model: str, predicted: list[int], labels: list[int], source: str) -> None:
    correct = sum(p == t for p, t in zip(predicted, labels))

    def change(card: ModelCard) -> None:
        card.accuracy = {"top1": correct / len(labels), "n_images": len(labels), "source": source}

    store.update_model_card(model, change)
