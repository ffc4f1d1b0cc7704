"""Saving a unit's results: its files under new names, then meta.json pointing at them, then the old
files dropped: a record never names a file that is not fully written."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from .. import concept_data, maco, sidefiles
from .. import craft as craft_method
from ..models import LoadedModel
from ..plan import ModelPlan, part_done
from ..records import AtomMaco, AtomMacos, Attribution, Concept, CraftRecord, Crop, MacoRecord, Meta, Unit
from ..store import Store, atomic_write_bytes, encode_jpeg, encode_png, encode_webp, update_atom_macos
from ..version import __version__


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    import timm

    return {"generator": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": sys.version.split()[0]}



def _prune(folder: Path, keep: set[Path], patterns: Iterable[str]) -> None:
    """Delete earlier versions of a part's files that meta.json no longer references."""
    for pattern in patterns:
        for path in folder.glob(pattern):
            if path not in keep and ".tmp." not in path.name:
                path.unlink(missing_ok=True)


def self_scores(m: LoadedModel, renders: list[tuple[Unit, maco.MacoRender]]) -> dict[str, tuple[float, int]]:
    """(probability, rank) of each class visualization under its own model, in one batched pass."""
    if not renders:
        return {}
    probs, ranks = maco.classify(m, [r.image for _, r in renders], [u.class_index for u, _ in renders])
    return {u.id: (p, k) for (u, _), p, k in zip(renders, probs, ranks)}


def save_maco(store: Store, plan: ModelPlan, unit: Unit, r: maco.MacoRender, m: LoadedModel, objective: maco.Objective,
              seconds: float, batch: int, device: str, attempt: int, self_score: tuple[float, int] | None = None) -> None:
    """Write the images under new names, then point meta.json at them, then drop the old ones. Touches the device only
    when a class visualization comes without its `self_score` (see `self_scores`)."""
    settings_hash = plan.unit_hash(unit)
    folder = unit.folder
    tag = settings_hash[:8]
    files = {"image": f"{folder}maco.{tag}.png", "alpha": f"{folder}maco_alpha.{tag}.png"}
    store.write_file(unit.model, unit.class_index, files["image"], encode_png(r.image))
    store.write_file(unit.model, unit.class_index, files["alpha"], encode_png(r.alpha))
    record = MacoRecord(
        status="done", files=files, settings=plan.maco.model_dump(mode="json"), settings_hash=settings_hash,
        seed=maco.objective_seed(plan.maco.seed, plan.name, objective.key), objective_key=objective.key,
        spectrum=plan.spectrum_id, steps=plan.maco.steps, wall_time_s=round(seconds, 3), batch_size=batch,
        objective=r.objective, attempts=attempt, device=device, versions=versions(), finished_at=now_iso(),
        weights_used=m.weights_used,
    )
    if unit.kind == "maco":
        if self_score is None:
            (prob,), (rank,) = maco.classify(m, [r.image], [unit.class_index])
            self_score = (prob, rank)
        record.self_prob, record.self_rank = self_score
    class_dir = store.class_dir(unit.model, unit.class_index)
    craft_unit = Unit(unit.model, unit.class_index, "craft")

    def change(meta: Meta) -> None:
        if unit.kind == "concept" and not part_done(meta.craft, plan.unit_hash(craft_unit)):
            return  # CRAFT was re-run meanwhile: this direction is gone
        if not meta.set_record(unit, record):
            return
        _prune(class_dir / folder, {class_dir / f for f in files.values()}, ["maco.*.png", "maco_alpha.*.png"])

    store.update_meta(unit.model, unit.class_index, change)


def save_atom_maco(store: Store, plan: ModelPlan, unit: Unit, r: maco.MacoRender, seconds: float) -> None:
    """An atom's MACO: its image and attribution map (lossless WebP), then its done entry in
    `dictionary/macos.json` (under that file's lock)."""
    from PIL import Image

    image, alpha = sidefiles.atom_maco_names(unit.concept, plan.dictionary_hash())  # type: ignore[arg-type]
    model_dir = store.root / unit.model
    atomic_write_bytes(model_dir / image, encode_webp(Image.fromarray(r.image)))
    atomic_write_bytes(model_dir / alpha, encode_webp(Image.fromarray(r.alpha)))
    entry = AtomMaco(status="done", image=image, alpha=alpha, seconds=round(seconds, 3))
    _update_atoms(store, plan, lambda record: record.atoms.__setitem__(str(unit.concept), entry))


def record_atom_failures(store: Store, plan: ModelPlan, units: list[Unit], error: str) -> None:
    """Atom MACO units recorded failed in `macos.json` (one never overwrites a done entry of these settings)."""
    def change(record: AtomMacos) -> None:
        for u in units:
            old = record.atoms.get(str(u.concept))
            if old is None or old.status != "done":
                record.atoms[str(u.concept)] = AtomMaco(status="failed", error=error)

    _update_atoms(store, plan, change)


def _update_atoms(store: Store, plan: ModelPlan, change: Callable[[AtomMacos], None]) -> None:
    """`macos.json` changed, with the `dictionary.visualize` it was planned under (the site says which atoms it leaves out)."""
    def with_limit(record: AtomMacos) -> None:
        record.visualize = plan.dictionary.visualize
        change(record)

    update_atom_macos(store, plan.name, plan.atom_hash(), with_limit)


def save_craft(store: Store, plan: ModelPlan, class_index: int, result: craft_method.CraftResult, m: LoadedModel,
               seconds: float, device: str) -> str:
    """Write CRAFT's files, then its record and concepts; returns the status: `done` or `no-images`."""
    craft_hash = plan.unit_hash(Unit(m.name, class_index, "craft"))
    tag = craft_hash[:8]
    settings = plan.craft
    no_images = not result.views  # no usable photo: a state of its own, neither done nor failed
    record = CraftRecord(
        status="no-images" if no_images else "done", settings=settings.model_dump(mode="json"), settings_hash=craft_hash,
        n_images=len(result.views), image_selection=result.selection, method=result.method,
        nmf_error=None if np.isnan(result.nmf_error) else result.nmf_error,
        timings_s={k: round(v, 3) for k, v in result.timings.items()}, wall_time_s=round(seconds, 3),
        device=device, versions=versions(), finished_at=now_iso(), files={},
        images_source="demo photos" if plan.images_dir is None else str(plan.images_dir),
        reason=result.reason or None, weights_used=m.weights_used,
    )
    if result.deletion:
        record.deletion = {k: result.deletion[k] for k in ("auc_importance", "auc_random", "curve_importance", "curve_random")}
    credits = sorted({v.source.credit for v in result.views if v.source.credit and "CC BY" in v.source.credit})
    if credits:
        record.credits = credits
    concepts: list[Concept] = []
    written: set[str] = set()
    atlas = concept_data.class_files(store, m.name, class_index, result, tag)  # directions, per-image records, thumbnails, photos
    if result.concepts:
        record.files["directions"] = atlas.directions(concept_data.directions(result))
        record.files.update(atlas.write())
    for rank, concept in enumerate(result.concepts, start=1):
        crops, attributions = _concept_pictures(store, m, class_index, result, concept, tag, settings.attribution_images,
                                                atlas, written)
        concepts.append(Concept(id=concept.id, rank=rank, importance=concept.importance, logit_share=concept.logit_share,
                                removal_drop=concept.removal_drop, crops=crops, attributions=attributions))
    class_dir = store.class_dir(m.name, class_index)

    def change(meta: Meta) -> None:
        meta.craft = record
        meta.concepts = concepts
        keep = {class_dir / f for f in written | atlas.written}
        _prune(class_dir, keep, [sidefiles.DIRECTIONS_PATTERN, "concepts/*/crop_*.jpg", "concepts/*/attribution_*.jpg",
                                 "concepts/*/maco.*.png", "concepts/*/maco_alpha.*.png", *sidefiles.PRUNE_PATTERNS])

    store.update_meta(m.name, class_index, change)
    if no_images:
        store.log({"event": "craft_no_images", "unit": f"{m.name}/{class_index:04d}/craft", "images": record.images_source})
    return record.status


def _concept_pictures(store: Store, m: LoadedModel, class_index: int, result: craft_method.CraftResult,
                      concept: craft_method.Concept, tag: str, n_attributions: int, atlas: sidefiles.ClassFiles,
                      written: set[str]) -> tuple[list[Crop], list[Attribution]]:
    """Write one concept's crops and attribution overlays (the first `n_attributions` photos its crops
    come from), adding each file to `written`; returns their records."""
    size = m.preprocess.input_size
    base = f"concepts/{concept.id}"
    crops = []
    for j, crop in enumerate(concept.crops):
        view = result.views[crop.view]
        rel = f"{base}/crop_{j}.{tag}.jpg"
        store.write_file(m.name, class_index, rel, encode_jpeg(craft_method.crop_image(view, crop.box, size)))
        written.add(rel)
        crops.append(Crop(file=rel, source=view.source.source, box=list(craft_method.to_source_box(crop.box, view.region, size)),
                          view_box=list(crop.box), coefficient=crop.coefficient))
    attributions = []
    vmax = float(result.maps[..., concept.id].max())
    sources = list(dict.fromkeys(crop.view for crop in concept.crops))[:n_attributions]
    for j, v in enumerate(sources):
        rel = f"{base}/attribution_{j}.{tag}.jpg"
        overlay = craft_method.attribution_overlay(result.views[v], result.maps[v, ..., concept.id], vmax)
        store.write_file(m.name, class_index, rel, encode_jpeg(overlay))
        written.add(rel)
        attributions.append(Attribution(file=rel, source=result.views[v].source.source, photo=atlas.photo(v)))
    return crops, attributions
